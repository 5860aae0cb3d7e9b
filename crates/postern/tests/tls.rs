//! TLS on the client leg, with psql (libpq/OpenSSL) as the client: verify-full against
//! the gateway's certificate, SCRAM-SHA-256-PLUS channel binding, `require_tls`, and
//! certificate reload on SIGHUP.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use postern_testkit::{psql, shared_pg, wait_for, Gateway, TestCert};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const USER: &str = "alice.team-a";
const DB: &str = "orders.team-a";

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
