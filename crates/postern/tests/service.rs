//! `postern serve` as a systemd service runs it: the notify protocol driven the way systemd
//! drives it (NOTIFY_SOCKET, WATCHDOG_USEC, CREDENTIALS_DIRECTORY, an unprivileged user), the
//! unit file checked by systemd-analyze, exit status 78 for what a restart cannot fix, and
//! the state backed up while serving and restored into a new state directory.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use postern_testkit::{logged_port, shared_pg, wait_for, Gateway, DB, USER};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../packaging/postern.service"
);

/// `nobody`'s uid and gid when the tests run as root (the gateway then runs as nobody, as a
/// service runs as its own user); `None` otherwise.
fn unprivileged_user() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|line| line.starts_with("nobody:"))
        .expect("a nobody user");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn give_to(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// The notifications one process sent, in order, as their lines.
struct NotifySocket {
    received: mpsc::Receiver<Vec<String>>,
    seen: Vec<Vec<String>>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (send, received) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let lines = text.lines().map(str::to_owned).collect();
                if send.send(lines).is_err() {
                    break;
                }
            }
        });
        NotifySocket {
            received,
            seen: Vec::new(),
        }
    }

    /// Waits for a notification holding `line`; returns it whole.
    fn wait_for(&mut self, line: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let message = self.received.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {line} within 30 s; notifications so far: {:?}",
                    self.seen
                )
            });
            self.seen.push(message.clone());
            if message.iter().any(|l| l == line) {
                return message;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_the_notify_protocol_as_systemd_expects() {
    let user = unprivileged_user();
    let dir = tempfile::Builder::new()
        .prefix("postern-notify-")
        .tempdir()
        .unwrap();
    give_to(dir.path(), user);
    let state = dir.path().join("state");
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    // As LoadCredential= leaves it: a file the service may only read.
    let key_file = credentials.join("master-key");
    std::fs::write(&key_file, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o400)).unwrap();
    give_to(&credentials, user);
    give_to(&key_file, user);
    let mut notify = NotifySocket::bind(&dir.path().join("notify"));
    let log = dir.path().join("serve.log");
    let config = dir.path().join("postern.toml");
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    give_to(&config, user);

    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("POSTERN_STATE_DIR", &state)
        .env("NOTIFY_SOCKET", dir.path().join("notify"))
        .env("WATCHDOG_USEC", "600000")
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    let mut child = command.spawn().unwrap();

    // READY=1 comes once the listeners are up, with a status line.
    let ready = notify.wait_for("READY=1");
    let status = ready.iter().find(|l| l.starts_with("STATUS=")).unwrap();
    assert!(status.contains("0 sessions"), "{status}");
    let port = logged_port(&log, "postern listening")
        .expect("the listener's address is logged before READY=1");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the proxy accepts after READY=1");
    assert!(
        !state.join("master.key").exists(),
        "the master key comes from $CREDENTIALS_DIRECTORY; none is generated"
    );

    // A reload at once after READY=1 (its handler is in place by then): RELOADING=1 with
    // the monotonic time systemd 253+ needs, then READY=1; the new log level is in force.
    std::fs::write(&config, "log_level = \"info,postern_proxy=debug\"\n").unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let reloading = notify.wait_for("RELOADING=1");
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    notify.wait_for("READY=1");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("log level changed") && logged.contains("postern_proxy=debug"),
        "{logged}"
    );

    // The watchdog is pinged (at a third of WATCHDOG_USEC) while the gateway is healthy.
    notify.wait_for("WATCHDOG=1");

    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    notify.wait_for("STOPPING=1");
    let status = wait_for("serve to exit", Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    })
    .await;
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Exit status 78 (EX_CONFIG) with one line on stderr, which the unit does not restart on.
fn assert_configuration_error(output: std::process::Output, says: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(says), "{stderr}");
}

fn postern(state: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("POSTERN_STATE_DIR", state);
    command
}

#[test]
fn a_configuration_error_or_a_newer_state_database_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_client_connections = \"many\"\n").unwrap();
    assert_configuration_error(
        postern(&state, &["--config", bad.to_str().unwrap(), "check-config"])
            .output()
            .unwrap(),
        "max_client_connections",
    );
    std::fs::write(&bad, "log_level = \"info,=[\"\n").unwrap();
    assert_configuration_error(
        postern(&state, &["--config", bad.to_str().unwrap(), "serve"])
            .output()
            .unwrap(),
        "log_level",
    );

    // A state database a newer postern migrated.
    let output = postern(&state, &["get", "namespaces"]).output().unwrap();
    assert!(output.status.success());
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    db.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (10000, 0)",
        [],
    )
    .unwrap();
    drop(db);
    assert_configuration_error(
        postern(&state, &["serve", "--listen", "127.0.0.1:0"])
            .output()
            .unwrap(),
        "newer than this build knows",
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_its_exposure_is_at_most_2() {
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(UNIT)
        .unwrap()
        .replace("/usr/bin/postern", BIN);
    let unit_path: PathBuf = dir.path().join("postern.service");
    std::fs::write(&unit_path, unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze (scripts/ensure-tools.sh installs systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit_path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "{report}");
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for postern.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    assert!(score <= 2.0, "exposure {score}: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_into_a_new_state_dir_that_serves() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());
    let session = gateway.connect(USER, DB, &key).await.unwrap();
    let backup = gateway.state_dir().join("backup.db");
    let output = gateway.cli(&["state", "backup", backup.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A second backup to the same file is refused, and the first is left alone.
    let again = gateway.cli(&["state", "backup", backup.to_str().unwrap()]);
    assert!(!again.status.success());
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        session
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1,
        "the gateway serves on while it is backed up"
    );

    let restored = tempfile::Builder::new()
        .prefix("postern-restored-")
        .tempdir()
        .unwrap();
    let restore = |dir: &Path| {
        postern(dir, &["state", "restore", backup.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // Without the master key the restore is refused and takes nothing in.
    let refused = restore(restored.path());
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("master key"));
    assert!(!restored.path().join("state.db").exists());
    std::fs::copy(
        gateway.state_dir().join("master.key"),
        restored.path().join("master.key"),
    )
    .unwrap();
    let output = restore(restored.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Into a directory that has a database, never; nor beside a leftover journal, which
    // SQLite would apply to the restored file.
    assert!(!restore(restored.path()).status.success());
    let stray = tempfile::tempdir().unwrap();
    std::fs::write(stray.path().join("state.db-wal"), b"left behind").unwrap();
    let beside_wal = restore(stray.path());
    assert!(!beside_wal.status.success());
    assert!(String::from_utf8_lossy(&beside_wal.stderr).contains("state.db-wal"));
    assert!(!stray.path().join("state.db").exists());

    drop(session);
    drop(gateway);
    let served = Gateway::start_in(BIN, restored, &[]).await;
    let session = served
        .connect(USER, DB, &key)
        .await
        .expect("the key made before the backup logs in through the restored gateway");
    assert_eq!(
        session
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_limits_and_audit_sinks_and_names_what_waits_for_a_restart() {
    let pg = shared_pg().await;
    let dir = tempfile::Builder::new()
        .prefix("postern-reload-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("postern.toml");
    let (before_file, after_file) = (
        dir.path().join("before.jsonl"),
        dir.path().join("after.jsonl"),
    );
    std::fs::write(
        &config,
        format!("max_client_connections = 100\n[audit]\nfile = {before_file:?}\n"),
    )
    .unwrap();
    let config_flag = config.to_str().unwrap().to_owned();
    let gateway = Gateway::start_in(BIN, dir, &["--config", &config_flag]).await;
    let key = gateway.provision(&pg.address());
    let first = gateway.connect(USER, DB, &key).await.unwrap();
    first
        .simple_query("SELECT 'before the reload'")
        .await
        .unwrap();
    let contains = |file: &Path, text: &str| {
        std::fs::read_to_string(file).is_ok_and(|written| written.contains(text))
    };
    wait_for(
        "the first file to get the statement",
        Duration::from_secs(30),
        || contains(&before_file, "before the reload").then_some(()),
    )
    .await;

    std::fs::write(
        &config,
        format!(
            "max_client_connections = 1\nlog_level = \"info,postern_proxy=debug\"\nreconcile_interval_secs = 7\n\
             [audit]\nfile = {after_file:?}\nqueue_capacity = 5000\n"
        ),
    )
    .unwrap();
    gateway.signal(rustix::process::Signal::HUP);
    let log = gateway.log_path();
    wait_for("the reload to be logged", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log).ok()?;
        (log.contains("limits changed")
            && log.contains("take effect at the next restart")
            && log.contains("access-log sinks replaced"))
        .then_some(())
    })
    .await;
    let logged = gateway.logs();
    let limits = logged
        .lines()
        .find(|l| l.contains("limits changed"))
        .unwrap();
    assert!(limits.contains("max_client_connections"), "{limits}");
    let waiting = logged
        .lines()
        .find(|l| l.contains("take effect at the next restart"))
        .unwrap();
    assert!(
        waiting.contains("reconcile_interval_secs") && waiting.contains("audit.queue_capacity"),
        "{waiting}"
    );
    assert!(
        !waiting.contains("max_client_connections") && !waiting.contains("audit.file"),
        "{waiting}"
    );
    // The test kit runs the gateway with RUST_LOG, which wins over log_level (the notify
    // test changes the level itself).
    assert!(
        logged.contains("RUST_LOG is set and chooses what the log shows"),
        "{logged}"
    );

    // The new limit holds for the next login: one connection is open already.
    let Err(refused) = gateway.connect(USER, DB, &key).await else {
        panic!("a second connection got in past max_client_connections = 1");
    };
    assert_eq!(
        postern_testkit::sqlstate(&refused).as_deref(),
        Some("53300"),
        "{refused}"
    );
    assert_eq!(
        first
            .query_one("SELECT 3", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        3,
        "the open session goes on"
    );
    // The access log now goes to the new file only.
    first
        .simple_query("SELECT 'after the reload'")
        .await
        .unwrap();
    wait_for(
        "the new file to get the statement",
        Duration::from_secs(30),
        || contains(&after_file, "after the reload").then_some(()),
    )
    .await;
    assert!(!contains(&before_file, "after the reload"));
}
