//! End-to-end tests of the gateway's upstream connections against a small server: real
//! PostgreSQL 15 allowing 30 connections to its ordinary roles, the real `postern`
//! binary, tokio-postgres clients. Many short sessions with their own application names
//! share the pool; idle connections never crowd the server out; a full server's own
//! error reaches the client.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use postern_testkit::{prepare_app_database, sqlstate, wait_until, Gateway, LocalPg, DB, USER};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// `max_connections` of the test server: 30 for `app_rw` once the 3 slots reserved for
/// superusers and the test's own superuser connection are set aside.
const SERVER_MAX_CONNECTIONS: u32 = 34;
const ALLOWED: i64 = 30;
const WAIT: Duration = Duration::from_secs(30);

/// Connections `app_rw` holds on the server right now.
async fn app_connections(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_rw'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Opens direct connections as `app_rw` until the server has no slot left for it.
async fn fill_server(
    admin: &tokio_postgres::Client,
    direct: &str,
    others: &mut Vec<tokio_postgres::Client>,
) {
    while app_connections(admin).await < ALLOWED {
        let (client, connection) = tokio_postgres::connect(direct, tokio_postgres::NoTls)
            .await
            .expect("a direct connection while the server has room");
        tokio::spawn(connection);
        others.push(client);
    }
}

/// A session through the gateway with `extra` parameters; panics naming `what` if it
/// cannot connect.
async fn session(
    gateway: &Gateway,
    key: &str,
    extra: &str,
    what: &str,
) -> postern_testkit::Session {
    match gateway.connect_session(USER, DB, key, extra).await {
        Ok(session) => session,
        Err(e) => panic!("{what}: {e} (SQLSTATE {:?})", sqlstate(&e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_upstream_serves_many_short_sessions_and_is_never_crowded_out() {
    let pg = LocalPg::start_with(postern_localpg::Options {
        max_connections: Some(SERVER_MAX_CONNECTIONS),
        ..Default::default()
    })
    .await
    .expect("start PostgreSQL");
    prepare_app_database(&pg).await;
    let admin = pg.connect("postgres").await.unwrap();
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());

    // 300 short sessions, 20 at a time, each with its own application_name: all succeed,
    // and each sees its own name.
    let gateway_ref = &gateway;
    let key_ref = key.as_str();
    let results: Vec<(String, String)> = futures_util::stream::iter(0..300)
        .map(|i| async move {
            let name = format!("short-job-{i}");
            let s = session(
                gateway_ref,
                key_ref,
                &format!("application_name={name}"),
                &format!("session {i}"),
            )
            .await;
            let shown: String = s
                .client
                .query_one("SHOW application_name", &[])
                .await
                .unwrap()
                .get(0);
            (name, shown)
        })
        .buffer_unordered(20)
        .collect()
        .await;
    assert_eq!(results.len(), 300);
    for (name, shown) in &results {
        assert_eq!(shown, name, "a session saw another one's application_name");
    }
    let after_burst = app_connections(&admin).await;
    assert!(
        after_burst <= ALLOWED,
        "{after_burst} upstream connections for app_rw"
    );

    // Sessions whose startup parameters differ in what a session cannot SET (`options`)
    // cannot share connections: 40 of them, one after another, each leaving an idle
    // connection behind. The gateway keeps to its share of the server (90 % of the 31
    // slots for ordinary roles) by closing the least recently used idle ones.
    for i in 0..40 {
        let s = session(
            &gateway,
            &key,
            &format!("options='-c work_mem={}kB'", 2000 + i),
            &format!("fragmenting session {i}"),
        )
        .await;
        let work_mem: String = s
            .client
            .query_one("SHOW work_mem", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(work_mem, format!("{}kB", 2000 + i));
    }
    wait_until(
        "the gateway to stay within its share of the server",
        Duration::from_secs(10),
        || async { app_connections(&admin).await <= 27 },
    )
    .await;

    // The target now lets the gateway use all 30 slots, and someone else takes the rest:
    // the server is full of idle gateway connections and others' while the gateway is
    // under its bound. Its login gets 53300; it closes its idle connections and retries.
    let target = |limit: u32| {
        let file = gateway.write_file(
            "target.yaml",
            &format!(
                "kind: Target\nmetadata: {{name: main-pg, namespace: team-a}}\n\
                 spec: {{address: '{}', sslMode: disable, maxConnections: {limit}}}\n",
                pg.address()
            ),
        );
        gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    };
    target(30);
    let direct = format!(
        "host=127.0.0.1 port={} user=app_rw password={} dbname=app",
        pg.port(),
        postern_testkit::APP_PASSWORD
    );
    let mut others = Vec::new();
    fill_server(&admin, &direct, &mut others).await;
    let s = session(
        &gateway,
        &key,
        "options='-c work_mem=4242kB'",
        "a session into a full server",
    )
    .await;
    assert_eq!(
        s.client
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    assert!(gateway.logs().contains("no connection slot left"));

    // With nothing idle left to close, the server's own error reaches the client: 53300,
    // in PostgreSQL's words, not a credentials failure.
    fill_server(&admin, &direct, &mut others).await;
    let refused = gateway
        .connect_session(USER, DB, &key, "options='-c work_mem=4343kB'")
        .await
        .err()
        .expect("a session into a server full of others' connections");
    assert_eq!(sqlstate(&refused).as_deref(), Some("53300"), "{refused}");
    let text = refused
        .as_db_error()
        .expect("a server error")
        .message()
        .to_owned();
    assert!(
        text.contains("connection slots are reserved") || text.contains("too many clients"),
        "{text}"
    );
    assert!(!text.contains("credentials"), "{text}");

    // The target's own bound is kept by the gateway itself: with one session open and a
    // bound of one, the next is refused with 53300 naming the setting.
    drop(others);
    target(1);
    let refused = gateway
        .connect_session(USER, DB, &key, "")
        .await
        .err()
        .expect("a session past the target's maxConnections");
    assert_eq!(sqlstate(&refused).as_deref(), Some("53300"), "{refused}");
    let text = refused.as_db_error().expect("a server error").message();
    assert!(text.contains("maxConnections (1)"), "{text}");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_restart_under_idle_pooled_connections_reaches_no_client() {
    let mut pg = LocalPg::start().await.expect("start PostgreSQL");
    prepare_app_database(&pg).await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());

    // Five sessions at once, then gone: five idle upstream connections in the pool.
    let mut open = Vec::new();
    for n in 0..5 {
        let s = session(&gateway, &key, "", &format!("session {n}")).await;
        s.client.simple_query("SELECT 1").await.unwrap();
        open.push(s);
    }
    drop(open);
    let admin = pg.connect("postgres").await.unwrap();
    wait_until("the pool to hold five idle connections", WAIT, || async {
        app_connections(&admin).await == 5
    })
    .await;
    drop(admin);

    // PostgreSQL restarts (fast shutdown, then up again on its port): every pooled
    // connection is dead, and no client may see it.
    pg.pause();
    pg.resume().await.unwrap();
    for n in 0..8 {
        let s = session(&gateway, &key, "", &format!("after restart {n}")).await;
        let rows = s.client.simple_query("SELECT 'fine'").await;
        assert!(rows.is_ok(), "session {n} after the restart: {rows:?}");
    }
}
