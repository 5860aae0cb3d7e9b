//! Several gateways on one state in PostgreSQL: what one is told, the others enforce; one
//! leads (the reaper, the reconciler, the rotations) and another takes over when it is
//! killed; concurrent issues spread over gateways give distinct roles; a state outage
//! keeps open sessions and refuses new logins with 57P03 until the state is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use postern_testkit::{
    issue_concurrently, roles_like, shared_pg, sqlstate, wait_for, wait_for_async, wait_until,
    Gateway, Http, LocalPg, SharedState, DB, USER,
};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const WAIT: Duration = Duration::from_secs(30);

/// `/readyz` of `gateway`: (HTTP status, the answer).
async fn readiness(gateway: &Gateway) -> (u16, serde_json::Value) {
    let http = Http::new(gateway.api_port().await);
    let (status, body) = http.call("GET", "/readyz", None, None);
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// The gateways that say they lead.
async fn leaders(gateways: &[&Gateway]) -> Vec<usize> {
    let mut leading = Vec::new();
    for (index, gateway) in gateways.iter().enumerate() {
        if readiness(gateway).await.1["leader"] == true {
            leading.push(index);
        }
    }
    leading
}

/// A token from `postern token issue` on `gateway`, with its jti.
fn issue_token(gateway: &Gateway, identity: &str) -> (String, String) {
    let output = gateway.cli(&["token", "issue", identity, "-n", "team-a", "--ttl", "10m"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let note = String::from_utf8_lossy(&output.stderr).into_owned();
    let jti = note.split_whitespace().nth(1).expect("jti").to_owned();
    (
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        jti,
    )
}

async fn whoami_status(gateway: &Gateway, token: &str) -> u16 {
    Http::new(gateway.api_port().await)
        .get("/api/v1/whoami", token)
        .0
}

#[tokio::test]
async fn three_gateways_share_one_state_and_one_of_them_leads() {
    let pg = shared_pg().await;
    let state = SharedState::create(pg, "fleet_shared").await;
    let a = Gateway::start_on(BIN, &state, &[]).await;
    let b = Gateway::start_on(BIN, &state, &[]).await;
    let c = Gateway::start_on(BIN, &state, &[]).await;

    // An identity and key made through A's state log in through B and C.
    let key = a.provision(&pg.address());
    for gateway in [&b, &c] {
        let client = gateway.connect(USER, DB, &key).await.unwrap();
        let row = client
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 10);
    }

    // Exactly one of them leads.
    wait_until("one gateway to lead", WAIT, || async {
        leaders(&[&a, &b, &c]).await.len() == 1
    })
    .await;
    for gateway in [&a, &b, &c] {
        let (status, ready) = readiness(gateway).await;
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["state"]["backend"], "postgres");
    }

    // A rule applied through C reaches a session open on A at its next statement.
    let client = a.connect(USER, DB, &key).await.unwrap();
    let reads = || async { client.query_one("SELECT count(*) FROM items", &[]).await };
    assert!(reads().await.is_ok());
    let no_reads = "kind: Service\nmetadata: {name: orders, namespace: team-a}\n\
         spec:\n  target: main-pg\n  database: app\n  \
         upstream: {mode: static, user: app_rw, passwordSecret: app-rw-password}\n  \
         authorization:\n    rules:\n      - {name: no-reads, effect: DENY, \
         condition: \"ctx.request.postgres.statement.kind == 'select'\"}\n      \
         - {name: the-rest, effect: ALLOW, matchAny: true}\n";
    let file = c.write_file("no-reads.yaml", no_reads);
    c.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let denied = wait_for_async("A to enforce C's rule", WAIT, || async {
        reads().await.err()
    })
    .await;
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));

    // A token issued through A works on B and C; revoked through B, A and C refuse it.
    a.cli_ok(&[
        "apply",
        "-f",
        a.write_file(
            "reader.yaml",
            "kind: RoleBinding\nmetadata: {name: alice-reads, namespace: team-a}\n\
             spec: {role: namespace-reader, subject: {identity: alice}}\n",
        )
        .to_str()
        .unwrap(),
    ]);
    let (token, jti) = issue_token(&a, "alice");
    for gateway in [&a, &b, &c] {
        assert_eq!(whoami_status(gateway, &token).await, 200);
    }
    b.cli_ok(&["token", "revoke", &jti]);
    for gateway in [&a, &c] {
        assert_eq!(whoami_status(gateway, &token).await, 401);
    }
}

/// [`postern_testkit::provision_resources`]-like issuer set-up: a target with the
/// superuser as admin, the `brief` CredentialRole (2 s) and the admin password.
fn apply_issuer_resources(gateway: &Gateway, pg: &LocalPg) {
    let resources = format!(
        "kind: Namespace\nmetadata: {{name: team-a}}\n---\n\
         kind: Target\nmetadata: {{name: main-pg, namespace: team-a}}\n\
         spec: {{address: '{}', sslMode: disable, admin: {{user: postgres, passwordSecret: pg-admin}}}}\n---\n\
         kind: CredentialRole\nmetadata: {{name: brief, namespace: team-a}}\n\
         spec:\n  target: main-pg\n  database: app\n  creationStatements:\n    \
         - CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}} VALID UNTIL {{{{expiration}}}}\n  \
         defaultTtl: 3s\n  maxTtl: 3s\n---\n\
         kind: CredentialRole\nmetadata: {{name: lasting, namespace: team-a}}\n\
         spec:\n  target: main-pg\n  database: app\n  creationStatements:\n    \
         - CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}}\n  \
         defaultTtl: 1h\n  maxTtl: 1h\n",
        pg.address()
    );
    let file = gateway.write_file("issuer.yaml", &resources);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let output = gateway.cli_with_input(
        &["secret", "set", "pg-admin", "-n", "team-a"],
        &format!("{}\n", pg.superuser_password()),
    );
    assert!(output.status.success(), "secret set failed");
}

fn lease_states(gateway: &Gateway) -> Vec<(String, String, i64)> {
    let out = gateway.cli_ok(&["lease", "list", "-n", "team-a", "--all", "-o", "json"]);
    let leases: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    leases
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_owned(),
                l["state"].as_str().unwrap().to_owned(),
                l["attempts"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Whether `role` may read `public.items` on the upstream.
async fn may_read_items(app: &tokio_postgres::Client, role: &str) -> bool {
    app.query_one(
        "SELECT has_table_privilege($1, 'public.items', 'SELECT')",
        &[&role],
    )
    .await
    .map(|row| row.get(0))
    .unwrap_or(false)
}

#[tokio::test]
async fn when_the_leader_is_killed_another_takes_over_the_reaper_and_the_reconciler() {
    let pg = shared_pg().await;
    let state = SharedState::create(pg, "fleet_leader").await;
    let flags = ["--reconcile-interval-secs", "1"];
    let mut gateways = [
        Gateway::start_on(BIN, &state, &flags).await,
        Gateway::start_on(BIN, &state, &flags).await,
        Gateway::start_on(BIN, &state, &flags).await,
    ];
    apply_issuer_resources(&gateways[0], pg);
    // Intents: workload `w` may read items, through its own role on the upstream.
    let intents = gateways[0].write_file(
        "intents.yaml",
        "kind: Service\nmetadata: {name: shop, namespace: team-a}\n\
         spec: {target: main-pg, database: app, upstream: {mode: intents}}\n---\n\
         kind: Identity\nmetadata: {name: w, namespace: team-a}\nspec: {type: workload}\n---\n\
         kind: Intents\nmetadata: {name: w-needs, namespace: team-a}\n\
         spec:\n  identity: w\n  access:\n  - {service: shop, table: public.items, operations: [SELECT]}\n",
    );
    gateways[0].cli_ok(&["apply", "-f", intents.to_str().unwrap()]);
    let app = pg.connect("app").await.unwrap();
    wait_until("the leader to grant w's role", WAIT, || async {
        may_read_items(&app, "pn_team-a_w").await
    })
    .await;
    let leader = wait_for_async("one gateway to lead", WAIT, || async {
        let all: Vec<&Gateway> = gateways.iter().collect();
        match leaders(&all).await.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    })
    .await;
    gateways[leader].kill();
    // Leases issued after the kill expire in 3 s: only the new leader can revoke them.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for index in survivors.iter().cycle().take(6) {
        let out =
            gateways[*index].cli_ok(&["creds", "issue", "brief", "-n", "team-a", "-o", "json"]);
        assert!(out.contains("username"), "issue printed no username");
    }
    let admin = pg.connect("app").await.unwrap();
    assert_eq!(roles_like(&admin, "v-cli-brief-%").await.len(), 6);
    let new_leader = wait_for_async("another gateway to lead", WAIT, || async {
        let alive: Vec<&Gateway> = survivors.iter().map(|i| &gateways[*i]).collect();
        match leaders(&alive).await.as_slice() {
            [one] => Some(survivors[*one]),
            _ => None,
        }
    })
    .await;
    assert_ne!(new_leader, leader);
    wait_until("the expired leases to be revoked", WAIT, || async {
        roles_like(&admin, "v-cli-brief-%").await.is_empty()
    })
    .await;
    let states = lease_states(&gateways[new_leader]);
    assert_eq!(states.len(), 6, "{states:?}");
    // Each revoked once: none failed or was retried.
    assert!(
        states
            .iter()
            .all(|(_, state, attempts)| state == "revoked" && *attempts == 0),
        "{states:?}"
    );

    // Drift by hand: the new leader's reconciler puts the grant back.
    app.batch_execute("REVOKE SELECT ON public.items FROM \"pn_team-a_w\"")
        .await
        .unwrap();
    assert!(!may_read_items(&app, "pn_team-a_w").await);
    wait_until("the new leader to correct the drift", WAIT, || async {
        may_read_items(&app, "pn_team-a_w").await
    })
    .await;
}

#[tokio::test]
async fn two_hundred_concurrent_issues_over_three_gateways_give_distinct_roles() {
    let pg = shared_pg().await;
    let state = SharedState::create(pg, "fleet_issues").await;
    let gateway = Gateway::start_on(BIN, &state, &[]).await;
    apply_issuer_resources(&gateway, pg);
    // Three issuers on three stores of their own, as three gateways have.
    let issuers: Vec<Arc<postern_issuer::Issuer>> = (0..3)
        .map(|_| {
            let store = postern_state::Store::open_postgres(
                &postern_state::PostgresSettings {
                    url: state.conninfo.clone(),
                    password: Some(postern_model::SecretValue::new(pg.superuser_password())),
                    tls: None,
                },
                &postern_state::KeySettings {
                    inline: Some(state.master_key().to_owned()),
                    credentials_directory: None,
                    key_file: gateway.state_dir().join("unused.key"),
                },
            )
            .expect("open the shared state");
            postern_issuer::Issuer::new(Arc::new(store))
        })
        .collect();
    let role = postern_model::QualifiedName::new("team-a", "lasting");
    let issued = issue_concurrently(&issuers, &role, 200).await;
    let admin = pg.connect("app").await.unwrap();
    assert_eq!(roles_like(&admin, "v-bulk-%").await.len(), 200);
    for credential in issued.iter().step_by(20) {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(pg.port())
            .user(&credential.username)
            .password(credential.password.expose())
            .dbname("app")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("an issued role logs in");
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.unwrap();
    }
    let out = gateway.cli_ok(&["lease", "revoke", "--prefix", "lasting", "-n", "team-a"]);
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" revoked")).count(),
        200,
        "{out}"
    );
    assert!(roles_like(&admin, "v-bulk-%").await.is_empty());
}

#[tokio::test]
async fn a_state_outage_keeps_open_sessions_and_refuses_logins_with_57p03() {
    let upstream = shared_pg().await;
    // The state on a server of its own, to stop and start.
    let mut state_server = LocalPg::start()
        .await
        .expect("start the state's PostgreSQL");
    let state = SharedState::create(&state_server, "fleet_outage").await;
    let gateway = Gateway::start_on(BIN, &state, &[]).await;
    let key = gateway.provision(&upstream.address());
    // A session binds its rules at the epoch this gateway last read; when that lags the
    // state's, the next statement binds them again, which needs the state. So first let
    // the gateway catch up with the provisioning.
    let state_db = state_server.connect(&state.database).await.unwrap();
    let stored_epoch: i64 = state_db
        .query_one("SELECT epoch FROM resource_epoch", &[])
        .await
        .unwrap()
        .get(0);
    let metrics = Http::new(gateway.api_port().await);
    let admin_token = gateway.admin_token();
    wait_until("the gateway to read the state's epoch", WAIT, || async {
        let (_, text) = metrics.get("/metrics", &admin_token);
        text.lines()
            .any(|line| line == format!("postern_resource_epoch {stored_epoch}"))
    })
    .await;
    let open = gateway.connect(USER, DB, &key).await.unwrap();

    state_server.pause();
    let row = open
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .expect("an open session goes on without the state");
    assert_eq!(row.get::<_, i64>(0), 10);
    // What a login reads is cached for a moment (till the epochs read every 100 ms are
    // 250 ms old): logins are refused from then on.
    let refused = wait_for_async("a login to be refused", WAIT, || async {
        gateway.connect(USER, DB, &key).await.err()
    })
    .await;
    assert_eq!(sqlstate(&refused).as_deref(), Some("57P03"), "{refused}");
    let (status, ready) = readiness(&gateway).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["state"]["reachable"], false);
    assert!(
        !gateway.logs().contains(state.password()),
        "no password in the log"
    );

    state_server
        .resume()
        .await
        .expect("restart the state's PostgreSQL");
    let back = wait_for_async("logins to work again", WAIT, || async {
        gateway.connect(USER, DB, &key).await.ok()
    })
    .await;
    back.simple_query("SELECT 1").await.unwrap();
    assert_eq!(readiness(&gateway).await.0, 200);
}

#[tokio::test]
async fn a_single_gateway_s_state_migrates_into_postgres_for_a_fleet() {
    let pg = shared_pg().await;
    let mut single = Gateway::start(BIN, &[]).await;
    let key = single.provision(&pg.address());
    single.kill();
    let master_key = std::fs::read_to_string(single.state_dir().join("master.key")).unwrap();
    let state = SharedState::create_with_key(pg, "fleet_migrated", master_key.trim()).await;
    let from = format!("sqlite:{}", single.state_dir().display());
    let to = format!("{} password={}", state.conninfo, state.password());
    let out = single.cli_ok(&["state", "migrate", "--from", &from, "--to", &to]);
    assert!(out.contains("secrets: 1 rows"), "{out}");
    assert!(!out.contains(state.password()), "no password in {out}");
    // A second run finds the target taken and changes nothing.
    let again = single.cli(&["state", "migrate", "--from", &from, "--to", &to]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The fleet's gateway logs alice in with the key made on the single gateway, and
    // injects the secret sealed there.
    let member = Gateway::start_on(BIN, &state, &[]).await;
    let client = member.connect(USER, DB, &key).await.unwrap();
    let row = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10);
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy (Debian's, TCP mode) in front of three gateways, pgbench sessions and a stream
/// of new connections through it; one gateway is SIGKILLed mid-run. Only its sessions
/// fail, new connections go to the others, and no lease or upstream role is left. Not in
/// `scripts/test.sh` (it needs haproxy): `scripts/fleet-haproxy.sh` installs it and runs
/// this.
#[tokio::test]
#[ignore = "needs haproxy: scripts/fleet-haproxy.sh"]
async fn behind_haproxy_a_killed_gateway_loses_only_its_own_sessions() {
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("haproxy installed (scripts/fleet-haproxy.sh installs it)");
    let pg = shared_pg().await;
    let state = SharedState::create(pg, "fleet_haproxy").await;
    let mut gateways = [
        Gateway::start_on(BIN, &state, &[]).await,
        Gateway::start_on(BIN, &state, &[]).await,
        Gateway::start_on(BIN, &state, &[]).await,
    ];
    apply_issuer_resources(&gateways[0], pg);
    // Every session gets a role of its own (mode dynamic), which goes with the session.
    let dynamic = gateways[0].write_file(
        "dynamic.yaml",
        "kind: CredentialRole\nmetadata: {name: reader, namespace: team-a}\n\
         spec:\n  target: main-pg\n  database: app\n  creationStatements:\n    \
         - CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}\n    \
         - GRANT SELECT ON items TO {{name}}\n  defaultTtl: 1h\n  maxTtl: 1h\n---\n\
         kind: Service\nmetadata: {name: dyn, namespace: team-a}\n\
         spec: {target: main-pg, database: app, upstream: {mode: dynamic, credentialRole: reader}}\n---\n\
         kind: Identity\nmetadata: {name: alice, namespace: team-a}\nspec: {type: human}\n",
    );
    gateways[0].cli_ok(&["apply", "-f", dynamic.to_str().unwrap()]);
    let key = gateways[0].create_key("alice", "team-a");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let servers: String = gateways
        .iter()
        .enumerate()
        .map(|(n, g)| {
            format!(
                "    server g{n} 127.0.0.1:{} check inter 200ms fall 1 rise 2\n",
                g.port()
            )
        })
        .collect();
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    maxconn 2000\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
             timeout client 60s\n    timeout server 60s\nfrontend postgres\n    \
             bind 127.0.0.1:{port}\n    default_backend gateways\nbackend gateways\n    \
             balance roundrobin\n{servers}"
        ),
    )
    .unwrap();
    let mut balancer = std::process::Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    wait_until("haproxy to listen", WAIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=alice.team-a dbname=dyn.team-a password={key} sslmode=disable"
    );

    // Sessions that stay: pgbench, six clients spread over the three gateways.
    let script = dir.path().join("read.sql");
    std::fs::write(&script, "SELECT count(*) FROM items;\n").unwrap();
    let pgbench = tokio::process::Command::new(postern_testkit::pg_tool("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "alice.team-a", "-n", "-c", "6", "-j", "2", "-T", "10"])
        .arg("-f")
        .arg(&script)
        .arg("dyn.team-a")
        .env("PGPASSWORD", &key)
        .env("PGSSLMODE", "disable")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pgbench");
    // Its six sessions spread over the gateways; those on the one to be killed are doomed.
    let admin_token = gateways[0].admin_token();
    let mut metrics = Vec::new();
    for gateway in &gateways {
        metrics.push(Http::new(gateway.api_port().await));
    }
    let sessions = |n: usize| -> u64 {
        let (_, text) = metrics[n].get("/metrics", &admin_token);
        text.lines()
            .find_map(|l| l.strip_prefix("postern_sessions_active "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_for("pgbench's six sessions", WAIT, || {
        ((0..3).map(sessions).sum::<u64>() == 6).then_some(())
    })
    .await;
    let doomed = sessions(1);
    assert!(doomed > 0, "round robin gave the second gateway no session");
    // New connections all along: each logs in, reads, and leaves.
    let started = std::time::Instant::now();
    let killed_at = Duration::from_secs(2);
    let churn = async {
        let mut outcomes = Vec::new();
        while started.elapsed() < Duration::from_secs(7) {
            let at = started.elapsed();
            let ok = match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    client.simple_query("SELECT 1").await.is_ok()
                }
                Err(_) => false,
            };
            outcomes.push((at, ok));
        }
        outcomes
    };
    let kill = async {
        tokio::time::sleep_until((started + killed_at).into()).await;
        gateways[1].kill();
    };
    let (bench, outcomes, ()) = tokio::join!(pgbench.wait_with_output(), churn, kill);
    let bench = bench.expect("run pgbench");
    let report = String::from_utf8_lossy(&bench.stdout);
    let processed: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 0, "{report}");
    // The killed gateway's sessions end; the others run to the end.
    let stderr = String::from_utf8_lossy(&bench.stderr);
    let aborted = stderr.matches("aborted in command").count();
    assert_eq!(u64::try_from(aborted).unwrap(), doomed, "{stderr}");
    // New connections fail only while HAProxy has not yet marked the gateway down.
    let late_failures: Vec<_> = outcomes
        .iter()
        .filter(|(at, ok)| !ok && *at > killed_at + Duration::from_secs(1))
        .collect();
    assert!(late_failures.is_empty(), "{late_failures:?}");
    assert!(outcomes.iter().filter(|(_, ok)| *ok).count() > 10);
    let _ = balancer.kill();
    let _ = balancer.wait();

    // Nothing left behind: the dead gateway's session leases are ended by the leader.
    let app = pg.connect("app").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let live: Vec<_> = lease_states(&gateways[0])
            .into_iter()
            .filter(|(_, state, _)| state != "revoked" && state != "rolled-back")
            .collect();
        let roles = roles_like(&app, "v-alice-reader-%").await;
        if live.is_empty() && roles.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: leases {live:?}, roles {roles:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
