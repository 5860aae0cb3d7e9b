//! Postern's admin HTTP API (axum on hyper): resources by namespace with RBAC from role
//! bindings, Plugin components by content address, the OAuth2 client-credentials token
//! endpoint, JWKS, health, Prometheus metrics and the OpenAPI document that describes all
//! of it; over TLS when configured. Also the blocking client the CLI's `--server` uses.

// The OpenAPI document's schema table is one `json!` literal, deeper than the default.
#![recursion_limit = "256"]

mod auth;
pub mod client;
mod components;
mod credentials;
mod error;
mod explain;
mod leases;
mod logs;
mod metrics;
mod oauth;
pub mod openapi;
mod overview;
mod plan;
mod plugin_runtime;
mod resources;
mod tls;
pub mod tokens;
mod ui;
mod whoami;

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
    /// Renews and revokes leases and checks targets for the API's callers; `None` answers
    /// those requests with 503.
    pub issuer: Option<Arc<postern_issuer::Issuer>>,
    pub info: ServerInfo,
    /// Set when the server shuts down, so the requests that never end on their own (the
    /// access log's stream) do.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Api {
    pub fn new(
        store: Arc<Store>,
        tokens: Arc<TokenAuthority>,
        metrics: Vec<Arc<dyn MetricsSource>>,
        max_body_bytes: usize,
    ) -> Api {
        Api {
            store,
            tokens,
            metrics,
            max_body_bytes,
            client_checks: tokio::sync::Semaphore::new(CONCURRENT_CLIENT_CHECKS),
            issuer: None,
            info: ServerInfo::default(),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn with_issuer(mut self, issuer: Arc<postern_issuer::Issuer>) -> Api {
        self.issuer = Some(issuer);
        self
    }

    pub fn with_info(mut self, info: ServerInfo) -> Api {
        self.info = info;
        self
    }

    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}

/// What the overview tells of the server itself.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// RFC 3339.
    pub started_at: String,
    pub proxy_address: String,
    pub admin_address: String,
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
        .route("/", get(ui::to_ui))
        .route("/ui", get(ui::to_ui))
        .route("/ui/", get(ui::root))
        .route("/ui/{*path}", get(ui::asset))
        .route("/api/v1/token", post(oauth::token))
        .route(paths::WHOAMI, get(whoami::whoami))
        .route(paths::OVERVIEW, get(overview::overview))
        .route(paths::LEASES, get(leases::list))
        .route(paths::LEASES_REVOKE, post(leases::revoke_matching))
        .route(paths::LEASE, delete(leases::revoke))
        .route(paths::LEASE_RENEW, post(leases::renew))
        .route(paths::TARGET_CHECK, post(leases::check))
        .route(paths::RECONCILE_PLAN, post(plan::reconcile_plan))
        .route(paths::PLUGIN_RUNTIME, get(plugin_runtime::runtime))
        .route(paths::EXPLAIN, post(explain::explain))
        .route(paths::LOGS, get(logs::list))
        .route(paths::LOGS_EXPORT, get(logs::export))
        .route(paths::LOGS_STREAM, get(logs::stream))
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
            paths::IDENTITY_KEYS,
            get(credentials::list_keys).post(credentials::create_key),
        )
        .route(paths::IDENTITY_KEY, delete(credentials::revoke_key))
        .route(
            paths::IDENTITY_CLIENTS,
            get(credentials::list_clients).post(credentials::create_client),
        )
        .route(paths::IDENTITY_CLIENT, delete(credentials::delete_client))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::middleware::map_response(ui::security_headers))
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
    let stopping = api.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
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
