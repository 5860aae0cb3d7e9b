//! `GET /api/v1/whoami`: who the bearer token speaks for and what it may do where, so a
//! client (the web UI) shows only the actions the API would allow instead of guessing.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use postern_model::{Kind, Permission, Role};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{blocking, Api};

fn unix_to_rfc3339(seconds: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub async fn whoami(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let caller = api.caller(&headers)?;
        let access = &caller.access;
        let namespaces: Vec<Value> = api
            .store
            .list_resources(Some(Kind::Namespace), None)?
            .iter()
            .map(|stored| stored.resource.name())
            .filter(|name| access.allows(name, Permission::Read))
            .map(|name| {
                let roles: Vec<&str> = access.namespace_roles(name).map(Role::as_str).collect();
                json!({
                    "name": name,
                    "roles": roles,
                    "read": true,
                    "write": access.allows(name, Permission::Write),
                    "connect": access.allows(name, Permission::Connect),
                })
            })
            .collect();
        let account_roles: Vec<&str> = access.account_roles().map(Role::as_str).collect();
        Ok(Json(json!({
            "name": caller.name,
            "accountAdmin": access.is_account_admin(),
            "accountRoles": account_roles,
            "expiresAt": caller.expires_at.and_then(unix_to_rfc3339),
            "namespaces": namespaces,
            "mayCreateNamespaces": access.is_account_admin(),
        })))
    })
    .await
}
