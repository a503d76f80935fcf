//! Errors as JSON (`{"error": "...", "status": 4xx}`) and the extractors
//! that turn bad input into them instead of axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An API error: a status and a sentence saying what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// The body of every error response.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub status: u16,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            status: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Query parameters; a bad or unknown one is a 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e: QueryRejection| ApiError::new(e.status(), e.body_text()))
    }
}

/// Path parameters; a value of the wrong kind is a 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e: PathRejection| {
                let status = match e.status() {
                    s if s.is_server_error() => s,
                    _ => StatusCode::BAD_REQUEST,
                };
                ApiError::new(status, e.body_text())
            })
    }
}

/// A JSON body: 415 without `Content-Type: application/json`, 413 past the
/// body limit, 400 for bad JSON, 422 for JSON of the wrong shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(t)| ApiJson(t))
            .map_err(|e: JsonRejection| ApiError::new(e.status(), e.body_text()))
    }
}

/// Checks an id taken from a path: letters, digits, `.`, `_` and `-`, at
/// most 64, so it can never name another file or route.
pub fn check_id(kind: &str, id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "bad {kind} id {id:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// A TOML body (a scenario): `Content-Type` `application/toml`,
/// `text/x-toml` or `text/plain` (415 otherwise), at most the body limit
/// (413), UTF-8 (400).
pub struct TomlBody(pub String);

impl<S: Send + Sync> FromRequest<S> for TomlBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ctype = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if !matches!(
            ctype.as_deref(),
            Some("application/toml" | "text/x-toml" | "text/plain")
        ) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the scenario as Content-Type: application/toml",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        String::from_utf8(bytes.to_vec())
            .map(TomlBody)
            .map_err(|_| ApiError::bad_request("the scenario is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn ids_cannot_name_other_files() {
        for ok in ["1A2B30000001", "a-b_c.d", "x"] {
            assert!(check_id("message", ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a\\b", ".hidden", "..", &"x".repeat(65)] {
            let e = check_id("message", bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    async fn toml(ctype: Option<&str>, body: &'static [u8]) -> Result<String, ApiError> {
        let mut req = Request::builder().method("PUT").uri("/x");
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        let req = req.body(Body::from(body)).unwrap();
        TomlBody::from_request(req, &()).await.map(|t| t.0)
    }

    #[tokio::test]
    async fn toml_bodies_say_what_they_are() {
        assert_eq!(
            toml(Some("application/toml"), b"a = 1").await.unwrap(),
            "a = 1"
        );
        assert!(toml(Some("text/plain; charset=utf-8"), b"a = 1")
            .await
            .is_ok());
        let e = toml(Some("application/json"), b"{}").await.unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = toml(None, b"a = 1").await.unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = toml(Some("application/toml"), b"\xff").await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
