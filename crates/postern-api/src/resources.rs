//! Resource handlers: `/api/v1/namespaces[/{ns}[/{kind}[/{name}]]]` CRUD with label
//! selectors, pagination and generation preconditions, write-only secrets, identity
//! client listing and token revocation. Every write goes through the same validation as
//! `apply`; every read and write through the caller's role bindings.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use postern_model::{Kind, Metadata, QualifiedName, Resource, SecretValue, Spec};
use postern_state::{
    secret_document, AccessView, Precondition, SecretInfo, StateError, StoredResource,
};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{blocking, Api};

/// A collection under a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    Resource(Kind),
    Secrets,
}

/// The namespaced collections with their path segments (a kind's plural), as the
/// OpenAPI document lists them.
pub fn collections() -> impl Iterator<Item = (&'static str, Collection)> {
    Kind::ALL
        .into_iter()
        .filter(|kind| kind.is_namespaced())
        .map(|kind| (kind.plural(), Collection::Resource(kind)))
        .chain([("secrets", Collection::Secrets)])
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;

pub(crate) type Params<T> = Result<Path<T>, PathRejection>;

pub(crate) fn params<T>(path: Params<T>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))
}

fn collection(segment: &str) -> Result<Collection, ApiError> {
    collections()
        .find(|(name, _)| *name == segment)
        .map(|(_, c)| c)
        .ok_or_else(|| ApiError::not_found(format!("collection {segment:?}")))
}

/// The request body, refused past the API's body limit (413).
async fn read_body(api: &Api, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    read_body_within(api.max_body_bytes, headers, body).await
}

/// The request body, refused past `limit` bytes (413).
pub(crate) async fn read_body_within(
    limit: usize,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| {
            // The limit's error is the only one that names a length.
            if e.to_string().contains("length limit") {
                ApiError::too_large(limit)
            } else {
                ApiError::bad_request(format!("reading the body failed: {e}"))
            }
        })
}

/// Reads (and drops) a body the request has no use for: hyper closes a connection whose
/// request body was left unread, which a client reusing it would meet as a reset.
pub(crate) async fn ignore_body(
    api: &Api,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    read_body_within(api.max_body_bytes, headers, body).await?;
    Ok(())
}

/// Parses a JSON body; malformed JSON is a 400 that says where.
fn json_body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request("the body must be a JSON object")),
    }
}

/// The resource a write names; `name` is the path's name (replace), checked against the
/// body. Returns the generation the body carries, if any.
fn decode_resource(
    bytes: &[u8],
    kind: Kind,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(Resource, Option<i64>), ApiError> {
    let mut body = json_body(bytes)?;
    for key in body.keys() {
        if !matches!(key.as_str(), "kind" | "metadata" | "spec" | "status") {
            return Err(ApiError::bad_request(format!("unknown field {key:?}")).with_field(key));
        }
    }
    match body.get("kind") {
        None => {}
        Some(Value::String(k)) if k == kind.as_str() => {}
        Some(_) => {
            return Err(
                ApiError::bad_request(format!("kind must be {kind} on this path"))
                    .with_field("kind"),
            )
        }
    }
    let mut metadata = match body.remove("metadata") {
        Some(Value::Object(m)) => m,
        _ => return Err(ApiError::bad_request("metadata must be an object").with_field("metadata")),
    };
    let generation = match metadata.remove("generation") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_i64().ok_or_else(|| {
            ApiError::bad_request("metadata.generation must be an integer")
                .with_field("metadata.generation")
        })?),
    };
    let metadata: Metadata = serde_json::from_value(Value::Object(metadata))
        .map_err(|e| ApiError::invalid(format!("metadata: {e}")).with_field("metadata"))?;
    if let Some(name) = name {
        if metadata.name != name {
            return Err(ApiError::bad_request(format!(
                "metadata.name {:?} differs from the path's {name:?}",
                metadata.name
            ))
            .with_field("metadata.name"));
        }
    }
    let mut metadata = metadata;
    if let Some(namespace) = namespace {
        match &metadata.namespace {
            Some(given) if given != namespace => {
                return Err(ApiError::bad_request(format!(
                    "metadata.namespace {given:?} differs from the path's {namespace:?}"
                ))
                .with_field("metadata.namespace"))
            }
            _ => metadata.namespace = Some(namespace.to_owned()),
        }
    }
    let spec = body.remove("spec").unwrap_or(Value::Null);
    let resource = Resource::from_parts(kind, metadata, spec)
        .map_err(|e| ApiError::invalid(e.message.clone()).with_field(e.path))?;
    Ok((resource, generation))
}

/// A stored resource as every reader sees it (the state crate's one form).
fn document(api: &Api, stored: &StoredResource) -> Result<Value, ApiError> {
    Ok(api.store.resource_document(stored)?)
}

// ---- list queries ---------------------------------------------------------------------

enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

struct ListQuery {
    selector: Vec<Term>,
    limit: usize,
    after: Option<String>,
}

fn list_query(uri: &Uri) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery {
        selector: Vec::new(),
        limit: DEFAULT_PAGE,
        after: None,
    };
    let pairs = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes());
    for (key, value) in pairs {
        match key.as_ref() {
            "labelSelector" => {
                for term in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    query.selector.push(parse_term(term)?);
                }
            }
            "limit" => {
                query.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}"))
                            .with_field("limit")
                    })?;
            }
            "continue" => {
                let bytes = B64URL.decode(value.as_bytes()).map_err(|_| {
                    ApiError::bad_request("invalid continue token").with_field("continue")
                })?;
                let after = String::from_utf8(bytes).map_err(|_| {
                    ApiError::bad_request("invalid continue token").with_field("continue")
                })?;
                query.after = Some(after);
            }
            _ => {}
        }
    }
    Ok(query)
}

fn parse_term(term: &str) -> Result<Term, ApiError> {
    let bad = || {
        ApiError::bad_request(format!("invalid label selector term {term:?}"))
            .with_field("labelSelector")
    };
    let term = if let Some((key, value)) = term.split_once("!=") {
        Term::NotEquals(key.trim().to_owned(), value.trim().to_owned())
    } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        Term::Equals(key.trim().to_owned(), value.trim().to_owned())
    } else if let Some(key) = term.strip_prefix('!') {
        Term::Absent(key.trim().to_owned())
    } else {
        Term::Exists(term.to_owned())
    };
    let key = match &term {
        Term::Equals(k, _) | Term::NotEquals(k, _) | Term::Exists(k) | Term::Absent(k) => k,
    };
    if key.is_empty() {
        return Err(bad());
    }
    Ok(term)
}

fn selected(labels: &BTreeMap<String, String>, selector: &[Term]) -> bool {
    selector.iter().all(|term| match term {
        Term::Equals(k, v) => labels.get(k) == Some(v),
        Term::NotEquals(k, v) => labels.get(k) != Some(v),
        Term::Exists(k) => labels.contains_key(k),
        Term::Absent(k) => !labels.contains_key(k),
    })
}

/// One page of `items` (sorted by name) after the query's cursor.
fn page(items: Vec<(String, Value)>, query: &ListQuery) -> Value {
    let mut rest = items
        .into_iter()
        .filter(|(name, _)| query.after.as_ref().is_none_or(|after| name > after));
    let page: Vec<(String, Value)> = rest.by_ref().take(query.limit).collect();
    let next = match (rest.next(), page.last()) {
        (Some(_), Some((last, _))) => Value::String(B64URL.encode(last)),
        _ => Value::Null,
    };
    json!({
        "items": page.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "continue": next,
    })
}

fn list_resources(
    api: &Api,
    kind: Kind,
    namespace: Option<&str>,
    query: &ListQuery,
) -> Result<Value, ApiError> {
    let items = api
        .store
        .list_resources(Some(kind), namespace)?
        .into_iter()
        .filter(|s| selected(&s.resource.metadata.labels, &query.selector))
        .map(|s| Ok((s.resource.name().to_owned(), document(api, &s)?)))
        .collect::<Result<_, ApiError>>()?;
    Ok(page(items, query))
}

// ---- namespaces -----------------------------------------------------------------------

pub async fn list_namespaces(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let caller = api.caller(&headers)?;
        let query = list_query(&uri)?;
        let items = api
            .store
            .list_resources(Some(Kind::Namespace), None)?
            .into_iter()
            .filter(|s| {
                caller
                    .access
                    .allows(s.resource.name(), postern_model::Permission::Read)
            })
            .filter(|s| selected(&s.resource.metadata.labels, &query.selector))
            .map(|s| Ok((s.resource.name().to_owned(), document(&api, &s)?)))
            .collect::<Result<_, ApiError>>()?;
        Ok(Json(page(items, &query)))
    })
    .await
}

pub async fn create_namespace(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&api, &headers, body).await?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        caller.check_account_admin("create namespaces")?;
        let (resource, _) = decode_resource(&bytes, Kind::Namespace, None, None)?;
        let stored = api.store.put_resource(resource, Precondition::Absent)?;
        Ok((StatusCode::CREATED, Json(document(&api, &stored)?)).into_response())
    })
    .await
}

pub async fn get_namespace(
    State(api): State<Arc<Api>>,
    path: Params<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let namespace = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let what = Kind::Namespace.describe("", &namespace);
        caller.check_read(&namespace, &what)?;
        let stored = api
            .store
            .get_resource(Kind::Namespace, "", &namespace)?
            .ok_or_else(|| ApiError::not_found(&what))?;
        Ok(Json(document(&api, &stored)?))
    })
    .await
}

pub async fn replace_namespace(
    State(api): State<Arc<Api>>,
    path: Params<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let namespace = params(path)?;
    let bytes = read_body(&api, &headers, body).await?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        caller.check_write(&namespace, &Kind::Namespace.describe("", &namespace))?;
        let (resource, generation) =
            decode_resource(&bytes, Kind::Namespace, None, Some(&namespace))?;
        let stored = api
            .store
            .put_resource(resource, required_generation(generation)?)?;
        Ok(Json(document(&api, &stored)?))
    })
    .await
}

pub async fn delete_namespace(
    State(api): State<Arc<Api>>,
    path: Params<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let namespace = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        caller.check_read(&namespace, &Kind::Namespace.describe("", &namespace))?;
        caller.check_account_admin("delete namespaces")?;
        api.store.delete_resource(Kind::Namespace, "", &namespace)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

fn required_generation(generation: Option<i64>) -> Result<Precondition, ApiError> {
    generation.map(Precondition::Generation).ok_or_else(|| {
        ApiError::bad_request(
            "metadata.generation is required to replace a resource (read it first)",
        )
        .with_field("metadata.generation")
    })
}

// ---- namespaced collections -------------------------------------------------------------

/// One resource, once the caller may read it (or, with `write`, change it): 404 when it
/// may not see it or it does not exist, alike; 403 when it may only read it.
pub(crate) fn visible_resource(
    api: &Api,
    caller: &Caller,
    kind: Kind,
    namespace: &str,
    name: &str,
    write: bool,
) -> Result<StoredResource, ApiError> {
    let what = kind.describe(namespace, name);
    if write {
        caller.check_write(namespace, &what)?;
    } else {
        caller.check_read(namespace, &what)?;
    }
    api.store
        .get_resource(kind, namespace, name)?
        .ok_or_else(|| ApiError::not_found(&what))
}

pub(crate) fn namespace_exists(api: &Api, namespace: &str) -> Result<(), ApiError> {
    if api
        .store
        .get_resource(Kind::Namespace, "", namespace)?
        .is_none()
    {
        return Err(ApiError::not_found(format!("Namespace {namespace}")));
    }
    Ok(())
}

pub async fn list(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let (namespace, segment) = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let collection = collection(&segment)?;
        caller.check_read(&namespace, &format!("Namespace {namespace}"))?;
        namespace_exists(&api, &namespace)?;
        let query = list_query(&uri)?;
        match collection {
            Collection::Resource(kind) => {
                Ok(Json(list_resources(&api, kind, Some(&namespace), &query)?))
            }
            Collection::Secrets => {
                let items = api
                    .store
                    .list_secrets(Some(&namespace))?
                    .iter()
                    .map(|s| (s.name.clone(), secret_document(s)))
                    .collect();
                Ok(Json(page(items, &query)))
            }
        }
    })
    .await
}

pub async fn create(
    State(api): State<Arc<Api>>,
    path: Params<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (namespace, segment) = params(path)?;
    let bytes = read_body(&api, &headers, body).await?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let collection = collection(&segment)?;
        caller.check_write(&namespace, &format!("Namespace {namespace}"))?;
        namespace_exists(&api, &namespace)?;
        match collection {
            Collection::Resource(kind) => {
                let (resource, _) = decode_resource(&bytes, kind, Some(&namespace), None)?;
                check_widening(&api, &caller, &resource)?;
                let guard = identity_guard(&caller, &resource);
                let stored =
                    api.store
                        .put_resource_guarded(resource, Precondition::Absent, guard)?;
                Ok((StatusCode::CREATED, Json(document(&api, &stored)?)).into_response())
            }
            Collection::Secrets => {
                let mut body = json_body(&bytes)?;
                let name = match body.remove("name") {
                    Some(Value::String(name)) => name,
                    _ => {
                        return Err(
                            ApiError::bad_request("name must be a string").with_field("name")
                        )
                    }
                };
                let (info, _) = set_secret(&api, &namespace, &name, body, false)?;
                Ok((StatusCode::CREATED, Json(secret_document(&info))).into_response())
            }
        }
    })
    .await
}

/// Stores a secret from a body's `value` (replacing one of that name only when
/// `replace`); returns its (value-free) description and whether it was created.
fn set_secret(
    api: &Api,
    namespace: &str,
    name: &str,
    mut body: serde_json::Map<String, Value>,
    replace: bool,
) -> Result<(SecretInfo, bool), ApiError> {
    let value = match body.remove("value") {
        Some(Value::String(value)) if !value.is_empty() => SecretValue::new(value),
        _ => {
            return Err(
                ApiError::bad_request("value must be a non-empty string").with_field("value")
            )
        }
    };
    if let Some(key) = body.keys().next() {
        return Err(ApiError::bad_request(format!("unknown field {key:?}")).with_field(key));
    }
    postern_model::validate_name(name)
        .map_err(|e| ApiError::invalid(e.to_string()).with_field("name"))?;
    let created = if replace {
        api.store.set_secret(namespace, name, &value)?
    } else {
        api.store.create_secret(namespace, name, &value)?;
        true
    };
    Ok((find_secret(api, namespace, name)?, created))
}

fn find_secret(api: &Api, namespace: &str, name: &str) -> Result<SecretInfo, ApiError> {
    api.store
        .list_secrets(Some(namespace))?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Secret {namespace}/{name}")))
}

pub async fn get(
    State(api): State<Arc<Api>>,
    path: Params<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (namespace, segment, name) = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let collection = collection(&segment)?;
        match collection {
            Collection::Resource(kind) => {
                let stored = visible_resource(&api, &caller, kind, &namespace, &name, false)?;
                Ok(Json(document(&api, &stored)?))
            }
            Collection::Secrets => {
                caller.check_read(&namespace, &format!("Secret {namespace}/{name}"))?;
                Ok(Json(secret_document(&find_secret(
                    &api, &namespace, &name,
                )?)))
            }
        }
    })
    .await
}

pub async fn replace(
    State(api): State<Arc<Api>>,
    path: Params<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (namespace, segment, name) = params(path)?;
    let bytes = read_body(&api, &headers, body).await?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let collection = collection(&segment)?;
        match collection {
            Collection::Resource(kind) => {
                let what = kind.describe(&namespace, &name);
                caller.check_write(&namespace, &what)?;
                let (resource, generation) =
                    decode_resource(&bytes, kind, Some(&namespace), Some(&name))?;
                check_widening(&api, &caller, &resource)?;
                let guard = identity_guard(&caller, &resource);
                let stored = api.store.put_resource_guarded(
                    resource,
                    required_generation(generation)?,
                    guard,
                )?;
                Ok(Json(document(&api, &stored)?).into_response())
            }
            Collection::Secrets => {
                caller.check_write(&namespace, &format!("Secret {namespace}/{name}"))?;
                namespace_exists(&api, &namespace)?;
                let (info, created) =
                    set_secret(&api, &namespace, &name, json_body(&bytes)?, true)?;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok((status, Json(secret_document(&info))).into_response())
            }
        }
    })
    .await
}

/// An Identity may be written or removed only by a caller who could have granted all
/// it holds and would hold: its groups and login certificate decide who gets that access.
/// Run as the write's guard, so no role binding can change between check and write.
fn check_identity(
    view: &AccessView<'_>,
    caller: &Caller,
    identity: &QualifiedName,
    groups: Option<&[String]>,
) -> Result<(), StateError> {
    let mut holds = Vec::new();
    if let Some((_, current)) = view.access_of(identity)? {
        holds.push(current);
    }
    if let Some(groups) = groups {
        holds.push(view.access_for(identity, groups)?);
    }
    if holds.iter().all(|access| caller.access.covers(access)) {
        Ok(())
    } else {
        Err(StateError::Refused(format!(
            "{caller} may not change Identity {identity}: its role bindings reach further than {caller}'s"
        )))
    }
}

/// The guard of a write of `resource`: [`check_identity`] for an Identity.
fn identity_guard<'c>(
    caller: &'c Caller,
    resource: &Resource,
) -> impl FnOnce(&AccessView<'_>) -> Result<(), StateError> + 'c {
    let identity = match &resource.spec {
        Spec::Identity(spec) => Some((resource.qualified_name(), spec.groups.clone())),
        _ => None,
    };
    move |view| match identity {
        Some((name, groups)) => check_identity(view, caller, &name, Some(&groups)),
        None => Ok(()),
    }
}

/// Checks a write of a role binding beyond the namespace: it may not grant more than
/// the caller holds. (Identities are checked by [`identity_guard`], inside the write.)
fn check_widening(api: &Api, caller: &Caller, resource: &Resource) -> Result<(), ApiError> {
    match &resource.spec {
        Spec::RoleBinding(binding) => {
            caller.check_grant(resource.namespace(), binding.role)?;
            // A replace insists on the generation its caller read, so what was checked
            // here is what gets replaced.
            check_existing_binding(api, caller, resource.namespace(), resource.name()).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// A binding may be changed or removed only by a caller who could have granted it.
/// Returns the generation checked, so the change can insist on it.
fn check_existing_binding(
    api: &Api,
    caller: &Caller,
    namespace: &str,
    name: &str,
) -> Result<Option<i64>, ApiError> {
    let Some(stored) = api.store.get_resource(Kind::RoleBinding, namespace, name)? else {
        return Ok(None);
    };
    if let Spec::RoleBinding(binding) = &stored.resource.spec {
        caller.check_grant(namespace, binding.role)?;
    }
    Ok(Some(stored.generation))
}

pub async fn remove(
    State(api): State<Arc<Api>>,
    path: Params<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (namespace, segment, name) = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        match collection(&segment)? {
            Collection::Resource(kind) => {
                caller.check_write(&namespace, &kind.describe(&namespace, &name))?;
                let checked = match kind {
                    Kind::RoleBinding => check_existing_binding(&api, &caller, &namespace, &name)?,
                    _ => None,
                };
                let identity = QualifiedName::new(&namespace, &name);
                api.store
                    .delete_resource_guarded(
                        kind,
                        &namespace,
                        &name,
                        checked,
                        |view| match kind {
                            Kind::Identity => check_identity(view, &caller, &identity, None),
                            _ => Ok(()),
                        },
                    )?;
            }
            Collection::Secrets => {
                caller.check_write(&namespace, &format!("Secret {namespace}/{name}"))?;
                api.store.delete_secret(&namespace, &name)?;
            }
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ---- tokens ----------------------------------------------------------------------------

pub async fn revoke_token(
    State(api): State<Arc<Api>>,
    path: Params<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let jti = params(path)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let what = format!("token {jti}");
        let record = api
            .store
            .access_token(&jti)?
            .ok_or_else(|| ApiError::not_found(&what))?;
        caller.check_write(&record.identity.namespace, &what)?;
        api.store.revoke_access_token(&jti)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
