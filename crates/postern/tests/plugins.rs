//! A policy-hook plugin end to end against a real PostgreSQL 15: the table-window example
//! plugin (a real wasm32-wasip2 component) applied as a `kind: Plugin` resource, named by
//! a Service, denying reads of a table outside its hours with 42501 naming the plugin;
//! re-applied with another config, the open session is allowed at its next statement;
//! a component importing what it is not granted is refused at apply; a Plugin a Service
//! names cannot be deleted; pgbench through a plugin re-applied under load; the
//! otlp-logs sink plugin delivering every event once, in order, after its collector
//! refused for a while.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_testkit::{shared_pg, sqlstate, wait_for, wait_for_async, Gateway};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const WAIT: Duration = Duration::from_secs(60);

/// One sample of `/metrics`.
async fn metric(gateway: &Gateway, name: &str, labels: &str) -> f64 {
    let http = postern_testkit::Http::new(gateway.api_port().await);
    let (status, metrics) = http.get("/metrics", &gateway.admin_token());
    assert_eq!(status, 200);
    let prefix = format!("{name}{labels} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} missing: {metrics}"))
        .parse()
        .unwrap()
}

fn message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_owned())
}

/// The Plugin resource: `public.items` only in a window of UTC hours that starts two
/// hours from now (so the test is outside it for at least an hour), except for
/// `exempt`. `capabilities` as given.
fn plugin(exempt: &str, capabilities: &str) -> String {
    let hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        % 24;
    let path = postern_testkit::plugin_components().join("table_window.wasm");
    format!(
        r#"kind: Plugin
metadata: {{name: items-hours, namespace: team-a}}
spec:
  type: policy
  source: {{path: "{}"}}
  capabilities: {capabilities}
  limits: {{memoryMib: 16, callTimeoutMs: 200}}
  config:
    tables: [public.items]
    from_hour: {}
    until_hour: {}
    exempt_groups: [{exempt}]
---
kind: Service
metadata: {{name: orders, namespace: team-a}}
spec:
  target: main-pg
  database: app
  upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}
  authorization:
    plugins: [items-hours]
"#,
        path.display(),
        (hour + 2) % 24,
        (hour + 3) % 24,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_plugin_denies_by_table_and_is_swapped_for_open_sessions() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());

    // Log is not granted, but the component imports it: refused at apply, one line.
    let ungranted = gateway.write_file("ungranted.yaml", &plugin("on-call", "[]"));
    let output = gateway.cli(&["apply", "-f", ungranted.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("postern:plugin/log@0.1.0") && stderr.contains("spec.capabilities"),
        "{stderr}"
    );

    let file = gateway.write_file("items-hours.yaml", &plugin("on-call", "[log]"));
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    // Until the gateway has loaded the plugin (within a second), the service refuses
    // sessions: a missing control lets nothing through.
    let first = gateway
        .connect("alice.team-a", "orders", &key)
        .await
        .err()
        .map(|e| message(&e));
    if let Some(refused) = first {
        assert!(refused.contains("items-hours is not loaded"), "{refused}");
    }
    let client = wait_for_async("the plugin to load", WAIT, || async {
        gateway.connect("alice.team-a", "orders", &key).await.ok()
    })
    .await;
    // What it wrote through `log` at init, as the gateway recorded it.
    let logged = wait_for("postern plugin logs to show its line", WAIT, || {
        let out = gateway.cli_ok(&["plugin", "logs", "items-hours", "-n", "team-a"]);
        out.contains("1 table patterns, window").then_some(out)
    })
    .await;
    assert!(logged.contains(" info "), "{logged}");
    let output = gateway.cli(&["plugin", "logs", "nothing-here", "-n", "team-a"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Plugin team-a/nothing-here not found") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let reads = || async { client.query_one("SELECT count(*) FROM items", &[]).await };
    let denied = wait_for_async("the plugin to deny reading items", WAIT, || async {
        reads()
            .await
            .err()
            .filter(|e| message(e).contains("public.items"))
    })
    .await;
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"));
    let text = message(&denied);
    assert!(
        text.contains("plugin items-hours") && text.contains("orders"),
        "{text}"
    );
    // Statements on other tables are the plugin's to allow.
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let labels = r#"{namespace="team-a",plugin="items-hours",type="policy"}"#;
    assert!(metric(&gateway, "postern_plugin_denials_total", labels).await >= 1.0);
    assert_eq!(
        metric(&gateway, "postern_plugin_healthy", labels).await,
        1.0
    );
    // The same counters for the UI's plugin page, and nothing for a plugin not there.
    let http = postern_testkit::Http::new(gateway.api_port().await);
    let (status, body) = http.get(
        "/api/v1/namespaces/team-a/plugins/items-hours/runtime",
        &gateway.admin_token(),
    );
    assert_eq!(status, 200, "{body}");
    let runtime: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runtime["loaded"], true, "{body}");
    assert_eq!(runtime["type"], "policy", "{body}");
    assert!(
        runtime["counters"]["denials"].as_f64() >= Some(1.0),
        "{body}"
    );
    assert_eq!(runtime["counters"]["healthy"], 1.0, "{body}");
    let (status, body) = http.get(
        "/api/v1/namespaces/team-a/plugins/nothing-here/runtime",
        &gateway.admin_token(),
    );
    assert_eq!(status, 404, "{body}");

    // A Plugin a Service names cannot be deleted.
    let output = gateway.cli(&["delete", "plugin", "items-hours", "-n", "team-a"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Service orders"),
        "{output:?}"
    );

    // Alice's group exempt now, applied through the admin API (the CLI checks the
    // component and uploads it): the open session reads at its next statement after the
    // new version is loaded.
    let file = gateway.write_file("items-hours.yaml", &plugin("engineering", "[log]"));
    gateway
        .cli_remote_ok(&["apply", "-f", file.to_str().unwrap()])
        .await;
    let row = wait_for_async("the open session to read items again", WAIT, || async {
        reads().await.ok()
    })
    .await;
    assert_eq!(row.get::<_, i64>(0), 10);
    // What the gateway made of it, as it records in the store (just after the swap).
    let listed = wait_for("get plugins to show the loaded version", WAIT, || {
        let listed = gateway.cli_ok(&["get", "plugins", "-n", "team-a"]);
        listed.contains("loaded: generation 2").then_some(listed)
    })
    .await;
    assert!(
        listed.contains("items-hours") && listed.contains("type=policy"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_applying_a_policy_plugin_under_load_loses_no_statement() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());
    let file = gateway.write_file("items-hours.yaml", &plugin("engineering", "[log]"));
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let labels = r#"{namespace="team-a",plugin="items-hours",type="policy"}"#;
    let loaded = |generation: f64| {
        let gateway = &gateway;
        async move {
            wait_for_async("the gateway to load the plugin", WAIT, || async {
                let metrics = postern_testkit::Http::new(gateway.api_port().await)
                    .get("/metrics", &gateway.admin_token())
                    .1;
                metrics
                    .contains(&format!("postern_plugin_generation{labels} {generation}"))
                    .then_some(())
            })
            .await
        }
    };
    loaded(1.0).await;

    // pgbench reads items through the plugin (alice is exempt) while the plugin is
    // re-applied three times, each a new version the gateway swaps in.
    let script = gateway.write_file(
        "bench.sql",
        "\\set id random(1, 10)\nSELECT name FROM items WHERE id = :id;\n",
    );
    let bench = std::process::Command::new(postern_localpg::tool("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &gateway.port().to_string()])
        .args(["-U", "alice.team-a", "-n", "-c", "4", "-j", "2", "-T", "6"])
        .args(["-M", "simple", "-f"])
        .arg(&script)
        .arg("orders")
        .env("PGPASSWORD", &key)
        .env("PGSSLMODE", "disable")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for generation in 2..=4 {
        // Another exempt group each time: a changed spec, the same verdicts.
        let exempt = format!("engineering, group-{generation}");
        let file = gateway.write_file("items-hours.yaml", &plugin(&exempt, "[log]"));
        gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
        loaded(f64::from(generation)).await;
    }
    let output = tokio::task::spawn_blocking(move || bench.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    // The last version answered statements (it runs once per session and statement
    // shape, then its verdict is kept until the hour ends).
    assert!(metric(&gateway, "postern_plugin_calls_total", labels).await >= 1.0);
}

/// A stand-in OTLP collector on 127.0.0.1: answers 503 until told to accept, then 200
/// (or, told to reject, 400), and keeps the bodies it accepted.
struct Collector {
    port: u16,
    accepting: Arc<AtomicBool>,
    rejecting: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let collector = Collector {
            port: listener.local_addr().unwrap().port(),
            accepting: Arc::default(),
            rejecting: Arc::default(),
            refused: Arc::default(),
            bodies: Arc::default(),
        };
        let (accepting, rejecting, refused, bodies) = (
            collector.accepting.clone(),
            collector.rejecting.clone(),
            collector.refused.clone(),
            collector.bodies.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let (accepting, rejecting, refused, bodies) = (
                    accepting.clone(),
                    rejecting.clone(),
                    refused.clone(),
                    bodies.clone(),
                );
                tokio::spawn(async move {
                    let mut reader = tokio::io::BufReader::new(socket);
                    let mut length = 0;
                    let mut line = String::new();
                    let mut path = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if path.is_empty() {
                            path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                        }
                        if let Some(value) =
                            line.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = value.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    assert_eq!(path, "/v1/logs");
                    let status = if rejecting.load(Ordering::SeqCst) {
                        "400 Bad Request"
                    } else if accepting.load(Ordering::SeqCst) {
                        bodies
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                        "200 OK"
                    } else {
                        refused.fetch_add(1, Ordering::SeqCst);
                        "503 Service Unavailable"
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = reader.get_mut().write_all(answer.as_bytes()).await;
                });
            }
        });
        collector
    }

    /// `(event type, statement, event id)` of every record accepted, in arrival order.
    fn records(&self) -> Vec<(String, String, String)> {
        let attribute = |record: &Value, key: &str| {
            record["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == key)
                .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| {
                body["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .map(|record| {
                (
                    attribute(&record, "postern.event.type"),
                    attribute(&record, "db.statement"),
                    attribute(&record, "postern.event.id"),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_sink_plugin_delivers_every_event_once_in_order_after_its_collector_recovers() {
    let pg = shared_pg().await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(&config, "[audit]\nplugin_sinks = ['team-a/otlp']\n").unwrap();
    let gateway = Gateway::start(BIN, &["--config", config.to_str().unwrap()]).await;
    let key = gateway.provision(&pg.address());
    let path = postern_testkit::plugin_components().join("otlp_logs.wasm");
    let plugin = format!(
        r#"kind: Plugin
metadata: {{name: otlp, namespace: team-a}}
spec:
  type: logSink
  source: {{path: "{}"}}
  capabilities: [log, http-client, secrets]
  http: {{allow: ["http://127.0.0.1:{port}"], timeoutMs: 2000}}
  limits: {{callTimeoutMs: 5000}}
  config: {{endpoint: "http://127.0.0.1:{port}", service_name: postern-test}}
"#,
        path.display(),
        port = collector.port
    );
    let file = gateway.write_file("otlp.yaml", &plugin);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);

    // The collector refuses: statements run all the same.
    let client = gateway
        .connect("alice.team-a", "orders", &key)
        .await
        .unwrap();
    for i in 0..20 {
        client.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    wait_for(
        "the sink to meet the refusing collector twice",
        WAIT,
        || (collector.refused.load(Ordering::SeqCst) >= 2).then_some(()),
    )
    .await;
    assert!(collector.records().is_empty());

    // It recovers: every statement arrives once, in the order it ran.
    collector.accepting.store(true, Ordering::SeqCst);
    let statements = |records: &[(String, String, String)]| -> Vec<String> {
        records
            .iter()
            .filter(|(kind, _, _)| kind == "QUERY")
            .map(|(_, statement, _)| statement.clone())
            .collect()
    };
    let expected: Vec<String> = (0..20).map(|i| format!("SELECT {i}")).collect();
    wait_for("all statements at the collector", WAIT, || {
        (statements(&collector.records()).len() >= 20).then_some(())
    })
    .await;
    let records = collector.records();
    assert_eq!(statements(&records), expected);
    let mut ids: Vec<&String> = records.iter().map(|(_, _, id)| id).collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "an event arrived twice");

    // A collector that rejects for good (400): the plugin answers `permanent`, the
    // batch is dropped and counted as lost, not retried, and statements still run.
    collector.rejecting.store(true, Ordering::SeqCst);
    client.simple_query("SELECT 'lost'").await.unwrap();
    let labels = r#"{namespace="team-a",plugin="otlp",type="logSink"}"#;
    wait_for_async("the rejected batch to be counted as lost", WAIT, || async {
        (metric(&gateway, "postern_plugin_events_lost_total", labels).await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(collector.records().len(), all, "nothing more was accepted");
}

/// Serves `body` as JSON at any path on 127.0.0.1, each answer `delay` late (a slow
/// identity provider); counts the requests.
async fn serve_json(body: String, delay: Duration) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(socket);
                let mut line = String::new();
                while reader.read_line(&mut line).await.unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                tokio::time::sleep(delay).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = reader.get_mut().write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, fetches)
}

/// An ES256 signing key of the test's identity provider.
struct Issuer {
    key: ring::signature::EcdsaKeyPair,
    kid: String,
}

impl Issuer {
    fn new(kid: &str) -> Issuer {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Issuer {
            key,
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> Value {
        use base64::Engine as _;
        use ring::signature::KeyPair as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let point = self.key.public_key().as_ref();
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
        })
    }

    /// A token for `sub` with `groups`, valid for `ttl` seconds from now (negative:
    /// expired), for `audience`.
    fn token(&self, sub: &str, groups: &[&str], audience: &str, ttl: i64) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": "https://idp.test", "aud": audience, "sub": sub, "groups": groups,
            "iat": now, "exp": now + ttl,
        });
        let signed = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", b64.encode(signature.as_ref()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_auth_provider_logs_identities_in_with_their_tokens_groups() {
    let pg = shared_pg().await;
    let gateway = Gateway::start_tls(BIN, &[]).await;
    gateway.provision(&pg.address());
    let issuer = Issuer::new("key-1");
    let jwks = serde_json::json!({ "keys": [issuer.jwk()] }).to_string();
    // The JWKS takes longer than the plugin's time per call: waiting on HTTP is not the
    // plugin's own time, so the fetch must not count against it.
    let (port, fetches) = serve_json(jwks, Duration::from_millis(300)).await;
    let path = postern_testkit::plugin_components().join("jwt_auth.wasm");
    let resources = |allowed_port: u16| {
        format!(
            r#"kind: Plugin
metadata: {{name: idp, namespace: team-a}}
spec:
  type: authProvider
  source: {{path: "{}"}}
  capabilities: [log, cache, http-client]
  limits: {{callTimeoutMs: 100}}
  http: {{allow: ["http://127.0.0.1:{allowed_port}"]}}
  config:
    jwks_url: "http://127.0.0.1:{port}/jwks"
    issuer: "https://idp.test"
    audience: postern
    namespace: team-a
---
kind: Identity
metadata: {{name: carol, namespace: team-a}}
spec: {{type: human}}
---
kind: Identity
metadata: {{name: erin, namespace: team-a}}
spec: {{type: workload}}
---
kind: Service
metadata: {{name: sso, namespace: team-a}}
spec:
  target: main-pg
  database: app
  upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}
  auth: {{providers: [idp]}}
  authorization:
    rules:
      - {{name: analysts, effect: ALLOW, condition: "'analysts' in ctx.identity.groups"}}
"#,
            path.display()
        )
    };
    let file = gateway.write_file("sso.yaml", &resources(port));
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let login = |token: String| {
        let gateway = &gateway;
        async move {
            gateway
                .connect_with_token("carol.team-a", "sso", &token)
                .await
        }
    };

    // The token's groups make carol an analyst: the service's rule lets her in.
    let token = issuer.token("carol", &["analysts"], "postern", 300);
    let client = wait_for_async("the gateway to load the provider", WAIT, || async {
        login(token.clone()).await.ok()
    })
    .await;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "app_rw");

    // Proven, but not an analyst: the rule refuses the session.
    let denied = login(issuer.token("carol", &["sales"], "postern", 300))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"), "{denied}");

    // Refused logins: 28P01, nothing more said.
    let stranger = Issuer::new("key-2");
    let before = fetches.load(Ordering::SeqCst);
    for (what, token) in [
        (
            "expired",
            issuer.token("carol", &["analysts"], "postern", -120),
        ),
        (
            "wrong audience",
            issuer.token("carol", &["analysts"], "other", 300),
        ),
        (
            "another identity",
            issuer.token("dave", &["analysts"], "postern", 300),
        ),
        (
            "unknown key",
            stranger.token("carol", &["analysts"], "postern", 300),
        ),
    ] {
        let refused = login(token).await.unwrap_err();
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some("28P01"),
            "{what}: {refused}"
        );
        assert!(!message(&refused).contains("audience"), "{what}: {refused}");
    }
    // The unknown key made the provider fetch the JWKS once more.
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);

    // A token of the gateway's own (erin's, offered as carol's password) is refused
    // without being shown to the plugin.
    let created = gateway.cli_ok(&["identity", "client", "create", "erin", "-n", "team-a"]);
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        field("client_id"),
        field("client_secret")
    );
    let http = postern_testkit::Http::new(gateway.api_port().await);
    let (status, body) = http.call(
        "POST",
        "/api/v1/token",
        None,
        Some(("application/x-www-form-urlencoded", &form)),
    );
    assert_eq!(status, 200, "{body}");
    let erins: Value = serde_json::from_str(&body).unwrap();
    let labels = r#"{namespace="team-a",plugin="idp",type="authProvider"}"#;
    let calls = metric(&gateway, "postern_plugin_calls_total", labels).await;
    let refused = login(erins["access_token"].as_str().unwrap().to_owned())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"));
    assert_eq!(
        metric(&gateway, "postern_plugin_calls_total", labels).await,
        calls,
        "the gateway's own token reached the plugin"
    );

    // The JWKS host is no longer allowed: the new version cannot fetch it, so even a
    // good token is refused.
    let file = gateway.write_file("sso.yaml", &resources(1));
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let refused = wait_for_async("the new version to refuse", WAIT, || async {
        login(issuer.token("carol", &["analysts"], "postern", 300))
            .await
            .err()
    })
    .await;
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_provider_can_accept_a_verified_client_certificate() {
    let pg = shared_pg().await;
    let ca = postern_testkit::TestCa::new();
    let ca_file = ca.cert.display().to_string();
    let gateway = Gateway::start_tls(BIN, &["--tls-client-ca-file", ca_file.as_str()]).await;
    gateway.provision(&pg.address());
    let path = postern_testkit::plugin_components().join("misbehave_auth.wasm");
    // The test provider takes any certificate the gateway verified as carol's.
    let resources = format!(
        r#"kind: Plugin
metadata: {{name: certs, namespace: team-a}}
spec:
  type: authProvider
  source: {{path: "{}"}}
  config: "carol.team-a"
---
kind: Identity
metadata: {{name: carol, namespace: team-a}}
spec: {{type: human}}
---
kind: Service
metadata: {{name: by-cert, namespace: team-a}}
spec:
  target: main-pg
  database: app
  upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}
  auth: {{providers: [certs]}}
"#,
        path.display()
    );
    // Through the admin API: the CLI uploads the component this gateway has not seen.
    let file = gateway.write_file("by-cert.yaml", &resources);
    gateway
        .cli_remote_ok(&["apply", "-f", file.to_str().unwrap()])
        .await;
    let (cert, key) = ca.issue_client("carols-laptop");
    // No password anywhere: psql must not be asked for one.
    let login = |user: &str| {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={user} dbname=by-cert.team-a",
            gateway.port()
        );
        postern_testkit::psql_with_certificate(&conninfo, &cert, &key)
    };
    let out = wait_for(
        "the provider to load and take the certificate",
        WAIT,
        || {
            let (ok, out, _) = login("carol.team-a");
            ok.then_some(out)
        },
    )
    .await;
    assert_eq!(out, "app_rw\n");
    // The certificate proves carol, not whoever the client claims to be.
    let (ok, _, err) = login("alice.team-a");
    assert!(!ok, "alice got in with carol's certificate");
    assert!(err.contains("authentication failed"), "{err}");

    // A provider that traps or runs out of time refuses the login (28P01, nothing of
    // the plugin's internals said), and the gateway goes on serving.
    let labels = r#"{namespace="team-a",plugin="certs",type="authProvider"}"#;
    for (password, counter) in [
        ("trap", "postern_plugin_traps_total"),
        ("spin", "postern_plugin_timeouts_total"),
    ] {
        let before = metric(&gateway, counter, labels).await;
        let refused = gateway
            .connect_with_token("carol.team-a", "by-cert", password)
            .await
            .unwrap_err();
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some("28P01"),
            "{password}: {refused}"
        );
        let said = message(&refused);
        assert!(
            !said.contains("trap") && !said.contains("panic"),
            "{password}: {said}"
        );
        assert_eq!(
            metric(&gateway, counter, labels).await,
            before + 1.0,
            "{password}"
        );
    }
    let (ok, out, err) = login("carol.team-a");
    assert!(ok, "{err}");
    assert_eq!(out, "app_rw\n");

    // Failures in a row rest the provider; the overview says so, linking to the plugin.
    for _ in 0..5 {
        let _ = gateway
            .connect_with_token("carol.team-a", "by-cert", "trap")
            .await;
    }
    assert_eq!(
        metric(&gateway, "postern_plugin_healthy", labels).await,
        0.0
    );
    let http = postern_testkit::Http::new(gateway.api_port().await);
    let (status, body) = http.get("/api/v1/overview", &gateway.admin_token());
    assert_eq!(status, 200, "{body}");
    let overview: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        overview["attention"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "Plugin"
                && a["namespace"] == "team-a"
                && a["name"] == "certs"
                && a["message"].as_str().unwrap().contains("resting")),
        "{body}"
    );
}
