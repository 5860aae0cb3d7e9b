//! `GET /api/v1/namespaces/{ns}/plugins/{name}/runtime`: how a Plugin is doing in this
//! gateway (loaded or not, healthy, calls, denials, traps, timeouts, call times), read
//! from the same counters `/metrics` exposes, for the UI's plugin page.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use postern_model::Kind;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::resources::{params, Params};
use crate::{blocking, Api};

/// The metric families of one plugin; the rest of the name is its key in the answer.
const PREFIX: &str = "postern_plugin_";

pub async fn runtime(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (namespace, name) = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let what = Kind::Plugin.describe(&namespace, &name);
        caller.check_read(&namespace, &what)?;
        if api
            .store
            .get_resource(Kind::Plugin, &namespace, &name)?
            .is_none()
        {
            return Err(ApiError::not_found(&what));
        }
        let mut counters = Map::new();
        let mut plugin_type = None;
        for family in api.metrics.iter().flat_map(|source| source.collect()) {
            let Some(key) = family.name.strip_prefix(PREFIX) else {
                continue;
            };
            for (labels, value) in &family.samples {
                let label = |wanted: &str| {
                    labels
                        .iter()
                        .find(|(label, _)| *label == wanted)
                        .map(|(_, v)| v.as_str())
                };
                if label("namespace") == Some(namespace.as_str())
                    && label("plugin") == Some(name.as_str())
                {
                    counters.insert(key.trim_end_matches("_total").to_owned(), json!(value));
                    plugin_type = label("type").map(str::to_owned);
                }
            }
        }
        Ok(Json(json!({
            "loaded": !counters.is_empty(),
            "type": plugin_type,
            "counters": counters,
        })))
    })
    .await
}
