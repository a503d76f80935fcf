//! Messages: list with filters and paging (and wait-for), one message with
//! its headers and text, its raw form, delete.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{check_id, ApiError, ApiPath, ApiQuery, ApiResult};
use super::wait::{self, Changes, Listing, Paging};
use super::ApiState;
use crate::capture::{Filter, Message};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/messages", get(list).delete(delete_all))
        .route("/api/v1/messages/{id}", get(one).delete(delete_one))
        .route("/api/v1/messages/{id}/raw", get(raw))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    from: Option<String>,
    rcpt: Option<String>,
    subject: Option<String>,
    since: Option<String>,
    until: Option<String>,
    session: Option<u64>,
    accepted: Option<bool>,
    limit: Option<usize>,
    offset: Option<usize>,
    wait: Option<String>,
}

/// An RFC 3339 time (`2026-01-01T10:00:00Z`; fractions and offsets
/// allowed).
fn parse_time(name: &str, v: Option<&str>) -> ApiResult<Option<SystemTime>> {
    use time::format_description::well_known::Rfc3339;
    v.map(|t| {
        time::OffsetDateTime::parse(t, &Rfc3339)
            .map(SystemTime::from)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "bad {name} {t:?}: {e} (use RFC 3339, e.g. 2026-01-01T10:00:00Z)"
                ))
            })
    })
    .transpose()
}

async fn list(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<Arc<Message>>>> {
    let filter = Filter {
        from: q.from,
        rcpt: q.rcpt,
        subject: q.subject,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        session: q.session,
        accepted: q.accepted,
    };
    let paging = Paging::new(q.limit, q.offset)?;
    let wait = wait::parse_wait(q.wait.as_deref())?;
    let store = s.capture.store();
    let changes = Changes::Store(store.subscribe());
    let look = || {
        let p = store.list(&filter, paging.limit, paging.offset);
        Listing {
            total: p.total,
            offset: paging.offset,
            limit: paging.limit,
            items: p.items,
        }
    };
    let found = |l: &Listing<Arc<Message>>| l.total > 0;
    wait::until(wait, changes, &s.shutdown, Duration::ZERO, look, found)
        .await
        .map(Json)
}

fn find(s: &ApiState, id: &str) -> ApiResult<Arc<Message>> {
    check_id("message", id)?;
    s.capture
        .store()
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no message {id:?}")))
}

/// A message with what the store knows, plus its headers in order and its
/// text (the first text/plain part, decoded).
#[derive(Serialize)]
struct Detail {
    #[serde(flatten)]
    message: Arc<Message>,
    headers: Vec<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

#[derive(Serialize)]
struct Header {
    name: String,
    value: String,
}

fn detail(m: Arc<Message>) -> Detail {
    let parsed = mail_parser::MessageParser::default().parse(&m.body);
    let (headers, text, html) = match &parsed {
        Some(p) => (
            p.headers()
                .iter()
                .map(|h| Header {
                    name: h.name.as_str().to_string(),
                    value: raw_value(&m.body, h.offset_start as usize, h.offset_end as usize),
                })
                .collect(),
            p.body_text(0).map(|t| t.into_owned()),
            // body_html also renders a text-only message as HTML: only a
            // real text/html part counts.
            p.html_part(0)
                .filter(|part| matches!(part.body, mail_parser::PartType::Html(_)))
                .and_then(|_| p.body_html(0))
                .map(|t| t.into_owned()),
        ),
        None => (vec![], None, None),
    };
    Detail {
        message: m,
        headers,
        text,
        html,
    }
}

/// A header's value as written, unfolded.
fn raw_value(body: &[u8], start: usize, end: usize) -> String {
    let raw = String::from_utf8_lossy(body.get(start..end).unwrap_or_default());
    raw.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn one(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(detail(find(&s, &id)?)))
}

/// The message as received (dot-unstuffed), `message/rfc822`.
async fn raw(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let m = find(&s, &id)?;
    Ok((
        [(header::CONTENT_TYPE, "message/rfc822")],
        Bytes::from(m.body.clone()),
    ))
}

async fn delete_one(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    check_id("message", &id)?;
    if s.capture.store().delete(&id) {
        Ok(Json(json!({"deleted": 1})))
    } else {
        Err(ApiError::not_found(format!("no message {id:?}")))
    }
}

/// The optional body of `DELETE /api/v1/messages`: these ids only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ids {
    ids: Vec<String>,
}

/// Without a body: every message. With `{"ids": [...]}`: those (unknown
/// ones are skipped; `deleted` says how many went).
async fn delete_all(State(s): State<ApiState>, req: Request) -> ApiResult<Json<Value>> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, super::MAX_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {} bytes", super::MAX_BODY),
            )
        })?;
    if bytes.is_empty() {
        return Ok(Json(json!({"deleted": s.capture.store().clear()})));
    }
    let ids: Ids = json_body(&parts.headers, &bytes)?;
    for id in &ids.ids {
        check_id("message", id)?;
    }
    let deleted = ids
        .ids
        .iter()
        .filter(|id| s.capture.store().delete(id))
        .count();
    Ok(Json(json!({"deleted": deleted})))
}

/// Reads a JSON body: 415 unless it says `application/json`, 400 for bad
/// JSON, 422 for JSON of the wrong shape.
fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<T> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json")
                || (v.starts_with("application/") && v.ends_with("+json"))
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("bad JSON body: {e}"))
    })
}
