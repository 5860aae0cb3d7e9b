//! Postern's PostgreSQL wire proxy: accepts clients, authenticates them as identities with
//! SCRAM-SHA-256 (API keys) or an access token as a password, logs in upstream with credentials the client never sees, and relays.
//! It reaches state only through [`postern_model::Directory`].

mod auth;
mod cancel;
mod connect;
mod error;
mod handshake;
mod inspect;
mod io;
mod pool;
mod relay;
mod relay_threads;
mod session;
mod sql;
mod stream;
mod tls;
mod upstream;
mod upstream_tls;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use postern_model::TokenPassword;
use postern_model::{AccessLog, AuthProviders, Directory, SessionCredentials, TokenVerifier};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use session::{Admission, Refusal, Slot};

pub use error::{ClientError, SessionError, UpstreamError};
pub use relay_threads::RelayThreads;
pub use tls::{TlsConfig, TlsError};
pub use upstream_tls::client_config as upstream_client_config;

/// Limits and timeouts of the proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub max_startup_packet: usize,
    pub max_message_size: usize,
    pub auth_timeout: Duration,
    /// Client connections open at once; past it new clients get 53300.
    pub max_client_connections: usize,
    pub upstream_connect_timeout: Duration,
    /// TCP keepalive on both legs: probes start after this long without traffic.
    pub tcp_keepalive: Option<Duration>,
    /// A client that takes nothing of what is sent to it for this long (it stopped
    /// reading) loses its session, and the upstream connection is freed.
    pub client_write_timeout: Option<Duration>,
    /// How long sessions may run on after shutdown starts.
    pub shutdown_grace: Duration,
    /// Refuse clients that do not switch to TLS (28000).
    pub require_tls: bool,
    /// Where an identity without API keys may log in with an access token as a cleartext
    /// password.
    pub token_password: TokenPassword,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            max_startup_packet: postern_wire::DEFAULT_MAX_STARTUP_PACKET,
            max_message_size: postern_wire::DEFAULT_MAX_MESSAGE,
            auth_timeout: Duration::from_secs(30),
            max_client_connections: 10_000,
            upstream_connect_timeout: Duration::from_secs(10),
            tcp_keepalive: Some(Duration::from_secs(60)),
            client_write_timeout: Some(Duration::from_secs(300)),
            shutdown_grace: Duration::from_secs(30),
            require_tls: false,
            token_password: TokenPassword::default(),
        }
    }
}

/// Counters of the proxy since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub sessions_started: AtomicU64,
    pub sessions_active: AtomicU64,
    pub auth_failures: AtomicU64,
    pub policy_denials: AtomicU64,
    pub statements: AtomicU64,
    /// Clients refused because `max_client_connections` were open.
    pub connections_refused: AtomicU64,
}

impl GatewayStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Everything sessions share.
pub struct Gateway {
    /// Limits and timeouts; a reload replaces them for connections from then on.
    settings: std::sync::RwLock<Arc<ProxySettings>>,
    /// Client connections open now (each holds an [`OpenConnection`]), compared with
    /// `max_client_connections` as it is at each accept.
    open_connections: Arc<AtomicUsize>,
    directory: Arc<dyn Directory>,
    /// Secret behind the fake salts shown for unknown identities; must be stable across
    /// restarts and across gateways that share state.
    mock_secret: [u8; 32],
    cancels: cancel::CancelMap,
    pool: pool::Pool,
    /// Client-leg TLS, when a certificate is configured.
    tls: Option<TlsConfig>,
    /// Roles per session for `mode: dynamic` services; without it they are refused.
    session_credentials: Option<Arc<dyn SessionCredentials>>,
    /// The access log; without it sessions are not recorded.
    access_log: Option<Arc<dyn AccessLog>>,
    /// Checks access tokens given as passwords; without it only API keys log in.
    tokens: Option<Arc<dyn TokenVerifier>>,
    /// The store's resource epoch as last read; watched sessions bind their rules again
    /// when it moves.
    resource_epoch: Arc<AtomicU64>,
    /// Services' auth-provider plugins; without them only API keys and access tokens
    /// log in.
    auth_providers: std::sync::OnceLock<Arc<dyn AuthProviders>>,
    pub stats: GatewayStats,
}

impl Gateway {
    pub fn new(
        settings: ProxySettings,
        directory: Arc<dyn Directory>,
        mock_secret: [u8; 32],
        tls: Option<TlsConfig>,
        session_credentials: Option<Arc<dyn SessionCredentials>>,
        access_log: Option<Arc<dyn AccessLog>>,
        tokens: Option<Arc<dyn TokenVerifier>>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            settings: std::sync::RwLock::new(Arc::new(settings)),
            open_connections: Arc::new(AtomicUsize::new(0)),
            directory,
            mock_secret,
            cancels: cancel::CancelMap::default(),
            pool: pool::Pool::default(),
            tls,
            session_credentials,
            access_log,
            tokens,
            resource_epoch: Arc::new(AtomicU64::new(0)),
            auth_providers: std::sync::OnceLock::new(),
            stats: GatewayStats::default(),
        })
    }

    /// The limits and timeouts in force.
    pub fn settings(&self) -> Arc<ProxySettings> {
        // A replacement cannot leave the value torn.
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the limits and timeouts (SIGHUP): connections accepted from now on get
    /// them, and `max_client_connections` applies at the next accept. A session that is
    /// relaying keeps its relay's (message size, write timeout); one still logging in may
    /// meet the new values for the rest of its login.
    pub fn set_settings(&self, settings: ProxySettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    /// A place under `max_client_connections`, or `None` when they are all taken.
    fn admit(&self) -> Option<OpenConnection> {
        let limit = self.settings().max_client_connections;
        let open = self.open_connections.fetch_add(1, Ordering::AcqRel);
        if open >= limit {
            self.open_connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(OpenConnection(self.open_connections.clone()))
    }

    /// Lets services' `auth.providers` check cleartext passwords (set once, at start).
    pub fn set_auth_providers(&self, providers: Arc<dyn AuthProviders>) {
        let _ = self.auth_providers.set(providers);
    }

    /// Idle upstream connections kept for reuse.
    pub fn pooled_connections(&self) -> usize {
        self.pool.idle_count()
    }

    /// The store's resource epoch as this gateway last read it (every 100 ms): sessions
    /// bind their rules again when it moves.
    pub fn resource_epoch(&self) -> u64 {
        self.resource_epoch.load(Ordering::Relaxed)
    }

    /// Notes the store's resource epoch; an error keeps the last one (and is logged).
    async fn read_resource_epoch(&self) {
        let directory = self.directory.clone();
        match tokio::task::spawn_blocking(move || directory.resource_epoch()).await {
            Ok(Ok(epoch)) => self.resource_epoch.store(epoch, Ordering::Relaxed),
            Ok(Err(e)) => warn!(error = %e, "cannot read the resource epoch"),
            Err(e) => warn!(error = %e, "cannot read the resource epoch"),
        }
    }

    /// Re-reads the TLS certificate and key (on SIGHUP); the old ones stay on failure.
    /// Without TLS configured there is nothing to do.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls.as_ref().map_or(Ok(()), TlsConfig::reload)
    }
}

/// One client connection counted against `max_client_connections` while it is open.
pub(crate) struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often idle upstream connections past their timeout or lifetime are closed.
const POOL_EVICTION_INTERVAL: Duration = Duration::from_secs(5);

/// How long sessions get to say goodbye after the grace period, before they are aborted.
const FAREWELL: Duration = Duration::from_secs(5);

/// How often the gateway looks whether any resource changed (rules apply to open
/// sessions from their next statement after it noticed).
const RESOURCE_EPOCH_INTERVAL: Duration = Duration::from_millis(100);

/// Over-the-limit clients told 53300 at once; past it they are closed without a word, so
/// a flood of connections holds nothing but the sockets the kernel already has.
const REFUSALS_AT_ONCE: usize = 64;

/// Waits for every session to end. Cancel-safe: unfinished sessions stay in the set.
async fn drain(sessions: &mut JoinSet<()>) {
    while sessions.join_next().await.is_some() {}
}

/// Accepts connections on `listener` until `shutdown` completes, then refuses new logins
/// (57P03), lets sessions finish for the grace period, tells the rest (57P01) and closes
/// them.
/// Sessions run on the caller's runtime.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    serve_on(listener, gateway, &[], shutdown).await
}

/// [`serve`], with sessions handed round-robin to the `relays` runtimes (see
/// [`RelayThreads`]); with none, they run on the caller's runtime.
pub async fn serve_on(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    relays: &[tokio::runtime::Handle],
    shutdown: impl Future<Output = ()>,
) {
    let (stop_sender, stop) = watch::channel(false);
    let evictor = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            let mut every = tokio::time::interval(POOL_EVICTION_INTERVAL);
            loop {
                every.tick().await;
                gateway.pool.evict_expired();
            }
        }
    });
    gateway.read_resource_epoch().await;
    let epoch_watcher = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            let mut every = tokio::time::interval(RESOURCE_EPOCH_INTERVAL);
            loop {
                every.tick().await;
                gateway.read_resource_epoch().await;
            }
        }
    });
    let mut sessions = JoinSet::new();
    let mut next_connection_id = 0u64;
    let refusing = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_connection_id += 1;
                    let admission = match gateway.admit() {
                        Some(open) => Admission { slot: Slot::Open(open), refusal: None },
                        None => {
                            GatewayStats::add(&gateway.stats.connections_refused, 1);
                            match refusing.clone().try_acquire_owned() {
                                Ok(slot) => Admission {
                                    slot: Slot::Refusing(slot),
                                    refusal: Some(Refusal::TooManyClients),
                                },
                                // Closed at once: dropping the stream.
                                Err(_) => continue,
                            }
                        }
                    };
                    let (gateway, stop, id) = (gateway.clone(), stop.clone(), next_connection_id);
                    let run =
                        move |stream| session::run(gateway, stream, peer, id, admission, stop);
                    let Some(relay) = relays.get(id as usize % relays.len().max(1)) else {
                        sessions.spawn(run(stream));
                        continue;
                    };
                    // The socket moves to the relay's reactor, so its wake-ups reach
                    // the thread that runs its session.
                    match stream.into_std() {
                        Ok(stream) => {
                            sessions.spawn_on(
                                async move {
                                    match tokio::net::TcpStream::from_std(stream) {
                                        Ok(stream) => run(stream).await,
                                        Err(e) => warn!(
                                            error = %e,
                                            "a relay thread cannot take a connection"
                                        ),
                                    }
                                },
                                relay,
                            );
                        }
                        Err(e) => warn!(error = %e, "cannot hand a connection to a relay thread"),
                    }
                }
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    info!(
        sessions = sessions.len(),
        grace_secs = gateway.settings().shutdown_grace.as_secs(),
        "shutting down: new logins are refused (57P03); waiting for sessions to finish"
    );
    // Until the sessions end or the grace period does, a client that connects is told
    // why it cannot log in (as PostgreSQL does while it shuts down) instead of finding
    // the port closed.
    let grace = tokio::time::sleep(gateway.settings().shutdown_grace);
    tokio::pin!(grace);
    let drained = loop {
        tokio::select! {
            () = &mut grace => break false,
            joined = sessions.join_next() => if joined.is_none() { break true },
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(slot) = refusing.clone().try_acquire_owned() else { continue };
                next_connection_id += 1;
                let admission = Admission {
                    slot: Slot::Refusing(slot),
                    refusal: Some(Refusal::ShuttingDown),
                };
                tokio::spawn(session::run(
                    gateway.clone(),
                    stream,
                    peer,
                    next_connection_id,
                    admission,
                    stop.clone(),
                ));
            }
        }
    };
    drop(listener);
    if !drained {
        info!(
            sessions = sessions.len(),
            "grace period over; closing sessions"
        );
        let _ = stop_sender.send(true);
        if tokio::time::timeout(FAREWELL, drain(&mut sessions))
            .await
            .is_err()
        {
            sessions.shutdown().await;
        }
    }
    evictor.abort();
    epoch_watcher.abort();
    gateway.pool.clear();
    info!("proxy stopped");
}
