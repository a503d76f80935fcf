//! `GET /api/v1/scenarios`: every scenario served now, by name: the
//! listeners given at start and those put over the API (a hot reload or a
//! put shows at once).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::ApiState;
use crate::server::ScenarioInfo;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/scenarios", get(list))
}

async fn list(State(s): State<ApiState>) -> Json<Vec<ScenarioInfo>> {
    Json(s.runtime.as_ref().map(|r| r.list()).unwrap_or_default())
}
