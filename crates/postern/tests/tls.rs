//! TLS on the client leg, with psql (libpq/OpenSSL) as the client: verify-full against
//! the gateway's certificate, SCRAM-SHA-256-PLUS channel binding, `require_tls`, and
//! certificate reload on SIGHUP.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use postern_testkit::{provisioned, psql, shared_pg, wait_for, Gateway, TestCert, DB, USER};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

async fn tls_gateway(cert: &TestCert, extra: &[&str]) -> (Gateway, String) {
    let mut flags = cert.serve_flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gateway = Gateway::start(BIN, &flags).await;
    let key = gateway.provision(&shared_pg().await.address());
    (gateway, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_channel_binding_through_the_gateway() {
    let cert = TestCert::new();
    let (gateway, key) = tls_gateway(&cert, &[]).await;
    let conninfo = format!(
        "{} sslmode=verify-full sslrootcert={} channel_binding=require",
        gateway.conninfo(USER, DB, &key),
        cert.cert.display()
    );
    let (ok, out, err) = psql(
        &conninfo,
        "SELECT current_user || ' ' || count(*) FROM items",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "app_rw 10\n");

    // A client trusting another certificate refuses the gateway.
    let other = TestCert::new();
    let conninfo = format!(
        "{} sslmode=verify-full sslrootcert={}",
        gateway.conninfo(USER, DB, &key),
        other.cert.display()
    );
    let (ok, _, err) = psql(&conninfo, "SELECT 1");
    assert!(!ok && err.contains("certificate verify failed"), "{err}");

    // Cleartext still works when TLS is not required, but cannot bind the channel.
    let plain = format!("{} sslmode=disable", gateway.conninfo(USER, DB, &key));
    assert!(psql(&plain, "SELECT 1").0);
    let (ok, _, err) = psql(&format!("{plain} channel_binding=require"), "SELECT 1");
    assert!(!ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_cleartext_with_28000() {
    let cert = TestCert::new();
    let (gateway, key) = tls_gateway(&cert, &["--require-tls"]).await;
    let base = gateway.conninfo(USER, DB, &key);
    let (ok, _, err) = psql(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!ok && err.contains("TLS is required"), "{err}");
    let (ok, out, err) = psql(&format!("{base} sslmode=require"), "SELECT 'over tls'");
    assert!(ok, "{err}");
    assert_eq!(out, "over tls\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let cert = TestCert::new();
    let (gateway, key) = tls_gateway(&cert, &[]).await;
    let verified_by = |root: &std::path::Path| {
        let conninfo = format!(
            "{} sslmode=verify-full sslrootcert={}",
            gateway.conninfo(USER, DB, &key),
            root.display()
        );
        psql(&conninfo, "SELECT 1").0
    };
    // Save the first certificate as a root, then replace the files with a new one.
    let first_root = gateway.write_file(
        "first-root.crt",
        &std::fs::read_to_string(&cert.cert).unwrap(),
    );
    assert!(verified_by(&first_root));
    let next = TestCert::new();
    std::fs::copy(&next.cert, &cert.cert).unwrap();
    std::fs::copy(&next.key, &cert.key).unwrap();
    assert!(verified_by(&first_root), "no reload before SIGHUP");
    gateway.signal(rustix::process::Signal::HUP);
    let logs = gateway.log_path();
    wait_for("the reload", Duration::from_secs(10), || {
        std::fs::read_to_string(&logs)
            .ok()?
            .contains("TLS certificate reloaded")
            .then_some(())
    })
    .await;
    assert!(verified_by(&next.cert));
    assert!(!verified_by(&first_root));

    // A broken key file: the reload fails, says so, and the current certificate stays.
    std::fs::write(&cert.key, "not a key").unwrap();
    gateway.signal(rustix::process::Signal::HUP);
    wait_for("the failed reload", Duration::from_secs(10), || {
        std::fs::read_to_string(&logs)
            .ok()?
            .contains("TLS reload failed")
            .then_some(())
    })
    .await;
    assert!(verified_by(&next.cert));
    assert!(!gateway.logs().contains("not a key"));
}

/// A PostgreSQL that accepts TLS with `cert`, prepared like the shared one.
async fn tls_postgres(cert: &TestCert) -> postern_testkit::LocalPg {
    let pg = postern_testkit::LocalPg::start_with(postern_localpg::Options {
        tls: Some(cert.pem()),
        ..Default::default()
    })
    .await
    .expect("start PostgreSQL with TLS");
    postern_testkit::prepare_app_database(&pg).await;
    pg
}

/// Points service `secure` of the gateway at `address` with the given TLS settings.
fn apply_secure_service(
    gateway: &Gateway,
    address: &str,
    ssl_mode: &str,
    ca_file: Option<&std::path::Path>,
) {
    let ca = ca_file.map_or(String::new(), |p| format!(", caFile: '{}'", p.display()));
    let resources = format!(
        "kind: Target\nmetadata: {{name: secure-pg, namespace: team-a}}\nspec: {{address: '{address}', sslMode: {ssl_mode}{ca}}}\n---\n\
         kind: Service\nmetadata: {{name: secure, namespace: team-a}}\n\
         spec: {{target: secure-pg, database: app, upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}}}\n"
    );
    let file = gateway.write_file("secure.yaml", &resources);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
}

/// Whether the upstream session behind a gateway session is encrypted.
async fn upstream_ssl(gateway: &Gateway, key: &str) -> Result<bool, String> {
    let client = gateway
        .connect(USER, "secure.team-a", key)
        .await
        .map_err(|e| {
            e.as_db_error().map_or(e.to_string(), |d| {
                format!("{} {}", d.code().code(), d.message())
            })
        })?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_follows_the_targets_ssl_mode() {
    let server_cert = TestCert::new();
    let secure_pg = tls_postgres(&server_cert).await;
    let (gateway, key) = provisioned(BIN).await;

    // verify-full with the right CA: encrypted (and SCRAM bound to the channel, which
    // PostgreSQL offers over TLS: a wrong binding would fail the login).
    apply_secure_service(
        &gateway,
        &secure_pg.address(),
        "verify-full",
        Some(&server_cert.cert),
    );
    assert_eq!(upstream_ssl(&gateway, &key).await, Ok(true));

    // verify-full with another CA: refused, 08001, naming the service.
    let stranger = TestCert::new();
    apply_secure_service(
        &gateway,
        &secure_pg.address(),
        "verify-full",
        Some(&stranger.cert),
    );
    let err = upstream_ssl(&gateway, &key).await.unwrap_err();
    assert!(
        err.starts_with("08001") && err.contains("secure.team-a"),
        "{err}"
    );

    // prefer: TLS when the server offers it, clear when it does not.
    apply_secure_service(&gateway, &secure_pg.address(), "prefer", None);
    assert_eq!(upstream_ssl(&gateway, &key).await, Ok(true));
    apply_secure_service(&gateway, &shared_pg().await.address(), "prefer", None);
    assert_eq!(upstream_ssl(&gateway, &key).await, Ok(false));

    // require against a server without TLS: refused.
    apply_secure_service(&gateway, &shared_pg().await.address(), "require", None);
    let err = upstream_ssl(&gateway, &key).await.unwrap_err();
    assert!(err.starts_with("08001"), "{err}");
    // require against the TLS server: encrypted without verification.
    apply_secure_service(&gateway, &secure_pg.address(), "require", None);
    assert_eq!(upstream_ssl(&gateway, &key).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_ignores_the_name_and_verify_full_does_not() {
    // A certificate for another name than the address the gateway dials.
    let server_cert = TestCert::for_names(&["db.internal.example"]);
    let secure_pg = tls_postgres(&server_cert).await;
    let (gateway, key) = provisioned(BIN).await;
    apply_secure_service(
        &gateway,
        &secure_pg.address(),
        "verify-ca",
        Some(&server_cert.cert),
    );
    assert_eq!(upstream_ssl(&gateway, &key).await, Ok(true));
    apply_secure_service(
        &gateway,
        &secure_pg.address(),
        "verify-full",
        Some(&server_cert.cert),
    );
    let err = upstream_ssl(&gateway, &key).await.unwrap_err();
    assert!(err.starts_with("08001"), "{err}");
    // verify-* without a caFile is refused at apply time, naming the field.
    let file = gateway.write_file(
        "no-ca.yaml",
        "kind: Target\nmetadata: {name: t, namespace: team-a}\nspec: {address: 'h:1', sslMode: verify-full}\n",
    );
    let output = gateway.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("spec.caFile"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_its_identity_in_without_a_key() {
    let server_cert = TestCert::new();
    let ca = postern_testkit::TestCa::new();
    let ca_file = ca.cert.display().to_string();
    let (gateway, key) =
        tls_gateway(&server_cert, &["--tls-client-ca-file", ca_file.as_str()]).await;
    let identity = gateway.write_file(
        "alice-cert.yaml",
        "kind: Identity\nmetadata: {name: alice, namespace: team-a}\n\
         spec: {type: human, groups: [engineering], clientCertificate: {commonName: alice-laptop}}\n",
    );
    gateway.cli_ok(&["apply", "-f", identity.to_str().unwrap()]);

    // No password anywhere: psql must not be asked for one (-w).
    let login = |cert: &std::path::Path, key_file: &std::path::Path| {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={USER} dbname={DB}",
            gateway.port()
        );
        postern_testkit::psql_with_certificate(&conninfo, cert, key_file)
    };
    let (cert, cert_key) = ca.issue_client("alice-laptop");
    let (ok, out, err) = login(&cert, &cert_key);
    assert!(ok, "{err}");
    assert_eq!(out, "app_rw\n");

    // The CA vouches for mallory, but the identity names another common name: back to
    // SCRAM, and without a key that fails.
    let (cert, cert_key) = ca.issue_client("mallory");
    let (ok, _, err) = login(&cert, &cert_key);
    assert!(!ok && err.contains("password"), "{err}");

    // Right common name, wrong CA: the TLS handshake itself refuses it.
    let rogue = postern_testkit::TestCa::new();
    let (cert, cert_key) = rogue.issue_client("alice-laptop");
    let (ok, _, err) = login(&cert, &cert_key);
    assert!(!ok, "{err}");

    // Without any client certificate, the API key still works.
    let conninfo = format!("{} sslmode=require", gateway.conninfo(USER, DB, &key));
    assert!(psql(&conninfo, "SELECT 1").0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_taken_as_passwords_over_tls_only_by_default() {
    let cert = TestCert::new();
    let (gateway, key) = tls_gateway(&cert, &[]).await;
    let file = gateway.write_file(
        "worker.yaml",
        "kind: Identity\nmetadata: {name: worker, namespace: team-a}\nspec: {type: workload}\n",
    );
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let token = gateway.cli_ok(&["token", "issue", "worker", "-n", "team-a"]);
    let token = token.trim();
    let base = gateway.conninfo("worker.team-a", DB, token);
    let (ok, out, err) = psql(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            cert.cert.display()
        ),
        "SELECT current_user",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "app_rw\n");
    // Over plain TCP the gateway asks for SCRAM, which a token cannot answer: even from
    // loopback unless token_password says tls-or-loopback.
    let (ok, _, err) = psql(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    // API-key identities keep SCRAM with channel binding over TLS.
    let (ok, _, err) = psql(
        &format!(
            "{} sslmode=verify-full sslrootcert={} channel_binding=require",
            gateway.conninfo(USER, DB, &key),
            cert.cert.display()
        ),
        "SELECT 1",
    );
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_serves_tls_with_the_gateway_certificate() {
    let cert = TestCert::new();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[api]\ntls = true\n").unwrap();
    let (gateway, _) = tls_gateway(&cert, &["--config", config.path().to_str().unwrap()]).await;
    let port = gateway.api_port().await;
    let http = postern_testkit::Http::new_tls(port, &cert.cert);
    let (status, body) = http.call("GET", "/healthz", None, None);
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let admin = gateway.admin_token();
    assert_eq!(http.get("/api/v1/namespaces/team-a", &admin).0, 200);
    // Plain HTTP gets no HTTP answer.
    let answer = postern_testkit::raw_exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The CLI reaches it with --ca-file, and refuses it without.
    let token_file = gateway.write_file("admin.token", &admin);
    let server = format!("https://127.0.0.1:{port}");
    let base = [
        "--server",
        server.as_str(),
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    let mut args = base.to_vec();
    args.extend([
        "--ca-file",
        cert.cert.to_str().unwrap(),
        "get",
        "services",
        "-n",
        "team-a",
    ]);
    let output = gateway.cli(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("orders"));
    let mut args = base.to_vec();
    args.extend(["get", "services", "-n", "team-a"]);
    let output = gateway.cli(&args);
    assert!(!output.status.success());

    // SIGHUP reloads the API's certificate too.
    let trusting = |root: &std::path::Path| {
        let mut args = base.to_vec();
        args.extend([
            "--ca-file",
            root.to_str().unwrap(),
            "get",
            "services",
            "-n",
            "team-a",
        ]);
        gateway.cli(&args).status.success()
    };
    let first_root = gateway.write_file(
        "first-root.crt",
        &std::fs::read_to_string(&cert.cert).unwrap(),
    );
    let next = TestCert::new();
    std::fs::copy(&next.cert, &cert.cert).unwrap();
    std::fs::copy(&next.key, &cert.key).unwrap();
    gateway.signal(rustix::process::Signal::HUP);
    let logs = gateway.log_path();
    wait_for("the API's reload", Duration::from_secs(10), || {
        std::fs::read_to_string(&logs)
            .ok()?
            .contains("admin API TLS certificate reloaded")
            .then_some(())
    })
    .await;
    assert!(trusting(&next.cert));
    assert!(!trusting(&first_root));
}
