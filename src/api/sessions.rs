//! Sessions (from the events kept in memory): a list with filters, paging
//! and wait-for; one session's transcript, each reply with the rule that
//! decided it; the live transcript of every session as server-sent
//! events; and the change feed, which says only when the counts moved.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use super::live::{ChangeFeed, Feed, Shared, Want};
use super::wait::{self, Changes, Listing, Paging};
use super::ApiState;
use crate::capture::{Event, EventKind, EVENT_TYPES};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/sessions", get(list))
        .route("/api/v1/sessions/{id}", get(one))
        .route("/api/v1/events", get(events))
        .route("/api/v1/changes", get(changes))
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
            listener: ev.listener.to_string(),
            scenario: ev.scenario.to_string(),
            client: client.to_string(),
            started: ev.ts.to_string(),
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
                self.ended = Some(ev.ts.to_string());
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
        paging.listing(all)
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
    /// Only these types, comma-separated (`connect,transaction,close`).
    types: Option<String>,
}

/// The event types a `types=` parameter names, or a 400 naming the valid
/// ones.
fn event_types(list: &str) -> ApiResult<Vec<&'static str>> {
    list.split(',')
        .map(str::trim)
        .map(|t| {
            EVENT_TYPES
                .iter()
                .copied()
                .find(|k| *k == t)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown event type {t:?} in types: one of {}",
                        EVENT_TYPES.join(", ")
                    ))
                })
        })
        .collect()
}

/// The live transcript: each event as one SSE `data:` line (the JSON of the
/// events file), written in batches every [`super::live::GATHER`] at most.
/// A reader too slow to keep up gets a `lagged` event saying how many it
/// missed, then carries on. Ends when the server stops. Streams of every
/// session share one encoding (see `live.rs`); `session=N` and `types=`
/// pick events, for a stream of its own.
///
/// The stream is written by hand rather than with axum's `Sse`, which
/// frames and hands over each event on its own: with a busy server and a
/// tab open, that per-event work was most of what the stream cost SMTP.
async fn events(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    use futures_util::stream::unfold;
    let want = Want {
        session: q.session,
        types: q.types.as_deref().map(event_types).transpose()?,
    };
    let chunks = match want {
        Want {
            session: None,
            types: None,
        } => unfold(s.hub.subscribe(&s.capture), Shared::next).boxed(),
        want => unfold(Feed::new(&s.capture, want), Feed::next).boxed(),
    };
    Ok(event_stream(chunks, &s.shutdown))
}

/// The change feed: `{"sessions":N,"closed":N,"messages":N,"attempts":N,
/// "store":N}` at once, then whenever a count moved, looked at every
/// [`super::live::GLANCE`]. What the web UI listens to: it re-reads a list
/// when told something changed, and costs the sessions nothing.
async fn changes(State(s): State<ApiState>) -> Response {
    use futures_util::stream::unfold;
    let feed = unfold(ChangeFeed::new(s.capture.clone()), ChangeFeed::next).boxed();
    event_stream(feed, &s.shutdown)
}

/// A `text/event-stream` response of `chunks`, ended when the server stops.
fn event_stream(chunks: BoxStream<'static, Bytes>, shutdown: &CancellationToken) -> Response {
    let shutdown = shutdown.clone();
    let chunks = chunks.take_until(async move { shutdown.cancelled().await });
    let body = Body::from_stream(chunks.map(Ok::<_, Infallible>));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
