//! The HTTP API (axum): health, messages, sessions and their transcripts,
//! deliveries, the report, live events (SSE) and Prometheus metrics. JSON
//! under `/api/v1`; errors are `{"error": "...", "status": 4xx}`.
//!
//! One state ([`ApiState`], cheap to clone: `Arc` handles) and one file of
//! routes per subject, each with a `routes()` merged in [`router`]. The API
//! reads `capture/`, `report/` and the listeners of `server/`; the server
//! only starts it ([`spawn`]).
//!
//! It binds loopback by default. Any other address needs a token
//! ([`check_exposure`]): every message and transcript is readable here.

mod error;
mod explain;
mod health;
mod listeners;
mod live;
mod messages;
mod metrics;
mod report;
mod scenarios;
mod sessions;
pub mod ui;
mod wait;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{check_id, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, TomlBody};
pub use wait::{Listing, Paging, MAX_WAIT};

use crate::capture::Capture;
use crate::server::Slot;

/// Where the API listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8025";
/// The largest request body. Scenarios and rules are small; anything
/// larger is refused with 413 before it is read.
pub const MAX_BODY: usize = 1 << 20;

/// How to run the API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub addr: SocketAddr,
    /// Every route but `/livez` and `/readyz` then needs
    /// `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// The address is the default one, not asked for: when it is taken
    /// (another mailfault runs), the server runs without an API and says
    /// so, instead of failing.
    pub optional: bool,
}

impl ApiOptions {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            token: None,
            optional: false,
        }
    }
}

/// Refuses an API reachable from other hosts without a token: it would
/// hand every captured message to anyone on the network.
pub fn check_exposure(opts: &ApiOptions) -> anyhow::Result<()> {
    if opts.addr.ip().is_loopback() || opts.token.as_deref().is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve the API on {}: it is not a loopback address and there is no --api-token \
         (anyone who reaches it could read every message); set --api-token TOKEN or listen on 127.0.0.1",
        opts.addr
    )
}

/// A listener as the API shows it.
#[derive(Clone)]
pub struct ListenerView {
    pub addr: SocketAddr,
    pub slot: Arc<Slot>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub capture: Arc<Capture>,
    /// The listeners, filled in once they are bound.
    pub listeners: Arc<RwLock<Vec<ListenerView>>>,
    /// True once every listener is bound, false again when the server
    /// stops accepting.
    pub ready: Arc<AtomicBool>,
    pub token: Option<Arc<str>>,
    /// Cancelled when the server stops: long requests (wait, SSE) end.
    pub shutdown: CancellationToken,
    pub started: SystemTime,
    /// The server's scenarios, to list and steer them (`/api/v1/scenarios`).
    /// None for an API without a server (the scenario routes answer 503).
    pub runtime: Option<Arc<crate::server::Runtime>>,
    /// The encoding shared by every open event stream.
    pub hub: Arc<live::Hub>,
}

impl ApiState {
    pub fn new(capture: Arc<Capture>, token: Option<String>, shutdown: CancellationToken) -> Self {
        Self {
            capture,
            listeners: Arc::new(RwLock::new(vec![])),
            ready: Arc::new(AtomicBool::new(false)),
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            shutdown,
            started: SystemTime::now(),
            runtime: None,
            hub: Arc::default(),
        }
    }

    /// The API steers these scenarios.
    pub fn with_runtime(mut self, runtime: Arc<crate::server::Runtime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    pub fn listeners(&self) -> Vec<ListenerView> {
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_listeners(&self, views: Vec<ListenerView>) {
        *self.listeners.write().unwrap_or_else(|p| p.into_inner()) = views;
        self.ready.store(true, Ordering::Release);
    }

    /// The `[[expect]]` of every scenario served, for the report.
    pub fn expects(&self) -> Vec<crate::scenario::model::Expect> {
        self.listeners()
            .iter()
            .flat_map(|l| l.slot.current().engine.scenario.expects.clone())
            .collect()
    }
}

/// Every route. `/livez` and `/readyz` are open; the rest needs the token
/// when there is one.
pub fn router(state: ApiState) -> Router {
    let guarded = Router::new()
        .merge(health::routes())
        .merge(listeners::routes())
        .merge(scenarios::routes())
        .merge(explain::routes())
        .merge(messages::routes())
        .merge(sessions::routes())
        .merge(report::routes())
        .merge(metrics::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(health::open_routes())
        .merge(ui::routes())
        .merge(guarded)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(limit_body))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

/// 401 unless the request carries the token (compared in constant time).
async fn authorize(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // RFC 9110 §11.1: the scheme name is case-insensitive.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, t)| t.trim());
    if same(given.as_bytes(), token.as_bytes()) {
        return next.run(req).await;
    }
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "this API needs Authorization: Bearer TOKEN (the --api-token of the server)",
    )
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 413 for a declared body over [`MAX_BODY`], before reading it; a body
/// without a length is cut at the limit by the extractors. An error answer
/// to a request with a body says `Connection: close`: the body may be
/// unread (a wrong content type is refused before it is read), so the
/// connection cannot carry another request, and a client that pooled it
/// would send its next request into a closing socket (RFC 9112 §9.6: a
/// server that closes says so).
async fn limit_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_body =
        declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    let mut r = if declared.is_some_and(|n| n > MAX_BODY as u64) {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY} bytes"),
        )
        .into_response()
    } else {
        next.run(req).await
    };
    if has_body && (r.status().is_client_error() || r.status().is_server_error()) {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Errors made by axum itself (405, a body it could not read) come without
/// a JSON body: give them one, so every error has the same shape.
async fn json_errors(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut out = ApiError::new(status, reason).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = r.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// Binds the API's address. With [`ApiOptions::optional`], a taken address
/// is a warning and no API (`Ok(None)`).
pub async fn bind(opts: &ApiOptions) -> anyhow::Result<Option<TcpListener>> {
    check_exposure(opts)?;
    match TcpListener::bind(opts.addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if opts.optional && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(
                addr = %opts.addr,
                "the API's default address is taken (another mailfault?); running without the API: \
                 give --api 127.0.0.1:0 for a free port, or --no-api"
            );
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {} for the API", opts.addr)),
    }
}

/// Serves the API on `listener` until the server stops, from a thread of
/// its own: writing to HTTP clients (an open event stream carries every
/// event) never takes the time of the threads that serve SMTP
/// (docs/performance.md, the event-stream section). The server's tracker
/// waits for it to finish.
pub fn spawn(listener: TcpListener, state: ApiState, tracker: &TaskTracker) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let listener = listener.into_std()?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("mailfault-api".into())
        .spawn(move || {
            rt.block_on(async move {
                let served = match TcpListener::from_std(listener) {
                    Ok(l) => {
                        axum::serve(l, router(state))
                            .with_graceful_shutdown(async move { shutdown.cancelled().await })
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::warn!("the API stopped: {e}");
                }
            });
            let _ = done.send(());
        })?;
    tracker.spawn(async move {
        let _ = finished.await;
    });
    Ok(())
}
