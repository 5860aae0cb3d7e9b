//! The credential issuer end to end against a real PostgreSQL 15: credentials issued by
//! the CLI, leases renewed, expired and revoked, revocation retried while the upstream is
//! down, a creation cut short by SIGKILL rolled back on the next start, 200 concurrent
//! issues, per-session roles of `mode: dynamic` services, and static-role rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use postern_testkit::{
    issue_concurrently, roles_like, shared_pg, sqlstate, wait_until, Gateway, LocalPg,
};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const WAIT: Duration = Duration::from_secs(60);

/// Target `main-pg` in team-a with the superuser as admin, and CredentialRoles: `readonly`
/// (SELECT on items, Vault-style quoted placeholders), `owner` (may create tables),
/// `brief` (2 s), `broken` (its second statement fails) and `slow` (waits on advisory
/// lock 4242 before CREATE ROLE).
fn issuer_resources(address: &str) -> String {
    format!(
        r#"kind: Namespace
metadata: {{name: team-a}}
---
kind: Target
metadata: {{name: main-pg, namespace: team-a}}
spec: {{address: '{address}', sslMode: disable, admin: {{user: postgres, passwordSecret: pg-admin}}}}
---
kind: CredentialRole
metadata: {{name: readonly, namespace: team-a}}
spec:
  target: main-pg
  database: app
  creationStatements:
    - CREATE ROLE "{{{{name}}}}" LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}'
    - GRANT SELECT ON items TO "{{{{name}}}}"
  defaultTtl: 1h
  maxTtl: 2h
---
kind: CredentialRole
metadata: {{name: owner, namespace: team-a}}
spec:
  target: main-pg
  database: app
  creationStatements:
    - CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}} VALID UNTIL {{{{expiration}}}}
    - GRANT CREATE ON SCHEMA public TO {{{{name}}}}
---
kind: CredentialRole
metadata: {{name: brief, namespace: team-a}}
spec:
  target: main-pg
  database: app
  creationStatements:
    - CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}} VALID UNTIL {{{{expiration}}}}
    - GRANT SELECT ON items TO {{{{name}}}}
  defaultTtl: 2s
  maxTtl: 2s
---
kind: CredentialRole
metadata: {{name: broken, namespace: team-a}}
spec:
  target: main-pg
  database: app
  creationStatements:
    - CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}}
    - GRANT SELECT ON no_such_table TO {{{{name}}}}
---
kind: CredentialRole
metadata: {{name: slow, namespace: team-a}}
spec:
  target: main-pg
  database: app
  creationStatements:
    - SELECT pg_advisory_xact_lock(4242)
    - CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}}
"#
    )
}

/// A running gateway (with its reaper) whose state holds [`issuer_resources`] for `pg`,
/// plus `extra` resources.
async fn issuer_gateway(pg: &LocalPg, extra: &str) -> Gateway {
    let gateway = Gateway::start(BIN, &[]).await;
    let file = gateway.write_file(
        "issuer.yaml",
        &format!("{}{extra}", issuer_resources(&pg.address())),
    );
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let output = gateway.cli_with_input(
        &["secret", "set", "pg-admin", "-n", "team-a"],
        &format!("{}\n", pg.superuser_password()),
    );
    assert!(output.status.success(), "secret set failed");
    gateway
}

fn issue(gateway: &Gateway, role: &str, ttl: Option<&str>) -> serde_json::Value {
    let mut args = vec!["creds", "issue", role, "-n", "team-a", "-o", "json"];
    if let Some(ttl) = ttl {
        args.extend(["--ttl", ttl]);
    }
    serde_json::from_str(&gateway.cli_ok(&args)).expect("issue prints JSON")
}

fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    // The value holds a password: a failure names only the key.
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in the issue output"))
}

/// Every lease of team-a, ended ones included.
fn leases(gateway: &Gateway) -> Vec<serde_json::Value> {
    let out = gateway.cli_ok(&["lease", "list", "-n", "team-a", "--all", "-o", "json"]);
    serde_json::from_str(&out).expect("lease list prints JSON")
}

fn lease_state(gateway: &Gateway, id: &str) -> Option<String> {
    leases(gateway)
        .into_iter()
        .find(|l| l["id"] == id)
        .map(|l| l["state"].as_str().unwrap_or_default().to_owned())
}

async fn login(
    pg: &LocalPg,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port())
        .user(user)
        .password(password)
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The password must not be in the state database, nor in the gateway's log.
fn assert_not_stored(gateway: &Gateway, password: &str) {
    let db = std::fs::read(gateway.state_dir().join("state.db")).unwrap_or_default();
    let wal = std::fs::read(gateway.state_dir().join("state.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes
                .windows(password.len())
                .any(|w| w == password.as_bytes()),
            "a password is in the state database"
        );
    }
    assert!(
        !gateway.logs().contains(password),
        "a password is in the log"
    );
}

#[tokio::test]
async fn issued_credentials_have_exact_rights_renew_to_max_and_expire() {
    let pg = shared_pg().await;
    let gateway = issuer_gateway(pg, "").await;
    let admin = pg.connect("app").await.unwrap();

    let issued = issue(&gateway, "readonly", None);
    let (user, password, id) = (
        text(&issued, "username"),
        text(&issued, "password"),
        text(&issued, "lease_id"),
    );
    assert!(user.starts_with("v-cli-readonly-"), "{user}");
    let client = login(pg, user, password).await.expect("issued login works");
    let row = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10);
    let denied = client
        .execute("INSERT INTO items (name) VALUES ('x')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    assert_not_stored(&gateway, password);

    // Renew: an hour more is granted, five hours are cut to maxTtl (2h from issue).
    let out = gateway.cli_ok(&["lease", "renew", id, "--increment", "1h"]);
    assert!(!out.contains("maxTtl"), "{out}");
    let out = gateway.cli_ok(&["lease", "renew", id, "--increment", "5h"]);
    assert!(out.contains("cut to its maxTtl"), "{out}");
    let lease = leases(&gateway)
        .into_iter()
        .find(|l| l["id"] == id)
        .unwrap();
    assert_eq!(lease["expires_at"], lease["max_expires_at"]);
    let issued_at = issued["issued_at"].as_i64().unwrap();
    assert_eq!(lease["max_expires_at"].as_i64().unwrap(), issued_at + 7200);
    let valid_until: f64 = admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::float8 FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        valid_until as i64,
        issued_at + 7200,
        "VALID UNTIL follows the lease"
    );

    // Bad requests: a TTL past maxTtl, an unknown role; neither leaves a lease.
    let before = leases(&gateway).len();
    let output = gateway.cli(&["creds", "issue", "readonly", "-n", "team-a", "--ttl", "3h"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exceeds maxTtl 2h"), "{stderr}");
    let output = gateway.cli(&["creds", "issue", "nope", "-n", "team-a"]);
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("CredentialRole team-a/nope does not exist"));
    // SQL that fails names the role and statement; rollback leaves no role and no lease.
    let output = gateway.cli(&["creds", "issue", "broken", "-n", "team-a"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CredentialRole team-a/broken: spec.creationStatements[1] failed")
            && stderr.contains("no_such_table"),
        "{stderr}"
    );
    assert_eq!(leases(&gateway).len(), before);
    assert!(roles_like(&admin, "v-cli-broken-%").await.is_empty());

    // Expiry: a 2 s credential stops logging in and its role is dropped by the reaper.
    let brief = issue(&gateway, "brief", None);
    let brief_user = text(&brief, "username").to_owned();
    wait_until("the expired role to be dropped", WAIT, || {
        let admin = &admin;
        let pattern = brief_user.clone();
        async move { roles_like(admin, &pattern).await.is_empty() }
    })
    .await;
    assert!(login(pg, &brief_user, text(&brief, "password"))
        .await
        .is_err());
    assert_eq!(
        lease_state(&gateway, text(&brief, "lease_id")).as_deref(),
        Some("revoked")
    );
    assert_not_stored(&gateway, text(&brief, "password"));
    gateway.cli_ok(&["lease", "revoke", id]);
}

#[tokio::test]
async fn an_upstream_that_is_down_fails_the_issue_cleanly() {
    let gateway = Gateway::start(BIN, &[]).await;
    // Nothing listens on port 1.
    let file = gateway.write_file("down.yaml", &issuer_resources("127.0.0.1:1"));
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    gateway.cli_with_input(&["secret", "set", "pg-admin", "-n", "team-a"], "x\n");
    let output = gateway.cli(&["creds", "issue", "readonly", "-n", "team-a"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not reach the upstream"), "{stderr}");
    assert!(leases(&gateway).is_empty(), "no lease row is left behind");
}

#[tokio::test]
async fn revoke_ends_sessions_and_hands_owned_objects_to_the_admin() {
    let pg = shared_pg().await;
    let gateway = issuer_gateway(pg, "").await;
    let admin = pg.connect("app").await.unwrap();
    let issued = issue(&gateway, "owner", None);
    let user = text(&issued, "username");
    let client = login(pg, user, text(&issued, "password")).await.unwrap();
    let table = format!("t_{}", &user[user.len() - 10..]);
    client
        .batch_execute(&format!("CREATE TABLE \"{table}\" (x int)"))
        .await
        .unwrap();

    let out = gateway.cli_ok(&["lease", "revoke", text(&issued, "lease_id")]);
    assert!(out.contains("revoked"), "{out}");
    let ended = client.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        ended.is_closed() || sqlstate(&ended).as_deref() == Some("57P01"),
        "{ended}"
    );
    assert!(roles_like(&admin, user).await.is_empty());
    let owner: String = admin
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "postgres");
    // Revoking again is not an error.
    let out = gateway.cli_ok(&["lease", "revoke", text(&issued, "lease_id")]);
    assert!(out.contains("already ended"), "{out}");
}

#[tokio::test]
async fn revocation_while_the_upstream_is_down_is_retried_until_it_is_back() {
    let mut pg = LocalPg::start().await.unwrap();
    postern_testkit::prepare_app_database(&pg).await;
    let gateway = issuer_gateway(&pg, "").await;
    let issued = issue(&gateway, "readonly", None);
    let (user, id) = (
        text(&issued, "username").to_owned(),
        text(&issued, "lease_id"),
    );

    pg.pause();
    let output = gateway.cli(&["lease", "revoke", id]);
    assert!(!output.status.success(), "revoke cannot succeed while down");
    let lease = leases(&gateway)
        .into_iter()
        .find(|l| l["id"] == id)
        .unwrap();
    assert_eq!(lease["state"], "revoking");
    assert!(
        lease["last_error"]
            .as_str()
            .unwrap()
            .contains("could not reach"),
        "{lease}"
    );

    pg.resume().await.unwrap();
    wait_until("the reaper to finish the revocation", WAIT, || async {
        lease_state(&gateway, id).as_deref() == Some("revoked")
    })
    .await;
    let admin = pg.connect("app").await.unwrap();
    assert!(roles_like(&admin, &user).await.is_empty());
}

#[tokio::test]
async fn a_creation_cut_short_by_sigkill_is_rolled_back_on_the_next_start() {
    let pg = shared_pg().await;
    let mut gateway = issuer_gateway(
        pg,
        "---\nkind: Service\nmetadata: {name: slow-dyn, namespace: team-a}\n\
         spec: {target: main-pg, database: app, upstream: {mode: dynamic, credentialRole: slow}}\n\
         ---\nkind: Identity\nmetadata: {name: alice, namespace: team-a}\n",
    )
    .await;
    let key = gateway.create_key("alice", "team-a");
    let admin = pg.connect("app").await.unwrap();
    admin
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();

    // A session's role is recorded, then its creation waits on the lock: kill the gateway.
    let connecting = {
        let conninfo = gateway.conninfo("alice.team-a", "slow-dyn.team-a", &key);
        tokio::spawn(async move { tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await })
    };
    wait_until("the creation to wait on the lock", WAIT, || async {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        waiting > 0 && leases(&gateway).iter().any(|l| l["state"] == "creating")
    })
    .await;
    gateway.kill();
    assert!(connecting.await.unwrap().is_err());
    admin
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();

    gateway.restart(&[]).await;
    wait_until("the next start to roll the creation back", WAIT, || async {
        leases(&gateway).iter().all(|l| l["state"] == "rolled-back")
    })
    .await;
    assert!(roles_like(&admin, "v-alice-slow-%").await.is_empty());
}

#[tokio::test]
async fn two_hundred_concurrent_issues_give_distinct_working_roles() {
    let pg = shared_pg().await;
    let gateway = issuer_gateway(pg, "").await;
    let store = postern_state::Store::open(
        gateway.state_dir(),
        &postern_state::KeySettings {
            inline: None,
            credentials_directory: None,
            key_file: gateway.state_dir().join("master.key"),
        },
    )
    .unwrap();
    let issuer = postern_issuer::Issuer::new(Arc::new(store));
    let role = postern_model::QualifiedName::new("team-a", "readonly");
    let issued = issue_concurrently(&[issuer], &role, 200).await;
    for credential in &issued {
        let client = login(pg, &credential.username, credential.password.expose())
            .await
            .expect("every issued role logs in");
        let user: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, credential.username);
    }
    let out = gateway.cli_ok(&["lease", "revoke", "--prefix", "readonly", "-n", "team-a"]);
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" revoked")).count(),
        200,
        "{out}"
    );
    let admin = pg.connect("app").await.unwrap();
    assert!(roles_like(&admin, "v-bulk-%").await.is_empty());
}

#[tokio::test]
async fn dynamic_sessions_get_their_own_roles_that_go_with_them() {
    let pg = shared_pg().await;
    let gateway = issuer_gateway(
        pg,
        "---\nkind: Service\nmetadata: {name: dyn, namespace: team-a}\n\
         spec: {target: main-pg, database: app, upstream: {mode: dynamic, credentialRole: readonly}}\n\
         ---\nkind: Service\nmetadata: {name: dyn-brief, namespace: team-a}\n\
         spec: {target: main-pg, database: app, upstream: {mode: dynamic, credentialRole: brief}}\n\
         ---\nkind: Identity\nmetadata: {name: alice, namespace: team-a}\n",
    )
    .await;
    let key = gateway.create_key("alice", "team-a");
    let admin = pg.connect("app").await.unwrap();

    let first = gateway
        .connect("alice.team-a", "dyn.team-a", &key)
        .await
        .unwrap();
    let second = gateway
        .connect("alice.team-a", "dyn.team-a", &key)
        .await
        .unwrap();
    let mut users = Vec::new();
    for client in [&first, &second] {
        let row = client
            .query_one("SELECT current_user::text, count(*) FROM items", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(1), 10);
        users.push(row.get::<_, String>(0));
    }
    assert_ne!(users[0], users[1]);
    assert!(
        users.iter().all(|u| u.starts_with("v-alice-readonly-")),
        "{users:?}"
    );
    assert_eq!(roles_like(&admin, "v-alice-readonly-%").await.len(), 2);
    drop(first);
    drop(second);
    wait_until("the sessions' roles to be dropped", WAIT, || async {
        roles_like(&admin, "v-alice-readonly-%").await.is_empty()
    })
    .await;

    // A lease that runs out ends its session with 57P01.
    let brief = gateway
        .connect("alice.team-a", "dyn-brief.team-a", &key)
        .await
        .unwrap();
    // The query outlasts the lease; the session is ended under it.
    let error = brief
        .simple_query("SELECT pg_sleep(30)")
        .await
        .expect_err("the session ends with its lease");
    assert_eq!(sqlstate(&error).as_deref(), Some("57P01"), "{error}");
    assert!(!gateway.logs().contains(&key));
}

#[tokio::test]
async fn static_role_rotation_changes_the_password_and_the_gateway_keeps_connecting() {
    let pg = shared_pg().await;
    let admin = pg.connect("app").await.unwrap();
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS static_reader;
             CREATE ROLE static_reader LOGIN PASSWORD 'initial-Password-1';
             GRANT SELECT ON items TO static_reader",
        )
        .await
        .unwrap();
    let gateway = issuer_gateway(
        pg,
        "---\nkind: StaticRole\nmetadata: {name: reader, namespace: team-a}\n\
         spec: {target: main-pg, username: static_reader, rotationPeriod: 24h}\n\
         ---\nkind: Service\nmetadata: {name: stat, namespace: team-a}\n\
         spec: {target: main-pg, database: app, upstream: {mode: static, staticRole: reader}}\n\
         ---\nkind: Identity\nmetadata: {name: alice, namespace: team-a}\n",
    )
    .await;
    let key = gateway.create_key("alice", "team-a");
    // The admin secret was set after apply, so the first password comes from here.
    gateway.cli_ok(&["static-role", "rotate", "reader", "-n", "team-a"]);
    assert!(login(pg, "static_reader", "initial-Password-1")
        .await
        .is_err());
    let password_hash = || async {
        admin
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'static_reader'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let before = password_hash().await;
    let through_gateway = || async {
        let client = gateway
            .connect("alice.team-a", "stat.team-a", &key)
            .await
            .expect("the gateway connects with the current password");
        client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(through_gateway().await, "static_reader");
    gateway.cli_ok(&["static-role", "rotate", "reader", "-n", "team-a"]);
    assert_ne!(password_hash().await, before);
    assert_eq!(through_gateway().await, "static_reader");
}

/// What the web UI's leases page and target check call: leases listed by filter, renewed,
/// revoked one by one and all that match (after a dry-run count), the target's admin
/// checked; and the overview names the listeners.
#[tokio::test]
async fn leases_and_the_target_check_over_the_admin_api() {
    let pg = shared_pg().await;
    let gateway = issuer_gateway(pg, "").await;
    let http = postern_testkit::Http::new(gateway.api_port().await);
    let token = gateway.admin_token();
    let first = issue(&gateway, "readonly", None);
    let second = issue(&gateway, "readonly", None);
    issue(&gateway, "owner", None);
    let json = |text: &str| -> serde_json::Value { serde_json::from_str(text).unwrap() };
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let leases = "/api/v1/namespaces/team-a/leases";
    let (status, body) = http.get(&format!("{leases}?role=readonly"), &token);
    assert_eq!(status, 200, "{body}");
    let readonly = ids(&json(&body));
    assert_eq!(readonly.len(), 2, "{body}");
    assert!(
        readonly.contains(&text(&first, "lease_id").to_owned()),
        "{body}"
    );
    // Issued from the CLI, not for a session; nothing of readonly's (1 h) expires within
    // 10 minutes.
    let by_cli = json(&http.get(&format!("{leases}?identity=cli"), &token).1);
    assert_eq!(ids(&by_cli).len(), 3, "{by_cli}");
    let by_alice = json(
        &http
            .get(&format!("{leases}?identity=alice.team-a"), &token)
            .1,
    );
    assert!(ids(&by_alice).is_empty(), "{by_alice}");
    let soon = json(
        &http
            .get(
                &format!("{leases}?role=readonly&expiringWithin=10m"),
                &token,
            )
            .1,
    );
    assert!(ids(&soon).is_empty(), "{soon}");

    // One renewed, one revoked; a lease id is one percent-encoded path segment.
    let lease_path = |id: &str| format!("{leases}/{}", id.replace('/', "%2F"));
    let first_id = text(&first, "lease_id");
    let (status, body) = http.send_json(
        "POST",
        &format!("{}/renew", lease_path(first_id)),
        &token,
        r#"{"increment": "90m"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["capped"], false, "{body}");
    let (status, body) = http.call("DELETE", &lease_path(first_id), Some(&token), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["outcome"], "revoked", "{body}");
    assert_eq!(lease_state(&gateway, first_id).as_deref(), Some("revoked"));
    let admin = pg.connect("postgres").await.unwrap();
    let first_user = text(&first, "username");
    assert!(roles_like(&admin, first_user).await.is_empty());

    // Revoke all that match: first the count, then the deed.
    let bulk = format!("{leases}/revoke");
    let (status, body) = http.send_json(
        "POST",
        &bulk,
        &token,
        r#"{"role": "readonly", "dryRun": true}"#,
    );
    assert_eq!(status, 200, "{body}");
    let counted = json(&body);
    assert_eq!(counted["count"], 1, "{body}");
    let second_id = text(&second, "lease_id");
    assert_eq!(lease_state(&gateway, second_id).as_deref(), Some("active"));
    // Only what the dry run showed is revoked: a lease issued since is left alone.
    let (status, body) = http.send_json("POST", &bulk, &token, r#"{"role": "readonly"}"#);
    assert_eq!(status, 400, "{body}");
    let newer = issue(&gateway, "readonly", None);
    let confirm = serde_json::json!({"role": "readonly", "ids": counted["ids"]}).to_string();
    let (status, body) = http.send_json("POST", &bulk, &token, &confirm);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["results"][0]["outcome"], "revoked", "{body}");
    assert_eq!(json(&body)["count"], 1, "{body}");
    let newer_id = text(&newer, "lease_id");
    assert_eq!(lease_state(&gateway, newer_id).as_deref(), Some("active"));
    http.call("DELETE", &lease_path(newer_id), Some(&token), None);
    assert_eq!(lease_state(&gateway, second_id).as_deref(), Some("revoked"));
    let left = json(&http.get(&format!("{leases}?role=readonly"), &token).1);
    assert!(ids(&left).is_empty(), "{left}");
    let (status, body) = http.send_json("POST", &bulk, &token, r#"{"nope": 1}"#);
    assert_eq!(status, 400, "{body}");

    // The target's admin (the superuser here) has every right the issuer needs.
    let (status, body) = http.call(
        "POST",
        "/api/v1/namespaces/team-a/targets/main-pg/check",
        Some(&token),
        Some(("application/json", "")),
    );
    assert_eq!(status, 200, "{body}");
    let checks = json(&body);
    let items = checks["items"].as_array().unwrap();
    assert!(
        !items.is_empty() && items.iter().all(|i| i["ok"] == true),
        "{body}"
    );

    let overview = json(&http.get("/api/v1/overview", &token).1);
    assert_eq!(
        overview["listeners"]["proxy"],
        format!("127.0.0.1:{}", gateway.port()),
        "{overview}"
    );
    assert!(
        overview["attention"].as_array().unwrap().is_empty(),
        "{overview}"
    );
}
