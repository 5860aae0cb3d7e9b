//! `/healthz`, `/readyz` and `/metrics`. The exposition is the Prometheus text format
//! (version 0.0.4), written here: the values are a handful of numbers the gateway's parts
//! already count, read at scrape time, so a metrics registry would only copy them.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::{blocking, Api, ApiError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

/// One metric with its samples, each with its labels.
#[derive(Debug, Clone)]
pub struct MetricFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl MetricFamily {
    pub fn single(name: &'static str, help: &'static str, kind: MetricType, value: f64) -> Self {
        MetricFamily {
            name,
            help,
            kind,
            samples: vec![(Vec::new(), value)],
        }
    }
}

/// The value of label `name` among one sample's labels.
pub(crate) fn sample_label<'a>(
    labels: &'a [(&'static str, String)],
    name: &str,
) -> Option<&'a str> {
    labels
        .iter()
        .find(|(label, _)| *label == name)
        .map(|(_, value)| value.as_str())
}

/// A part of the gateway that reports metrics when scraped.
pub trait MetricsSource: Send + Sync + 'static {
    fn collect(&self) -> Vec<MetricFamily>;
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for family in families {
        let kind = match family.kind {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for (labels, value) in &family.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", labels.join(","))
            };
            let _ = writeln!(out, "{}{labels} {value}", family.name);
        }
    }
    out
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(api): State<Arc<Api>>) -> Response {
    let store = api.store.clone();
    let (reachable, leader, shared) = blocking(move || {
        let reachable = store
            .list_resources(Some(postern_model::Kind::Namespace), None)
            .is_ok();
        Ok((reachable, store.is_leader(), store.is_shared()))
    })
    .await
    .unwrap_or((false, false, api.store.is_shared()));
    let body = json!({
        "status": if reachable { "ready" } else { "unavailable" },
        "state": {
            "backend": if shared { "postgres" } else { "sqlite" },
            "reachable": reachable,
        },
        "leader": leader,
    });
    if reachable {
        Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Needs a caller who may read the whole account: the numbers span every tenant.
pub async fn prometheus(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let families = blocking(move || {
        let caller = api.caller(&headers)?;
        if !caller.access.reads_account() {
            return Err(ApiError::forbidden(format!(
                "{caller} may not read metrics (needs account-admin or account-reader)"
            )));
        }
        Ok(api
            .metrics
            .iter()
            .flat_map(|source| source.collect())
            .collect::<Vec<_>>())
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&families),
    )
        .into_response())
}
