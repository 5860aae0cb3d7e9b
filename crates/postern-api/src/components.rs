//! `PUT /api/v1/namespaces/{ns}/plugincomponents/{sha256}`: a Plugin's WebAssembly
//! component uploaded by its content address, so `apply --server` can store what a Plugin
//! resource's `spec.source.sha256` then names. Components are stored once per content;
//! the namespace in the path is whose writers may upload (namespace-admin there).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::resources::{namespace_exists, params, read_body_within, Params};
use crate::{blocking, Api};

/// Largest component accepted: components built by other languages' toolchains (an
/// interpreter inside) reach tens of MiB, far past the API's limit for resource bodies.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The first eight bytes of a WebAssembly component (binary format magic, then the
/// component layer's version); a core module has `01 00 00 00` there instead.
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

pub async fn put_component(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (namespace, sha256) = params(path)?;
    if !postern_model::is_sha256_hex(&sha256) {
        return Err(ApiError::bad_request(format!(
            "{sha256:?} is not a sha256 (64 lowercase hex digits)"
        )));
    }
    // Who may upload is settled before a body of up to 64 MiB is read.
    let (checked_api, checked_headers, checked_namespace) =
        (api.clone(), headers.clone(), namespace.clone());
    blocking(move || {
        let caller = checked_api.caller(&checked_headers)?;
        caller.check_write(
            &checked_namespace,
            &format!("the Plugin components of Namespace {checked_namespace}"),
        )?;
        namespace_exists(&checked_api, &checked_namespace)
    })
    .await?;
    // At most two uploads are read at once: each holds its whole body in memory.
    let _reading = UPLOADS
        .acquire()
        .await
        .map_err(|_| ApiError::internal("the upload limiter is closed"))?;
    let bytes = read_body_within(MAX_COMPONENT_BYTES, &headers, body).await?;
    if !bytes.starts_with(&COMPONENT_PREAMBLE) {
        let what = if bytes.starts_with(b"\0asm") {
            "a core WebAssembly module, not a component (build for wasm32-wasip2)"
        } else {
            "not a WebAssembly component"
        };
        return Err(ApiError::invalid(format!("the body is {what}")));
    }
    let actual: String = ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != sha256 {
        return Err(ApiError::bad_request(format!(
            "the body's sha256 is {actual}, not the path's {sha256}"
        )));
    }
    blocking(move || {
        api.store.store_plugin_component(&bytes)?;
        Ok(Json(json!({"sha256": sha256, "size": bytes.len()})).into_response())
    })
    .await
}
