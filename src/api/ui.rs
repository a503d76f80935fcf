//! The web UI: one HTML page, its script and style, embedded in the binary
//! (no build step, no CDN). Served without the API token: the page holds no
//! data, and asks for the token when the API answers 401.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::ApiState;

pub const INDEX: &str = include_str!("ui/index.html");
pub const APP_JS: &str = include_str!("ui/app.js");
pub const APP_CSS: &str = include_str!("ui/app.css");
/// The labels in English and Japanese, shared with `report --html`.
pub const I18N_JS: &str = include_str!("ui/i18n.js");
/// The timeline and findings renderer, shared with `report --html`.
pub const TIMELINE_JS: &str = include_str!("ui/timeline.js");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// A static file with its type; `no-cache` so a new binary's UI is seen
/// at once (the files are small).
fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { asset(HTML, INDEX) }))
        .route("/ui/app.js", get(|| async { asset(JS, APP_JS) }))
        .route("/ui/app.css", get(|| async { asset(CSS, APP_CSS) }))
        .route("/ui/i18n.js", get(|| async { asset(JS, I18N_JS) }))
        .route("/ui/timeline.js", get(|| async { asset(JS, TIMELINE_JS) }))
}
