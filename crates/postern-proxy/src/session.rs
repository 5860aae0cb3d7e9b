//! One client connection from first byte to close, phase by phase: the handshake
//! (`handshake.rs`), authentication as an identity (`auth.rs`), the service's route and
//! the upstream session (`connect.rs`), the relay (`relay.rs`, watched by `inspect.rs`),
//! and the upstream connection's reset for reuse at the end.
//! See <https://www.postgresql.org/docs/15/protocol-flow.html>.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use postern_model::{
    AuditEvent, ClientFacts, EventType, IdentityInfo, QualifiedName, RouteLookup,
    SessionCredentials, SessionInfo, SessionTotals, UpstreamInfo, UpstreamRoute, DEFAULT_NAMESPACE,
};
use postern_wire::backend::{self, Severity};
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tracing::{debug, info, warn, Instrument};

use crate::auth::authenticate;
use crate::cancel::{Registration, UpstreamKey};
use crate::connect::{connect, Connected};
use crate::error::SessionError;
use crate::handshake::{read_startup, resolve_names, Startup};
use crate::inspect::{Inspector, Rebind};
use crate::io::send;
use crate::pool::{self, PoolKey};
use crate::relay::{relay, Direction, RelayEnd, SessionLimits};
use crate::stream::{ClientStream, UpstreamStream};
use crate::upstream::{ForwardedParams, UpstreamConnection};
use crate::{Gateway, GatewayStats};

/// How long writing the final error to a client may take.
const FAREWELL_WRITE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long resetting an upstream connection for reuse may take before it is closed.
const RESET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a finished handshake leaves for the relay.
struct Established<'g> {
    identity: QualifiedName,
    service: QualifiedName,
    route: UpstreamRoute,
    pool_key: PoolKey,
    upstream: UpstreamConnection,
    upstream_pending: BytesMut,
    /// Keeps the session cancellable until it ends.
    cancel: Option<Registration<'g>>,
    /// The session's own role (`mode: dynamic`), revoked when this is dropped.
    lease: Option<LeaseHold>,
    /// What the access log says of every event of this session.
    info: Arc<SessionInfo>,
    /// What the service's rules saw of the client, to bind them again after a change.
    client: ClientFacts,
    /// The resource epoch the route (and its rules) was looked up at.
    epoch: u64,
}

/// A per-session role; dropping it (the session ended, or its login failed) has the
/// issuer revoke the role.
struct LeaseHold {
    credentials: Arc<dyn SessionCredentials>,
    id: String,
    expires_at: std::time::SystemTime,
}

impl LeaseHold {
    /// When the session must end, as a monotonic instant.
    fn deadline(&self) -> std::time::Instant {
        let left = self
            .expires_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        std::time::Instant::now() + left
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.credentials.release(std::mem::take(&mut self.id));
    }
}

/// A connection's place under `max_client_connections`, held for as long as it is open.
pub(crate) struct Admission {
    /// Given back when the connection closes.
    pub slot: Slot,
    /// Why the connection is only answered with an error once its startup packet is
    /// read (a cancel request is still passed on); `slot` is then one of the few for
    /// telling such clients.
    pub refusal: Option<Refusal>,
}

/// What a connection holds while it is open (dropped, it gives the place back).
#[allow(dead_code)] // held, never read
pub(crate) enum Slot {
    /// Its place under `max_client_connections`.
    Open(crate::OpenConnection),
    /// One of the few places for telling refused clients why.
    Refusing(OwnedSemaphorePermit),
}

/// Why a connection is refused at login.
#[derive(Clone, Copy)]
pub(crate) enum Refusal {
    /// `max_client_connections` are open (53300).
    TooManyClients,
    /// The gateway is draining its sessions before it stops (57P03).
    ShuttingDown,
}

/// Runs one connection to its end, logging the outcome; never panics on client input.
pub(crate) async fn run(
    gateway: Arc<Gateway>,
    tcp: TcpStream,
    peer: SocketAddr,
    connection_id: u64,
    admission: Admission,
    mut stop: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("session", conn = connection_id, client = %peer);
    async move {
        crate::io::tune_socket(&tcp, gateway.settings().tcp_keepalive);
        let mut client = ClientStream::Plain(tcp);
        let peer_facts = Peer {
            address: peer,
            connection_id,
            refusal: admission.refusal,
        };
        let _slot = admission.slot;
        let result = session(&gateway, &mut client, &peer_facts, &mut stop).await;
        if let Err(error) = result {
            match &error {
                SessionError::ClientGone => {
                    debug!("client closed the connection before logging in")
                }
                // Over TLS, a client that just closes its socket (as most do) is an
                // unexpected EOF to rustls; over TCP the same close is not an error.
                SessionError::ClientIo(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    debug!("client closed the connection without a TLS close_notify")
                }
                // Counted in the metrics; a log line each would flood the log with them.
                SessionError::TooManyClients => debug!("refused: max_client_connections open"),
                SessionError::AuthFailed { user } => {
                    warn!(user = %user, "authentication failed");
                    GatewayStats::add(&gateway.stats.auth_failures, 1);
                    if let Some(log) = &gateway.access_log {
                        let who = QualifiedName::parse(user, DEFAULT_NAMESPACE);
                        let info = SessionInfo {
                            connection_id,
                            session_id: new_session_id(),
                            identity: IdentityInfo {
                                name: who.name,
                                namespace: who.namespace,
                                groups: Vec::new(),
                            },
                            client_address: peer.to_string(),
                            ..SessionInfo::default()
                        };
                        let mut event = AuditEvent::new(EventType::AuthFailed, Arc::new(info));
                        event.details.reason = Some("password authentication failed".into());
                        log.record(event);
                    }
                }
                SessionError::ShuttingDown => info!("session closed by gateway shutdown"),
                e => warn!(kind = e.kind().as_str(), error = %e, "session failed"),
            }
            if let Some(reply) = error.to_client() {
                let mut out = BytesMut::new();
                backend::error_response(
                    &mut out,
                    Severity::Fatal,
                    &reply.sqlstate,
                    &reply.message,
                    None,
                );
                // Best effort, and bounded: the client may be gone or not reading.
                let _ = tokio::time::timeout(FAREWELL_WRITE, async {
                    client.write_all(&out).await?;
                    client.flush().await
                })
                .await;
            }
        }
        let _ = client.shutdown().await;
    }
    .instrument(span)
    .await
}

/// Counts a session as active for as long as it lives.
struct ActiveSession<'a>(&'a GatewayStats);

impl<'a> ActiveSession<'a> {
    fn new(stats: &'a GatewayStats) -> Self {
        GatewayStats::add(&stats.sessions_started, 1);
        GatewayStats::add(&stats.sessions_active, 1);
        ActiveSession(stats)
    }
}

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.0
            .sessions_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a connection comes from.
pub(crate) struct Peer {
    pub address: SocketAddr,
    pub connection_id: u64,
    /// Refused once its startup packet is read (a cancel request is still passed on).
    pub refusal: Option<Refusal>,
}

fn new_session_id() -> String {
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a relay ended, for SESSION_END.
fn end_reason(result: &Result<RelayEnd, SessionError>) -> String {
    match result {
        Ok(RelayEnd::ClientTerminated) => "client terminated".into(),
        Ok(RelayEnd::ClientClosed) => "client closed the connection".into(),
        Ok(RelayEnd::UpstreamClosed) => "upstream closed the connection".into(),
        Err(e) => e.to_string(),
    }
}

async fn session(
    gateway: &Gateway,
    client: &mut ClientStream,
    peer: &Peer,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let mut client_pending = BytesMut::with_capacity(8 * 1024);
    let established = tokio::select! {
        result = tokio::time::timeout(
            gateway.settings().auth_timeout,
            establish(gateway, client, &mut client_pending, peer),
        ) => result.map_err(|_| SessionError::AuthTimeout)??,
        _ = stop.wait_for(|stopping| *stopping) => return Err(SessionError::ShuttingDown),
    };
    let Some(mut established) = established else {
        return Ok(());
    };
    let service = established.service.to_string();
    info!(identity = %established.identity, service = %service, "session started");
    let _active = ActiveSession::new(&gateway.stats);
    let mut from_client =
        Direction::from_client(client_pending, gateway.settings().max_message_size);
    let mut from_upstream =
        Direction::from_upstream(std::mem::take(&mut established.upstream_pending));
    let limits = session_limits(
        &established.route,
        established.lease.as_ref(),
        gateway.settings().client_write_timeout,
    );
    // Sessions with neither rules nor an access log take the relay's untouched path.
    let inspector =
        (established.route.policy.is_some() || gateway.access_log.is_some()).then(|| {
            Inspector::new(
                established.route.policy.clone(),
                established.epoch,
                Some(Rebind {
                    directory: gateway.directory.clone(),
                    epoch: gateway.resource_epoch.clone(),
                    service: established.service.clone(),
                    identity: established.identity.clone(),
                    client: established.client.clone(),
                }),
                gateway.access_log.clone(),
                established.info.clone(),
            )
        });
    if let Some(inspector) = &inspector {
        inspector.record(AuditEvent::new(
            EventType::SessionStart,
            established.info.clone(),
        ));
    }
    let started = std::time::Instant::now();
    let upstream = &mut established.upstream.stream;
    // Plain TCP splits into borrowed halves without a lock; TLS through tokio's split.
    let (mut client_rx, mut client_tx) = client.split().map_err(SessionError::ClientIo)?;
    let (mut upstream_rx, mut upstream_tx) = upstream.split();
    let result = relay(
        (&mut client_rx, &mut client_tx),
        (&mut upstream_rx, &mut upstream_tx),
        (&mut from_client, &mut from_upstream),
        &service,
        limits,
        inspector.as_ref(),
        stop,
    )
    .await;
    if let Some(inspector) = &inspector {
        let (bytes_from_client, bytes_to_client) = inspector.bytes();
        let mut event = AuditEvent::new(EventType::SessionEnd, inspector.session().clone());
        event.details.totals = Some(Box::new(SessionTotals {
            bytes_from_client,
            bytes_to_client,
            statements: inspector.statements_run(),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            end_reason: end_reason(&result),
            events_dropped: inspector.session().dropped(),
        }));
        inspector.record(event);
        GatewayStats::add(&gateway.stats.statements, inspector.statements_run());
        GatewayStats::add(&gateway.stats.policy_denials, inspector.statements_denied());
    }
    let end = result?;
    let Established {
        identity,
        route,
        pool_key,
        mut upstream,
        cancel,
        ..
    } = established;
    // From here on a cancel with this session's key must reach nobody: the upstream
    // connection may serve another client next. A cancel already forwarded may still be
    // on its way, so such a connection is never reused.
    let cancel_forwarded = cancel.as_ref().is_some_and(Registration::cancel_forwarded);
    drop(cancel);
    let reused = end == RelayEnd::ClientTerminated
        && route.pool.enabled
        && !cancel_forwarded
        && reset_for_reuse(
            &mut upstream.stream,
            &route.pool.reset_query,
            &from_client,
            from_upstream,
        )
        .await;
    if reused {
        gateway.pool.put(pool_key, upstream, &route.pool);
    }
    info!(
        identity = %identity,
        service = %service,
        closed_by = match end {
            RelayEnd::ClientTerminated | RelayEnd::ClientClosed => "client",
            RelayEnd::UpstreamClosed => "upstream",
        },
        upstream_kept_for_reuse = reused,
        "session ended"
    );
    Ok(())
}

fn session_limits(
    route: &UpstreamRoute,
    lease: Option<&LeaseHold>,
    client_write: Option<std::time::Duration>,
) -> SessionLimits {
    let limit = |secs: u64| (secs > 0).then(|| std::time::Duration::from_secs(secs));
    SessionLimits {
        idle: limit(route.timeouts.idle_secs),
        in_transaction: limit(route.timeouts.idle_in_transaction_secs),
        deadline: lease.map(LeaseHold::deadline),
        client_write,
    }
}

/// Resets the upstream connection of a session whose client said goodbye; false if it
/// cannot be made clean (the caller then closes it).
async fn reset_for_reuse(
    upstream: &mut UpstreamStream,
    reset_query: &str,
    from_client: &Direction,
    mut from_upstream: Direction,
) -> bool {
    // Closing the connection is what rolls back a batch the client never synced; a
    // reset would run inside its implicit transaction, and commit it.
    if from_client.scanner.batch_open() {
        debug!("upstream connection not reused: the client left inside an extended-protocol batch without Sync");
        return false;
    }
    // One ReadyForQuery is owed for each Query, Sync and FunctionCall sent (the
    // scanner leaves out Syncs the server ignored in COPY mode).
    let Some(owed) = from_client
        .scanner
        .counted()
        .checked_sub(from_upstream.scanner.counted())
    else {
        return false;
    };
    let unread = from_upstream.buf.split_off(from_upstream.released);
    let reset = pool::reset(
        upstream,
        unread,
        from_upstream.scanner.body_remaining(),
        owed,
        reset_query,
    );
    match tokio::time::timeout(RESET_TIMEOUT, reset).await {
        Ok(Ok(())) => true,
        Ok(Err(reason)) => {
            debug!(reason, "upstream connection not reused");
            false
        }
        Err(_) => {
            debug!("upstream connection reset timed out");
            false
        }
    }
}

async fn establish<'g>(
    gateway: &'g Gateway,
    client: &mut ClientStream,
    pending: &mut BytesMut,
    peer: &Peer,
) -> Result<Option<Established<'g>>, SessionError> {
    let Some(Startup {
        minor_version,
        params,
        tls,
    }) = read_startup(gateway, client, pending).await?
    else {
        return Ok(None);
    };
    match peer.refusal {
        None => {}
        Some(Refusal::TooManyClients) => return Err(SessionError::TooManyClients),
        Some(Refusal::ShuttingDown) => {
            return Err(SessionError::NotReady(
                "the gateway is shutting down".to_owned(),
            ))
        }
    }
    if gateway.settings().require_tls && !client.is_tls() {
        return Err(SessionError::TlsRequired);
    }
    let user = params
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or(SessionError::NoUser)?
        .to_owned();
    if params
        .get("replication")
        .is_some_and(|v| v != "false" && v != "0" && v != "off")
    {
        return Err(SessionError::Unsupported("replication through the gateway"));
    }
    let dbname = params.get("database").unwrap_or(&user).to_owned();
    let (identity, service) = resolve_names(&user, &dbname);

    let mut out = BytesMut::new();
    let options: Vec<&str> = params.protocol_options().collect();
    if minor_version > 0 || !options.is_empty() {
        backend::negotiate_protocol_version(&mut out, 3, 0, options.into_iter());
    }
    let authenticated = authenticate(
        gateway, client, pending, &mut out, &identity, &service, &user, tls, peer,
    )
    .await?;
    let server_final = authenticated.server_final;

    // Services of namespaces the identity may not see answer as missing ones do (the
    // store decides from its role bindings).
    let unknown = || SessionError::UnknownService {
        dbname: dbname.clone(),
        identity: identity.to_string(),
    };
    let application_name = params
        .get("application_name")
        .unwrap_or_default()
        .to_owned();
    let client_facts = ClientFacts {
        address: peer.address.to_string(),
        tls: client.is_tls(),
        application_name: application_name.clone(),
        credential_groups: authenticated.credential_groups,
    };
    let service_label = service.dotted();
    let mut info = SessionInfo {
        connection_id: peer.connection_id,
        session_id: new_session_id(),
        identity: IdentityInfo {
            name: identity.name.clone(),
            namespace: identity.namespace.clone(),
            groups: Vec::new(),
        },
        service: service_label.clone(),
        namespace: service.namespace.clone(),
        upstream: None,
        client_address: client_facts.address.clone(),
        application_name,
        ..SessionInfo::default()
    };
    // Read before the lookup: a change racing it makes the session bind its rules again.
    let epoch = gateway
        .resource_epoch
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut route = match lookup_route(gateway, &service, &identity, client_facts.clone()).await? {
        RouteLookup::Found(route) => *route,
        RouteLookup::NoService => return Err(unknown()),
        RouteLookup::Denied(reason) => return Err(SessionError::Denied(reason)),
        RouteLookup::NotReady(reason) => return Err(SessionError::NotReady(reason)),
        RouteLookup::NoRouteRule(reason) => return Err(SessionError::NoRoute(reason)),
        RouteLookup::PolicyDenied(denial) => {
            GatewayStats::add(&gateway.stats.policy_denials, 1);
            if let Some(log) = &gateway.access_log {
                let mut event = AuditEvent::new(EventType::PolicyDenied, Arc::new(info));
                event.details.rule = Some(denial.rule.clone());
                event.details.statement_kind = Some(denial.kind);
                event.details.sqlstate = Some("42501".into());
                log.record(event);
            }
            return Err(SessionError::PolicyDenied {
                rule: denial.rule,
                service: service_label,
                reason: denial.reason,
            });
        }
    };
    info.identity.groups = route.identity_groups.clone();
    let lease = match route.dynamic_role.clone() {
        None => None,
        Some(credential_role) => {
            let credentials = gateway.session_credentials.clone().ok_or_else(|| {
                SessionError::Internal("a dynamic-mode service but no issuer".into())
            })?;
            let lease = credentials
                .acquire(&credential_role, &identity)
                .await
                .map_err(SessionError::NoLease)?;
            route.user = lease.user;
            route.password = Some(lease.password);
            // The role is this session's alone and goes with it.
            route.pool.enabled = false;
            Some(LeaseHold {
                credentials,
                id: lease.lease_id,
                expires_at: lease.expires_at,
            })
        }
    };
    info.upstream = Some(UpstreamInfo {
        target: route.target.dotted(),
        user: route.user.clone(),
        database: route.database.clone(),
    });
    let forwarded = ForwardedParams::of(&params);
    let pool_key = PoolKey {
        service: service_label.clone(),
        address: route.address.clone(),
        ssl_mode: route.ssl_mode,
        ca_file: route.ca_file.clone(),
        user: route.user.clone(),
        database: route.database.clone(),
        params: forwarded.startup.clone(),
    };
    let Connected {
        upstream,
        pending: upstream_pending,
        greeting,
        ready,
    } = connect(
        &gateway.pool,
        &route,
        &pool_key,
        &forwarded,
        gateway.settings().upstream_connect_timeout,
        gateway.settings().tcp_keepalive,
    )
    .await
    .map_err(|source| SessionError::Upstream {
        service: service_label,
        source,
    })?;

    if let Some(server_final) = &server_final {
        backend::authentication_sasl_final(&mut out, server_final);
    }
    backend::authentication_ok(&mut out);
    out.extend_from_slice(&greeting);
    // The client gets its own random cancel key, never the upstream's.
    let registration = upstream.key_data.clone().map(|key_data| {
        gateway
            .cancels
            .register(UpstreamKey::new(route.address.clone(), key_data))
    });
    if let Some(registration) = &registration {
        backend::backend_key_data(
            &mut out,
            registration.key.process_id,
            registration.key.secret,
        );
    }
    out.extend_from_slice(&ready);
    send(client, &mut out).await?;
    Ok(Some(Established {
        identity,
        service,
        route,
        pool_key,
        upstream,
        upstream_pending,
        cancel: registration,
        lease,
        info: Arc::new(info),
        client: client_facts,
        epoch,
    }))
}

async fn lookup_route(
    gateway: &Gateway,
    service: &QualifiedName,
    identity: &QualifiedName,
    client: ClientFacts,
) -> Result<RouteLookup, SessionError> {
    let directory = gateway.directory.clone();
    let (service, identity) = (service.clone(), identity.clone());
    tokio::task::spawn_blocking(move || directory.upstream_route(&service, &identity, &client))
        .await
        .map_err(|e| SessionError::Internal(e.to_string()))?
        .map_err(SessionError::from)
}
