//! End-to-end tests of the wire proxy: real PostgreSQL 15, the real `postern` binary, and
//! real clients (tokio-postgres and psql).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use postern_testkit::{
    error_code, provisioned, raw_exchange, shared_pg, sqlstate, startup_packet, wait_for, Gateway,
    LocalPg, APP_PASSWORD, DB, USER,
};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_run_as_the_services_upstream_user() {
    let (gateway, key) = provisioned(BIN).await;
    let client = gateway.connect(USER, DB, &key).await.expect("connect");

    // Simple protocol, several statements in one message.
    let messages = client
        .simple_query("SELECT current_user; SELECT count(*) FROM items")
        .await
        .unwrap();
    let values: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["app_rw", "10"]);

    // Extended protocol with a named prepared statement, reused.
    let statement = client
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    for id in [3i32, 7] {
        let row = client.query_one(&statement, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("item {id}"));
    }
    let row = client
        .query_one("SELECT current_user::text, session_user::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("app_rw".into(), "app_rw".into())
    );

    // An error inside a multi-statement query rolls back its implicit transaction.
    client
        .batch_execute("CREATE TEMP TABLE implicit (x int)")
        .await
        .unwrap();
    let err = client
        .simple_query(
            "INSERT INTO implicit VALUES (1); SELECT 1/0; INSERT INTO implicit VALUES (2)",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    let rows: i64 = client
        .query_one("SELECT count(*) FROM implicit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the whole message was one transaction");

    // Errors inside a session leave it usable.
    let err = client
        .simple_query("SELECT * FROM missing_table")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_forwarded_but_user_and_database_are_forced() {
    let (gateway, key) = provisioned(BIN).await;
    let conninfo = format!(
        "{} application_name=report-job options='-c search_path=pg_catalog -c statement_timeout=1234'",
        gateway.conninfo(USER, DB, &key)
    );
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'),
                    current_database()::text, current_user::text",
            &[],
        )
        .await
        .unwrap();
    let got: (String, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        got,
        (
            "report-job".into(),
            "1234ms".into(),
            "app".into(),
            "app_rw".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_environment_defaults_arrive_as_startup_parameters() {
    // libpq turns PGTZ and PGDATESTYLE into startup parameters (pg_regress relies on it).
    let (gateway, key) = provisioned(BIN).await;
    let output = std::process::Command::new("psql")
        .arg(gateway.conninfo(USER, DB, &key))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SHOW timezone",
            "-c",
            "SHOW datestyle",
        ])
        .env("PGTZ", "Pacific/Auckland")
        .env("PGDATESTYLE", "SQL, DMY")
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Pacific/Auckland\nSQL, DMY\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_works_through_the_gateway() {
    let (gateway, key) = provisioned(BIN).await;
    let output = std::process::Command::new("psql")
        .arg(gateway.conninfo(USER, DB, &key))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-c",
            "SELECT current_user",
            "-c",
            "SELECT name FROM items WHERE id = 2",
        ])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "app_rw\nitem 2\n");

    let output = std::process::Command::new("psql")
        .arg(gateway.conninfo(USER, DB, "pst_not-the-key"))
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .expect("run psql");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("password authentication failed for user \"alice.team-a\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logins_and_bad_bytes_get_their_error_while_a_healthy_session_works() {
    let (gateway, key) = provisioned(BIN).await;
    let healthy = gateway.connect(USER, DB, &key).await.expect("connect");
    let still_healthy = || async {
        let row = healthy
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 10);
    };

    // Wrong key and unknown identity: same SQLSTATE, same text.
    let wrong = gateway.connect(USER, DB, "pst_wrong").await.unwrap_err();
    let unknown = gateway
        .connect("mallory.team-a", DB, "pst_wrong")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    assert_eq!(sqlstate(&unknown).as_deref(), Some("28P01"));
    let text = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| d.message().replace("mallory", "alice"))
    };
    assert_eq!(text(&wrong), text(&unknown));
    still_healthy().await;

    // Unknown service, and another namespace's service, look the same.
    let missing = gateway
        .connect(USER, "nope.team-a", &key)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&missing).as_deref(), Some("3D000"));
    let other_ns = gateway
        .connect(USER, "orders.team-b", &key)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&other_ns).as_deref(), Some("3D000"));
    still_healthy().await;

    // Garbage instead of a startup packet.
    let answer = raw_exchange(
        gateway.port(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(error_code(&answer).as_deref(), Some("08P01"));
    // A startup packet over the 10 KiB limit.
    let big = "x".repeat(11 * 1024);
    let answer = raw_exchange(
        gateway.port(),
        &startup_packet(&[("user", USER), ("database", DB), ("application_name", &big)]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(error_code(&answer).as_deref(), Some("08P01"));
    // A negative message length after startup, during authentication.
    let mut bytes = startup_packet(&[("user", USER), ("database", DB)]);
    bytes.extend_from_slice(&[b'p', 0xff, 0xff, 0xff, 0xf0]);
    let answer = raw_exchange(gateway.port(), &bytes, Duration::from_secs(10)).await;
    assert_eq!(error_code(&answer).as_deref(), Some("08P01"));
    // No user name at all.
    let answer = raw_exchange(
        gateway.port(),
        &startup_packet(&[("database", DB)]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(error_code(&answer).as_deref(), Some("28000"));
    still_healthy().await;

    // An oversized message mid-session ends only that session, with 08P01.
    let victim = gateway.connect(USER, DB, &key).await.expect("connect");
    let oversized = "y".repeat(2048);
    let small_limit = Gateway::start(BIN, &["--max-message-size", "1024"]).await;
    let small_key = small_limit.provision(&shared_pg().await.address());
    let limited = small_limit
        .connect(USER, DB, &small_key)
        .await
        .expect("connect");
    let err = limited
        .simple_query(&format!("SELECT '{oversized}'"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08P01"), "{err}");
    assert_eq!(
        victim
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    still_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_auth_timeout() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &["--auth-timeout-secs", "1"]).await;
    let key = gateway.provision(&pg.address());
    let healthy = gateway.connect(USER, DB, &key).await.expect("connect");
    // Connect and send nothing; the gateway must close the connection by itself.
    let started = std::time::Instant::now();
    let answer = raw_exchange(gateway.port(), b"", Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "connection was not dropped"
    );
    assert_eq!(error_code(&answer).as_deref(), Some("08006"));
    // The established session is not subject to the authentication timeout.
    assert_eq!(
        healthy
            .query_one("SELECT 3", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_upstream_gets_08001_naming_the_service_not_the_password() {
    let (gateway, key) = provisioned(BIN).await;
    let healthy = gateway.connect(USER, DB, &key).await.expect("connect");

    // A second upstream, served by its own PostgreSQL, which we then stop.
    let doomed = LocalPg::start().await.expect("second PostgreSQL");
    postern_testkit::prepare_app_database(&doomed).await;
    let resources = format!(
        "kind: Target\nmetadata: {{name: doomed-pg, namespace: team-a}}\nspec: {{address: '{}', sslMode: disable}}\n---\n\
         kind: Service\nmetadata: {{name: doomed, namespace: team-a}}\n\
         spec: {{target: doomed-pg, database: app, upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}}}\n",
        doomed.address()
    );
    let file = gateway.write_file("doomed.yaml", &resources);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let before = gateway
        .connect(USER, "doomed.team-a", &key)
        .await
        .expect("connect while up");
    assert_eq!(
        before
            .query_one("SELECT 4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        4
    );
    doomed.stop();

    let err = gateway
        .connect(USER, "doomed.team-a", &key)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("doomed.team-a"), "{message}");
    assert!(!message.contains(APP_PASSWORD));
    // The session whose upstream went away ends; the other one keeps working.
    assert!(before.query_one("SELECT 5", &[]).await.is_err());
    assert_eq!(
        healthy
            .query_one("SELECT 6", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        6
    );

    // An upstream that refuses the injected credentials: 08001 as well.
    let refused = gateway.cli_with_input(
        &["secret", "set", "app-rw-password", "-n", "team-a"],
        "wrong-password\n",
    );
    assert!(refused.status.success());
    let err = gateway.connect(USER, DB, &key).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    assert!(!err.to_string().contains("wrong-password"));
    assert_eq!(
        healthy
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sessions_each_run_a_hundred_queries() {
    let (gateway, key) = provisioned(BIN).await;
    let gateway = std::sync::Arc::new(gateway);
    let mut tasks = tokio::task::JoinSet::new();
    for session in 0..50i32 {
        let (gateway, key) = (gateway.clone(), key.clone());
        tasks.spawn(async move {
            let client = gateway.connect(USER, DB, &key).await.expect("connect");
            let statement = client
                .prepare("SELECT $1::int * 1000 + $2::int")
                .await
                .unwrap();
            for query in 0..100i32 {
                let row = client
                    .query_one(&statement, &[&session, &query])
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(0), session * 1000 + query);
            }
            session
        });
    }
    let mut finished = Vec::new();
    while let Some(result) = tasks.join_next().await {
        finished.push(result.expect("session task"));
    }
    finished.sort();
    assert_eq!(finished, (0..50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_logins_with_57p03_and_lets_sessions_finish() {
    let pg = shared_pg().await;
    let mut gateway = Gateway::start(BIN, &["--shutdown-grace-secs", "60"]).await;
    let key = gateway.provision(&pg.address());
    let session = gateway.connect(USER, DB, &key).await.expect("connect");
    gateway.terminate();
    let logs = gateway.log_path();
    wait_for("shutdown to begin", Duration::from_secs(10), || {
        std::fs::read_to_string(&logs)
            .ok()?
            .contains("new logins are refused")
            .then_some(())
    })
    .await;
    let Err(refused) = gateway.connect(USER, DB, &key).await else {
        panic!("a new login is accepted while the gateway drains");
    };
    assert_eq!(sqlstate(&refused).as_deref(), Some("57P03"), "{refused}");
    // The open session still works during the grace period.
    assert_eq!(
        session
            .query_one("SELECT 8", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        8
    );
    drop(session);
    let status = wait_for("the gateway to exit", Duration::from_secs(20), || {
        gateway.try_exit_status()
    })
    .await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_still_open_after_the_grace_period_get_57p01() {
    let pg = shared_pg().await;
    let mut gateway = Gateway::start(BIN, &["--shutdown-grace-secs", "1"]).await;
    let key = gateway.provision(&pg.address());
    let (client, connection) =
        tokio_postgres::connect(&gateway.conninfo(USER, DB, &key), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let connection = tokio::spawn(connection);
    assert_eq!(
        client
            .query_one("SELECT 9", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        9
    );
    gateway.terminate();
    // The idle session is told why it ends, then closed.
    let ended = tokio::time::timeout(Duration::from_secs(20), connection)
        .await
        .expect("session closed after the grace period")
        .expect("connection task");
    let err = ended.expect_err("the gateway ends the session with an error");
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    let status = wait_for("the gateway to exit", Duration::from_secs(20), || {
        gateway.try_exit_status()
    })
    .await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_api_key_appears_in_state_or_logs() {
    let (gateway, key) = provisioned(BIN).await;
    let client = gateway.connect(USER, DB, &key).await.expect("connect");
    client.simple_query("SELECT 1").await.unwrap();
    let _ = gateway.connect(USER, DB, "pst_wrong-key-attempt").await;
    let second_key = gateway.create_key("alice", "team-a");
    drop(client);
    let listing = gateway.cli_ok(&["get", "secrets", "-n", "team-a", "-o", "yaml"]);
    assert!(listing.contains("app-rw-password"));
    let keys = gateway.cli_ok(&["identity", "key", "list", "alice", "-n", "team-a"]);
    assert_eq!(keys.lines().count(), 3, "header and two keys: {keys}");

    let secrets = [
        APP_PASSWORD,
        key.as_str(),
        second_key.as_str(),
        "pst_wrong-key-attempt",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(gateway.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir()
            || path
                .file_name()
                .is_some_and(|n| n == "master.key" || n == "provision.yaml")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} contains a secret",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 2, "state.db and the log were checked");
    for output in [listing, keys] {
        for secret in secrets {
            assert!(!output.contains(secret));
        }
    }
    assert!(gateway.logs().contains("authentication failed"));
}

/// Unmounts a filesystem mounted for a test (lazily: files may still be open).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last partial chunk: byte by byte up to the last one.
    while file.write_all(&[0]).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_apply_is_one_line_changes_nothing_and_the_gateway_serves_on() {
    let dir = tempfile::Builder::new()
        .prefix("postern-full-")
        .tempdir()
        .unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .status();
    if !mounted.is_ok_and(|status| status.success()) {
        eprintln!("skipped: this process may not mount a small filesystem (it needs root)");
        return;
    }
    let _unmount = Unmount(dir.path().to_owned());
    let pg = shared_pg().await;
    let gateway = Gateway::start_in(BIN, dir, &[]).await;
    let key = gateway.provision(&pg.address());
    let before = gateway.cli_ok(&["get", "services", "-n", "team-a", "-o", "json"]);
    let many: Vec<String> = (0..200)
        .map(|n| {
            format!(
                "kind: Service\nmetadata: {{name: svc-{n}, namespace: team-a, labels: {{padding: '{}'}}}}\n\
                 spec: {{target: main-pg, database: app, upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}}}\n",
                "x".repeat(60)
            )
        })
        .collect();
    let file = outside_file("many.yaml", &many.join("---\n"));

    fill(&gateway.state_dir().join("filler"));
    let output = gateway.cli(&["apply", "-f", &file]);
    assert!(!output.status.success(), "apply succeeded on a full disk");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("disk is full; nothing was written"),
        "{stderr}"
    );
    // Nothing half-applied, and the gateway serves on.
    assert_eq!(
        gateway.cli_ok(&["get", "services", "-n", "team-a", "-o", "json"]),
        before
    );
    let client = gateway.connect(USER, DB, &key).await.unwrap();
    let rows = client.simple_query("SELECT count(*) FROM items").await;
    assert!(rows.is_ok(), "{rows:?}");

    // Room again: the same apply goes through.
    std::fs::remove_file(gateway.state_dir().join("filler")).unwrap();
    gateway.cli_ok(&["apply", "-f", &file]);
    let after = gateway.cli_ok(&["get", "services", "-n", "team-a", "-o", "json"]);
    assert!(after.contains("svc-199"));
}

/// Writes `text` to a new file `name` outside any gateway's state directory.
fn outside_file(name: &str, text: &str) -> String {
    let dir = tempfile::Builder::new()
        .prefix("postern-input-")
        .tempdir()
        .unwrap()
        .keep();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}
