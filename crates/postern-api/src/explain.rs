//! `POST /api/v1/explain`: the connection simulator. What the gateway would decide for an
//! identity connecting to a service (and one statement in that session), from the same
//! lookups and rules a login goes through, without connecting.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use postern_model::{ClientFacts, Kind, QualifiedName};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::resources::read_body_within;
use crate::{blocking, Api};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExplainRequest {
    /// `name.namespace`
    identity: String,
    /// `name.namespace`
    service: String,
    statement: Option<String>,
    client_address: Option<String>,
    #[serde(default)]
    tls: bool,
    application_name: Option<String>,
}

fn qualified(text: &str, field: &str) -> Result<QualifiedName, ApiError> {
    QualifiedName::from_dotted(text)
        .map_err(|e| ApiError::bad_request(format!("{field}: {e}")).with_field(field))
}

/// The shell command that asks the same question (`postern explain`).
fn cli_command(request: &ExplainRequest) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut command = format!("postern explain {} {}", request.identity, request.service);
    if let Some(statement) = &request.statement {
        command.push_str(&format!(" --statement {}", quote(statement)));
    }
    if let Some(address) = &request.client_address {
        command.push_str(&format!(" --client-address {address}"));
    }
    command
}

pub async fn explain(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body_within(api.max_body_bytes, &headers, body).await?;
    blocking(move || {
        // Who asks comes first: an unauthenticated caller learns nothing of the format.
        let caller = api.caller(&headers)?;
        let request: ExplainRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
        let identity = qualified(&request.identity, "identity")?;
        let service = qualified(&request.service, "service")?;
        if let Some(address) = &request.client_address {
            address.parse::<std::net::IpAddr>().map_err(|_| {
                ApiError::bad_request("clientAddress must be an IP address")
                    .with_field("clientAddress")
            })?;
        }
        caller.check_read(
            &identity.namespace,
            &Kind::Identity.describe(&identity.namespace, &identity.name),
        )?;
        caller.check_read(
            &service.namespace,
            &Kind::Service.describe(&service.namespace, &service.name),
        )?;
        let client = ClientFacts {
            address: request
                .client_address
                .clone()
                .unwrap_or_else(|| "127.0.0.1".to_owned()),
            tls: request.tls,
            application_name: request.application_name.clone().unwrap_or_default(),
            credential_groups: Vec::new(),
        };
        let explanation =
            api.store
                .explain(&identity, &service, request.statement.as_deref(), &client)?;
        let mut answer = explanation.to_json();
        answer["cli"] = Value::String(cli_command(&request));
        Ok(Json(answer))
    })
    .await
}
