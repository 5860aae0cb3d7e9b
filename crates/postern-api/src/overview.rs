//! `GET /api/v1/overview`: the server at a glance for the UI's first page: version, start
//! time, listeners, and what needs attention in the namespaces the caller may read (intents
//! that failed to apply, plugins that failed to load or rest after failures, leases stuck
//! revoking; for account roles, access-log events lost), each naming the thing so the UI
//! can link to it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use postern_model::{Kind, Permission};
use postern_state::LeaseState;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::metrics::sample_label;
use crate::{blocking, Api};

fn attention(kind: Kind, namespace: &str, name: &str, message: &str) -> Value {
    json!({
        "kind": kind.as_str(),
        "plural": kind.plural(),
        "namespace": namespace,
        "name": name,
        "message": message,
    })
}

pub async fn overview(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let caller = api.caller(&headers)?;
        let readable = |namespace: &str| caller.access.allows(namespace, Permission::Read);
        let mut needs = Vec::new();
        for kind in [Kind::Intents, Kind::Plugin] {
            for stored in api.store.list_resources(Some(kind), None)? {
                let (namespace, name) = (stored.resource.namespace(), stored.resource.name());
                if !readable(namespace) {
                    continue;
                }
                let document = api.store.resource_document(&stored)?;
                if document.pointer("/status/state").and_then(Value::as_str) == Some("error") {
                    let message = document
                        .pointer("/status/message")
                        .and_then(Value::as_str)
                        .unwrap_or("failed");
                    needs.push(attention(kind, namespace, name, message));
                }
            }
        }
        for lease in api.store.list_leases(None, false)? {
            let namespace = &lease.credential_role.namespace;
            if lease.state == LeaseState::Revoking && readable(namespace) {
                let message = format!(
                    "lease {} is stuck revoking after {} attempts{}",
                    lease.id,
                    lease.attempts,
                    lease
                        .last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
                needs.push(attention(
                    Kind::CredentialRole,
                    namespace,
                    &lease.credential_role.name,
                    &message,
                ));
            }
        }
        // From the running gateway's counters: plugins resting after failures, and (for
        // account roles: it is the whole gateway's) access-log events lost.
        for family in api.metrics.iter().flat_map(|source| source.collect()) {
            match family.name {
                "postern_plugin_healthy" => {
                    for (labels, value) in &family.samples {
                        let label = |name| sample_label(labels, name).unwrap_or_default();
                        let (namespace, name) = (label("namespace"), label("plugin"));
                        let known = needs.iter().any(|n| {
                            n["kind"] == Kind::Plugin.as_str()
                                && n["namespace"] == namespace
                                && n["name"] == name
                        });
                        if *value == 0.0 && readable(namespace) && !known {
                            needs.push(attention(
                                Kind::Plugin,
                                namespace,
                                name,
                                "resting after failures in a row: its calls are refused unrun",
                            ));
                        }
                    }
                }
                "postern_audit_events_dropped_total" if caller.access.reads_account() => {
                    let dropped: f64 = family.samples.iter().map(|(_, v)| v).sum();
                    if dropped > 0.0 {
                        needs.push(json!({
                            "kind": "AccessLog",
                            "plural": "",
                            "namespace": "",
                            "name": "",
                            "message": format!(
                                "{dropped} access-log events were lost since the gateway started (a sink was down past its spill budget)"
                            ),
                        }));
                    }
                }
                _ => {}
            }
        }
        let info = &api.info;
        Ok(Json(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "startedAt": info.started_at,
            "listeners": {
                "proxy": info.proxy_address,
                "admin": info.admin_address,
            },
            "attention": needs,
        })))
    })
    .await
}
