//! `GET /api/v1/scenarios`: the scenario each listener serves now (a hot
//! reload shows at once).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::ApiState;
use crate::server::Source;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/scenarios", get(list))
}

/// One listener and its scenario.
#[derive(Serialize)]
pub struct ScenarioView {
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// `smtp`, or `smtps` for implicit TLS.
    pub scheme: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub rules: usize,
    /// STARTTLS or implicit TLS is on.
    pub tls: bool,
}

async fn list(State(s): State<ApiState>) -> Json<Vec<ScenarioView>> {
    let views = s
        .listeners()
        .iter()
        .map(|l| {
            let active = l.slot.current();
            ScenarioView {
                name: active.scenario_name().to_string(),
                addr: l.addr.to_string(),
                port: l.addr.port(),
                scheme: if l.slot.implicit_tls() {
                    "smtps"
                } else {
                    "smtp"
                },
                file: match &l.slot.source {
                    Source::File(p) => Some(p.display().to_string()),
                    _ => None,
                },
                rules: active.engine.scenario.rules.len(),
                tls: active.tls.is_some(),
            }
        })
        .collect();
    Json(views)
}
