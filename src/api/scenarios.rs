//! Steering scenarios while the server runs: show one with its source
//! text, put one (a new name binds a fresh loopback port; an existing one
//! is replaced atomically), delete one (its port closes), prepend a rule,
//! reset counters. The work is done by `server::runtime`; this file turns
//! HTTP into its calls and its errors into JSON.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::{ApiError, ApiJson, ApiPath, ApiResult, ApiState, TomlBody};
use crate::server::{Runtime, RuntimeError, ScenarioInfo};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/v1/scenarios/{name}",
            get(show).put(put).delete(delete),
        )
        .route("/api/v1/scenarios/{name}/rules", post(prepend))
        .route("/api/v1/scenarios/{name}/reset", post(reset_one))
        .route("/api/v1/reset", post(reset_all))
}

/// One position of an invalid scenario or rule.
#[derive(Serialize)]
struct DiagnosticView {
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    col: Option<usize>,
    message: String,
}

/// A refused change: `{"error", "status"}`, and for an invalid scenario
/// every problem the loader found, not only the first.
#[derive(Serialize)]
struct FailureBody {
    error: String,
    status: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    diagnostics: Vec<DiagnosticView>,
}

struct Failure(RuntimeError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let diagnostics: Vec<DiagnosticView> = self
            .0
            .diagnostics()
            .iter()
            .map(|d| DiagnosticView {
                line: d.position.map(|p| p.0),
                col: d.position.map(|p| p.1),
                message: d.message.clone(),
            })
            .collect();
        let error = match &self.0 {
            RuntimeError::Invalid(e) => e
                .diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        };
        let body = FailureBody {
            error,
            status: status.as_u16(),
            diagnostics,
        };
        (status, Json(body)).into_response()
    }
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure(e)
    }
}

type Steered<T> = Result<T, Failure>;

/// A scenario and the text it was loaded from.
#[derive(Serialize)]
struct ScenarioText {
    #[serde(flatten)]
    info: ScenarioInfo,
    /// None for a scenario given already parsed (in-process servers).
    toml: Option<Arc<str>>,
    /// Rules put before `toml`'s at run time (`POST .../rules`), in the
    /// order they are tried, each as TOML.
    prepended: Vec<Arc<str>>,
}

fn runtime(s: &ApiState) -> ApiResult<Arc<Runtime>> {
    s.runtime.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this API serves no scenarios",
        )
    })
}

/// A name from the path: a bad one is a 400 before anything is looked up
/// (it can never name a file or another route).
fn checked(name: &str) -> Steered<()> {
    if crate::server::runtime::valid_name(name) {
        Ok(())
    } else {
        Err(RuntimeError::BadName(name.into()).into())
    }
}

async fn show(State(s): State<ApiState>, ApiPath(name): ApiPath<String>) -> Response {
    let rt = match runtime(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let found = checked(&name).and_then(|()| {
        let info = rt.get(&name)?;
        let toml = rt.text(&name)?;
        let prepended = rt.prepended(&name)?;
        Ok(ScenarioText {
            info,
            toml,
            prepended,
        })
    });
    match found {
        Ok(v) => Json(v).into_response(),
        Err(f) => f.into_response(),
    }
}

/// 201 for a new name (its port is in the answer), 200 for a replacement.
async fn put(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    TomlBody(text): TomlBody,
) -> Response {
    let rt = match runtime(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let existed = rt.get(&name).is_ok();
    match checked(&name).and_then(|()| Ok(rt.put(&name, &text)?)) {
        Ok(info) if existed => (StatusCode::OK, Json(info)).into_response(),
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(f) => f.into_response(),
    }
}

/// 204 once the port is closed: a connection made after it is refused.
async fn delete(State(s): State<ApiState>, ApiPath(name): ApiPath<String>) -> Response {
    let rt = match runtime(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(f) = checked(&name) {
        return f.into_response();
    }
    match rt.delete(&name).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => Failure(e).into_response(),
    }
}

/// One rule (JSON with the TOML field names) put first; 201 with the
/// scenario. Counters of the rules already there are kept.
async fn prepend(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(rule): ApiJson<serde_json::Value>,
) -> Response {
    let rt = match runtime(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match checked(&name).and_then(|()| Ok(rt.prepend_json(&name, &rule)?)) {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(f) => f.into_response(),
    }
}

/// Fresh counters and `during` windows for one scenario.
async fn reset_one(State(s): State<ApiState>, ApiPath(name): ApiPath<String>) -> Response {
    let rt = match runtime(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match checked(&name).and_then(|()| Ok(rt.reset(&name)?)) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => f.into_response(),
    }
}

/// Fresh counters and windows everywhere; no captured messages or events.
async fn reset_all(State(s): State<ApiState>) -> Response {
    let rt = match runtime(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match rt.reset_all() {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => Failure(e).into_response(),
    }
}
