//! Postern's admin HTTP API (axum on hyper): resources by namespace with RBAC from role
//! bindings, Plugin components by content address, the OAuth2 client-credentials token
//! endpoint, JWKS, health, Prometheus metrics and the OpenAPI document that describes all
//! of it; over TLS when configured. Also the blocking client the CLI's `--server` uses.

mod auth;
pub mod client;
mod components;
mod error;
mod metrics;
mod oauth;
pub mod openapi;
mod resources;
mod tls;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::Router;
use postern_state::Store;
use tokio::net::TcpListener;

pub use client::{paths, Client, ClientError};
pub use components::MAX_COMPONENT_BYTES;
pub use error::ApiError;
pub use metrics::{MetricFamily, MetricType, MetricsSource};
pub use tls::{ApiTls, ApiTlsError};
pub use tokens::{Claims, IssuedToken, TokenAuthority, TokenError, TokenSettings};

/// What every request handler shares.
pub struct Api {
    pub store: Arc<Store>,
    pub tokens: Arc<TokenAuthority>,
    pub metrics: Vec<Arc<dyn MetricsSource>>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Bounds the argon2 checks the token endpoint runs at once (each takes ~19 MiB and
    /// tens of ms), so unauthenticated callers cannot exhaust memory or threads.
    pub client_checks: tokio::sync::Semaphore,
}

/// Concurrent client-secret checks at the token endpoint.
pub const CONCURRENT_CLIENT_CHECKS: usize = 4;

/// Runs blocking work (state reads and writes, argon2) off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Every route of the API.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/healthz", get(metrics::healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::prometheus))
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/token", post(oauth::token))
        .route("/api/v1/tokens/{jti}", delete(resources::revoke_token))
        .route(
            paths::NAMESPACES,
            get(resources::list_namespaces).post(resources::create_namespace),
        )
        .route(
            paths::NAMESPACE,
            get(resources::get_namespace)
                .put(resources::replace_namespace)
                .delete(resources::delete_namespace),
        )
        .route(
            paths::COLLECTION,
            get(resources::list).post(resources::create),
        )
        .route(
            paths::ITEM,
            get(resources::get)
                .put(resources::replace)
                .delete(resources::remove),
        )
        .route(paths::PLUGIN_COMPONENT, put(components::put_component))
        .route(
            "/api/v1/namespaces/{namespace}/identities/{name}/clients",
            get(resources::list_clients),
        )
        .route(
            "/api/v1/namespaces/{namespace}/identities/{name}/clients/{client_id}",
            delete(resources::delete_client),
        )
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(api)
}

/// Serves the API on `listener`, over TLS when `tls` is given, until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    tls: Option<Arc<ApiTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => {
            tls::serve_tls(listener, router(api), tls, shutdown).await;
            Ok(())
        }
        None => {
            axum::serve(listener, router(api))
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
