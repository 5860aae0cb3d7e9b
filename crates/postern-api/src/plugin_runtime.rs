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
use crate::metrics::sample_label;
use crate::resources::{params, visible_resource, Params};
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
        visible_resource(&api, &caller, Kind::Plugin, &namespace, &name, false)?;
        let mut counters = Map::new();
        let mut plugin_type = None;
        for family in api.metrics.iter().flat_map(|source| source.collect()) {
            let Some(key) = family.name.strip_prefix(PREFIX) else {
                continue;
            };
            for (labels, value) in &family.samples {
                let label = |name| sample_label(labels, name);
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
