//! Deliveries (with filters, paging and wait-for) and the whole sender
//! report, built with `report::build` from the events kept in memory: the
//! same JSON as `mailfault report --json`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::error::{ApiError, ApiQuery, ApiResult};
use super::wait::{self, Changes, Listing, Paging, SETTLE};
use super::ApiState;
use crate::report::{Delivery, Outcome, Report};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/deliveries", get(deliveries))
        .route("/api/v1/report", get(report))
}

fn build(s: &ApiState) -> Report {
    let events = s.capture.events();
    crate::report::build(&events, &s.expects(), 0)
}

async fn report(State(s): State<ApiState>) -> Json<Report> {
    Json(build(&s))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    /// Substring of MAIL FROM, case-insensitive.
    from: Option<String>,
    /// Substring of the recipient, case-insensitive.
    rcpt: Option<String>,
    /// delivered, deferred, failed, dropped or abandoned.
    outcome: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    wait: Option<String>,
}

fn parse_outcome(o: Option<&str>) -> ApiResult<Option<Outcome>> {
    let Some(o) = o else {
        return Ok(None);
    };
    Ok(Some(match o {
        "delivered" => Outcome::Delivered,
        "deferred" => Outcome::Deferred,
        "failed" => Outcome::Failed,
        "dropped" => Outcome::Dropped,
        "abandoned" => Outcome::Abandoned,
        _ => {
            return Err(ApiError::bad_request(format!(
                "bad outcome {o:?}: use delivered, deferred, failed, dropped or abandoned"
            )))
        }
    }))
}

fn has(hay: &str, needle: &Option<String>) -> bool {
    needle
        .as_ref()
        .is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
}

/// Deliveries in the report's order (by first attempt).
async fn deliveries(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<Query>,
) -> ApiResult<Json<Listing<Delivery>>> {
    let outcome = parse_outcome(q.outcome.as_deref())?;
    let paging = Paging::new(q.limit, q.offset)?;
    let wait = wait::parse_wait(q.wait.as_deref())?;
    let changes = Changes::Events(s.capture.live());
    let look = || {
        let all: Vec<Delivery> = build(&s)
            .deliveries
            .into_iter()
            .filter(|d| {
                has(&d.mail_from, &q.from)
                    && has(&d.rcpt, &q.rcpt)
                    && outcome.is_none_or(|o| d.outcome == o)
            })
            .collect();
        paging.listing(all)
    };
    let found = |l: &Listing<Delivery>| l.total > 0;
    wait::until(wait, changes, &s.shutdown, SETTLE, look, found)
        .await
        .map(Json)
}
