//! The admin web UI: the single-page app built from `ui/` (its `ui/dist` is committed, so
//! `cargo build` needs no Node), embedded in the binary and served under `/ui/`, with the
//! security headers every response of the admin listener carries.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rust_embed::Embed;

use crate::error::ApiError;

#[derive(Embed)]
#[folder = "../../ui/dist"]
struct Assets;

/// No inline script or style, nothing from elsewhere, never framed. The UI's only
/// connections are to this origin's API.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; font-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers for every response of the admin listener (API answers included): no MIME
/// sniffing, no referrer, no framing, and no caching unless the answer says otherwise
/// (API answers may carry secrets shown once; the UI's files set their own).
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// `/` and `/ui` lead to the UI.
pub async fn to_ui() -> Redirect {
    Redirect::to("/ui/")
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn file(path: &str, cache_control: &'static str) -> Option<Response> {
    let asset = Assets::get(path)?;
    Some(
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, cache_control),
            ],
            Body::from(asset.data.into_owned()),
        )
            .into_response(),
    )
}

/// The app's page: never cached, so a new build's assets are picked up at once.
fn index() -> Response {
    file("index.html", "no-cache").unwrap_or_else(|| {
        ApiError::not_found("the web UI (this binary was built without ui/dist)").into_response()
    })
}

pub async fn root() -> Response {
    index()
}

/// `/ui/{path}`: a built asset (content-hashed names, so cached for good), else the app's
/// page, whose router shows the view the path names (deep links).
pub async fn asset(Path(path): Path<String>) -> Response {
    if path.starts_with("assets/") {
        return file(&path, "public, max-age=31536000, immutable")
            .unwrap_or_else(|| ApiError::not_found(format!("UI asset {path}")).into_response());
    }
    match path.as_str() {
        "index.html" => index(),
        _ => file(&path, "no-cache").unwrap_or_else(index),
    }
}
