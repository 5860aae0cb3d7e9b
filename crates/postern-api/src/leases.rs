//! Leases of issued credentials over HTTP (`…/namespaces/{ns}/leases`): list with filters,
//! renew, revoke one, revoke all that match a filter (after asking how many), and a
//! Target's admin check (`…/targets/{name}/check`). The work is the issuer's, as for the CLI.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use postern_issuer::{check_target, Issuer, IssuerError, RevokeOutcome};
use postern_model::{ErrorKind, Kind, QualifiedName};
use postern_state::Lease;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resources::{ignore_body, params, read_body_within, visible_resource, Params};
use crate::{blocking, Api};

impl From<IssuerError> for ApiError {
    fn from(e: IssuerError) -> ApiError {
        match (e.kind(), e) {
            (_, IssuerError::State(e)) => ApiError::from(e),
            // The issuer's errors carry no password (its statements are named by index).
            (ErrorKind::User, e) => ApiError::conflict(e.to_string()),
            (ErrorKind::Upstream, e) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream", e.to_string())
            }
            (_, e) => ApiError::internal(e),
        }
    }
}

fn issuer(api: &Api) -> Result<&Arc<Issuer>, ApiError> {
    api.issuer.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server has no credential issuer",
        )
    })
}

/// Which leases a list or a bulk revoke is about.
#[derive(Debug, Default)]
struct LeaseFilter {
    /// A CredentialRole's name.
    role: Option<String>,
    /// Who the lease was issued for: an identity as `name.namespace` (its sessions'
    /// leases), or `cli`; exactly.
    identity: Option<String>,
    /// Only leases that expire within this long (`15m`, `1h`).
    expiring_within: Option<String>,
    /// Ended leases too (lists only).
    all: bool,
}

impl LeaseFilter {
    fn from_query(uri: &Uri) -> LeaseFilter {
        let mut filter = LeaseFilter::default();
        for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            let value = value.trim().to_owned();
            match key.as_ref() {
                _ if value.is_empty() => {}
                "role" => filter.role = Some(value),
                "identity" => filter.identity = Some(value),
                "expiringWithin" => filter.expiring_within = Some(value),
                "all" => filter.all = value == "true" || value == "1",
                _ => {}
            }
        }
        filter
    }

    fn matching(&self, api: &Api, namespace: &str) -> Result<Vec<Lease>, ApiError> {
        let within = match &self.expiring_within {
            Some(text) => Some(postern_model::parse_duration(text).map_err(|e| {
                ApiError::bad_request(format!("expiringWithin: {e}")).with_field("expiringWithin")
            })?),
            None => None,
        };
        // `issuedFor` says `session namespace/name` for a session's lease.
        let issued_for = self
            .identity
            .as_ref()
            .map(|who| match QualifiedName::from_dotted(who) {
                Ok(identity) => format!("session {identity}"),
                Err(_) => who.clone(),
            });
        let now = chrono::Utc::now().timestamp();
        let deadline = within
            .map(|d: Duration| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
        Ok(api
            .store
            .list_leases(Some(namespace), self.all)?
            .into_iter()
            .filter(|l| {
                self.role
                    .as_ref()
                    .is_none_or(|role| l.credential_role.name == *role)
                    && issued_for.as_ref().is_none_or(|who| l.issued_for == *who)
                    && deadline.is_none_or(|deadline| l.expires_at <= deadline)
            })
            .collect())
    }
}

fn lease_json(lease: &Lease) -> Value {
    json!({
        "id": lease.id,
        "credentialRole": lease.credential_role.name,
        "target": lease.target.name,
        "username": lease.username,
        "state": lease.state.as_str(),
        "issuedFor": lease.issued_for,
        "issuedAt": lease.issued_at,
        "expiresAt": lease.expires_at,
        "maxExpiresAt": lease.max_expires_at,
        "attempts": lease.attempts,
        "lastError": lease.last_error,
    })
}

pub async fn list(
    State(api): State<Arc<Api>>,
    path: Params<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let namespace = params(path)?;
    let filter = LeaseFilter::from_query(&uri);
    blocking(move || {
        let caller = api.caller(&headers)?;
        caller.check_read(&namespace, &format!("namespace {namespace}"))?;
        let items: Vec<Value> = filter
            .matching(&api, &namespace)?
            .iter()
            .map(lease_json)
            .collect();
        Ok(Json(json!({ "items": items })))
    })
    .await
}

/// The lease `id` of `namespace`, once the caller may change things there.
async fn writable_lease(
    api: &Arc<Api>,
    headers: &HeaderMap,
    namespace: &str,
    id: &str,
) -> Result<(), ApiError> {
    let (api, headers, namespace, id) = (
        api.clone(),
        headers.clone(),
        namespace.to_owned(),
        id.to_owned(),
    );
    blocking(move || {
        let caller = api.caller(&headers)?;
        let what = format!("lease {id}");
        caller.check_write(&namespace, &what)?;
        match api.store.lease(&id)? {
            Some(lease) if lease.credential_role.namespace == namespace => Ok(()),
            _ => Err(ApiError::not_found(&what)),
        }
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    /// How much longer (`1h`); the role's defaultTtl when absent.
    increment: Option<String>,
}

pub async fn renew(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (namespace, id) = params(path)?;
    let bytes = read_body_within(api.max_body_bytes, &headers, body).await?;
    // Who asks comes first: an unauthenticated caller learns nothing of the format.
    writable_lease(&api, &headers, &namespace, &id).await?;
    let request: RenewRequest = if bytes.is_empty() {
        RenewRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?
    };
    let increment = match &request.increment {
        Some(text) => Some(postern_model::parse_duration(text).map_err(|e| {
            ApiError::bad_request(format!("increment: {e}")).with_field("increment")
        })?),
        None => None,
    };
    let renewed = issuer(&api)?.renew(&id, increment).await?;
    Ok(Json(
        json!({"expiresAt": renewed.expires_at, "capped": renewed.capped}),
    ))
}

fn outcome_text(outcome: RevokeOutcome) -> &'static str {
    match outcome {
        RevokeOutcome::Done => "revoked",
        RevokeOutcome::AlreadyGone => "already gone upstream",
        RevokeOutcome::AlreadyEnded => "had already ended",
    }
}

pub async fn revoke(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (namespace, id) = params(path)?;
    writable_lease(&api, &headers, &namespace, &id).await?;
    let outcome = issuer(&api)?.revoke(&id).await?;
    Ok(Json(json!({"id": id, "outcome": outcome_text(outcome)})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BulkRevoke {
    role: Option<String>,
    identity: Option<String>,
    expiring_within: Option<String>,
    /// Only count and name the leases that would be revoked.
    #[serde(default)]
    dry_run: bool,
    /// The dry run's ids: only these are revoked (those that still match), so a lease
    /// issued since the caller looked is not.
    ids: Option<Vec<String>>,
}

/// Revokes every live lease of the namespace that matches the filter; with `dryRun`, says
/// which ones it would (the UI shows that count before asking to confirm).
pub async fn revoke_matching(
    State(api): State<Arc<Api>>,
    path: Params<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let namespace = params(path)?;
    let bytes = read_body_within(api.max_body_bytes, &headers, body).await?;
    let (check_api, check_headers, check_namespace) =
        (api.clone(), headers.clone(), namespace.clone());
    let (request, leases) = blocking(move || {
        // Who asks comes first: an unauthenticated caller learns nothing of the format.
        let caller = check_api.caller(&check_headers)?;
        caller.check_write(&check_namespace, &format!("namespace {check_namespace}"))?;
        let request: BulkRevoke = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
        let filter = LeaseFilter {
            role: request.role.clone(),
            identity: request.identity.clone(),
            expiring_within: request.expiring_within.clone(),
            all: false,
        };
        let leases = filter.matching(&check_api, &check_namespace)?;
        Ok((request, leases))
    })
    .await?;
    if request.dry_run {
        let ids: Vec<&str> = leases.iter().map(|l| l.id.as_str()).collect();
        return Ok(Json(json!({"count": ids.len(), "ids": ids, "results": []})));
    }
    let Some(confirmed) = request.ids else {
        return Err(
            ApiError::bad_request("ids: name the leases to revoke (the dry run's ids)")
                .with_field("ids"),
        );
    };
    let issuer = issuer(&api)?;
    let mut results = Vec::new();
    let mut revoked = Vec::new();
    for id in &confirmed {
        if !leases.iter().any(|l| l.id == *id) {
            results.push(
                json!({"id": id, "error": "no longer matches the filters (or ended): left alone"}),
            );
            continue;
        }
        let result = match issuer.revoke(id).await {
            Ok(outcome) => json!({"id": id, "outcome": outcome_text(outcome)}),
            Err(e) => json!({"id": id, "error": ApiError::from(e).message}),
        };
        revoked.push(id.as_str());
        results.push(result);
    }
    Ok(Json(
        json!({"count": revoked.len(), "ids": revoked, "results": results}),
    ))
}

/// `POST …/targets/{name}/check`: whether the target's admin login has every right the
/// issuer, the reconciler and rotation need, with the SQL that closes each gap.
pub async fn check(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (namespace, name) = params(path)?;
    ignore_body(&api, &headers, body).await?;
    let (check_api, check_headers) = (api.clone(), headers.clone());
    let (check_namespace, check_name) = (namespace.clone(), name.clone());
    blocking(move || {
        let caller = check_api.caller(&check_headers)?;
        visible_resource(
            &check_api,
            &caller,
            Kind::Target,
            &check_namespace,
            &check_name,
            true,
        )
        .map(|_| ())
    })
    .await?;
    let items = check_target(issuer(&api)?, &QualifiedName::new(&namespace, &name)).await?;
    let items: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({"feature": i.feature, "requirement": i.requirement, "ok": i.ok, "fix": i.fix})
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}
