//! The OAuth2 client-credentials grant (RFC 6749 §4.4) at `POST /api/v1/token`, with the
//! error bodies of §5.2, and the JWKS document that verifies what it issues.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::json;
use tracing::{debug, info};

use crate::Api;

/// An RFC 6749 §5.2 error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"postern\""),
        );
    }
    response
}

fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Client credentials from HTTP Basic (§2.3.1), whose parts are form-encoded.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(B64.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

pub async fn token(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if form_type != Some("application/x-www-form-urlencoded") {
        return invalid_request("the body must be application/x-www-form-urlencoded");
    }
    let Ok(bytes) = axum::body::to_bytes(body, api.max_body_bytes).await else {
        return crate::ApiError::too_large(api.max_body_bytes).into_response();
    };
    let mut grant_type = None;
    let (mut client_id, mut client_secret) = (None, None);
    for (key, value) in form_urlencoded::parse(&bytes) {
        let slot = match key.as_ref() {
            "grant_type" => &mut grant_type,
            "client_id" => &mut client_id,
            "client_secret" => &mut client_secret,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return invalid_request("a parameter is repeated");
        }
    }
    match grant_type.as_deref() {
        None => return invalid_request("grant_type is missing"),
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            )
        }
    }
    let basic = basic_credentials(&headers);
    let (id, secret) = match (basic, client_id, client_secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return invalid_request("client credentials given both in the header and the body")
        }
        (Some(pair), None, None) => pair,
        (None, Some(id), Some(secret)) => (id, secret),
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is required",
            )
        }
    };
    // Each check holds ~19 MiB for tens of ms: a few at a time, the rest wait.
    let Ok(_permit) = api.client_checks.acquire().await else {
        return crate::ApiError::internal("client check semaphore closed").into_response();
    };
    // The permit borrows `api`; the blocking task gets its own handle.
    let state = Arc::clone(&api);
    let issued = tokio::task::spawn_blocking(move || {
        let identity = state.store.verify_identity_client(&id, &secret)?;
        let Some(identity) = identity else {
            debug!(client_id = %id, "client credentials refused");
            return Ok(None);
        };
        let issued = state.tokens.issue(&identity, None)?;
        info!(identity = %identity, client_id = %id, jti = %issued.claims.jti, "access token issued");
        Ok::<_, crate::TokenError>(Some(issued))
    })
    .await;
    match issued {
        Ok(Ok(Some(issued))) => {
            let expires_in = issued.claims.exp - issued.claims.iat;
            let mut response = Json(json!({
                "access_token": issued.token.expose(),
                "token_type": "Bearer",
                "expires_in": expires_in,
            }))
            .into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Ok(Ok(None)) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        ),
        Ok(Err(e)) => crate::ApiError::internal(e).into_response(),
        Err(e) => crate::ApiError::internal(e).into_response(),
    }
}

pub async fn jwks(State(api): State<Arc<Api>>) -> Json<serde_json::Value> {
    Json(api.tokens.jwks())
}
