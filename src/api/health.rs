//! `/livez`, `/readyz` (open, for container checks and test harnesses)
//! and `/api/v1/health`.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, ApiResult, ApiState};

pub fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
}

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/health", get(health))
}

/// The process answers.
async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Every listener is bound and the server is not stopping: 200, else 503.
async fn readyz(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    if s.ready.load(Ordering::Acquire) && !s.shutdown.is_cancelled() {
        Ok(Json(json!({"status": "ready"})))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the listeners are not bound yet, or the server is stopping",
        ))
    }
}

async fn health(State(s): State<ApiState>) -> Json<Value> {
    let (messages, bytes) = s.capture.store().size();
    let uptime = SystemTime::now()
        .duration_since(s.started)
        .unwrap_or_default()
        .as_secs();
    let listeners: Vec<String> = s.listeners().iter().map(|l| l.addr.to_string()).collect();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": uptime,
        "ready": s.ready.load(Ordering::Acquire) && !s.shutdown.is_cancelled(),
        "listeners": listeners,
        "store": {
            "messages": messages,
            "bytes": bytes,
            "max_bytes": s.capture.store().max_bytes(),
            "evicted": s.capture.store().evicted(),
            "dir": s.capture.store().dir().map(|d| d.display().to_string()),
        },
        "events": {
            "kept": s.capture.events_kept(),
            "file_dropped": s.capture.events_dropped(),
        },
    }))
}
