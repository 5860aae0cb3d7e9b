//! An identity's credentials: API keys (`…/identities/{name}/keys`) and client
//! credentials (`…/identities/{name}/clients`). A new key or client secret is in the
//! creating response only; afterwards only ids and dates are shown.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use postern_model::{Kind, QualifiedName};
use postern_state::{AccessView, StateError};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::resources::{ignore_body, params, visible_resource, Params};
use crate::{blocking, Api};

/// The identity `namespace/name`, once the caller may see it and it exists (404 both
/// otherwise); `write` (a credential made or removed) asks for namespace-admin as well.
fn identity(
    api: &Api,
    caller: &Caller,
    namespace: &str,
    name: &str,
    write: bool,
) -> Result<QualifiedName, ApiError> {
    visible_resource(api, caller, Kind::Identity, namespace, name, write)?;
    Ok(QualifiedName::new(namespace, name))
}

/// The guard of a credential made or removed, run inside the write: a key or client
/// secret of an identity is that identity's access, so the caller's access must cover
/// it (as for an edit of the identity), or making one for an identity bound further than
/// its maker (an account admin, another namespace's admin) would be a way up.
fn covers<'c>(
    caller: &'c Caller,
    who: &'c QualifiedName,
) -> impl FnOnce(&AccessView<'_>) -> Result<(), StateError> + 'c {
    move |view| {
        match view.access_of(who)? {
        Some((_, holds)) if !caller.access.covers(&holds) => Err(StateError::Refused(format!(
            "{caller} may not change the credentials of Identity {who}: its role bindings reach further than {caller}'s"
        ))),
        _ => Ok(()),
    }
    }
}

// ---- API keys ------------------------------------------------------------------------------

pub async fn list_keys(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (namespace, name) = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let who = identity(&api, &caller, &namespace, &name, false)?;
        let items: Vec<Value> = api
            .store
            .list_api_keys(&who)?
            .iter()
            .map(|k| json!({"id": k.id, "createdAt": k.created_at}))
            .collect();
        Ok(Json(json!({ "items": items })))
    })
    .await
}

pub async fn create_key(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (namespace, name) = params(path)?;
    ignore_body(&api, &headers, body).await?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let who = identity(&api, &caller, &namespace, &name, true)?;
        let created = api.store.create_api_key(&who, covers(&caller, &who))?;
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "id": created.info.id,
                "identity": who.dotted(),
                "key": created.key.expose(),
                "createdAt": created.info.created_at,
            })),
        ))
    })
    .await
}

pub async fn revoke_key(
    State(api): State<Arc<Api>>,
    path: Params<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (namespace, name, id) = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let who = identity(&api, &caller, &namespace, &name, true)?;
        api.store.revoke_api_key(&who, &id, covers(&caller, &who))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ---- client credentials --------------------------------------------------------------------

pub async fn list_clients(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (namespace, name) = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let who = identity(&api, &caller, &namespace, &name, false)?;
        let items: Vec<Value> = api
            .store
            .list_identity_clients(&who)?
            .iter()
            .map(|c| json!({"clientId": c.client_id, "createdAt": c.created_at}))
            .collect();
        Ok(Json(json!({ "items": items })))
    })
    .await
}

pub async fn create_client(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (namespace, name) = params(path)?;
    ignore_body(&api, &headers, body).await?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let who = identity(&api, &caller, &namespace, &name, true)?;
        let created = api
            .store
            .create_identity_client(&who, covers(&caller, &who))?;
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "clientId": created.client_id,
                "clientSecret": created.secret.expose(),
                "identity": who.dotted(),
            })),
        ))
    })
    .await
}

pub async fn delete_client(
    State(api): State<Arc<Api>>,
    path: Params<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (namespace, name, client_id) = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let who = identity(&api, &caller, &namespace, &name, true)?;
        api.store
            .delete_identity_client(&who, &client_id, covers(&caller, &who))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
