//! Protocol fidelity through the gateway: flows that must behave exactly as against
//! PostgreSQL 15 directly, driven by tokio-postgres and by raw protocol bytes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use postern_testkit::{
    provisioned, provisioned_on, raw_exchange, shared_pg, sqlstate, startup_packet, wait_until,
    Gateway, Leg, DB, USER,
};
use tokio_postgres::AsyncMessage;

const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// Runs a flow once with the client in clear and once over TLS (certificate verified,
/// SCRAM-SHA-256-PLUS channel binding required).
macro_rules! both_legs {
    ($flow:ident) => {
        mod $flow {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plain() {
                super::$flow(Leg::Plain).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls() {
                super::$flow(Leg::Tls).await
            }
        }
    };
}

async fn cancel_reaches_the_upstream_and_unknown_keys_do_nothing(leg: Leg) {
    let (gateway, key) = provisioned_on(BIN, leg).await;
    let client = gateway.connect(USER, DB, &key).await.expect("connect");
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = client.simple_query("SELECT pg_sleep(60)").await;
        (result, started.elapsed())
    });
    let pg = shared_pg().await;
    let admin = pg.connect("postgres").await.unwrap();
    let running = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(60)' AND usename = 'app_rw'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    wait_until("the query to start", Duration::from_secs(20), || async {
        running().await == 1
    })
    .await;

    // A cancel with a key nobody holds: no answer, and the query keeps running.
    let mut bogus = 16i32.to_be_bytes().to_vec();
    bogus.extend_from_slice(&80_877_102i32.to_be_bytes());
    bogus.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
    let answer = raw_exchange(gateway.port(), &bogus, Duration::from_secs(10)).await;
    assert!(answer.is_empty(), "a cancel gets no reply");
    assert_eq!(running().await, 1, "an unknown key cancels nothing");

    gateway.cancel_query(&token).await.expect("send cancel");
    let (result, elapsed) = tokio::time::timeout(Duration::from_secs(30), sleeper)
        .await
        .expect("query ended")
        .unwrap();
    let err = result.expect_err("cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(elapsed < Duration::from_secs(50), "{elapsed:?}");
}
both_legs!(cancel_reaches_the_upstream_and_unknown_keys_do_nothing);

async fn copy_in_and_out_in_text_csv_and_binary(leg: Leg) {
    let (gateway, key) = provisioned_on(BIN, leg).await;
    let client = gateway.connect(USER, DB, &key).await.expect("connect");
    client
        .batch_execute("CREATE TEMP TABLE t (id int, name text)")
        .await
        .unwrap();

    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let rows: String = (1..=1000)
        .map(|i| format!("{i}\tname {i} ✓ 😀\n"))
        .collect();
    sink.send(bytes::Bytes::from(rows)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1000);

    let sink = client
        .copy_in("COPY t FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1001,\"quoted, name\"\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);

    let out: Vec<u8> = client
        .copy_out("COPY (SELECT * FROM t ORDER BY id) TO STDOUT (FORMAT csv)")
        .await
        .unwrap()
        .map(|chunk| chunk.unwrap().to_vec())
        .concat()
        .await;
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1001);
    assert!(text.contains("1,name 1 ✓ 😀") && text.ends_with("1001,\"quoted, name\"\n"));

    // Binary round trip: out of one table, into another, same bytes back.
    let binary: Vec<u8> = client
        .copy_out("COPY t TO STDOUT (FORMAT binary)")
        .await
        .unwrap()
        .map(|chunk| chunk.unwrap().to_vec())
        .concat()
        .await;
    assert!(binary.starts_with(b"PGCOPY\n\xff\r\n\0"));
    client
        .batch_execute("CREATE TEMP TABLE t2 (LIKE t)")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY t2 FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(binary)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1001);

    // Bad COPY data fails the COPY with PostgreSQL's error; the session goes on.
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"), "{err}");
    // CopyFail: dropping the sink unfinished aborts the COPY.
    {
        let sink = client
            .copy_in::<_, bytes::Bytes>("COPY t FROM STDIN")
            .await
            .unwrap();
        drop(sink);
    }
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1001);
}
both_legs!(copy_in_and_out_in_text_csv_and_binary);

async fn notifications_and_notices_arrive_idle_and_during_a_query(leg: Leg) {
    let (gateway, key) = provisioned_on(BIN, leg).await;
    let postern_testkit::Session {
        client,
        mut messages,
        ..
    } = gateway.connect_session(USER, DB, &key, "").await.unwrap();
    client.batch_execute("LISTEN postern_events").await.unwrap();

    // A notification sent by another session arrives while this one is idle.
    let other = gateway.connect(USER, DB, &key).await.unwrap();
    other
        .batch_execute("NOTIFY postern_events, 'hello ✓'")
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("notification arrives")
        .unwrap();
    let AsyncMessage::Notification(n) = message else {
        panic!("expected a notification, got {message:?}")
    };
    assert_eq!((n.channel(), n.payload()), ("postern_events", "hello ✓"));

    // A notice raised during a query.
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'careful: %', 42; END $$")
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("notice arrives")
        .unwrap();
    let AsyncMessage::Notice(notice) = message else {
        panic!("expected a notice, got {message:?}")
    };
    assert_eq!(notice.message(), "careful: 42");
}
both_legs!(notifications_and_notices_arrive_idle_and_during_a_query);

async fn large_results_large_values_pipelines_and_portals(leg: Leg) {
    let (gateway, key) = provisioned_on(BIN, leg).await;
    let mut client = gateway.connect(USER, DB, &key).await.expect("connect");

    let rows = client
        .query(
            "SELECT g, md5(g::text) FROM generate_series(1, 100000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 100_000);
    assert_eq!(rows[99_999].get::<_, i32>(0), 100_000);

    // A 3 MiB parameter in and a 3 MiB value out; 4-byte UTF-8 intact.
    let big = "😀".repeat(768 * 1024);
    let row = client
        .query_one(
            "SELECT length($1::text), octet_length($1::text), $1::text",
            &[&big],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 768 * 1024);
    assert_eq!(row.get::<_, i32>(1), 3 * 1024 * 1024);
    assert_eq!(row.get::<_, String>(2), big);

    // Pipelining: several queries in flight at once, one failing in the middle.
    let a = client.query_one("SELECT 1::int", &[]);
    let b = client.query_one("SELECT 1/0", &[]);
    let c = client.query_one("SELECT 3::int", &[]);
    let (a, b, c) = tokio::join!(a, b, c);
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&b.unwrap_err()).as_deref(), Some("22012"));
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);

    // Execute with a row limit (PortalSuspended), two portals interleaved.
    let tx = client.transaction().await.unwrap();
    let statement = tx
        .prepare("SELECT g FROM generate_series(1, $1::int) g")
        .await
        .unwrap();
    let first = tx.bind(&statement, &[&25i32]).await.unwrap();
    let second = tx.bind(&statement, &[&7i32]).await.unwrap();
    let mut seen = (Vec::new(), Vec::new());
    for _ in 0..3 {
        seen.0.extend(
            tx.query_portal(&first, 10)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, i32>(0)),
        );
        seen.1.extend(
            tx.query_portal(&second, 3)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, i32>(0)),
        );
    }
    assert_eq!(seen.0, (1..=25).collect::<Vec<_>>());
    assert_eq!(seen.1, (1..=7).collect::<Vec<_>>());
    tx.commit().await.unwrap();
}
both_legs!(large_results_large_values_pipelines_and_portals);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_versions_and_gss_requests_are_negotiated() {
    let (gateway, _key) = provisioned(BIN).await;
    // Protocol 3.2 with a protocol option: NegotiateProtocolVersion (3.0, option named),
    // then authentication starts.
    let mut packet = startup_packet(&[("user", USER), ("database", DB), ("_pq_.test_option", "1")]);
    packet[4..8].copy_from_slice(&196_610i32.to_be_bytes());
    let answer = raw_exchange(gateway.port(), &packet, Duration::from_secs(2)).await;
    assert_eq!(answer.first(), Some(&b'v'), "{answer:?}");
    let len = i32::from_be_bytes(answer[1..5].try_into().unwrap()) as usize;
    let body = &answer[5..1 + len];
    assert_eq!(
        i32::from_be_bytes(body[0..4].try_into().unwrap()),
        196_608,
        "protocol 3.0, as major << 16 | minor"
    );
    assert_eq!(
        i32::from_be_bytes(body[4..8].try_into().unwrap()),
        1,
        "one option"
    );
    assert_eq!(&body[8..], b"_pq_.test_option\0");
    assert_eq!(answer.get(1 + len), Some(&b'R'), "then authentication");

    // GSSENCRequest is declined with 'N' and the client carries on in clear.
    let mut packet = 8i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_104i32.to_be_bytes());
    packet.extend_from_slice(&startup_packet(&[("user", USER), ("database", DB)]));
    let answer = raw_exchange(gateway.port(), &packet, Duration::from_secs(2)).await;
    // The client sent its startup packet before reading the 'N': a protocol violation.
    assert_eq!(
        postern_testkit::error_code(&answer).as_deref(),
        Some("08P01")
    );
    let answer = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port()))
            .await
            .unwrap();
        stream.write_all(&packet[..8]).await.unwrap();
        let mut n = [0u8; 1];
        stream.read_exact(&mut n).await.unwrap();
        assert_eq!(&n, b"N");
        stream.write_all(&packet[8..]).await.unwrap();
        let mut reply = [0u8; 1];
        stream.read_exact(&mut reply).await.unwrap();
        reply
    };
    assert_eq!(
        &answer, b"R",
        "authentication request after a declined GSSENCRequest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sessions_are_released_when_clients_go() {
    let pg = shared_pg().await;
    let mut gateway = Gateway::start(BIN, &["--shutdown-grace-secs", "5"]).await;
    let key = gateway.provision(&pg.address());
    let admin = pg.connect("postgres").await.unwrap();
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..10 {
        let conninfo = format!(
            "{} application_name=release-check",
            gateway.conninfo(USER, DB, &key)
        );
        let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        pids.push(backend_of(&client).await);
        clients.push(client);
    }
    // (all backends of these clients, those idle after the gateway's reset; a reset
    // backend is back to the server's application_name, so they are found by pid)
    let backends = || async {
        let row = admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE state = 'idle' AND query = 'DISCARD ALL')
                 FROM pg_stat_activity WHERE usename = 'app_rw' AND pid = ANY($1)",
                &[&pids],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    assert_eq!(backends().await, (10, 0));
    drop(clients);
    // Every backend is reset and idle, kept for reuse; none is left busy.
    wait_until(
        "all ten backends reset",
        Duration::from_secs(20),
        || async { backends().await == (10, 10) },
    )
    .await;
    // Shutting the gateway down closes the idle ones too.
    gateway.terminate();
    wait_until(
        "shutdown to close every upstream connection",
        Duration::from_secs(20),
        || async { backends().await.0 == 0 },
    )
    .await;
    let status = postern_testkit::wait_for("the gateway to exit", Duration::from_secs(20), || {
        gateway.try_exit_status()
    })
    .await;
    assert!(status.success());
}

/// pg_backend_pid() and some session state, through the gateway.
async fn backend_of(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until `holds` is true of upstream backend `pid`: its (state, query) from
/// pg_stat_activity, `None` once it has exited.
async fn wait_backend(pid: i32, what: &str, holds: impl Fn(Option<(String, String)>) -> bool) {
    let admin = shared_pg().await.connect("postgres").await.unwrap();
    wait_until(what, Duration::from_secs(20), || {
        let admin = &admin;
        let holds = &holds;
        async move {
            let row = admin
                .query_opt(
                    "SELECT coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .await
                .unwrap();
            holds(row.map(|r| (r.get(0), r.get(1))))
        }
    })
    .await;
}

/// Waits until upstream backend `pid` is idle after the gateway's reset.
async fn wait_reset(pid: i32) {
    wait_backend(pid, "the backend to be reset", |b| {
        b.is_some_and(|(state, query)| state == "idle" && query == "DISCARD ALL")
    })
    .await;
}

/// Waits until upstream backend `pid` is running a statement.
async fn wait_until_active(pid: i32) {
    wait_backend(pid, "the backend to become active", |b| {
        b.is_some_and(|(state, _)| state == "active")
    })
    .await;
}

/// Waits until upstream backend `pid` has exited; `what` says why it should.
async fn wait_backend_gone(pid: i32, what: &str) {
    wait_backend(pid, what, |b| b.is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_only_after_a_clean_reset() {
    let (gateway, key) = provisioned(BIN).await;
    let conninfo = |app: &str| {
        format!(
            "{} application_name={app}",
            gateway.conninfo(USER, DB, &key)
        )
    };
    let connect = |app: String| async move {
        let (client, connection) = tokio_postgres::connect(&app, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };

    // First client leaves state behind and says goodbye properly.
    let first = connect(conninfo("reuse-a")).await;
    let pid = backend_of(&first).await;
    first
        .batch_execute(
            "SET search_path = pg_catalog; SET postern.marker = 'left-behind';
             CREATE TEMP TABLE scratch (x int); LISTEN leftover; PREPARE stale AS SELECT 1",
        )
        .await
        .unwrap();
    drop(first);
    wait_reset(pid).await;

    // The next client with the same parameters gets that backend, with nothing left over.
    let second = connect(conninfo("reuse-a")).await;
    assert_eq!(backend_of(&second).await, pid, "the idle backend is reused");
    let row = second
        .query_one(
            "SELECT current_setting('search_path'), current_setting('postern.marker', true),
                    to_regclass('pg_temp.scratch') IS NULL,
                    (SELECT count(*) FROM pg_listening_channels()),
                    (SELECT count(*) FROM pg_prepared_statements WHERE name = 'stale'),
                    current_user::text, current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "\"$user\", public");
    assert_eq!(row.get::<_, Option<String>>(1).unwrap_or_default(), "");
    assert!(row.get::<_, bool>(2), "temp table gone");
    assert_eq!(row.get::<_, i64>(3), 0, "no LISTEN left");
    assert_eq!(row.get::<_, i64>(4), 0, "no prepared statement left");
    assert_eq!(row.get::<_, String>(5), "app_rw");
    assert_eq!(row.get::<_, String>(6), "reuse-a");

    // A backend in use is never lent to another client.
    let other = connect(conninfo("reuse-b")).await;
    assert_ne!(backend_of(&other).await, pid);

    // A client that leaves inside a transaction: its backend is not reused.
    second.batch_execute("BEGIN; SELECT 1").await.unwrap();
    drop(second);
    wait_backend_gone(pid, "backend left in a transaction was kept").await;
    let third = connect(conninfo("reuse-a")).await;
    assert_ne!(backend_of(&third).await, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_can_be_turned_off_per_service() {
    let (gateway, key) = provisioned(BIN).await;
    let resources = "kind: Service\nmetadata: {name: orders, namespace: team-a}\n\
         spec: {target: main-pg, database: app, upstream: {mode: static, user: app_rw, passwordSecret: app-rw-password}, pool: {enabled: false}}\n";
    let file = gateway.write_file("no-pool.yaml", resources);
    let plan = gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(plan.contains("~ Service team-a/orders"), "{plan}");
    let first = gateway.connect(USER, DB, &key).await.unwrap();
    let pid = backend_of(&first).await;
    drop(first);
    wait_backend_gone(pid, "backend kept although reuse is off").await;
    let second = gateway.connect(USER, DB, &key).await.unwrap();
    assert_ne!(backend_of(&second).await, pid);
}

/// Applies the test service again with `timeouts` and connects, keeping the connection
/// future to learn how the session ended.
async fn connect_with_timeouts(
    timeouts: &str,
) -> (
    Gateway,
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (gateway, key) = provisioned(BIN).await;
    let resources = format!(
        "kind: Service\nmetadata: {{name: orders, namespace: team-a}}\n\
         spec: {{target: main-pg, database: app, upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}, timeouts: {timeouts}}}\n"
    );
    let file = gateway.write_file("timeouts.yaml", &resources);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let (client, connection) =
        tokio_postgres::connect(&gateway.conninfo(USER, DB, &key), tokio_postgres::NoTls)
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    (gateway, client, connection)
}

async fn ended_with(
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> String {
    let result = tokio::time::timeout(Duration::from_secs(20), connection)
        .await
        .expect("the gateway ended the session")
        .unwrap();
    let err = result.expect_err("ended with an error");
    let db = err.as_db_error().expect("a server error");
    assert!(db.message().contains("timeout"), "{}", db.message());
    db.code().code().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_ended_with_57p05_but_a_long_query_is_not_idle() {
    let (_gateway, client, connection) = connect_with_timeouts("{idleSecs: 1}").await;
    // Busy for longer than the limit: not idle.
    client.simple_query("SELECT pg_sleep(2)").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(ended_with(connection).await, "57P05");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_a_transaction_is_ended_with_25p03_and_idle_outside_is_allowed() {
    let (_gateway, client, connection) = connect_with_timeouts("{idleInTransactionSecs: 1}").await;
    // Idle outside a transaction for longer than the in-transaction limit: allowed.
    let pause = tokio::time::Instant::now() + Duration::from_millis(1500);
    tokio::time::sleep_until(pause).await;
    client.simple_query("SELECT 1").await.unwrap();
    client.simple_query("BEGIN").await.unwrap();
    assert_eq!(ended_with(connection).await, "25P03");
}

async fn pgbench_runs_in_all_three_query_modes(leg: Leg) {
    let (gateway, key) = provisioned_on(BIN, leg).await;
    let script = gateway.write_file(
        "bench.sql",
        "\\set id random(1, 10)\nSELECT name FROM items WHERE id = :id;\nSELECT :id::int + 1;\n",
    );
    let pgbench = postern_localpg::tool("pgbench");
    for mode in ["simple", "extended", "prepared"] {
        let output = std::process::Command::new(&pgbench)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &gateway.port().to_string(),
                "-U",
                USER,
            ])
            .args(["-n", "-c", "4", "-j", "2", "-t", "50", "-M", mode, "-f"])
            .arg(&script)
            .arg(DB)
            .env("PGPASSWORD", &key)
            .env(
                "PGSSLMODE",
                if leg == Leg::Tls {
                    "require"
                } else {
                    "disable"
                },
            )
            .env(
                "PGCHANNELBINDING",
                if leg == Leg::Tls { "require" } else { "prefer" },
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("number of transactions actually processed: 200/200"),
            "{mode}: {stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{mode}: {stdout}"
        );
    }
}
both_legs!(pgbench_runs_in_all_three_query_modes);

async fn an_upstream_killed_mid_query_ends_the_session_with_57p01(leg: Leg) {
    let (gateway, key) = provisioned_on(BIN, leg).await;
    let client = gateway.connect(USER, DB, &key).await.unwrap();
    let pid = backend_of(&client).await;
    let healthy = gateway.connect(USER, DB, &key).await.unwrap();
    let running = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    let admin = shared_pg().await.connect("postgres").await.unwrap();
    wait_until_active(pid).await;
    admin
        .query("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("query ended")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    assert_eq!(
        healthy
            .query_one("SELECT 11", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        11
    );
}
both_legs!(an_upstream_killed_mid_query_ends_the_session_with_57p01);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_copy_releases_its_backend_and_cancel_floods_do_nothing() {
    let (gateway, key) = provisioned(BIN).await;
    let healthy = gateway.connect(USER, DB, &key).await.unwrap();
    // Start COPY FROM STDIN, send half a row, vanish without a word: the connection task
    // is aborted, so the socket closes with no CopyFail and no Terminate.
    let (copier, connection) =
        tokio_postgres::connect(&gateway.conninfo(USER, DB, &key), tokio_postgres::NoTls)
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let pid = backend_of(&copier).await;
    copier
        .batch_execute("CREATE TEMP TABLE sink (x text)")
        .await
        .unwrap();
    let sink = copier
        .copy_in::<_, bytes::Bytes>("COPY sink FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"half a ro"))
        .await
        .unwrap();
    connection.abort();
    wait_backend_gone(pid, "backend of a vanished COPY kept").await;

    // A thousand cancels with keys nobody holds: answered by nothing, harm nothing.
    let mut cancels = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let port = gateway.port();
        cancels.spawn(async move {
            let mut packet = 16i32.to_be_bytes().to_vec();
            packet.extend_from_slice(&80_877_102i32.to_be_bytes());
            packet.extend_from_slice(&i.to_be_bytes());
            packet.extend_from_slice(&(!i).to_be_bytes());
            raw_exchange(port, &packet, Duration::from_secs(10)).await
        });
    }
    while let Some(answer) = cancels.join_next().await {
        assert!(answer.unwrap().is_empty());
    }
    assert_eq!(
        healthy
            .query_one("SELECT 12", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        12
    );
}

/// Runs the test venv's Python with `args`, requires success, and returns its stdout.
async fn python(args: Vec<String>) -> String {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(postern_testkit::test_python())
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs the psycopg 3 client script against `conninfo`; it checks each flow itself.
async fn run_psycopg_flows(conninfo: String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/psycopg_flows.py"
    );
    let stdout = python(vec![script.to_owned(), conninfo]).await;
    assert_eq!(
        stdout,
        "pipeline ok\nbinary copy ok\ncancel ok\nparameter status ok\nstartup parameters ok\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pipeline_binary_copy_cancel_and_parameter_status() {
    let (gateway, key) = provisioned(BIN).await;
    run_psycopg_flows(format!(
        "{} sslmode=disable",
        gateway.conninfo(USER, DB, &key)
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_psycopg_flows_over_tls_with_channel_binding() {
    let cert = postern_testkit::TestCert::new();
    let flags = cert.serve_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gateway = Gateway::start(BIN, &flags).await;
    let key = gateway.provision(&shared_pg().await.address());
    run_psycopg_flows(format!(
        "{} sslmode=verify-full sslrootcert={} channel_binding=require",
        gateway.conninfo(USER, DB, &key),
        cert.cert.display()
    ))
    .await;
}

async fn function_calls_work_through_large_objects(leg: Leg) {
    // libpq's large-object API speaks the fast-path FunctionCall protocol.
    let (gateway, key) = provisioned_on(BIN, leg).await;
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let source = gateway.state_dir().join("lo-in.bin");
    std::fs::write(&source, &payload).unwrap();
    let conninfo = gateway.conninfo(USER, DB, &key);
    let (ok, out, err) =
        postern_testkit::psql(&conninfo, &format!("\\lo_import {}", source.display()));
    assert!(ok, "{err}");
    let oid: u32 = out
        .trim()
        .strip_prefix("lo_import ")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("no oid in {out:?}"));
    let target = gateway.state_dir().join("lo-out.bin");
    let (ok, _, err) = postern_testkit::psql(
        &conninfo,
        &format!("\\lo_export {oid} {}", target.display()),
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), payload);
    let (ok, _, err) = postern_testkit::psql(&conninfo, &format!("\\lo_unlink {oid}"));
    assert!(ok, "{err}");
}
both_legs!(function_calls_work_through_large_objects);

async fn a_notification_sent_during_a_query_arrives_with_it(leg: Leg) {
    let (gateway, key) = provisioned_on(BIN, leg).await;
    let postern_testkit::Session {
        client,
        mut messages,
        ..
    } = gateway.connect_session(USER, DB, &key, "").await.unwrap();
    client.batch_execute("LISTEN busy_channel").await.unwrap();
    let pid = backend_of(&client).await;
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(1)").await });
    let notifier = gateway.connect(USER, DB, &key).await.unwrap();
    wait_until_active(pid).await;
    notifier
        .batch_execute("NOTIFY busy_channel, 'while you were busy'")
        .await
        .unwrap();
    query.await.unwrap().unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("notification arrives")
        .unwrap();
    let AsyncMessage::Notification(n) = message else {
        panic!("expected a notification, got {message:?}")
    };
    assert_eq!(n.payload(), "while you were busy");
}
both_legs!(a_notification_sent_during_a_query_arrives_with_it);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libpq_18_client_asking_for_protocol_3_2_connects() {
    let (gateway, key) = provisioned(BIN).await;
    let conninfo = format!(
        "{} sslmode=disable max_protocol_version=latest",
        gateway.conninfo(USER, DB, &key)
    );
    let program = "import sys, psycopg\n\
                   assert psycopg.pq.version() >= 180000, psycopg.pq.version()\n\
                   with psycopg.connect(sys.argv[1]) as conn:\n\
                   \x20   print(conn.execute('SELECT current_user').fetchone()[0])\n\
                   \x20   print(conn.pgconn.protocol_version)\n";
    let stdout = python(vec!["-c".to_owned(), program.to_owned(), conninfo]).await;
    // Negotiated down to 3.0 (NegotiateProtocolVersion), then a normal session.
    assert_eq!(stdout, "app_rw\n3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_handshake_or_mid_message_leak_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gateway, key) = provisioned_on(BIN, Leg::Tls).await;
    let healthy = gateway.connect(USER, DB, &key).await.unwrap();
    let baseline = gateway.open_sockets();
    let port = gateway.port();
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..40 {
        storm.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            if i % 2 == 0 {
                // SSLRequest, 'S', then half a ClientHello and gone.
                stream
                    .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
                    .await
                    .unwrap();
                let mut answer = [0u8; 1];
                stream.read_exact(&mut answer).await.unwrap();
                assert_eq!(&answer, b"S");
                stream
                    .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                    .await
                    .unwrap();
            } else {
                // A startup packet, then the first bytes of a SASL response and gone.
                let startup = postern_testkit::startup_packet(&[("user", USER), ("database", DB)]);
                stream.write_all(&startup).await.unwrap();
                let mut request = [0u8; 1];
                stream.read_exact(&mut request).await.unwrap();
                assert_eq!(&request, b"R");
                stream
                    .write_all(&[b'p', 0, 0, 0, 100, b'S', b'C'])
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = storm.join_next().await {
        done.unwrap();
    }
    // Every half-open connection is cleaned up: the socket count returns.
    wait_until(
        &format!("the socket count to return to {baseline}"),
        Duration::from_secs(20),
        || async { gateway.open_sockets() <= baseline },
    )
    .await;
    assert_eq!(
        healthy
            .query_one("SELECT 13", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        13
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_forwarded_a_cancel_never_lends_its_backend() {
    // A cancel may still be on its way when its client leaves; if the backend served the
    // next client, that client's query could be cancelled.
    let (gateway, key) = provisioned(BIN).await;
    let first = gateway
        .connect_session(USER, DB, &key, "application_name=cancel-reuse")
        .await
        .unwrap();
    let pid = backend_of(&first.client).await;
    gateway
        .cancel_query(&first.client.cancel_token())
        .await
        .expect("send cancel");
    drop(first);
    wait_backend_gone(
        pid,
        "the backend of a session that sent a cancel was kept for reuse",
    )
    .await;
    let next = gateway
        .connect_session(USER, DB, &key, "application_name=cancel-reuse")
        .await
        .unwrap();
    assert_ne!(backend_of(&next.client).await, pid);
}
