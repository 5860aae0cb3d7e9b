//! A throwaway PostgreSQL server: finds the server binaries, runs initdb into a temporary
//! directory with scram-sha-256, starts it on a free loopback port and removes it all when
//! stopped. Shared by `postern demo` and the end-to-end test kit.
//!
//! A small shell watchdog, started as soon as the temporary directory exists, holds the
//! other end of a pipe from this process: when the process ends for any reason (even
//! SIGKILL) the pipe closes and the watchdog stops the server (found through its
//! `postmaster.pid`) and deletes the directory, so nothing is left behind.
//!
//! PostgreSQL refuses to run as root; as root the server runs as the `postgres` OS user.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error("PostgreSQL server binaries not found (looked for initdb and postgres on PATH and in /usr/lib/postgresql/*/bin); install them, e.g. `apt-get install -y postgresql`")]
    NotFound,
    #[error("running as root needs a `postgres` OS user to run PostgreSQL as (the postgresql package creates it)")]
    NoPostgresUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("PostgreSQL: {0}")]
    Sql(#[from] tokio_postgres::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalPgError {
    let what = what.into();
    move |source| LocalPgError::Io { what, source }
}

/// Finds a directory holding both `initdb` and `postgres`: PATH first, then the newest
/// Debian cluster version.
pub fn find_bin_dir() -> Result<PathBuf, LocalPgError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d)) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .ok_or(LocalPgError::NotFound)
}

/// A PostgreSQL client tool (`pgbench`, `psql`, …): beside the server binaries when it is
/// there, else in the newest Debian cluster directory, else whatever PATH finds.
pub fn tool(name: &str) -> PathBuf {
    let beside_server = find_bin_dir().ok().map(|dir| dir.join(name));
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin").join(name)))
        })
        .filter(|(_, path)| path.is_file())
        .max()
        .map(|(_, path)| path);
    beside_server
        .filter(|p| p.is_file())
        .or(debian)
        .unwrap_or_else(|| PathBuf::from(name))
}

/// uid and gid of the `postgres` OS user, read from /etc/passwd.
pub fn postgres_os_user() -> Result<(u32, u32), LocalPgError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io("reading /etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .ok_or(LocalPgError::NoPostgresUser)
}

fn free_port() -> Result<u16, LocalPgError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

/// A random alphanumeric password of 24 characters; safe inside SQL quotes as it is.
pub fn random_password() -> String {
    let mut rng = rand::rng();
    (0..24)
        .map(|_| {
            let n = rng.next_u32() % 62;
            char::from(match n {
                0..=9 => b'0' + n as u8,
                10..=35 => b'a' + (n - 10) as u8,
                _ => b'A' + (n - 36) as u8,
            })
        })
        .collect()
}

/// A running throwaway server.
pub struct LocalPg {
    dir: PathBuf,
    port: u16,
    superuser_password: String,
    server: Option<Child>,
    watchdog: Option<(Child, ChildStdin)>,
}

impl std::fmt::Debug for LocalPg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPg")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

pub const SUPERUSER: &str = "postgres";

/// How to start the server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// PEM certificate and key: the server then accepts TLS (`ssl = on`).
    pub tls: Option<(String, String)>,
    /// `max_connections` (300 when unset).
    pub max_connections: Option<u32>,
}

/// Stops the server named in `$1/data/postmaster.pid`, if any, then removes `$1`; runs
/// when its standard input closes or gets a line.
const WATCHDOG_SCRIPT: &str = r#"read _
pidfile="$1/data/postmaster.pid"
if [ -f "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile")
    kill -INT "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
fi
rm -rf "$1""#;

fn start_watchdog(dir: &Path) -> Result<(Child, ChildStdin), LocalPgError> {
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("postern-localpg-watchdog")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a Ctrl-C aimed at us does not stop it first.
        .process_group(0)
        .spawn()
        .map_err(io("starting the clean-up watchdog"))?;
    let stdin = watchdog
        .stdin
        .take()
        .ok_or_else(|| LocalPgError::Failed("watchdog has no stdin".into()))?;
    Ok((watchdog, stdin))
}

impl LocalPg {
    /// initdb + start. Takes a few seconds; call once and share.
    pub async fn start() -> Result<LocalPg, LocalPgError> {
        LocalPg::start_with(Options::default()).await
    }

    /// [`LocalPg::start`] with options.
    pub async fn start_with(options: Options) -> Result<LocalPg, LocalPgError> {
        let bin = find_bin_dir()?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some(postgres_os_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("postern-pg-")
            .tempdir()
            .map_err(io("creating a temporary directory"))?
            .keep();
        let watchdog = match start_watchdog(&dir) {
            Ok(watchdog) => watchdog,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on dropping `pg` (on any error too) stops and removes everything.
        let mut pg = LocalPg {
            dir,
            port: 0,
            superuser_password: random_password(),
            server: None,
            watchdog: Some(watchdog),
        };
        pg.init(&bin, run_as)?;
        let mut settings = Vec::new();
        if let Some((cert, key)) = &options.tls {
            pg.install_tls(cert, key, run_as)?;
            settings.extend([
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
            ]);
        }
        let max_connections = options
            .max_connections
            .map(|n| format!("max_connections={n}"));
        settings.extend(max_connections.as_deref());
        pg.launch(&bin, run_as, &settings).await?;
        Ok(pg)
    }

    fn init(&self, bin: &Path, run_as: Option<(u32, u32)>) -> Result<(), LocalPgError> {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, &self.superuser_password)
            .map_err(io("writing the password file"))?;
        if let Some((uid, gid)) = run_as {
            for path in [&self.dir, &pwfile] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(io(format!("chown of {}", path.display())))?;
            }
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(self.dir.join("data"))
            .args([
                "--auth=scram-sha-256",
                "--username",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let output = initdb.output().map_err(io("running initdb"));
        let _ = std::fs::remove_file(&pwfile);
        let output = output?;
        if !output.status.success() {
            return Err(LocalPgError::Failed(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Writes the TLS certificate and key into the data directory, readable by the server
    /// only (PostgreSQL refuses a key others can read).
    fn install_tls(
        &self,
        cert: &str,
        key: &str,
        run_as: Option<(u32, u32)>,
    ) -> Result<(), LocalPgError> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.dir.join("data");
        for (name, content) in [("server.crt", cert), ("server.key", key)] {
            let path = data.join(name);
            std::fs::write(&path, content).map_err(io(format!("writing {name}")))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io(format!("chmod of {name}")))?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(io(format!("chown of {name}")))?;
            }
        }
        Ok(())
    }

    /// Starts the server on a free port with extra `-c` settings; a port taken between our
    /// probe and the server's bind is retried with another.
    async fn launch(
        &mut self,
        bin: &Path,
        run_as: Option<(u32, u32)>,
        settings: &[&str],
    ) -> Result<(), LocalPgError> {
        let mut last_error = None;
        let fixed_port = (self.port != 0).then_some(self.port);
        for _ in 0..3 {
            self.port = match fixed_port {
                Some(port) => port,
                None => free_port()?,
            };
            let log = std::fs::File::create(self.dir.join("postgres.log"))
                .map_err(io("creating the server log"))?;
            let mut postgres = Command::new(bin.join("postgres"));
            postgres
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-k")
                .arg(&self.dir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "password_encryption=scram-sha-256",
                    // A throwaway server: durability buys nothing here.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .args(settings.iter().flat_map(|s| ["-c", s]))
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io("server log"))?)
                .stderr(log)
                // Ctrl-C in a terminal reaches only us; we stop the server in order.
                .process_group(0);
            if let Some((uid, gid)) = run_as {
                postgres.uid(uid).gid(gid);
            }
            self.server = Some(postgres.spawn().map_err(io("starting postgres"))?);
            match self.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last_error = Some(e);
                    // A clean stop removes postmaster.pid, so the next attempt starts fresh.
                    self.interrupt_and_reap();
                }
            }
        }
        Err(last_error.unwrap_or_else(|| LocalPgError::Failed("postgres did not start".into())))
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), LocalPgError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(Ok(Some(status))) = self.server.as_mut().map(Child::try_wait) {
                return Err(LocalPgError::Failed(format!(
                    "postgres exited ({status}) during start-up: {}",
                    self.log_tail()
                )));
            }
            match self.connect("postgres").await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(LocalPgError::Failed(format!(
                        "postgres not ready after {limit:?}: {e}; log: {}",
                        self.log_tail()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Everything the server has logged so far (its stderr).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// Connects as the superuser over TCP; the connection runs on a spawned task.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, LocalPgError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .password(&self.superuser_password)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Stops the server (fast shutdown) and keeps its data, for [`LocalPg::resume`]:
    /// how a test makes the upstream unreachable for a while.
    pub fn pause(&mut self) {
        self.interrupt_and_reap();
    }

    /// Starts a paused server again on the same port. Plain settings only (no TLS).
    pub async fn resume(&mut self) -> Result<(), LocalPgError> {
        let bin = find_bin_dir()?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some(postgres_os_user()?)
        } else {
            None
        };
        self.launch(&bin, run_as, &[]).await
    }

    /// Stops the server (fast shutdown) and removes its directory; waits for both.
    pub fn stop(mut self) {
        self.stop_and_remove();
    }

    /// SIGINT (fast shutdown) to the server, then wait for it to exit.
    fn interrupt_and_reap(&mut self) {
        if let Some(mut server) = self.server.take() {
            if let Ok(Some(_)) = server.try_wait() {
                return;
            }
            let pid = i32::try_from(server.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            match pid {
                Some(pid) => {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
                }
                None => {
                    let _ = server.kill();
                }
            }
            let _ = server.wait();
        }
    }

    fn stop_and_remove(&mut self) {
        match self.watchdog.take() {
            Some((mut watchdog, mut stdin)) => {
                // A line (or the pipe closing) wakes the watchdog, which stops the server.
                let _ = stdin.write_all(b"stop\n");
                drop(stdin);
                // Reap the server first: until its parent (this process) waits for it, it
                // stays a zombie that the watchdog would wait on forever.
                if let Some(mut server) = self.server.take() {
                    let _ = server.wait();
                }
                let _ = watchdog.wait();
            }
            None => {
                self.interrupt_and_reap();
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

impl Drop for LocalPg {
    fn drop(&mut self) {
        self.stop_and_remove();
    }
}
