//! The HTTP API against the in-process server (and the binary), with real
//! clients: reqwest for HTTP, lettre and a raw SMTP client for mail. Every
//! assertion is on exact statuses, codes and texts.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use mailfault::api::ApiOptions;
use mailfault::capture::{Capture, Store};
use mailfault::scenario;
use mailfault::server::{ListenerSpec, Options, Server, Source};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A rule with a name, so transcripts and metrics show which rule spoke.
const SCENARIO: &str = r#"
[[rule]]
name = "no such user"
on = "rcpt"
when.rcpt = "nobody@*"
reply = "550 5.1.1 No such user"
"#;

struct Setup {
    token: Option<&'static str>,
    store: Option<PathBuf>,
    max_bytes: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            token: None,
            store: None,
            max_bytes: mailfault::capture::store::DEFAULT_MAX_BYTES,
        }
    }
}

struct Api {
    server: Server,
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start(setup: Setup) -> Self {
        let s = scenario::parse(SCENARIO, "api.toml", "api").unwrap();
        let mut opts = Options::new(vec![ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            source: Source::Given(Arc::new(s)),
            tls: Default::default(),
        }]);
        opts.grace = Duration::from_millis(200);
        let store = Store::new(setup.store.as_deref(), setup.max_bytes).unwrap();
        opts.capture = Arc::new(Capture::with_store(None, store).unwrap());
        opts.api = Some(ApiOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: setup.token.map(str::to_string),
            optional: false,
        });
        let server = Server::start(opts).await.unwrap();
        let base = format!("http://{}", server.api_addr.expect("the API is bound"));
        Self {
            server,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn default() -> Self {
        Self::start(Setup::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// GET, expecting `status`; the JSON body.
    #[track_caller]
    fn json<'a>(
        &'a self,
        path: &'a str,
        status: StatusCode,
    ) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let r = self.get(path).await;
            let got = r.status();
            let body: Value = r.json().await.unwrap();
            assert_eq!(got, status, "{caller}: GET {path}: {body}");
            body
        }
    }

    fn mailer(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.server.addr().port())
            .build()
    }

    /// Sends one message with lettre; the queue id from the 250.
    async fn send(&self, to: &str, subject: &str, body: &str) -> String {
        let ok = self
            .mailer()
            .send(message(to, subject, body))
            .await
            .unwrap();
        assert_eq!(ok.code().to_string(), "250");
        let text: Vec<&str> = ok.message().collect();
        text[0].rsplit(' ').next().unwrap().to_string()
    }
}

fn message(to: &str, subject: &str, body: &str) -> Message {
    Message::builder()
        .from("Sender <sender@example.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .body(body.to_string())
        .unwrap()
}

/// A raw session: one message to `to`, QUIT.
async fn raw_send(server: &Server, to: &str, body: &str) -> String {
    let mut c = Client::connect(server).await;
    c.envelope("raw@example.test", to).await;
    let reply = c.data(body).await;
    c.cmd("QUIT").await;
    reply
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mailfault-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ids(listing: &Value) -> Vec<String> {
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn health_readiness_and_scenarios() {
    let api = Api::default().await;
    assert_eq!(api.json("/livez", StatusCode::OK).await["status"], "ok");
    assert_eq!(api.json("/readyz", StatusCode::OK).await["status"], "ready");
    let h = api.json("/api/v1/health", StatusCode::OK).await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["ready"], true);
    assert_eq!(h["listeners"][0], api.server.addr().to_string());
    assert_eq!(h["store"]["messages"], 0);
    let sc = api.json("/api/v1/scenarios", StatusCode::OK).await;
    assert_eq!(sc[0]["name"], "api");
    assert_eq!(sc[0]["port"], api.server.addr().port());
    assert_eq!(sc[0]["rules"], 1);
    assert_eq!(sc[0]["scheme"], "smtp");
    // Stopping: the API stops with the server.
    let base = api.base.clone();
    let _ = api.server.shutdown().await;
    assert!(reqwest::get(format!("{base}/livez")).await.is_err());
}

#[tokio::test]
async fn messages_filter_page_show_raw_and_delete() {
    let api = Api::default().await;
    let before = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let a = api
        .send("one@example.test", "First report", "alpha\r\n")
        .await;
    let b = api.send("two@example.test", "Second", "beta\r\n").await;
    let c = api
        .send("one@other.test", "Third report", "gamma\r\n")
        .await;

    let all = api.json("/api/v1/messages", StatusCode::OK).await;
    assert_eq!(all["total"], 3);
    assert_eq!(
        ids(&all),
        [c.as_str(), b.as_str(), a.as_str()],
        "newest first"
    );
    assert_eq!(all["items"][0]["mail_from"], "sender@example.test");
    assert_eq!(all["items"][0]["subject"], "Third report");
    assert_eq!(all["items"][0]["accepted"], true);
    assert_eq!(all["items"][0]["listener"], api.server.addr().to_string());

    let one = api.json("/api/v1/messages?rcpt=ONE@", StatusCode::OK).await;
    assert_eq!(ids(&one), [c.as_str(), a.as_str()]);
    let rep = api
        .json(
            "/api/v1/messages?subject=report&rcpt=example",
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&rep), [a.as_str()]);
    let from = api
        .json("/api/v1/messages?from=nobody", StatusCode::OK)
        .await;
    assert_eq!(from["total"], 0);
    let since = api
        .json(&format!("/api/v1/messages?since={before}"), StatusCode::OK)
        .await;
    assert_eq!(since["total"], 3);
    let until = api
        .json(&format!("/api/v1/messages?until={before}"), StatusCode::OK)
        .await;
    assert_eq!(until["total"], 0);
    let page = api
        .json("/api/v1/messages?limit=1&offset=1", StatusCode::OK)
        .await;
    assert_eq!(
        (page["total"].as_u64(), ids(&page)),
        (Some(3), vec![b.clone()])
    );

    let shown = api
        .json(&format!("/api/v1/messages/{b}"), StatusCode::OK)
        .await;
    assert_eq!(shown["id"], b.as_str());
    assert_eq!(shown["rcpts"][0], "two@example.test");
    assert_eq!(shown["text"].as_str().unwrap().trim_end(), "beta");
    let subject = shown["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "Subject")
        .unwrap();
    assert_eq!(subject["value"], "Second");
    let session = shown["session"].as_u64().unwrap();
    let t = api
        .json(&format!("/api/v1/sessions/{session}"), StatusCode::OK)
        .await;
    assert_eq!(t["session"]["messages"], 1);

    let raw = api.get(&format!("/api/v1/messages/{b}/raw")).await;
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    let bytes = raw.bytes().await.unwrap();
    let kept = api.server.capture.store().get(&b).unwrap();
    assert_eq!(&bytes[..], &kept.body[..]);
    assert!(String::from_utf8_lossy(&bytes).contains("\r\n\r\nbeta\r\n"));

    let del = api
        .http
        .delete(api.url(&format!("/api/v1/messages/{b}")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    api.json(&format!("/api/v1/messages/{b}"), StatusCode::NOT_FOUND)
        .await;
    // Some by id (unknown ones skipped), then all.
    let some = api
        .http
        .delete(api.url("/api/v1/messages"))
        .json(&serde_json::json!({"ids": [a, "UNKNOWN1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(some.json::<Value>().await.unwrap()["deleted"], 1);
    let rest = api
        .http
        .delete(api.url("/api/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.json::<Value>().await.unwrap()["deleted"], 1);
    assert_eq!(
        api.json("/api/v1/messages", StatusCode::OK).await["total"],
        0
    );
}

#[tokio::test]
async fn wait_for_a_message_returns_when_it_arrives() {
    let api = Arc::new(Api::default().await);
    let waiter = {
        let api = api.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let body = api
                .json(
                    "/api/v1/messages?rcpt=late@example.test&wait=20s",
                    StatusCode::OK,
                )
                .await;
            (body, t0.elapsed())
        })
    };
    // Something else first: the waiter keeps waiting through it.
    api.send("other@example.test", "not this one", "x\r\n")
        .await;
    let id = api.send("late@example.test", "this one", "y\r\n").await;
    let (body, took) = waiter.await.unwrap();
    assert_eq!(body["total"], 1);
    assert_eq!(ids(&body), [id]);
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Already there: answered at once.
    let t0 = Instant::now();
    let again = api
        .json("/api/v1/messages?rcpt=late@&wait=20s", StatusCode::OK)
        .await;
    assert_eq!(again["total"], 1);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn wait_times_out_with_408() {
    let api = Api::default().await;
    for path in [
        "/api/v1/messages?rcpt=never@example.test&wait=200ms",
        "/api/v1/sessions?client=10.9.9.9&wait=200ms",
        "/api/v1/deliveries?rcpt=never@example.test&wait=200ms",
    ] {
        let t0 = Instant::now();
        let e = api.json(path, StatusCode::REQUEST_TIMEOUT).await;
        assert_eq!(e["status"], 408, "{path}");
        assert_eq!(e["error"], "nothing matched within 200ms", "{path}");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200), "{path}: {took:?}");
        assert!(took < Duration::from_secs(5), "{path}: {took:?}");
    }
}

#[tokio::test]
async fn sessions_list_and_transcript_with_the_deciding_rule() {
    let api = Api::default().await;
    let mut c = Client::connect(&api.server).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO client.test", "250-").await;
    c.expect("MAIL FROM:<s@example.test>", "250 ").await;
    assert_eq!(
        c.cmd("RCPT TO:<nobody@example.test>").await,
        "550 5.1.1 No such user"
    );
    // Open sessions are listed while they run.
    let open = api.json("/api/v1/sessions?open=true", StatusCode::OK).await;
    assert_eq!(open["total"], 1);
    c.cmd("QUIT").await;
    let closed = api
        .json("/api/v1/sessions?open=false&wait=10s", StatusCode::OK)
        .await;
    let s = &closed["items"][0];
    assert_eq!(s["helo"], "client.test");
    assert_eq!(s["closed_by"], "server");
    assert_eq!(s["reason"], "quit");
    assert_eq!(s["commands"], 4);
    assert_eq!(s["last_reply"], "221 2.0.0 Bye");
    let id = s["id"].as_u64().unwrap();

    let t = api
        .json(&format!("/api/v1/sessions/{id}"), StatusCode::OK)
        .await;
    let events = t["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "connect");
    let refused = events
        .iter()
        .find(|e| e["type"] == "reply" && e["code"] == 550)
        .unwrap();
    assert_eq!(refused["rule"], "no such user");
    assert_eq!(refused["text"], "550 5.1.1 No such user\r\n");
    assert_eq!(events.last().unwrap()["type"], "close");
}

#[tokio::test]
async fn deliveries_and_report_as_report_json() {
    let api = Api::default().await;
    api.send("ok@example.test", "s", "b\r\n").await;
    let mut c = Client::connect(&api.server).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO client.test", "250-").await;
    c.expect("MAIL FROM:<s@example.test>", "250 ").await;
    c.expect("RCPT TO:<nobody@example.test>", "550 ").await;
    c.cmd("QUIT").await;

    let failed = api
        .json("/api/v1/deliveries?outcome=failed&wait=10s", StatusCode::OK)
        .await;
    assert_eq!(failed["total"], 1);
    let d = &failed["items"][0];
    assert_eq!(d["rcpt"], "nobody@example.test");
    assert_eq!(d["attempts"][0]["rule"], "no such user");
    assert_eq!(d["attempts"][0]["code"], 550);
    let ok = api
        .json("/api/v1/deliveries?rcpt=OK@", StatusCode::OK)
        .await;
    assert_eq!(ok["items"][0]["outcome"], "delivered");

    // The same JSON as `report --json` over the same events.
    let report = api.json("/api/v1/report", StatusCode::OK).await;
    let expected = mailfault::report::build(&api.server.capture.events(), &[], 0);
    assert_eq!(report, serde_json::to_value(&expected).unwrap());
    assert_eq!(report["sessions"], 2);
}

#[tokio::test]
async fn events_stream_live_transcript() {
    let api = Api::default().await;
    let mut sse = open_stream(&api, "/api/v1/events").await;
    // The subscription exists once the headers are here: this session's
    // events all come through.
    let reply = raw_send(&api.server, "live@example.test", "hi\r\n").await;
    assert!(reply.starts_with("250 "));
    let events = events_until_close(&mut sse).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first().copied(), Some("connect"));
    assert!(types.contains(&"message"), "{types:?}");
    let message = events.iter().find(|e| e["type"] == "message").unwrap();
    assert_eq!(message["rcpt"][0], "live@example.test");
    assert_eq!(message["listener"], api.server.addr().to_string());
}

#[tokio::test]
async fn an_events_stream_of_some_types_carries_only_those() {
    let api = Api::default().await;
    let mut sse = open_stream(&api, "/api/v1/events?types=message,%20close").await;
    let reply = raw_send(&api.server, "picked@example.test", "hi\r\n").await;
    assert!(reply.starts_with("250 "));
    let events = events_until_close(&mut sse).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["message", "close"], "{events:?}");
}

#[tokio::test]
async fn the_change_feed_says_when_the_counts_moved() {
    let api = Api::default().await;
    let mut feed = open_stream(&api, "/api/v1/changes").await;
    // The counts at once, before anything happened.
    let first = data_until(&mut feed, |_| true).await;
    assert_eq!(
        first.last().unwrap(),
        &json!({"sessions": 0, "closed": 0, "messages": 0, "attempts": 0, "store": 0})
    );
    let reply = raw_send(&api.server, "feed@example.test", "hi\r\n").await;
    assert!(reply.starts_with("250 "));
    let done = |c: &Value| c["closed"] == 1;
    let moved = data_until(&mut feed, done).await;
    assert_eq!(
        moved.last().unwrap(),
        &json!({"sessions": 1, "closed": 1, "messages": 1, "attempts": 1, "store": 1})
    );
    // Deleting the messages moves the store's count, and only that.
    api.http
        .delete(api.url("/api/v1/messages"))
        .send()
        .await
        .unwrap();
    let cleared = data_until(&mut feed, |c| c["store"] != 1).await;
    assert_eq!(
        cleared.last().unwrap(),
        &json!({"sessions": 1, "closed": 1, "messages": 1, "attempts": 1, "store": 2})
    );
}

/// Opens a server-sent event stream: 200, `text/event-stream`.
async fn open_stream(api: &Api, path: &str) -> reqwest::Response {
    let sse = api.get(path).await;
    assert_eq!(sse.status(), StatusCode::OK, "{path}");
    assert_eq!(sse.headers()["content-type"], "text/event-stream", "{path}");
    sse
}

/// Reads an event stream until a `close` event has come whole; every
/// event read, parsed.
async fn events_until_close(sse: &mut reqwest::Response) -> Vec<Value> {
    data_until(sse, |e| e["type"] == "close").await
}

/// Reads an event stream until the `data:` of an event `done` takes has
/// come whole; every event's data read, parsed.
async fn data_until(sse: &mut reqwest::Response, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        // Only whole lines: a chunk may end inside one.
        let whole = &seen[..seen.rfind('\n').map_or(0, |i| i + 1)];
        let events: Vec<Value> = whole
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        if events.iter().any(&done) {
            return events;
        }
    }
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let api = Api::default().await;
    api.send("a@example.test", "s", "12345\r\n").await;
    api.send("b@example.test", "s", "12345\r\n").await;
    let mut c = Client::connect(&api.server).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO client.test", "250-").await;
    c.expect("MAIL FROM:<s@example.test>", "250 ").await;
    c.expect("RCPT TO:<nobody@example.test>", "550 ").await;
    c.cmd("QUIT").await;
    api.json(
        "/api/v1/sessions?open=false&limit=3&wait=10s",
        StatusCode::OK,
    )
    .await;
    // Wait until the three sessions are closed (the last close may trail
    // its QUIT reply).
    let mut text = String::new();
    for _ in 0..100 {
        let r = api.get("/metrics").await;
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        text = r.text().await.unwrap();
        if metric(&text, "mailfault_sessions_open") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&text, "mailfault_sessions_total"), 3);
    assert_eq!(metric(&text, "mailfault_sessions_open"), 0);
    assert_eq!(
        metric(&text, r#"mailfault_commands_total{stage="mail"}"#),
        3
    );
    assert_eq!(
        metric(&text, r#"mailfault_commands_total{stage="rcpt"}"#),
        3
    );
    assert_eq!(
        metric(&text, r#"mailfault_replies_total{stage="rcpt",code="250"}"#),
        2
    );
    assert_eq!(
        metric(&text, r#"mailfault_replies_total{stage="rcpt",code="550"}"#),
        1
    );
    assert_eq!(
        metric(
            &text,
            r#"mailfault_replies_total{stage="message",code="250"}"#
        ),
        2
    );
    assert_eq!(
        metric(
            &text,
            r#"mailfault_rule_hits_total{scenario="api",rule="no such user"}"#
        ),
        1
    );
    assert_eq!(
        metric(&text, r#"mailfault_messages_total{accepted="true"}"#),
        2
    );
    // The memory store is always reachable (Redis outages: tests/redis.rs).
    assert_eq!(
        metric(&text, r#"mailfault_state_store_up{scenario="api"}"#),
        1
    );
    assert_eq!(
        metric(
            &text,
            r#"mailfault_state_store_outages_total{scenario="api"}"#
        ),
        0
    );
    let size: u64 = api.server.capture.messages().iter().map(|m| m.size).sum();
    assert_eq!(metric(&text, "mailfault_message_bytes_total"), size);
    assert_eq!(
        metric(
            &text,
            r#"mailfault_delivery_attempts_total{outcome="delivered"}"#
        ),
        2
    );
    assert_eq!(
        metric(
            &text,
            r#"mailfault_delivery_attempts_total{outcome="failed"}"#
        ),
        1
    );
    assert_eq!(metric(&text, "mailfault_store_messages"), 2);
    assert!(metric(&text, "mailfault_store_bytes") > size);
}

#[tokio::test]
async fn store_dir_has_the_files_when_the_250_arrives() {
    let dir = tmp("store");
    let api = Api::start(Setup {
        store: Some(dir.clone()),
        ..Setup::default()
    })
    .await;
    for n in 0..5 {
        let id = api
            .send(&format!("r{n}@example.test"), "stored", "kept on disk\r\n")
            .await;
        // No wait: the 250 came after the fsync.
        let eml = std::fs::read(dir.join(format!("{id}.eml"))).unwrap();
        assert!(String::from_utf8_lossy(&eml).contains("\r\n\r\nkept on disk\r\n"));
        let env: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).unwrap())
                .unwrap();
        assert_eq!(env["id"], id.as_str());
        assert_eq!(env["rcpts"][0], format!("r{n}@example.test"));
        assert_eq!(env["listener"], api.server.addr().to_string());
        assert!(env["session"].as_u64().unwrap() > 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_store_that_cannot_write_answers_451_never_250() {
    let dir = tmp("broken");
    let api = Api::start(Setup {
        store: Some(dir.clone()),
        ..Setup::default()
    })
    .await;
    // The folder turns into a file: every write fails.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"").unwrap();
    let reply = raw_send(&api.server, "lost@example.test", "x\r\n").await;
    assert_eq!(reply, "451 4.3.0 Error: queue file write error");
    let m = api.json("/api/v1/messages", StatusCode::OK).await;
    assert_eq!(m["total"], 0);
    let d = api
        .json("/api/v1/deliveries?rcpt=lost@", StatusCode::OK)
        .await;
    assert_eq!(d["items"][0]["outcome"], "deferred");
    assert_eq!(d["items"][0]["attempts"][0]["code"], 451);
    let _ = std::fs::remove_file(&dir);
}

#[tokio::test]
async fn memory_is_bounded_by_bytes_oldest_evicted() {
    let body = "x".repeat(2000) + "\r\n";
    // Room for two such messages (about 2,800 bytes each with lettre's
    // headers and the store's overhead), not three.
    let api = Api::start(Setup {
        max_bytes: 7000,
        ..Setup::default()
    })
    .await;
    let mut sent = vec![];
    for n in 0..5 {
        sent.push(api.send(&format!("e{n}@example.test"), "big", &body).await);
    }
    let kept = api.json("/api/v1/messages", StatusCode::OK).await;
    assert_eq!(ids(&kept), [sent[4].as_str(), sent[3].as_str()]);
    let h = api.json("/api/v1/health", StatusCode::OK).await;
    assert_eq!(h["store"]["evicted"], 3);
    assert!(h["store"]["bytes"].as_u64().unwrap() <= 7000);
    api.json(
        &format!("/api/v1/messages/{}", sent[0]),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn bad_input_gets_json_4xx() {
    let api = Api::default().await;
    for (path, status, says) in [
        ("/api/v1/messages/UNKNOWN", 404, "no message \"UNKNOWN\""),
        ("/api/v1/messages/UNKNOWN/raw", 404, "no message"),
        (
            "/api/v1/messages/..%2F..%2Fetc%2Fpasswd",
            400,
            "bad message id",
        ),
        ("/api/v1/messages/a%5Cb", 400, "bad message id"),
        ("/api/v1/messages/.hidden", 400, "bad message id"),
        ("/api/v1/sessions/abc", 400, "a session id is a number"),
        ("/api/v1/sessions/999999", 404, "no session 999999"),
        ("/api/v1/messages?limit=abc", 400, "limit"),
        ("/api/v1/messages?limit=0", 400, "bad limit 0"),
        ("/api/v1/messages?limit=100000", 400, "bad limit"),
        ("/api/v1/messages?offset=-1", 400, "offset"),
        ("/api/v1/messages?wait=forever", 400, "bad wait"),
        ("/api/v1/messages?wait=10m", 400, "at most 5m"),
        ("/api/v1/messages?since=yesterday", 400, "bad since"),
        ("/api/v1/messages?accepted=maybe", 400, "accepted"),
        (
            "/api/v1/messages?recipient=x",
            400,
            "unknown field `recipient`",
        ),
        ("/api/v1/deliveries?outcome=bounced", 400, "bad outcome"),
        ("/api/v1/sessions?open=perhaps", 400, "open"),
        ("/api/v1/events?session=x", 400, "session"),
        (
            "/api/v1/events?types=connect,replies",
            400,
            "unknown event type \"replies\" in types: one of listen, connect, command, reply",
        ),
        ("/api/v2/messages", 404, "no route GET /api/v2/messages"),
    ] {
        let status = StatusCode::from_u16(status).unwrap();
        let e = api.json(path, status).await;
        assert_eq!(e["status"], status.as_u16(), "{path}");
        let text = e["error"].as_str().unwrap();
        assert!(text.contains(says), "{path}: {text}");
    }
    // Wrong method: 405 in the same shape.
    let r = api
        .http
        .post(api.url("/api/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], 405);
    // A huge body: 413 on its declared length, before any of it is read.
    // Only the head is sent (an HTTP client writing the whole body could
    // see its write fail when the server answers and closes first).
    let addr = api.server.api_addr.expect("the API is bound").to_string();
    let declared = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        mailfault::api::MAX_BODY + 1
    );
    let (status, head, json) = tokio::task::spawn_blocking(move || {
        http_head_only(&addr, "DELETE", "/api/v1/messages", &declared)
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    assert_eq!(status, 413);
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap()["status"], 413);
    // A body that is not JSON: 415; JSON that does not parse: 400; JSON
    // of the wrong shape: 422.
    for (ctype, body, status) in [
        ("text/plain", r#"{"ids":[]}"#, 415),
        ("application/json", "{nope", 400),
        ("application/json", r#"{"ids": 3}"#, 422),
        ("application/json", r#"{"ids": ["../x"]}"#, 400),
    ] {
        let r = api
            .http
            .delete(api.url("/api/v1/messages"))
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{ctype} {body}");
        // The body may be unread: the connection is not offered for reuse.
        assert_eq!(r.headers()["connection"], "close", "{ctype} {body}");
        assert_eq!(r.json::<Value>().await.unwrap()["status"], status);
    }
}

#[tokio::test]
async fn a_token_guards_everything_but_liveness() {
    let api = Api::start(Setup {
        token: Some("s3cret"),
        ..Setup::default()
    })
    .await;
    for path in [
        "/api/v1/health",
        "/api/v1/messages",
        "/metrics",
        "/api/v1/events",
        "/api/v1/changes",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(r.json::<Value>().await.unwrap()["status"], 401);
        let wrong = api
            .http
            .get(api.url(path))
            .bearer_auth("s3cre")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let ok = api
        .http
        .get(api.url("/api/v1/health"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(api.get("/livez").await.status(), StatusCode::OK);
    assert_eq!(api.get("/readyz").await.status(), StatusCode::OK);
}

#[test]
fn a_non_loopback_api_without_a_token_is_refused() {
    // Checked before anything binds: this test listens nowhere.
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--api", "0.0.0.0:0"])
        .env_remove("MAILFAULT_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve the API on 0.0.0.0:0") && err.contains("--api-token"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    // With a token the check passes (not bound here).
    let mut opts = ApiOptions::new("0.0.0.0:0".parse().unwrap());
    assert!(mailfault::api::check_exposure(&opts).is_err());
    opts.token = Some("t".into());
    assert!(mailfault::api::check_exposure(&opts).is_ok());
    opts.addr = "[::1]:0".parse().unwrap();
    opts.token = None;
    assert!(mailfault::api::check_exposure(&opts).is_ok());
}

/// `serve` prints the API's address after the SMTP listeners, for CI to
/// read; /readyz answers there.
#[test]
fn serve_prints_the_api_address() {
    use std::io::BufRead;
    let dir = tmp("serve");
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--store",
        ])
        .arg(dir.join("store"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = vec![];
    for _ in 0..2 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l.trim_end().to_string());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines[0].starts_with("listening smtp://127.0.0.1:"),
        "{lines:?}"
    );
    let api = lines[1]
        .strip_prefix("listening http://")
        .and_then(|r| r.strip_suffix(" api"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let addr: std::net::SocketAddr = api.parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert!(dir.join("store").is_dir());
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/openapi.yaml against the live server, with schemathesis: every
/// documented operation, status, content type, header and body schema,
/// bad input rejected, good input accepted, deleted messages gone, and the
/// token enforced (`ignored_auth`). `/api/v1/events` and `/api/v1/changes`
/// are left out: a stream that never ends cannot be read whole (each has
/// its own test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_matches_the_live_server() {
    if !capable(
        "st --version",
        "schemathesis not installed (pip install schemathesis)",
    ) {
        return;
    }
    let api = Api::start(Setup {
        token: Some("schema-token"),
        ..Setup::default()
    })
    .await;
    api.send("schema@example.test", "for the schema", "hello\r\n")
        .await;
    raw_send(&api.server, "other@example.test", "x\r\n").await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tmp("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = std::process::Command::new("st");
    cmd.current_dir(&work)
        .arg("--config-file")
        .arg(root.join("tests/schemathesis.toml"))
        .arg("run")
        .arg(root.join("docs/openapi.yaml"))
        .args(["--url", &api.base])
        .args(["-H", "Authorization: Bearer schema-token"])
        .args(["--checks", "all"])
        .args(["--max-examples", "20"])
        .args(["--request-timeout", "10"])
        .args(["--exclude-path", "/api/v1/events"])
        .args(["--exclude-path", "/api/v1/changes"])
        .args(["--seed", "1", "--generation-database", "none", "--no-color"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    assert!(text.contains("21 selected / 23 total"), "{text}");
    let _ = std::fs::remove_dir_all(&work);
}
