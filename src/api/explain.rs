//! `POST /api/v1/explain`: paste a reply line, or a whole bounce (a DSN
//! message, an ESP's JSON event, an MTA log): what it means, and for a
//! bounce a scenario that reproduces it. The same functions as
//! `mailfault explain --json` and `mailfault from-bounce --json`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiQuery, ApiResult, ApiState};
use crate::bounce::{explain, input, reproduce};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/explain", post(explain_text))
}

/// What the input was found to be.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Explained {
    Reply {
        // Boxed: an explanation is large, and it only passes through.
        explain: Box<explain::Explanation>,
    },
    Bounce {
        /// The same JSON as `from-bounce --json`.
        failures: crate::bounce::dsn::Bounce,
        /// A scenario that makes a sender see these failures again.
        scenario: String,
    },
}

/// The language of the explanation: `en` (the default) or `ja`; any
/// other is a 400.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Language {
    #[default]
    En,
    Ja,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lang {
    #[serde(default)]
    lang: Language,
}

/// The pasted text: `text/plain`, `message/rfc822` or `application/json`
/// (an ESP event); 415 otherwise, 413 past the body limit.
struct Pasted(Bytes);

impl<S: Send + Sync> FromRequest<S> for Pasted {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if !matches!(
            ctype.as_deref(),
            Some("text/plain" | "message/rfc822" | "application/json")
        ) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the reply or bounce as Content-Type: text/plain",
            ));
        }
        Bytes::from_request(req, state)
            .await
            .map(Pasted)
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}

/// True when every line is a reply line (`550 ...` or `550-...`): a reply,
/// even one of several lines, is not a bounce message.
fn is_reply_lines(text: &str) -> bool {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let reply_line = |l: &str| {
        let b = l.as_bytes();
        b.len() >= 3
            && b[..3].iter().all(u8::is_ascii_digit)
            && matches!(b.get(3), None | Some(b' ' | b'-'))
    };
    lines.clone().next().is_some() && lines.all(reply_line)
}

fn as_bounce(bytes: &[u8]) -> Option<Explained> {
    let found = input::read("pasted", bytes)
        .into_iter()
        .filter_map(|r| r.result.ok())
        .collect();
    let bounce = input::merge(found)?;
    if bounce.failures.is_empty() {
        return None;
    }
    let scenario = reproduce::scenario(&bounce, "pasted");
    Some(Explained::Bounce {
        failures: bounce,
        scenario,
    })
}

fn as_reply(text: &str, ja: bool) -> Option<Explained> {
    let reply = explain::ReadReply::parse(text)?;
    Some(Explained::Reply {
        explain: Box::new(explain::explain(reply, ja)),
    })
}

async fn explain_text(
    ApiQuery(lang): ApiQuery<Lang>,
    Pasted(bytes): Pasted,
) -> ApiResult<Json<Explained>> {
    let ja = lang.lang == Language::Ja;
    let text = String::from_utf8_lossy(&bytes);
    let found = if is_reply_lines(&text) {
        as_reply(&text, ja)
    } else {
        as_bounce(&bytes).or_else(|| as_reply(&text, ja))
    };
    found.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "neither an SMTP reply (a code 200-599) nor a bounce (a DSN message, an ESP's JSON \
             event or an MTA log line) was found in the body",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_are_told_from_bounces() {
        assert!(is_reply_lines("550 5.1.1 no such user"));
        assert!(is_reply_lines("550-5.1.1 a\r\n550 5.1.1 b\r\n"));
        assert!(is_reply_lines("421"));
        assert!(!is_reply_lines(""));
        assert!(!is_reply_lines("From: MAILER-DAEMON\n\n550 5.1.1 x"));
        assert!(!is_reply_lines("5501 x"));
    }
}
