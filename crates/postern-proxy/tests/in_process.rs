//! The gateway in-process, in front of a real PostgreSQL and driven by a real
//! tokio-postgres client: `serve` on a port-0 listener with a directory, an access log and
//! statement rules that are plain structs here. It covers the relay and the inspector —
//! what reaches the upstream, what the client sees, which events are recorded and when —
//! without the binary, the store or the audit pipeline (the end-to-end tests in
//! `crates/postern/tests` cover those).

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::try_join;
use postern_model::{
    AccessLog, AuditEvent, ClientFacts, ConnectionLimits, Denial, Directory, DirectoryError,
    EventType, IdentityCredentials, PoolSpec, QualifiedName, RouteLookup, SecretValue,
    SessionPolicy, SslMode, TimeoutSpec, UpstreamRoute,
};
use postern_proxy::{serve_on, Gateway, ProxySettings, RelayThreads};
use postern_testkit::{shared_pg, wait_for, wait_for_async, APP_PASSWORD};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// alice's API key; the directory holds only its SCRAM verifier.
const KEY: &str = "in-process-Key-0042";
const WAIT: Duration = Duration::from_secs(10);

/// One identity (`alice`) and one service (`orders`), which logs in upstream as `app_rw`.
struct OneService {
    verifier: String,
    upstream: String,
    rules: Option<Arc<dyn SessionPolicy>>,
    /// A rotation in flight: the route's password is this stale one, the right one comes
    /// as its fallback.
    stale_password: Option<&'static str>,
    timeouts: TimeoutSpec,
}

impl OneService {
    /// alice, the shared PostgreSQL as upstream, no timeouts, no rotation in flight.
    async fn new(rules: Option<Arc<dyn SessionPolicy>>) -> OneService {
        OneService {
            verifier: postgres_protocol::password::scram_sha_256(KEY.as_bytes()),
            upstream: shared_pg().await.address(),
            rules,
            stale_password: None,
            timeouts: TimeoutSpec::default(),
        }
    }
}

impl Directory for OneService {
    fn identity_credentials(
        &self,
        identity: &QualifiedName,
    ) -> Result<Option<IdentityCredentials>, DirectoryError> {
        Ok((identity.name == "alice").then(|| IdentityCredentials {
            verifiers: vec![self.verifier.clone()],
            certificate_common_name: None,
        }))
    }

    fn upstream_route(
        &self,
        service: &QualifiedName,
        _identity: &QualifiedName,
        _client: &ClientFacts,
    ) -> Result<RouteLookup, DirectoryError> {
        if service.name != "orders" {
            return Ok(RouteLookup::NoService);
        }
        Ok(RouteLookup::Found(Box::new(UpstreamRoute {
            target: QualifiedName::parse("main-pg", "team"),
            address: self.upstream.clone(),
            ssl_mode: SslMode::Disable,
            ca_file: None,
            database: "app".into(),
            user: "app_rw".into(),
            password: Some(SecretValue::new(
                self.stale_password.unwrap_or(APP_PASSWORD),
            )),
            fallback_password: self.stale_password.map(|_| SecretValue::new(APP_PASSWORD)),
            pool: PoolSpec::default(),
            limits: ConnectionLimits::default(),
            timeouts: self.timeouts.clone(),
            dynamic_role: None,
            config_name: None,
            policy: self.rules.clone(),
            identity_groups: Vec::new(),
        })))
    }

    fn resource_epoch(&self) -> Result<u64, DirectoryError> {
        Ok(0)
    }
}

/// Keeps every event it is given, in order; records the default event types.
#[derive(Default)]
struct Recorded {
    events: Mutex<Vec<AuditEvent>>,
    /// The threads events were recorded on (sessions record on the thread relaying them).
    threads: Mutex<std::collections::BTreeSet<String>>,
}

impl Recorded {
    fn of_type(&self, event_type: EventType) -> Vec<AuditEvent> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e.event_type == event_type)
            .cloned()
            .collect()
    }
}

impl AccessLog for Recorded {
    fn record(&self, event: AuditEvent) {
        let thread = std::thread::current().name().unwrap_or_default().to_owned();
        self.threads.lock().unwrap().insert(thread);
        self.events.lock().unwrap().push(event);
    }

    fn accepting(&self) -> bool {
        true
    }

    fn parameter_cap(&self) -> Option<usize> {
        None
    }

    fn records(&self, event_type: EventType) -> bool {
        !matches!(
            event_type,
            EventType::Parse | EventType::Bind | EventType::Close
        )
    }
}

/// Refuses any statement that mentions `secrets`.
#[derive(Debug)]
struct NoSecrets;

impl SessionPolicy for NoSecrets {
    fn check_statement(&self, sql: &str) -> Result<(), Denial> {
        if sql.contains("secrets") {
            return Err(Denial {
                rule: "no-secrets".into(),
                kind: "select".into(),
                reason: None,
            });
        }
        Ok(())
    }

    fn check_function_call(&self) -> Result<(), Denial> {
        Ok(())
    }
}

/// A running in-process gateway; it stops when dropped.
struct InProcess {
    port: u16,
    gateway: Arc<Gateway>,
    log: Arc<Recorded>,
    _stop: oneshot::Sender<()>,
    _relays: Arc<RelayThreads>,
}

impl InProcess {
    async fn start(rules: Option<Arc<dyn SessionPolicy>>) -> InProcess {
        InProcess::start_with(rules, ProxySettings::default()).await
    }

    async fn start_with(
        rules: Option<Arc<dyn SessionPolicy>>,
        settings: ProxySettings,
    ) -> InProcess {
        InProcess::start_in_front_of(OneService::new(rules).await, settings).await
    }

    async fn start_in_front_of(directory: OneService, settings: ProxySettings) -> InProcess {
        InProcess::start_on(directory, settings, 0).await
    }

    /// With `relay_threads` threads relaying its sessions (none: the test's runtime).
    async fn start_on(
        directory: OneService,
        settings: ProxySettings,
        relay_threads: usize,
    ) -> InProcess {
        let directory = Arc::new(directory);
        let log = Arc::new(Recorded::default());
        let gateway = Gateway::new(
            settings,
            directory,
            [7; 32],
            None,
            None,
            Some(log.clone()),
            None,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let relays = Arc::new(RelayThreads::start(relay_threads).unwrap());
        tokio::spawn({
            let (gateway, relays) = (gateway.clone(), relays.clone());
            async move {
                serve_on(listener, gateway, relays.handles(), async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        InProcess {
            port,
            gateway,
            log,
            _stop: stop,
            _relays: relays,
        }
    }

    async fn connect(&self) -> tokio_postgres::Client {
        self.try_connect().await.unwrap()
    }

    async fn try_connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("alice.team")
            .dbname("orders.team")
            .password(KEY)
            .connect(NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.code().map(|c| c.code().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_pass_through_and_each_is_recorded_before_its_reply() {
    let gateway = InProcess::start(None).await;
    let client = gateway.connect().await;

    // Simple protocol.
    let rows = client
        .simple_query("SELECT count(*) FROM items")
        .await
        .unwrap();
    let count = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("10"));
    // The QUERY event is recorded before the ReadyForQuery that ends the reply is
    // relayed, so it is there already.
    let queries = gateway.log.of_type(EventType::Query);
    assert_eq!(queries.len(), 1, "{queries:?}");
    assert_eq!(
        queries[0].statement.as_deref(),
        Some("SELECT count(*) FROM items")
    );
    assert_eq!(queries[0].details.command_tag.as_deref(), Some("SELECT 1"));
    assert_eq!(queries[0].details.rows, Some(1));

    // Extended protocol: one Parse, then two executions of the statement, pipelined.
    let by_id = client
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    let (first, second) = try_join(client.query(&by_id, &[&3]), client.query(&by_id, &[&4]))
        .await
        .unwrap();
    assert_eq!(first[0].get::<_, String>(0), "item 3");
    assert_eq!(second[0].get::<_, String>(0), "item 4");
    let executes = gateway.log.of_type(EventType::Execute);
    assert_eq!(executes.len(), 2, "{executes:?}");
    for execute in &executes {
        // Each EXECUTE carries the text its statement was prepared with.
        assert_eq!(
            execute.statement.as_deref(),
            Some("SELECT name FROM items WHERE id = $1")
        );
        assert_eq!(execute.details.rows, Some(1));
        assert_eq!(execute.details.command_tag.as_deref(), Some("SELECT 1"));
    }
    // PARSE and BIND are opt-in: not recorded.
    assert!(gateway.log.of_type(EventType::Parse).is_empty());

    // A failing statement's error reaches the client and the event. The client returns
    // on the ErrorResponse, which may be relayed before the ReadyForQuery that closes
    // the QUERY event: wait for it.
    let error = client
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&error).as_deref(), Some("22012"));
    let failed = wait_for("the failed query's event", WAIT, || {
        gateway.log.of_type(EventType::Query).get(1).cloned()
    })
    .await;
    assert_eq!(failed.statement.as_deref(), Some("SELECT 1/0"));
    assert_eq!(failed.details.sqlstate.as_deref(), Some("22012"));
    assert_eq!(gateway.log.of_type(EventType::SessionStart).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_statements_never_reach_the_upstream_and_the_session_goes_on() {
    let gateway = InProcess::start(Some(Arc::new(NoSecrets))).await;
    let client = gateway.connect().await;

    // No table `secrets` exists upstream: had the statement reached PostgreSQL, the
    // client would get 42P01, not the rule's 42501.
    let simple = client
        .simple_query("SELECT * FROM secrets")
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&simple).as_deref(), Some("42501"));
    let extended = client
        .query("SELECT * FROM secrets WHERE id = $1", &[&1])
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&extended).as_deref(), Some("42501"));
    assert!(
        extended
            .as_db_error()
            .is_some_and(|e| e.message().contains("no-secrets")),
        "{extended:?}"
    );

    // The same session runs what the rules allow, in and out of a transaction.
    client.batch_execute("BEGIN").await.unwrap();
    let row = client
        .query_one("SELECT name FROM items WHERE id = $1", &[&5])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "item 5");
    client.batch_execute("COMMIT").await.unwrap();

    let denials = gateway.log.of_type(EventType::PolicyDenied);
    assert_eq!(denials.len(), 2, "{denials:?}");
    for denial in &denials {
        assert_eq!(denial.details.rule.as_deref(), Some("no-secrets"));
        assert_eq!(denial.details.sqlstate.as_deref(), Some("42501"));
    }
    // Refused statements have no QUERY or EXECUTE of their own.
    let ran: Vec<String> = gateway
        .log
        .of_type(EventType::Query)
        .into_iter()
        .chain(gateway.log.of_type(EventType::Execute))
        .filter_map(|e| e.statement.map(|s| s.to_string()))
        .collect();
    assert!(ran.iter().all(|s| !s.contains("secrets")), "{ran:?}");
}

/// A session that runs `statement` and ends, then the next one, which takes the first
/// one's upstream connection from the pool.
async fn next_session_on_the_pooled_connection(
    gateway: &InProcess,
    statement: &str,
) -> tokio_postgres::Client {
    let first = gateway.connect().await;
    first.batch_execute(statement).await.unwrap();
    drop(first);
    wait_for("the upstream connection to be pooled", WAIT, || {
        (gateway.gateway.pooled_connections() == 1).then_some(())
    })
    .await;
    let next = gateway.connect().await;
    assert_eq!(gateway.gateway.pooled_connections(), 0);
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_s_upstream_connection_serves_the_next_one() {
    let gateway = InProcess::start(None).await;
    let second =
        next_session_on_the_pooled_connection(&gateway, "SET application_name = 'first'").await;
    // The pooled connection was reset: nothing of the first session is left.
    let name: String = second
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(name, "first");
    wait_for("the first session's end to be recorded", WAIT, || {
        (gateway.log.of_type(EventType::SessionEnd).len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_statement_s_event_has_its_own_command_tag_and_rows() {
    let gateway = InProcess::start(None).await;
    let client = gateway.connect().await;
    // Tags repeat and change; a tag met just before is kept, so each must still be read.
    let statements = [
        ("SELECT id FROM items WHERE id <= 2", "SELECT 2", 2),
        ("SELECT id FROM items WHERE id <= 2", "SELECT 2", 2),
        ("BEGIN", "BEGIN", 0),
        ("SELECT id FROM items WHERE id <= 3", "SELECT 3", 3),
        ("SHOW server_version", "SHOW", 0),
        ("COMMIT", "COMMIT", 0),
        ("SELECT id FROM items WHERE id <= 2", "SELECT 2", 2),
    ];
    for (sql, _, _) in statements {
        client.simple_query(sql).await.unwrap();
    }
    let seen: Vec<(String, u64)> = gateway
        .log
        .of_type(EventType::Query)
        .iter()
        .map(|e| {
            (
                e.details
                    .command_tag
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned(),
                e.details.rows.unwrap_or(u64::MAX),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = statements
        .iter()
        .map(|(_, tag, rows)| (tag.to_string(), *rows))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_execute_of_the_unnamed_statement_carries_the_text_parsed_last() {
    let gateway = InProcess::start(None).await;
    let client = gateway.connect().await;
    // query_typed parses the unnamed statement for every call.
    let texts = [
        "SELECT name FROM items WHERE id = $1",
        "SELECT name FROM items WHERE id = $1",
        "SELECT upper(name) FROM items WHERE id = $1",
        "SELECT name FROM items WHERE id = $1",
    ];
    for text in texts {
        client
            .query_typed(text, &[(&2i32, tokio_postgres::types::Type::INT4)])
            .await
            .unwrap();
    }
    let executed: Vec<String> = gateway
        .log
        .of_type(EventType::Execute)
        .iter()
        .filter_map(|e| e.statement.as_deref().map(str::to_owned))
        .collect();
    assert_eq!(executed, texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_relay_threads_share_the_pool_across_threads() {
    let directory = OneService::new(None).await;
    let gateway = InProcess::start_on(directory, ProxySettings::default(), 2).await;
    // Connections go to the relay threads in turn: the second session runs on the
    // other thread and takes the first one's pooled upstream connection.
    let second = next_session_on_the_pooled_connection(&gateway, "SELECT 1").await;
    let count: i64 = second
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 10);
    let threads = gateway.log.threads.lock().unwrap().clone();
    assert_eq!(
        threads.into_iter().collect::<Vec<_>>(),
        ["relay-0", "relay-1"],
        "each session records on the relay thread that runs it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_client_connections_new_clients_get_53300_until_one_leaves() {
    let settings = ProxySettings {
        max_client_connections: 2,
        ..ProxySettings::default()
    };
    let gateway = InProcess::start_with(None, settings).await;
    let first = gateway.connect().await;
    let second = gateway.connect().await;

    let refused = gateway.try_connect().await.expect_err("over the limit");
    assert_eq!(sqlstate(&refused).as_deref(), Some("53300"));
    assert!(
        refused
            .as_db_error()
            .is_some_and(|e| e.message() == "sorry, too many clients already"),
        "{refused:?}"
    );
    let refusals = &gateway.gateway.stats.connections_refused;
    assert_eq!(refusals.load(Ordering::Relaxed), 1);
    // The sessions within the limit go on undisturbed.
    second.simple_query("SELECT 1").await.unwrap();

    // Once one leaves, its place is free again.
    drop(first);
    let third = wait_for_async("a freed place", WAIT, || async {
        gateway.try_connect().await.ok()
    })
    .await;
    third.simple_query("SELECT 1").await.unwrap();
    second.simple_query("SELECT 1").await.unwrap();
}

/// A client connection whose reads stop for good once `stalled` is set: a client that
/// stopped reading what it is sent.
struct StallingStream {
    inner: tokio::net::TcpStream,
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for StallingStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.stalled.load(Ordering::Relaxed) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StallingStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_session_and_frees_its_upstream() {
    let settings = ProxySettings {
        client_write_timeout: Some(Duration::from_secs(1)),
        ..ProxySettings::default()
    };
    let gateway = InProcess::start_with(None, settings).await;
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = StallingStream {
        inner: tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
            .await
            .unwrap(),
        stalled: stalled.clone(),
    };
    let (client, connection) = tokio_postgres::Config::new()
        .user("alice.team")
        .dbname("orders.team")
        .password(KEY)
        .application_name("stops-reading")
        .connect_raw(stream, NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.unwrap();

    stalled.store(true, Ordering::Relaxed);
    // Far more than the sockets between them can hold.
    let query = tokio::spawn(async move {
        client
            .simple_query("SELECT repeat('x', 10000) FROM generate_series(1, 100000)")
            .await
    });
    let ended = wait_for("the stalled session to end", WAIT, || {
        gateway.log.of_type(EventType::SessionEnd).first().cloned()
    })
    .await;
    let reason = ended.details.totals.unwrap().end_reason;
    assert!(
        reason
            .starts_with("the client took nothing sent to it for 1 s (client_write_timeout_secs)"),
        "{reason}"
    );
    let pg = shared_pg().await;
    let admin = pg.connect("postgres").await.unwrap();
    wait_for_async("its upstream backend to go", WAIT, || async {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stops-reading'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0) == 0).then_some(())
    })
    .await;
    assert_eq!(
        gateway
            .gateway
            .stats
            .sessions_active
            .load(Ordering::Relaxed),
        0
    );
    query.abort();
}

/// The kernel timers of established TCP sockets whose local port is `port`, from
/// /proc/net/tcp: `2` is the keepalive timer, `0` none.
fn timers_of_sockets_on(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let established = *fields.get(3)? == "01";
            let timer = fields.get(5)?.split(':').next()?;
            (established && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| timer.to_owned())
        })
        .collect()
}

/// The timer of the one established socket on `port` once no retransmission (`01`) is
/// pending on it.
async fn settled_timer_on(port: u16) -> String {
    wait_for(
        "the socket to settle",
        WAIT,
        || match timers_of_sockets_on(port).as_slice() {
            [timer] if timer != "01" => Some(timer.clone()),
            _ => None,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_get_tcp_keepalive() {
    let with = InProcess::start_with(None, ProxySettings::default()).await;
    let client = with.connect().await;
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(settled_timer_on(with.port).await, "02");

    let settings = ProxySettings {
        tcp_keepalive: None,
        ..ProxySettings::default()
    };
    let without = InProcess::start_with(None, settings).await;
    let client = without.connect().await;
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(settled_timer_on(without.port).await, "00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_during_a_password_rotation_falls_back_to_the_other_password() {
    let gateway = InProcess::start_in_front_of(
        OneService {
            stale_password: Some("not-the-password-any-more"),
            ..OneService::new(None).await
        },
        ProxySettings::default(),
    )
    .await;
    let client = gateway.connect().await;
    let who: String = client
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "app_rw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_extended_protocol_copy_the_upstream_connection_is_reused() {
    use futures_util::SinkExt;
    let gateway = InProcess::start(None).await;
    let first = gateway.connect().await;
    first
        .batch_execute("CREATE TEMP TABLE copied (v int)")
        .await
        .unwrap();
    // tokio-postgres sends Execute and Sync together, then CopyData, CopyDone and Sync:
    // PostgreSQL ignores the first Sync (it arrives in COPY mode) and answers the second.
    let sink = first.copy_in("COPY copied FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\n2\n3\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 3);
    let count: i64 = first
        .query_one("SELECT count(*) FROM copied", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
    drop(first);
    wait_for("the upstream connection to be pooled", WAIT, || {
        (gateway.gateway.pooled_connections() == 1).then_some(())
    })
    .await;
}

/// A client logged in through the gateway by hand (SCRAM with alice's key), to send
/// what drivers do not: extended-protocol messages without a Sync.
async fn raw_login(port: u16) -> (tokio::net::TcpStream, bytes::BytesMut) {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
    use postgres_protocol::message::frontend;
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut out = bytes::BytesMut::new();
    frontend::startup_message(
        [("user", "alice.team"), ("database", "orders.team")],
        &mut out,
    )
    .unwrap();
    stream.write_all(&out).await.unwrap();
    let mut scram = ScramSha256::new(KEY.as_bytes(), ChannelBinding::unsupported());
    let mut input = bytes::BytesMut::new();
    loop {
        let message = read_backend(&mut stream, &mut input).await;
        let mut out = bytes::BytesMut::new();
        let (code, data) = message.body.split_at(message.body.len().min(4));
        match (message.tag, code) {
            (b'R', [0, 0, 0, 10]) => {
                frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut out).unwrap()
            }
            (b'R', [0, 0, 0, 11]) => {
                scram.update(data).unwrap();
                frontend::sasl_response(scram.message(), &mut out).unwrap();
            }
            (b'R', [0, 0, 0, 12]) => scram.finish(data).unwrap(),
            (b'Z', _) => return (stream, input),
            (b'E', _) => panic!("login refused"),
            _ => {}
        }
        stream.write_all(&out).await.unwrap();
    }
}

/// The next message from the gateway (within the wait).
async fn read_backend(
    stream: &mut tokio::net::TcpStream,
    input: &mut bytes::BytesMut,
) -> postern_wire::Message {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(message) = postern_wire::frame::try_take_message(input, 1 << 20).unwrap() {
            return message;
        }
        let read = tokio::time::timeout(WAIT, stream.read_buf(input))
            .await
            .expect("a message within the wait")
            .unwrap();
        assert!(read > 0, "the gateway closed the connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_left_without_sync_counts_as_idle_in_transaction() {
    use tokio::io::AsyncWriteExt;
    let gateway = InProcess::start_in_front_of(
        OneService {
            timeouts: TimeoutSpec {
                idle_secs: 3600,
                idle_in_transaction_secs: 1,
            },
            ..OneService::new(None).await
        },
        ProxySettings::default(),
    )
    .await;
    let (mut stream, mut input) = raw_login(gateway.port).await;
    // Parse, Bind, Execute and Flush: the statement runs and its results come back, and
    // the server keeps the implicit transaction open until a Sync that never comes.
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::parse("", "CREATE TABLE unsynced (v int)", [], &mut out)
        .unwrap();
    for (tag, body) in [
        (b'B', &b"\0\0\0\0\0\0\0\0"[..]),
        (b'E', &b"\0\0\0\0\0"[..]),
        (b'H', &b""[..]),
    ] {
        out.extend_from_slice(&[tag]);
        out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend_from_slice(body);
    }
    stream.write_all(&out).await.unwrap();
    let mut seen = Vec::new();
    let error = loop {
        let message = read_backend(&mut stream, &mut input).await;
        if message.tag == b'E' {
            break postern_wire::backend::parse_error_fields(&message.body).unwrap();
        }
        seen.push(message.tag);
    };
    // ParseComplete, BindComplete, CommandComplete; then the gateway's timeout.
    assert_eq!(seen, b"12C");
    assert_eq!(error.code, "25P03", "{}", error.message);
    // Its connection was closed, not reset and pooled: the table was rolled back.
    wait_for("the session's end to be recorded", WAIT, || {
        (gateway.log.of_type(EventType::SessionEnd).len() == 1).then_some(())
    })
    .await;
    assert_eq!(gateway.gateway.pooled_connections(), 0);
    let app = shared_pg().await.connect("app").await.unwrap();
    let exists: bool = app
        .query_one("SELECT to_regclass('public.unsynced') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists);
}
