//! `bench/soak.sh`: the gateway as shipped, with TLS, under 190 client sessions for a
//! while (four pgbench runs at once: simple, extended and prepared protocol, plain and
//! TLS), its RSS sampled every 10 s; then what idle TLS clients cost it: clients that
//! finished the TLS handshake and startup and wait in authentication (as many as asked,
//! 10,000 by default: they hold no upstream connection), and clients logged in and idle
//! (each holds an upstream backend, so as many as PostgreSQL allows).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{loaded_postgres, pgbench_path, start_postern, Profile, Result};

pub struct SoakOptions {
    pub seconds: u32,
    pub waiting_in_auth: usize,
    pub logged_in: usize,
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Lets this process and the gateway it starts hold tens of thousands of sockets.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

/// One pgbench load of the soak, and what it says when done.
struct Load {
    label: &'static str,
    child: Child,
}

fn start_load(
    label: &'static str,
    port: u16,
    key: &str,
    args: &[&str],
    tls: bool,
    seconds: u32,
) -> Result<Load> {
    let child = Command::new(pgbench_path())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-U",
            "bench.bench",
            "-n",
            "-T",
            &seconds.to_string(),
            "-j",
            "2",
        ])
        .args(args)
        .arg("pgbench.bench")
        .env("PGPASSWORD", key)
        .env("PGSSLMODE", if tls { "require" } else { "disable" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("pgbench: {e}"))?;
    Ok(Load { label, child })
}

/// The TLS client configuration trusting only the gateway's certificate.
fn client_tls(cert: &Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_file(cert).map_err(|e| e.to_string())?;
    roots.add(der).map_err(|e| e.to_string())?;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A client that asked for TLS, finished the handshake, sent its startup packet and got
/// the request for its password: it waits there, holding only its socket and session.
async fn waiting_in_auth(
    port: u16,
    tls: tokio_rustls::TlsConnector,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map_err(|_| "no TCP connection".to_owned())?
    .map_err(|e| e.to_string())?;
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut answer))
        .await
        .map_err(|_| "no answer to SSLRequest".to_owned())?
        .map_err(|e| e.to_string())?;
    if answer[0] != b'S' {
        return Err("the gateway refused TLS".into());
    }
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut stream = tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp))
        .await
        .map_err(|_| "no TLS handshake".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (key, value) in [("user", "bench.bench"), ("database", "pgbench.bench")] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = u32::try_from(body.len() + 4)
        .map_err(|e| e.to_string())?
        .to_be_bytes()
        .to_vec();
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await.map_err(|e| e.to_string())?;
    // A TLS stream may keep written records until flushed (when the socket would
    // block): without this the packet can wait there while both sides wait for the other.
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut header = [0u8; 5];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| e.to_string())?;
    if header[0] != b'R' {
        return Err(format!(
            "expected an authentication request, got {:?}",
            header[0] as char
        ));
    }
    Ok(stream)
}

pub fn run(postern: &Path, options: &SoakOptions) -> Result<()> {
    raise_open_files_limit();
    let (runtime, pg, dir) = loaded_postgres("postern-soak-")?;
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .map_err(|e| e.to_string())?;
    let (cert, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, generated.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key_file, generated.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    let waiting = options.waiting_in_auth.to_string();
    let limit = (options.waiting_in_auth + options.logged_in + 1000).to_string();
    let extra = [
        "--tls-cert-file",
        cert.to_str().ok_or("cert path")?,
        "--tls-key-file",
        key_file.to_str().ok_or("key path")?,
        "--auth-timeout-secs",
        "3600",
        "--max-client-connections",
        &limit,
    ];
    let (daemon, port, key) =
        start_postern(postern, dir.path(), &pg, Profile::Shipped, None, &extra)?;
    let pid = daemon.0.id();
    let rss = || rss_mib(pid).unwrap_or(f64::NAN);

    println!(
        "soak: 190 sessions for {} s through the gateway as shipped (TLS for 90 of them)",
        options.seconds
    );
    let started_rss = rss();
    let loads = [
        start_load(
            "plain, simple, -S, 50 clients",
            port,
            &key,
            &["-c", "50", "-S", "-M", "simple"],
            false,
            options.seconds,
        )?,
        start_load(
            "plain, extended, TPC-B, 50 clients",
            port,
            &key,
            &["-c", "50", "-M", "extended"],
            false,
            options.seconds,
        )?,
        start_load(
            "TLS, prepared, -S, 45 clients",
            port,
            &key,
            &["-c", "45", "-S", "-M", "prepared"],
            true,
            options.seconds,
        )?,
        start_load(
            "TLS, simple, TPC-B, 45 clients",
            port,
            &key,
            &["-c", "45", "-M", "simple"],
            true,
            options.seconds,
        )?,
    ];
    let started = Instant::now();
    let mut samples = vec![(0u64, started_rss)];
    while started.elapsed() < Duration::from_secs(u64::from(options.seconds)) {
        std::thread::sleep(Duration::from_secs(10));
        let at = started.elapsed().as_secs();
        samples.push((at, rss()));
        println!("  t={at:>4} s  gateway RSS {:.1} MiB", rss());
    }
    let mut errors = 0u64;
    for load in loads {
        let output = load.child.wait_with_output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let number = |prefix: &str| -> Option<u64> {
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(prefix))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let done = number("number of transactions actually processed: ").unwrap_or(0);
        let failed = number("number of failed transactions: ").unwrap_or(0);
        let status_error = u64::from(!output.status.success());
        errors += failed + status_error;
        println!(
            "  {:<36} {done:>10} transactions, {failed} failed{}",
            load.label,
            if output.status.success() {
                String::new()
            } else {
                format!(
                    ", pgbench failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                )
            }
        );
    }
    let end_rss = rss();
    let peak = samples.iter().map(|s| s.1).fold(f64::NAN, f64::max);
    println!("soak: errors {errors}; gateway RSS at start {started_rss:.1} MiB, peak {peak:.1} MiB, at end {end_rss:.1} MiB");

    // Idle clients, once the load is gone.
    std::thread::sleep(Duration::from_secs(2));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&cert)?));
    let before = rss();
    let held = runtime.block_on(async {
        futures_util::stream::iter(0..options.waiting_in_auth)
            .map(|_| async {
                tokio::time::timeout(
                    Duration::from_secs(120),
                    waiting_in_auth(port, connector.clone()),
                )
                .await
                .unwrap_or_else(|_| Err("no answer within 120 s".into()))
            })
            .buffer_unordered(100)
            .collect::<Vec<_>>()
            .await
    });
    let opened = held.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = held.iter().find(|r| r.is_err()) {
        println!("  a client waiting in authentication failed: {e}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let with_waiting = rss();
    println!(
        "idle: {opened} of {waiting} TLS clients waiting in authentication: gateway RSS {before:.1} -> {with_waiting:.1} MiB ({:.1} KiB each)",
        (with_waiting - before) * 1024.0 / opened.max(1) as f64
    );
    drop(held);
    std::thread::sleep(Duration::from_secs(2));

    let make_tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(&cert)?);
    let before = rss();
    let sessions = runtime.block_on(async {
        let mut sessions = Vec::new();
        for _ in 0..options.logged_in {
            let conninfo = format!(
                "host=127.0.0.1 port={port} user=bench.bench dbname=pgbench.bench password={key} sslmode=require"
            );
            match tokio_postgres::connect(&conninfo, make_tls.clone()).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    if client.simple_query("SELECT 1").await.is_ok() {
                        sessions.push(client);
                    }
                }
                Err(e) => {
                    println!("  a logged-in session failed: {e}");
                    break;
                }
            }
        }
        sessions
    });
    std::thread::sleep(Duration::from_secs(2));
    let with_sessions = rss();
    println!(
        "idle: {} TLS sessions logged in: gateway RSS {before:.1} -> {with_sessions:.1} MiB ({:.1} KiB each, upstream connection included)",
        sessions.len(),
        (with_sessions - before) * 1024.0 / sessions.len().max(1) as f64
    );
    drop(sessions);
    drop(daemon);
    if let Ok(log) = std::fs::read_to_string(dir.path().join("postern.log")) {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        println!("gateway warnings and errors: {}", lines.len());
        for line in lines.iter().take(10) {
            println!("  {line}");
        }
    }
    if errors > 0 {
        return Err(format!("{errors} errors under load"));
    }
    Ok(())
}
