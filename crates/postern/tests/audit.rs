//! The access log and service rules end to end against a real PostgreSQL 15: every event
//! type with its fields, secrets redacted, statements denied by CEL rules (simple and
//! extended protocol, inside and outside transactions) without reaching the upstream,
//! `dynamicConfig` routing by group, a failing sink that neither stalls queries nor loses
//! events, and `postern logs --follow`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use postern_testkit::{psql, shared_pg, sqlstate, wait_for, wait_for_async, Gateway};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const WAIT: Duration = Duration::from_secs(60);

/// A gateway whose access log also goes to a JSON Lines file (returned), with bind
/// parameters logged and every event type recorded (full protocol capture).
async fn gateway_with_file_log() -> (Gateway, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let log = dir.join("access.jsonl");
    let config = dir.join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\nfile = '{}'\nlog_parameters = true\n\
             events = ['SESSION_START', 'SESSION_END', 'QUERY', 'PARSE', 'BIND', 'EXECUTE', \
             'CLOSE', 'FUNCTION_CALL', 'AUTH_FAILED', 'POLICY_DENIED']\n",
            log.display()
        ),
    )
    .unwrap();
    let gateway = Gateway::start(BIN, &["--config", config.to_str().unwrap()]).await;
    (gateway, log)
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The server's message of a failed statement.
fn message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |e| e.message().to_owned())
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_is_logged_with_its_fields_and_without_secrets() {
    let pg = shared_pg().await;
    let (gateway, log) = gateway_with_file_log().await;
    let key = gateway.provision(&pg.address());

    let client = gateway
        .connect("alice.team-a", "orders", &key)
        .await
        .unwrap();
    client
        .batch_execute("SELECT * FROM items WHERE id <= 3")
        .await
        .unwrap();
    let statement = client
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    for id in [5i32, 6] {
        let rows = client.query(&statement, &[&id]).await.unwrap();
        assert_eq!(rows.len(), 1);
    }
    drop(statement);
    let row = client
        .query_one("SELECT $1::text IS NULL AS missing", &[&None::<String>])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let error = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("22012"));
    // Secrets in statement text: both statements fail upstream, but their text is logged.
    let _ = client
        .batch_execute("ALTER ROLE no_such_role PASSWORD 'Planted-Secret-1'")
        .await;
    let _ = client
        .batch_execute("SELECT pgp_sym_encrypt('data', 'Planted-Key-2')")
        .await;
    drop(client);
    // Fastpath function calls: libpq's large-object functions use them.
    let blob = gateway.write_file("blob.txt", "large object contents");
    let (ok, _, stderr) = psql(
        &gateway.conninfo("alice.team-a", "orders", &key),
        &format!("\\lo_import {}", blob.display()),
    );
    assert!(ok, "{stderr}");
    assert!(gateway
        .connect("alice.team-a", "orders", "pst_wrong")
        .await
        .is_err());

    let all = wait_for("two SESSION_END events and AUTH_FAILED", WAIT, || {
        let all = events(&log);
        (of_type(&all, "SESSION_END").len() >= 2 && !of_type(&all, "AUTH_FAILED").is_empty())
            .then_some(all)
    })
    .await;

    let start = of_type(&all, "SESSION_START")[0];
    assert_eq!(start["identity"]["name"], "alice");
    assert_eq!(start["identity"]["namespace"], "team-a");
    assert_eq!(start["identity"]["groups"][0], "engineering");
    assert_eq!(start["service"], "orders.team-a");
    assert_eq!(start["upstream"]["user"], "app_rw");
    assert_eq!(start["upstream"]["database"], "app");
    assert_eq!(start["upstream"]["target"], "main-pg.team-a");
    assert!(start["client_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(start["event_id"].is_string() && start["session_id"].is_string());
    let session_id = start["session_id"].clone();
    assert!(all
        .iter()
        .filter(|e| e["connection_id"] == start["connection_id"])
        .all(|e| e["session_id"] == session_id));

    let queries = of_type(&all, "QUERY");
    let select = queries
        .iter()
        .find(|e| e["statement"] == "SELECT * FROM items WHERE id <= 3")
        .expect("the simple query");
    assert_eq!(select["command_tag"], "SELECT 3");
    assert_eq!(select["rows"], 3);
    assert!(select["duration_ms"].as_f64().unwrap() >= 0.0);
    let failed = queries
        .iter()
        .find(|e| e["statement"] == "SELECT 1/0")
        .unwrap();
    assert_eq!(failed["sqlstate"], "22012");
    assert_eq!(failed["error_message"], "division by zero");

    let parse = of_type(&all, "PARSE")
        .into_iter()
        .find(|e| e["statement"] == "SELECT name FROM items WHERE id = $1")
        .expect("PARSE of the prepared statement");
    let name = parse["statement_name"].as_str().unwrap();
    assert!(!name.is_empty(), "tokio-postgres names its statements");
    let binds: Vec<_> = of_type(&all, "BIND")
        .into_iter()
        .filter(|e| e["statement_name"] == name)
        .collect();
    assert_eq!(binds.len(), 2);
    assert_eq!(binds[0]["parameter_count"], 1);
    // A binary int4 parameter, logged as hex because log_parameters is on.
    assert_eq!(binds[0]["parameters"][0], "\\x00000005");
    let null_bind = of_type(&all, "BIND")
        .into_iter()
        .find(|e| e["parameters"] == serde_json::json!([null]))
        .expect("a BIND with a NULL parameter");
    assert_eq!(null_bind["parameter_count"], 1);
    let executes: Vec<_> = of_type(&all, "EXECUTE")
        .into_iter()
        .filter(|e| e["statement_name"] == name)
        .collect();
    assert_eq!(executes.len(), 2, "both executions name their statement");
    for execute in &executes {
        assert_eq!(execute["statement"], "SELECT name FROM items WHERE id = $1");
        assert_eq!(execute["command_tag"], "SELECT 1");
        assert_eq!(execute["rows"], 1);
    }
    assert!(of_type(&all, "CLOSE")
        .iter()
        .any(|e| e["statement_name"] == name && e["closes"] == "statement"));
    let calls = of_type(&all, "FUNCTION_CALL");
    assert!(calls.len() >= 2, "lo_open / lowrite / lo_close: {calls:?}");
    assert!(calls
        .iter()
        .all(|c| c["function_oid"].as_u64().unwrap() > 0));

    let end = of_type(&all, "SESSION_END")
        .into_iter()
        .find(|e| e["session_id"] == session_id)
        .unwrap();
    let totals = &end["totals"];
    assert!(totals["bytes_from_client"].as_u64().unwrap() > 100);
    assert!(totals["bytes_to_client"].as_u64().unwrap() > 100);
    assert!(totals["statements"].as_u64().unwrap() >= 5);
    assert_eq!(totals["events_dropped"], 0);
    assert!(!totals["end_reason"].as_str().unwrap().is_empty());
    let auth = of_type(&all, "AUTH_FAILED")[0];
    assert_eq!(auth["identity"]["name"], "alice");

    // Redaction: the file, the state table (through `postern logs`) and the gateway log.
    let logged = gateway.cli_ok(&["logs", "-o", "json", "--limit", "1000"]);
    let file = std::fs::read_to_string(&log).unwrap();
    for text in [&logged, &file, &gateway.logs()] {
        for secret in ["Planted-Secret-1", "Planted-Key-2"] {
            assert!(!text.contains(secret), "{secret} was logged");
        }
    }
    assert!(file.contains("PASSWORD '[redacted]'"));
    assert!(file.contains("pgp_sym_encrypt('[redacted]', '[redacted]')"));
    let filtered = gateway.cli_ok(&[
        "logs",
        "--identity",
        "alice.team-a",
        "--type",
        "query",
        "-o",
        "json",
    ]);
    assert!(filtered.lines().count() >= 4);
    assert!(filtered
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).unwrap()["type"] == "QUERY"));
}

/// Service `reports` in team-a with rules: writes denied, engineering may read.
fn reports_service(upstream_user: &str) -> String {
    format!(
        r#"kind: Service
metadata: {{name: reports, namespace: team-a}}
spec:
  target: main-pg
  database: app
  upstream: {{mode: static, user: {upstream_user}, passwordSecret: app-rw-password}}
  pool: {{enabled: false}}
  authorization:
    rules:
      - name: no-writes
        effect: DENY
        condition: "ctx.request.postgres.statement.kind in ['insert', 'update', 'delete', 'ddl']"
      - name: secrets-table
        effect: DENY
        condition: "'public.secrets' in ctx.request.postgres.statement.tables"
      - name: engineers-read
        effect: ALLOW
        condition: "'engineering' in ctx.identity.groups"
---
kind: Identity
metadata: {{name: bob, namespace: team-a}}
spec: {{type: workload}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_deny_writes_in_the_same_session_and_denied_statements_never_reach_upstream() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());
    let file = gateway.write_file("reports.yaml", &reports_service("app_rw"));
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let admin = pg.connect("app").await.unwrap();
    for sql in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }

    let client = gateway
        .connect("alice.team-a", "reports", &key)
        .await
        .unwrap();
    let count = || async {
        client
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    };
    assert_eq!(count().await.unwrap(), 10);
    let denied = client
        .batch_execute("DELETE FROM items WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    assert!(message(&denied).contains("no-writes"), "{denied}");
    assert!(
        !message(&denied).contains("ctx."),
        "no rule internals: {denied}"
    );
    // Several statements in one message: one denied denies all of them.
    let denied = client
        .batch_execute("SELECT 1; DROP TABLE items")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    assert_eq!(count().await.unwrap(), 10, "the session goes on");

    // Inside a transaction block the client sees what PostgreSQL would show.
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(count().await.unwrap(), 10);
    let denied = client
        .batch_execute("UPDATE items SET name = 'x'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    let aborted = count().await.unwrap_err();
    assert_eq!(sqlstate(&aborted).as_deref(), Some("25P02"));
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count().await.unwrap(), 10);

    // Extended protocol: denied at Parse, so PostgreSQL never sees the statement.
    let marker = "DELETE FROM items WHERE id = 424242";
    let denied = client.prepare(marker).await.unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    let denied = client
        .query("SELECT * FROM secrets WHERE $1::int > 0", &[&1i32])
        .await
        .unwrap_err();
    assert!(message(&denied).contains("secrets-table"), "{denied}");
    let rows = client
        .query("SELECT name FROM items WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "item 2");
    assert_eq!(count().await.unwrap(), 10);
    let seen = "SELECT name FROM items WHERE id = $1";
    wait_for("the upstream log to show allowed statements", WAIT, || {
        pg.server_log().contains(seen).then_some(())
    })
    .await;
    let server_log = pg.server_log();
    for never in [
        marker,
        "DELETE FROM items WHERE id = 1",
        "UPDATE items SET",
        "DROP TABLE items",
    ] {
        assert!(!server_log.contains(never), "{never} reached the upstream");
    }
    for sql in [
        "ALTER SYSTEM RESET log_statement",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }

    // An identity outside the group matches no rule: default deny.
    let bob_key = gateway.create_key("bob", "team-a");
    let bob = gateway
        .connect("bob.team-a", "reports", &bob_key)
        .await
        .unwrap();
    let denied = bob.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    assert!(message(&denied).contains("default-deny"), "{denied}");

    let denials = wait_for("POLICY_DENIED events", WAIT, || {
        let out = gateway.cli_ok(&["logs", "--type", "POLICY_DENIED", "-o", "json"]);
        (out.lines().count() >= 6).then_some(out)
    })
    .await;
    assert!(denials.contains("\"rule\":\"no-writes\""));
    assert!(denials.contains("\"statement_kind\":\"delete\""));

    // Each statement shape was parsed once: the repeated count(*) came from the cache.
    let http = postern_testkit::Http::new(gateway.api_port().await);
    let (status, metrics) = http.get("/metrics", &gateway.admin_token());
    assert_eq!(status, 200);
    let lookups = |result: &str| -> f64 {
        let prefix = format!("postern_statement_cache_lookups_total{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} missing: {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(lookups("hit") >= 4.0, "{metrics}");
    assert!(lookups("miss") >= 1.0, "{metrics}");

    // A bad expression fails apply with the rule's path and the CEL error.
    let bad = gateway.write_file(
        "bad.yaml",
        &reports_service("app_rw").replace(
            "'engineering' in ctx.identity.groups",
            "'engineering' in ctx.identity.groups &&",
        ),
    );
    let output = gateway.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("spec.authorization.rules[2].condition: invalid CEL"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_config_routes_identities_to_different_upstream_users() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());
    let admin = pg.connect("app").await.unwrap();
    admin
        .batch_execute(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_ro') THEN
                 CREATE ROLE app_ro LOGIN PASSWORD 'app-ro-Upstream-Secret'; END IF; END$$;
             GRANT SELECT ON items TO app_ro",
        )
        .await
        .unwrap();
    let resources = r#"kind: Service
metadata: {name: routed, namespace: team-a}
spec:
  target: main-pg
  database: app
  upstream:
    mode: dynamicConfig
    configs:
      - {name: full-access, user: app_rw, passwordSecret: app-rw-password}
      - {name: read-only, user: app_ro, passwordSecret: app-ro-password}
    rules:
      - {condition: "'admins' in ctx.identity.groups", config: full-access}
      - {matchAny: true, config: read-only}
---
kind: Service
metadata: {name: admins-only, namespace: team-a}
spec:
  target: main-pg
  database: app
  upstream:
    mode: dynamicConfig
    configs:
      - {name: full-access, user: app_rw, passwordSecret: app-rw-password}
    rules:
      - {condition: "'admins' in ctx.identity.groups", config: full-access}
---
kind: Identity
metadata: {name: carol, namespace: team-a}
spec: {type: human, groups: [admins]}
"#;
    let file = gateway.write_file("routed.yaml", resources);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let output = gateway.cli_with_input(
        &["secret", "set", "app-ro-password", "-n", "team-a"],
        "app-ro-Upstream-Secret\n",
    );
    assert!(output.status.success());
    let carol_key = gateway.create_key("carol", "team-a");

    let user_of = |client: tokio_postgres::Client| async move {
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    let alice = gateway
        .connect("alice.team-a", "routed", &key)
        .await
        .unwrap();
    assert_eq!(user_of(alice).await, "app_ro");
    let carol = gateway
        .connect("carol.team-a", "routed", &carol_key)
        .await
        .unwrap();
    assert_eq!(user_of(carol).await, "app_rw");
    let refused = gateway
        .connect("alice.team-a", "admins-only", &key)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("28000"));
}

/// A gateway whose access log also goes to a JSON Lines file on a full disk (`[audit]`
/// settings `more` added): the file, the gateway and alice's key. Removing the file gives
/// the disk room again.
async fn gateway_with_a_full_file_sink(more: &str) -> (std::path::PathBuf, Gateway, String) {
    let pg = shared_pg().await;
    let dir = tempfile::tempdir().unwrap().keep();
    let log = dir.join("access.jsonl");
    // Every write to /dev/full fails with ENOSPC: a full disk.
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let config = dir.join("postern.toml");
    std::fs::write(
        &config,
        format!("[audit]\nfile = '{}'\n{more}", log.display()),
    )
    .unwrap();
    let gateway = Gateway::start(BIN, &["--config", config.to_str().unwrap()]).await;
    let key = gateway.provision(&pg.address());
    (log, gateway, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_stalls_nothing_and_its_events_arrive_after_recovery() {
    let (log, gateway, key) = gateway_with_a_full_file_sink("").await;

    let client = gateway
        .connect("alice.team-a", "orders", &key)
        .await
        .unwrap();
    let queries = async {
        for n in 0..300 {
            client
                .simple_query(&format!("SELECT 'marker-{n}'"))
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(WAIT, queries)
        .await
        .expect("queries went on while the sink failed");
    let spill = gateway
        .state_dir()
        .join("audit-spill")
        .join("file.spill.jsonl");
    wait_for("events to be kept in the spill file", WAIT, || {
        let text = std::fs::read_to_string(&spill).ok()?;
        text.contains("marker-299").then_some(())
    })
    .await;
    assert!(gateway.logs().contains("audit sink failing"));

    // The disk has room again.
    std::fs::remove_file(&log).unwrap();
    let replayed = wait_for("the spilled events to reach the file", WAIT, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("marker-299").then_some(text)
    })
    .await;
    for n in 0..300 {
        assert!(
            replayed.contains(&format!("'marker-{n}'")),
            "marker-{n} lost"
        );
    }
    // The state sink never failed and has them too.
    let state = gateway.cli_ok(&["logs", "--type", "QUERY", "--limit", "1000", "-o", "json"]);
    assert_eq!(state.matches("marker-").count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_failure_block_statements_are_refused_while_events_are_lost_and_run_again_after() {
    // A spill budget that a few events spend: past it events are lost.
    let (log, gateway, key) =
        gateway_with_a_full_file_sink("spill_max_bytes = 4096\non_failure = 'block'\n").await;
    let client = gateway
        .connect("alice.team-a", "orders", &key)
        .await
        .unwrap();
    let refused = wait_for_async("a statement refused with 58030", WAIT, || async {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        client
            .simple_query(&format!("SELECT 'while-losing-{n}'"))
            .await
            .err()
    })
    .await;
    assert_eq!(sqlstate(&refused).as_deref(), Some("58030"), "{refused:?}");
    // The refused statement never ran: the session goes on, and is refused again.
    let again = client
        .simple_query("SELECT 'refused-too'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&again).as_deref(), Some("58030"));

    // The disk has room again: the sink recovers, and statements run.
    std::fs::remove_file(&log).unwrap();
    wait_for_async("statements to run again", WAIT, || async {
        client.simple_query("SELECT 'after-recovery'").await.ok()
    })
    .await;
    wait_for(
        "the statement after recovery to reach the file",
        WAIT,
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("after-recovery").then_some(())
        },
    )
    .await;
    // The state sink never failed: it has the statement that ran, and none refused.
    let state = gateway.cli_ok(&["logs", "--type", "QUERY", "--limit", "1000", "-o", "json"]);
    assert!(state.contains("after-recovery"), "{state}");
    assert!(!state.contains("refused-too"), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_shows_events_as_they_happen() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());
    let mut follower = gateway
        .command()
        .args(["logs", "--follow", "-o", "json", "--service", "orders"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let client = gateway
        .connect("alice.team-a", "orders", &key)
        .await
        .unwrap();
    client.simple_query("SELECT 'live-marker'").await.unwrap();
    let line = wait_for("the follower to print the query", WAIT, || {
        seen.try_iter().find(|l| l.contains("live-marker"))
    })
    .await;
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "QUERY");
    assert_eq!(event["identity"]["name"], "alice");

    // By default one event per statement run: the extended protocol's EXECUTE carries
    // the text; PARSE, BIND and CLOSE are opt-in.
    let row = client
        .query_one("SELECT 'extended-marker'::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "extended-marker");
    let line = wait_for("the follower to print the execute", WAIT, || {
        seen.try_iter().find(|l| l.contains("extended-marker"))
    })
    .await;
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "EXECUTE");
    let all = gateway.cli_ok(&["logs", "--limit", "1000", "-o", "json"]);
    for opt_in in ["\"PARSE\"", "\"BIND\"", "\"CLOSE\""] {
        assert!(!all.contains(opt_in), "{opt_in} recorded by default: {all}");
    }
    follower.kill().unwrap();
    let _ = follower.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_change_reaches_open_sessions_at_their_next_statement() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());
    let client = gateway
        .connect("alice.team-a", "orders", &key)
        .await
        .unwrap();
    let reads = || async { client.query_one("SELECT count(*) FROM items", &[]).await };
    assert_eq!(reads().await.unwrap().get::<_, i64>(0), 10);

    // Another process (the CLI) changes the service's rules while the session is open.
    let service = |rules: &str| {
        format!(
            "kind: Service\nmetadata: {{name: orders, namespace: team-a}}\n\
             spec:\n  target: main-pg\n  database: app\n  \
             upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}\n{rules}"
        )
    };
    let no_reads = service(
        "  authorization:\n    rules:\n      - {name: no-reads, effect: DENY, \
         condition: \"ctx.request.postgres.statement.kind == 'select'\"}\n      \
         - {name: the-rest, effect: ALLOW, matchAny: true}\n",
    );
    let file = gateway.write_file("no-reads.yaml", &no_reads);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let denied = wait_for_async("the open session to be refused reads", WAIT, || async {
        reads().await.err()
    })
    .await;
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    assert!(message(&denied).contains("no-reads"), "{denied}");
    // Other statements still run: the session was not cut off.
    client.batch_execute("SET work_mem = '8MB'").await.unwrap();

    // Taking the rule away lets the same session read again.
    let file = gateway.write_file("open.yaml", &service(""));
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let row = wait_for_async("the open session to read again", WAIT, || async {
        reads().await.ok()
    })
    .await;
    assert_eq!(row.get::<_, i64>(0), 10);

    // Deleting the identity takes the session's access away at its next statement.
    gateway.cli_ok(&["delete", "identity", "alice", "-n", "team-a"]);
    let revoked = wait_for_async(
        "the deleted identity's session to be refused",
        WAIT,
        || async { reads().await.err() },
    )
    .await;
    assert_eq!(sqlstate(&revoked).as_deref(), Some("42501"));
    assert!(message(&revoked).contains("access-revoked"), "{revoked}");
}
