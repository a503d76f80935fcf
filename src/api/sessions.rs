//! Sessions (from the events kept in memory): a list with filters, paging
//! and wait-for; one session's transcript, each reply with the rule that
//! decided it; and the live transcript of every session as server-sent
//! events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use super::wait::{self, Changes, Listing, Paging};
use super::ApiState;
use crate::capture::{Event, EventKind};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/sessions", get(list))
        .route("/api/v1/sessions/{id}", get(one))
        .route("/api/v1/events", get(events))
}

/// What the list shows of a session.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: u64,
    pub listener: String,
    pub scenario: String,
    pub client: String,
    pub started: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// `client` or `server`, once closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    pub tls: bool,
    pub commands: u64,
    pub messages: u64,
    /// The last reply sent, first line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
}

impl Summary {
    fn start(ev: &Event, client: &str) -> Self {
        Self {
            id: ev.session,
            listener: ev.listener.clone(),
            scenario: ev.scenario.clone(),
            client: client.to_string(),
            started: ev.ts.clone(),
            ended: None,
            closed_by: None,
            reason: None,
            helo: None,
            tls: false,
            commands: 0,
            messages: 0,
            last_reply: None,
        }
    }

    fn fold(&mut self, ev: &Event) {
        match &ev.kind {
            EventKind::Command { .. } => self.commands += 1,
            EventKind::Reply { text, .. } => {
                self.last_reply = text.lines().next().map(str::to_string);
            }
            EventKind::Message { .. } => self.messages += 1,
            EventKind::Greeted { helo, .. } => self.helo = Some(helo.clone()),
            EventKind::Tls { .. } => self.tls = true,
            EventKind::Close { by, reason } => {
                self.ended = Some(ev.ts.clone());
                self.closed_by = Some(by.clone());
                self.reason = Some(reason.clone());
            }
            _ => {}
        }
    }
}

/// Every session whose start is still in memory, oldest first.
fn summaries(events: &[Arc<Event>]) -> Vec<Summary> {
    let mut order = vec![];
    let mut by_id: HashMap<u64, Summary> = HashMap::new();
    for ev in events {
        if let EventKind::Connect { client } = &ev.kind {
            order.push(ev.session);
            by_id.insert(ev.session, Summary::start(ev, client));
        } else if let Some(s) = by_id.get_mut(&ev.session) {
            s.fold(ev);
        }
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    listener: Option<String>,
    scenario: Option<String>,
    /// Substring of the client's `IP:port`.
    client: Option<String>,
    /// true: only open sessions; false: only closed ones.
    open: Option<bool>,
    limit: Option<usize>,
    offset: Option<usize>,
    wait: Option<String>,
}

impl ListQuery {
    fn matches(&self, s: &Summary) -> bool {
        self.listener.as_ref().is_none_or(|l| s.listener == *l)
            && self.scenario.as_ref().is_none_or(|n| s.scenario == *n)
            && self
                .client
                .as_ref()
                .is_none_or(|c| s.client.contains(c.as_str()))
            && self.open.is_none_or(|o| s.ended.is_none() == o)
    }
}

/// Sessions, newest first.
async fn list(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<Summary>>> {
    let paging = Paging::new(q.limit, q.offset)?;
    let wait = wait::parse_wait(q.wait.as_deref())?;
    let changes = Changes::Events(s.capture.live());
    let look = || {
        let mut all: Vec<Summary> = summaries(&s.capture.shared_events())
            .into_iter()
            .filter(|x| q.matches(x))
            .collect();
        all.reverse();
        Listing {
            total: all.len(),
            offset: paging.offset,
            limit: paging.limit,
            items: paging.page(&all),
        }
    };
    let found = |l: &Listing<Summary>| l.total > 0;
    wait::until(wait, changes, &s.shutdown, wait::SETTLE, look, found)
        .await
        .map(Json)
}

/// One session: its summary and every event kept, in order.
#[derive(Serialize)]
struct Transcript {
    session: Summary,
    events: Vec<Arc<Event>>,
}

async fn one(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Transcript>> {
    let n: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(format!("bad session id {id:?}: a session id is a number"))
    })?;
    let events: Vec<Arc<Event>> = s
        .capture
        .shared_events()
        .into_iter()
        .filter(|e| e.session == n && n != 0)
        .collect();
    let session = summaries(&events)
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("no session {n} in memory")))?;
    Ok(Json(Transcript { session, events }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Only this session's events.
    session: Option<u64>,
}

/// How long the stream gathers events before it writes them. A reader sees
/// each event within this; a busy server wakes each reader, and writes to
/// it, once per period instead of once per event, which is what keeps an
/// open stream from slowing SMTP (docs/performance.md).
pub const GATHER: Duration = Duration::from_millis(25);

/// A quiet stream sends a comment this often, so proxies and browsers keep
/// it open (the interval axum's SSE uses too).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The keep-alive: a comment line, which readers ignore (WHATWG HTML
/// §9.2.6, lines starting with a colon).
const COMMENT: &[u8] = b":\n\n";

/// A subscriber's side of the live events.
struct Feed {
    rx: broadcast::Receiver<Arc<Event>>,
    session: Option<u64>,
}

impl Feed {
    /// Appends one event in the event-stream format: its JSON (one line) as
    /// a `data:` field, then the blank line that dispatches it (WHATWG HTML
    /// §9.2.6). Written straight into the batch: no frame per event.
    fn push(&self, out: &mut Vec<u8>, item: Result<Arc<Event>, u64>) {
        match item {
            Ok(ev) if self.session.is_none_or(|n| n == ev.session) => {
                out.extend_from_slice(b"data: ");
                ev.write_json(out);
                out.extend_from_slice(b"\n\n");
            }
            Ok(_) => {}
            Err(missed) => {
                out.extend_from_slice(format!("event: lagged\ndata: {missed}\n\n").as_bytes())
            }
        }
    }

    /// The next batch: waits for an event, gathers for [`GATHER`], then
    /// takes everything that came meanwhile, as one body chunk (one write).
    /// A keep-alive comment after [`KEEP_ALIVE`] of quiet. None once no more
    /// can come.
    async fn next(mut self) -> Option<(Bytes, Feed)> {
        let mut out = vec![];
        match tokio::time::timeout(KEEP_ALIVE, self.rx.recv()).await {
            Err(_quiet) => return Some((Bytes::from_static(COMMENT), self)),
            Ok(Ok(ev)) => self.push(&mut out, Ok(ev)),
            Ok(Err(RecvError::Lagged(n))) => self.push(&mut out, Err(n)),
            Ok(Err(RecvError::Closed)) => return None,
        }
        tokio::time::sleep(GATHER).await;
        // At most one backlog's worth: a reader never loops forever
        // behind a server that produces faster than it drains.
        for _ in 0..crate::capture::LIVE_BACKLOG {
            match self.rx.try_recv() {
                Ok(ev) => self.push(&mut out, Ok(ev)),
                Err(TryRecvError::Lagged(n)) => self.push(&mut out, Err(n)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        Some((Bytes::from(out), self))
    }
}

/// The live transcript: each event as one SSE `data:` line (the JSON of the
/// events file), written in batches every [`GATHER`] at most. A reader too
/// slow to keep up gets a `lagged` event saying how many it missed, then
/// carries on. Ends when the server stops.
///
/// The stream is written by hand rather than with axum's `Sse`, which
/// frames and hands over each event on its own: with a busy server and a
/// tab open, that per-event work was most of what the stream cost SMTP.
async fn events(State(s): State<ApiState>, ApiQuery(q): ApiQuery<EventsQuery>) -> Response {
    let feed = Feed {
        rx: s.capture.live(),
        session: q.session,
    };
    let batches = futures_util::stream::unfold(feed, Feed::next);
    let shutdown = s.shutdown.clone();
    let stream =
        futures_util::StreamExt::take_until(batches, async move { shutdown.cancelled().await });
    let body = Body::from_stream(futures_util::StreamExt::map(stream, Ok::<_, Infallible>));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Capture;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_keeps_alive_then_batches_events() {
        let capture = Capture::in_memory();
        let feed = Feed {
            rx: capture.live(),
            session: Some(3),
        };
        let (chunk, feed) = feed.next().await.unwrap();
        assert_eq!(&chunk[..], COMMENT);
        let connect = |n: u64| EventKind::Connect {
            client: format!("192.0.2.{n}:25"),
        };
        capture.record("l", "s", 3, connect(1));
        capture.record("l", "s", 4, connect(2));
        capture.record("l", "s", 3, connect(3));
        let (chunk, _) = feed.next().await.unwrap();
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 2, "{text}");
        assert!(events[0].starts_with("data: {\"ts\":"), "{text}");
        assert!(events[0].ends_with(r#""session":3,"type":"connect","client":"192.0.2.1:25"}"#));
        assert!(events[1].ends_with(r#""client":"192.0.2.3:25"}"#), "{text}");
    }
}
