//! Steering scenarios over HTTP while the server runs: put, replace,
//! delete, prepend a rule, reset, explain. Real HTTP (reqwest) against the
//! in-process server's API ([`TestServer::api_url`]), real SMTP (lettre and
//! the tests' raw client) against the ports the API hands out.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Client;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use mailfault::testing::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

const REFUSE_NOBODY: &str = r#"
[[rule]]
on = "rcpt"
when.rcpt = "nobody@*"
reply = "550 5.1.1 No such user here"
"#;

/// Magic recipients on: `tempfail2@` fails twice per sender/recipient.
const MAGIC: &str = "[server]\nmagic_recipients = true\n";

struct Api {
    _server: TestServer,
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Self {
        let server = TestServer::start("").await.unwrap();
        let base = server.api_url().expect("TestServer starts the API");
        Self {
            _server: server,
            base,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// PUT a scenario; the status and the JSON answer.
    async fn put(&self, name: &str, toml: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .put(self.url(&format!("/api/v1/scenarios/{name}")))
            .header("content-type", "application/toml")
            .body(toml.to_string())
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    /// PUT a new scenario: 201 and its SMTP address.
    async fn create(&self, name: &str, toml: &str) -> SocketAddr {
        let (status, body) = self.put(name, toml).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["name"], name);
        body["addr"].as_str().unwrap().parse().unwrap()
    }

    async fn post(&self, path: &str, ctype: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", ctype)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn delete(&self, path: &str) -> StatusCode {
        let r = self.http.delete(self.url(path)).send().await.unwrap();
        r.status()
    }
}

/// The reply to RCPT TO:<to> in a fresh session on `addr`.
async fn rcpt_reply(addr: SocketAddr, to: &str) -> String {
    let mut c = Client::connect_addr(addr).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO client.test", "250").await;
    c.expect("MAIL FROM:<app@example.test>", "250 ").await;
    let got = c.cmd(&format!("RCPT TO:<{to}>")).await;
    c.cmd("QUIT").await;
    got
}

/// The final reply to one whole message to `to` on `addr`.
async fn message_reply(addr: SocketAddr, to: &str) -> String {
    let mut c = Client::connect_addr(addr).await;
    c.envelope("app@example.test", to).await;
    let got = c.data("Subject: hi\r\n\r\nhello\r\n").await;
    c.cmd("QUIT").await;
    got
}

fn code(reply: &str) -> &str {
    &reply[..3]
}

#[tokio::test]
async fn put_new_replace_show_and_delete() {
    let api = Api::start().await;
    let addr = api.create("refuse", REFUSE_NOBODY).await;
    assert!(addr.ip().is_loopback());
    assert_eq!(
        rcpt_reply(addr, "nobody@example.test").await,
        "550 5.1.1 No such user here"
    );
    assert_eq!(code(&rcpt_reply(addr, "ann@example.test").await), "250");

    // Listed (with the test's own scenario) and shown with its text.
    let (_, list) = api.get("/api/v1/scenarios").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["refuse", "test"]);
    let (status, one) = api.get("/api/v1/scenarios/refuse").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["toml"], REFUSE_NOBODY);
    assert_eq!(one["port"], addr.port());
    assert_eq!(one["rules"], 1);
    let first_hash = one["hash"].as_str().unwrap().to_string();

    // Replaced on the same port: 200, and the next session hears the new reply.
    let replaced = REFUSE_NOBODY.replace("No such user here", "Gone away");
    let (status, body) = api.put("refuse", &replaced).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["port"], addr.port());
    assert_ne!(body["hash"], first_hash.as_str());
    assert_eq!(
        rcpt_reply(addr, "nobody@example.test").await,
        "550 5.1.1 Gone away"
    );

    // Deleted: the port refuses connections at once; a second delete is 404.
    assert_eq!(
        api.delete("/api/v1/scenarios/refuse").await,
        StatusCode::NO_CONTENT
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert_eq!(
        api.delete("/api/v1/scenarios/refuse").await,
        StatusCode::NOT_FOUND
    );
    let (status, body) = api.get("/api/v1/scenarios/refuse").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no scenario named \"refuse\"");
}

#[tokio::test]
async fn a_bad_scenario_gets_422_with_every_position() {
    let api = Api::start().await;
    let bad = "[[rule]]\non = \"rcpt\"\nreply = \"999 bad\"\nbogus = 1\n\n[[rule]]\non = \"nowhere\"\nreply = \"250 ok\"\n";
    let (status, body) = api.put("broken", bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["status"], 422);
    let at: Vec<(u64, u64)> = body["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["col"].as_u64().unwrap()))
        .collect();
    assert_eq!(at, [(3, 9), (4, 1), (7, 6)]);
    assert!(body["diagnostics"][0]["message"]
        .as_str()
        .unwrap()
        .contains("reply code 999 is outside 200-599"));
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("broken:3:9: bad reply"));
    // Nothing was bound.
    let (status, _) = api.get("/api/v1/scenarios/broken").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_prepended_rule_fails_the_next_three_then_accepts() {
    let api = Api::start().await;
    let addr = api.create("flaky", "").await;
    let rule = json!({
        "on": "rcpt",
        "when": {"rcpt": "x@example.test"},
        "reply": "450 4.2.0 Try again later",
        "times": 3
    });
    let r = api
        .post(
            "/api/v1/scenarios/flaky/rules",
            "application/json",
            &rule.to_string(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["name"], "flaky");
    assert_eq!(body["rules"], 1);
    let mut codes = vec![];
    for _ in 0..4 {
        codes.push(code(&rcpt_reply(addr, "x@example.test").await).to_string());
    }
    assert_eq!(codes, ["450", "450", "450", "250"]);
    // Another recipient was never concerned.
    assert_eq!(code(&rcpt_reply(addr, "y@example.test").await), "250");
    // The scenario shows the rule, as TOML, before its own text's.
    let (status, shown) = api.get("/api/v1/scenarios/flaky").await;
    assert_eq!(status, StatusCode::OK);
    let prepended = shown["prepended"].as_array().unwrap();
    assert_eq!(prepended.len(), 1, "{shown}");
    let text = prepended[0].as_str().unwrap();
    assert!(text.starts_with("[[rule]]\n"), "{text}");
    assert!(
        text.contains(r#"reply = "450 4.2.0 Try again later""#),
        "{text}"
    );
    assert!(text.contains("times = 3"), "{text}");

    // An invalid rule: 422 with its position in the rule written as TOML.
    let r = api
        .post(
            "/api/v1/scenarios/flaky/rules",
            "application/json",
            r#"{"on": "rcpt", "reply": "999 no"}"#,
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert!(body["diagnostics"][0]["message"]
        .as_str()
        .unwrap()
        .contains("reply code 999"));
    assert!(body["diagnostics"][0]["line"].as_u64().is_some());
    // Putting the scenario again starts over without it.
    api.put("flaky", "").await;
    let (_, shown) = api.get("/api/v1/scenarios/flaky").await;
    assert_eq!(shown["prepended"], json!([]));
    assert_eq!(code(&rcpt_reply(addr, "x@example.test").await), "250");
}

#[tokio::test]
async fn reset_starts_the_counters_over() {
    let api = Api::start().await;
    let addr = api.create("magic", MAGIC).await;
    let to = "tempfail2@example.test";
    let mut codes = vec![];
    for _ in 0..3 {
        codes.push(code(&message_reply(addr, to).await).to_string());
    }
    assert_eq!(codes, ["451", "451", "250"]);

    // One scenario's counters.
    let r = api
        .post("/api/v1/scenarios/magic/reset", "text/plain", "")
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(code(&message_reply(addr, to).await), "451");

    // Everything: counters, and the messages kept.
    let (_, before) = api.get("/api/v1/messages").await;
    assert!(before["total"].as_u64().unwrap() >= 1, "{before}");
    let r = api.post("/api/v1/reset", "text/plain", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, after) = api.get("/api/v1/messages").await;
    assert_eq!(after["total"], 0, "{after}");
    assert_eq!(code(&message_reply(addr, to).await), "451");
    assert_eq!(code(&message_reply(addr, to).await), "451");
    assert_eq!(code(&message_reply(addr, to).await), "250");

    let r = api
        .post("/api/v1/scenarios/nope/reset", "text/plain", "")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_scenarios_count_on_their_own() {
    let api = Api::start().await;
    let once = "[[rule]]\non = \"rcpt\"\nreply = \"451 4.3.0 Once\"\ntimes = 1\nkey = [\"rcpt\"]\n";
    let (a, b) = tokio::join!(api.create("par-a", once), api.create("par-b", once));
    assert_ne!(a.port(), b.port());
    let to = "same@example.test";
    // Each port fails once for the same recipient: the counters are apart.
    let (ra, rb) = tokio::join!(rcpt_reply(a, to), rcpt_reply(b, to));
    assert_eq!((code(&ra), code(&rb)), ("451", "451"));
    let (ra, rb) = tokio::join!(rcpt_reply(a, to), rcpt_reply(b, to));
    assert_eq!((code(&ra), code(&rb)), ("250", "250"));
}

#[tokio::test]
async fn wait_for_returns_as_lettre_delivers_to_a_put_port() {
    let api = Api::start().await;
    let addr = api.create("waited", "").await;
    let waiting = {
        let url = api.url("/api/v1/messages?rcpt=wanted@example.test&wait=5s");
        let http = api.http.clone();
        tokio::spawn(async move {
            let r = http.get(url).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(addr.port())
        .build();
    let mail = Message::builder()
        .from("app@example.test".parse().unwrap())
        .to("wanted@example.test".parse().unwrap())
        .subject("Welcome")
        .body(String::from("Hello.\r\n"))
        .unwrap();
    let sent = mailer.send(mail).await.unwrap();
    assert_eq!(sent.code().to_string(), "250");
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let m = &body["items"][0];
    assert_eq!(m["rcpts"][0], "wanted@example.test", "{body}");
    assert_eq!(m["listener"], addr.to_string(), "{body}");
    assert_eq!(m["scenario"], "waited", "{body}");
}

/// The CLI's JSON for the same input, to compare with the API's.
fn cli_json(args: &[&str]) -> Value {
    let (rc, out, err) = common::run(args);
    assert_eq!(rc, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn explain_a_reply_and_a_bounce() {
    let api = Api::start().await;
    let reply = "550 5.1.1 No such user";
    let r = api.post("/api/v1/explain", "text/plain", reply).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "reply");
    assert_eq!(body["explain"], cli_json(&["explain", "--json", reply]));

    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/bounces/samples/lhost-courier-01.eml"
    );
    let text = std::fs::read_to_string(sample).unwrap();
    let r = api.post("/api/v1/explain", "message/rfc822", &text).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "bounce");
    assert_eq!(
        body["failures"],
        cli_json(&["from-bounce", "--json", sample])
    );
    assert_eq!(
        body["failures"]["failures"][0]["recipient"],
        "kijitora@example.co.jp"
    );
    // The scenario it gives is one the server takes, and it reproduces the reply.
    let scenario = body["scenario"].as_str().unwrap();
    let addr = api.create("reproduced", scenario).await;
    let got = rcpt_reply(addr, "kijitora@example.co.jp").await;
    assert_eq!(code(&got), "550", "{got}\n{scenario}");

    // An ESP's JSON event and an MTA log are bounces too, read as the CLI reads them.
    for (file, ctype) in [
        ("esp/postmark.json", "application/json"),
        ("logs/exim.log", "text/plain"),
    ] {
        let path = format!("{}/tests/bounces/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let r = api.post("/api/v1/explain", ctype, &text).await;
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["kind"], "bounce", "{file}: {body}");
        assert_eq!(
            body["failures"],
            cli_json(&["from-bounce", "--json", &path]),
            "{file}"
        );
    }
    let r = api
        .post("/api/v1/explain?lang=xx", "text/plain", reply)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api
        .post("/api/v1/explain", "text/plain", "nothing to see here")
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().starts_with("neither"));
}

#[tokio::test]
async fn bad_input_gets_json_4xx() {
    let api = Api::start().await;
    // Names that are not names: 400 before anything is looked up.
    for name in ["a%2Fb", "a%20b", "%2E%2E%2Fetc", &"n".repeat(65), "%C3%A9"] {
        let (status, body) = api.put(name, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("bad scenario name"),
            "{body}"
        );
        let (status, _) = api.get(&format!("/api/v1/scenarios/{name}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
    }
    // Wrong content types: 415.
    let r = api
        .http
        .put(api.url("/api/v1/scenarios/x"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 415);
    let r = api
        .post("/api/v1/scenarios/test/rules", "application/toml", "on = 1")
        .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = api.post("/api/v1/explain", "image/png", "550 x").await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Huge bodies: 413, and nothing bound.
    let huge = "# x\n".repeat(300_000);
    let (status, body) = api.put("huge", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let r = api.post("/api/v1/explain", "text/plain", &huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Unknown scenarios: 404; a rule that is not an object: 422; bad JSON: 400.
    let r = api
        .post("/api/v1/scenarios/nope/rules", "application/json", "{}")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = api
        .post("/api/v1/scenarios/test/rules", "application/json", "[1]")
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = api
        .post("/api/v1/scenarios/test/rules", "application/json", "{")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 400);
}

#[tokio::test]
async fn a_start_listener_shows_its_file_and_can_be_replaced_by_name() {
    use mailfault::api::ApiOptions;
    use mailfault::server::{ListenerSpec, Options, Source};
    let dir = common::tmp("api-scenarios-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("shop.toml");
    std::fs::write(&file, REFUSE_NOBODY).unwrap();
    let mut opts = Options::new(vec![ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source: Source::File(file.clone()),
        tls: Default::default(),
    }]);
    opts.grace = Duration::from_millis(200);
    opts.watch = false;
    opts.api = Some(ApiOptions::new("127.0.0.1:0".parse().unwrap()));
    let server = TestServer::start_with(opts).await.unwrap();
    let base = server.api_url().expect("the API runs when asked for");
    let http = reqwest::Client::new();
    let one: Value = http
        .get(format!("{base}/api/v1/scenarios/shop"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["toml"], REFUSE_NOBODY, "{one}");
    assert_eq!(one["file"], file.display().to_string());
    assert_eq!(one["port"], server.addr().port());
    // Replaced by name: same port, the PUT body is its text now.
    let r = http
        .put(format!("{base}/api/v1/scenarios/shop"))
        .header("content-type", "text/plain")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        code(&rcpt_reply(server.addr(), "nobody@example.test").await),
        "250"
    );
    let one: Value = http
        .get(format!("{base}/api/v1/scenarios/shop"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["toml"], "");
    assert!(one.get("file").is_none(), "{one}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
