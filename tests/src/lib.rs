//! Test harness: a real PostgreSQL 15 per test binary and the real `postern` binary in
//! front of it (or the same application started in-process), with helpers to provision
//! resources and to talk raw protocol.

// A test harness: panicking with a clear message is how it fails a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod in_process;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use in_process::InProcessGateway;
pub use postern_localpg::{tool as pg_tool, LocalPg};
use tokio::sync::OnceCell;

/// `user=` of the identity [`Gateway::provision`] creates.
pub const USER: &str = "alice.team-a";
/// `dbname=` of the service [`Gateway::provision`] creates.
pub const DB: &str = "orders.team-a";

/// A gateway (the `bin` given) in front of the shared PostgreSQL, provisioned, with
/// alice's API key.
pub async fn provisioned(bin: &str) -> (Gateway, String) {
    provisioned_on(bin, Leg::Plain).await
}

/// [`provisioned`], serving clients over the given leg.
pub async fn provisioned_on(bin: &str, leg: Leg) -> (Gateway, String) {
    let pg = shared_pg().await;
    let gateway = match leg {
        Leg::Plain => Gateway::start(bin, &[]).await,
        Leg::Tls => Gateway::start_tls(bin, &[]).await,
    };
    let key = gateway.provision(&pg.address());
    (gateway, key)
}

/// What the provisioning applies: namespace `team-a`, a target for `upstream`, service
/// `orders` (as `app_rw` on database `app`, its password the secret `app-rw-password`) and
/// identity `alice`.
pub fn provision_resources(upstream: &str) -> String {
    format!(
        "kind: Namespace\nmetadata: {{name: team-a}}\n---\n\
         kind: Target\nmetadata: {{name: main-pg, namespace: team-a}}\nspec: {{address: '{upstream}', sslMode: disable}}\n---\n\
         kind: Service\nmetadata: {{name: orders, namespace: team-a}}\n\
         spec: {{target: main-pg, database: app, upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}}}\n---\n\
         kind: Identity\nmetadata: {{name: alice, namespace: team-a}}\nspec: {{type: human, groups: [engineering]}}\n"
    )
}

/// The port of the `address=` on the first line of the log at `log` that contains
/// `marker` (`postern listening`, `admin API listening`), once it is there.
pub fn logged_port(log: &Path, marker: &str) -> Option<u16> {
    let log = std::fs::read_to_string(log).ok()?;
    let line = log.lines().find(|l| l.contains(marker))?;
    let address = line.split("address=").nth(1)?.split_whitespace().next()?;
    address.rsplit(':').next()?.parse().ok()
}

/// Password of `app_rw` on the shared server: the secret the gateway injects.
pub const APP_PASSWORD: &str = "app-rw-Upstream-Secret-4242";

static SHARED_PG: OnceCell<LocalPg> = OnceCell::const_new();

/// The test binary's PostgreSQL, started on first use with database `app`, role `app_rw`
/// (owner) and a table `items` holding ten rows.
pub async fn shared_pg() -> &'static LocalPg {
    SHARED_PG
        .get_or_init(|| async {
            let pg = LocalPg::start().await.expect("start PostgreSQL");
            prepare_app_database(&pg).await;
            pg
        })
        .await
}

/// Creates the `app` database, `app_rw` role and `items` table on `pg`.
pub async fn prepare_app_database(pg: &LocalPg) {
    let admin = pg.connect("postgres").await.expect("connect as superuser");
    admin
        .batch_execute(&format!(
            "CREATE ROLE app_rw LOGIN PASSWORD '{APP_PASSWORD}'"
        ))
        .await
        .expect("create role");
    admin
        .batch_execute("CREATE DATABASE app OWNER app_rw")
        .await
        .expect("create database");
    let app = pg.connect("app").await.expect("connect to app");
    app.batch_execute(
        "CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 10) g;
         ALTER TABLE public.items OWNER TO app_rw;",
    )
    .await
    .expect("create table");
}

/// A new state directory for a gateway.
fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("postern-test-")
        .tempdir()
        .expect("state dir")
}

/// Upstream roles whose names are `LIKE pattern`, in order.
pub async fn roles_like(admin: &tokio_postgres::Client, pattern: &str) -> Vec<String> {
    admin
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1",
            &[&pattern],
        )
        .await
        .expect("read pg_roles")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `count` credentials of `role` issued at once (for requester `bulk`), spread over
/// `issuers` in turn; panics if one fails, or if two got the same username.
pub async fn issue_concurrently(
    issuers: &[std::sync::Arc<postern_issuer::Issuer>],
    role: &postern_model::QualifiedName,
    count: usize,
) -> Vec<postern_issuer::Issued> {
    let mut issues = tokio::task::JoinSet::new();
    for n in 0..count {
        let (issuer, role) = (issuers[n % issuers.len()].clone(), role.clone());
        issues.spawn(async move { issuer.issue(&role, None, "bulk", "test").await });
    }
    let issued: Vec<_> = issues
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("issue"))
        .collect();
    let names: std::collections::BTreeSet<&str> =
        issued.iter().map(|i| i.username.as_str()).collect();
    assert_eq!(names.len(), count, "every username distinct");
    issued
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the async `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn wait_for_async<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the async `check` until it holds, or panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `postern serve` process with its own state directory.
pub struct Gateway {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    /// The certificate clients verify when the gateway was started for TLS clients.
    client_tls: Option<TestCert>,
    /// A configuration file the gateway and its CLI commands read (`POSTERN_CONFIG`).
    config: Option<PathBuf>,
}

/// A state database on PostgreSQL that several gateways share, with the master key
/// they all need.
pub struct SharedState {
    /// libpq connection string of the state database (no password).
    pub conninfo: String,
    pub database: String,
    password: String,
    master_key: String,
}

impl SharedState {
    /// A new database `name` on `pg` for gateways to share.
    pub async fn create(pg: &LocalPg, name: &str) -> SharedState {
        let mut key = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        SharedState::create_with_key(pg, name, &key).await
    }

    /// [`SharedState::create`] whose gateways get `master_key` (base64), as after a
    /// single gateway's state was migrated into it.
    pub async fn create_with_key(pg: &LocalPg, name: &str, master_key: &str) -> SharedState {
        let admin = pg.connect("postgres").await.expect("connect as superuser");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the state database");
        SharedState {
            conninfo: format!(
                "host=127.0.0.1 port={} user=postgres dbname={name} sslmode=disable",
                pg.port()
            ),
            database: name.to_owned(),
            password: pg.superuser_password().to_owned(),
            master_key: master_key.to_owned(),
        }
    }

    /// The master key every gateway of the fleet is given (base64).
    pub fn master_key(&self) -> &str {
        &self.master_key
    }

    /// The state database's password (for tests that look for it where it must not be).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A gateway configuration using this state (its password from a file in `dir`).
    fn config(&self, dir: &Path) -> String {
        let password_file = dir.join("state-password");
        std::fs::write(&password_file, format!("{}\n", self.password)).expect("password file");
        format!(
            "master_key = \"{}\"\n[state]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
            self.master_key,
            self.conninfo,
            password_file.display()
        )
    }
}

/// Which client leg a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    Plain,
    /// TLS with verify-full and channel binding required.
    Tls,
}

/// A tokio-postgres session whose connection runs on its own task: asynchronous messages
/// (notices, notifications) arrive on `messages`; `ended` says how the connection ended.
pub struct Session {
    pub client: tokio_postgres::Client,
    pub messages: tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
    pub ended: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

/// A tokio-postgres TLS connector trusting only `cert`.
fn rustls_connector(cert: &TestCert) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert.cert)
        .expect("read test certificate");
    roots.add(der).expect("trust test certificate");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

async fn spawn_session<T>(conninfo: &str, tls: T) -> Result<Session, tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    use futures_util::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(conninfo, tls).await?;
    let (sender, messages) = tokio::sync::mpsc::unbounded_channel();
    let ended = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            // Nobody listening is fine: the connection must still be driven.
            let _ = sender.send(message?);
        }
        Ok(())
    });
    Ok(Session {
        client,
        messages,
        ended,
    })
}

impl Gateway {
    /// Starts `bin serve` on a free loopback port with `extra` flags and waits until it
    /// listens.
    pub async fn start(bin: &str, extra: &[&str]) -> Gateway {
        Gateway::start_in(bin, state_dir(), extra).await
    }

    /// [`Gateway::start`] with `dir` as its state directory (and home of its log).
    pub async fn start_in(bin: &str, dir: tempfile::TempDir, extra: &[&str]) -> Gateway {
        Gateway::start_configured(bin, dir, None, extra).await
    }

    /// Starts `bin serve` on `state` (PostgreSQL, shared with other gateways); its CLI
    /// commands use that state too.
    pub async fn start_on(bin: &str, state: &SharedState, extra: &[&str]) -> Gateway {
        let dir = state_dir();
        let config = dir.path().join("postern.toml");
        std::fs::write(&config, state.config(dir.path())).expect("write configuration");
        Gateway::start_configured(bin, dir, Some(config), extra).await
    }

    async fn start_configured(
        bin: &str,
        dir: tempfile::TempDir,
        config: Option<PathBuf>,
        extra: &[&str],
    ) -> Gateway {
        let mut gateway = Gateway {
            bin: PathBuf::from(bin),
            dir,
            child: None,
            port: 0,
            client_tls: None,
            config,
        };
        gateway.spawn(extra).await;
        gateway
    }

    async fn spawn(&mut self, extra: &[&str]) {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = self
            .command()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn postern serve");
        self.child = Some(child);
        let log_path = self.log_path();
        self.port = wait_for("the gateway to listen", Duration::from_secs(30), || {
            logged_port(&log_path, "postern listening")
        })
        .await;
    }

    /// The admin API's port (it starts just after the proxy).
    pub async fn api_port(&self) -> u16 {
        let log_path = self.log_path();
        wait_for("the admin API to listen", Duration::from_secs(30), || {
            logged_port(&log_path, "admin API listening")
        })
        .await
    }

    /// The bootstrap admin token `serve` wrote on first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin-token"))
            .expect("bootstrap admin token")
            .trim()
            .to_owned()
    }

    /// A `postern` command using this gateway's state directory.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("POSTERN_STATE_DIR", self.dir.path());
        if let Some(config) = &self.config {
            command.env("POSTERN_CONFIG", config);
        }
        command
    }

    /// Runs a CLI command against this gateway's state, with `stdin` as input.
    pub fn cli_with_input(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn postern");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("postern output")
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_input(args, "")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "postern {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a CLI command against this gateway's admin API (`--server`, as the bootstrap
    /// admin) that must succeed; returns its stdout.
    pub async fn cli_remote_ok(&self, args: &[&str]) -> String {
        let server = format!("http://127.0.0.1:{}", self.api_port().await);
        let token_file = self.write_file("bootstrap-admin.token", &self.admin_token());
        let mut full = vec![
            "--server",
            server.as_str(),
            "--token-file",
            token_file.to_str().expect("UTF-8 path"),
        ];
        full.extend_from_slice(args);
        self.cli_ok(&full)
    }

    /// Writes `text` to a file in the state directory and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Applies a service `orders` in namespace `team-a` in front of `upstream` (as
    /// `app_rw` on database `app`), an identity `alice`, and returns a new API key.
    pub fn provision(&self, upstream: &str) -> String {
        let file = self.write_file("provision.yaml", &provision_resources(upstream));
        self.cli_ok(&["apply", "-f", file.to_str().expect("utf-8 path")]);
        let output = self.cli_with_input(
            &["secret", "set", "app-rw-password", "-n", "team-a"],
            &format!("{APP_PASSWORD}\n"),
        );
        assert!(output.status.success(), "secret set failed");
        self.create_key("alice", "team-a")
    }

    pub fn create_key(&self, identity: &str, namespace: &str) -> String {
        self.cli_ok(&["identity", "key", "create", identity, "-n", namespace])
            .trim()
            .to_owned()
    }

    /// Starts a gateway for TLS clients with a fresh certificate; `conninfo` and
    /// `connect` then use TLS with verification and channel binding.
    pub async fn start_tls(bin: &str, extra: &[&str]) -> Gateway {
        let cert = TestCert::new();
        let mut flags = cert.serve_flags();
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut gateway = Gateway::start(bin, &flags).await;
        gateway.client_tls = Some(cert);
        gateway
    }

    fn base_conninfo(&self, user: &str, dbname: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={dbname} password={password}",
            self.port
        )
    }

    /// libpq connection string through the gateway (verify-full and channel binding
    /// required when the gateway serves TLS clients).
    pub fn conninfo(&self, user: &str, dbname: &str, password: &str) -> String {
        let base = self.base_conninfo(user, dbname, password);
        match &self.client_tls {
            Some(cert) => format!(
                "{base} sslmode=verify-full sslrootcert={} channel_binding=require",
                cert.cert.display()
            ),
            None => base,
        }
    }

    /// Connects with tokio-postgres, with `extra` connection parameters, over TLS when
    /// the gateway serves TLS clients (the certificate verified, channel binding required).
    pub async fn connect_session(
        &self,
        user: &str,
        dbname: &str,
        password: &str,
        extra: &str,
    ) -> Result<Session, tokio_postgres::Error> {
        let base = format!("{} {extra}", self.base_conninfo(user, dbname, password));
        match &self.client_tls {
            None => spawn_session(&base, tokio_postgres::NoTls).await,
            Some(cert) => {
                let conninfo = format!("{base} sslmode=require channel_binding=require");
                spawn_session(&conninfo, rustls_connector(cert)).await
            }
        }
    }

    /// Sends a cancel for `token`'s session the way its session connected.
    pub async fn cancel_query(
        &self,
        token: &tokio_postgres::CancelToken,
    ) -> Result<(), tokio_postgres::Error> {
        match &self.client_tls {
            None => token.cancel_query(tokio_postgres::NoTls).await,
            Some(cert) => token.cancel_query(rustls_connector(cert)).await,
        }
    }

    /// Connects with tokio-postgres through the gateway (TLS as for `connect_session`).
    pub async fn connect(
        &self,
        user: &str,
        dbname: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        Ok(self
            .connect_session(user, dbname, password, "")
            .await?
            .client)
    }

    /// Connects with tokio-postgres over TLS (the certificate verified) with `password`
    /// sent in clear inside it, as clients sending a token do (so no channel binding).
    pub async fn connect_with_token(
        &self,
        user: &str,
        dbname: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let cert = self
            .client_tls
            .as_ref()
            .expect("connect_with_token needs Gateway::start_tls");
        let conninfo = format!(
            "{} sslmode=require channel_binding=disable",
            self.base_conninfo(user, dbname, password)
        );
        Ok(spawn_session(&conninfo, rustls_connector(cert))
            .await?
            .client)
    }

    /// Whether this gateway serves TLS clients.
    pub fn leg(&self) -> Leg {
        if self.client_tls.is_some() {
            Leg::Tls
        } else {
            Leg::Plain
        }
    }

    /// SIGKILL to the gateway process (no clean-up of any kind), then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `serve` again on the same state (after [`Gateway::kill`]), on a new port.
    pub async fn restart(&mut self, extra: &[&str]) {
        self.kill();
        self.spawn(extra).await;
    }

    /// Sends SIGTERM to the gateway process.
    pub fn terminate(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// Sends `signal` to the gateway process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(child) = &self.child {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
            rustix::process::kill_process(pid, signal).expect("send signal");
        }
    }

    /// How many sockets the gateway process holds: a leaked session task would keep its
    /// socket open. (Files, such as the state store's pooled readers, do not count.)
    pub fn open_sockets(&self) -> usize {
        let pid = self.child.as_ref().expect("running gateway").id();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("read /proc/<pid>/fd")
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// The exit status once the process has exited, if it has.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A self-signed certificate for `127.0.0.1` and `localhost` in PEM files; it is its own
/// root, so clients verify it with `sslrootcert=<cert>`.
pub struct TestCert {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCert {
    pub fn new() -> TestCert {
        TestCert::for_names(&["127.0.0.1", "localhost"])
    }

    /// A certificate valid only for `names` (IP addresses or DNS names).
    pub fn for_names(names: &[&str]) -> TestCert {
        let dir = tempfile::Builder::new()
            .prefix("postern-cert-")
            .tempdir()
            .expect("cert dir");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names).expect("generate certificate");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, generated.cert.pem()).expect("write cert");
        std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");
        TestCert {
            _dir: dir,
            cert,
            key,
        }
    }

    /// Certificate and key as PEM text.
    pub fn pem(&self) -> (String, String) {
        (
            std::fs::read_to_string(&self.cert).expect("read cert"),
            std::fs::read_to_string(&self.key).expect("read key"),
        )
    }

    /// Flags that make `postern serve` use this certificate.
    pub fn serve_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.cert.display().to_string(),
            "--tls-key-file".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Default for TestCert {
    fn default() -> Self {
        TestCert::new()
    }
}

/// A certificate authority that issues client certificates, for certificate login.
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM), to configure as the gateway's client CA.
    pub cert: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("postern-ca-")
            .tempdir()
            .expect("ca dir");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Postern test CA");
        let key = rcgen::KeyPair::generate().expect("ca key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("ca cert");
        let cert = dir.path().join("ca.crt");
        std::fs::write(&cert, issuer.pem()).expect("write ca");
        TestCa { dir, issuer, cert }
    }

    /// A client certificate with `common_name`; returns (cert, key) paths, the key 0600
    /// as libpq insists.
    pub fn issue_client(&self, common_name: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("client params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().expect("client key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign client cert");
        let cert_path = self.dir.path().join(format!("{common_name}.crt"));
        let key_path = self.dir.path().join(format!("{common_name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write client cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write client key");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod client key");
        (cert_path, key_path)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// The Python of the test venv (psycopg 3 with libpq 18), which `scripts/ensure-tools.sh`
/// creates.
pub fn test_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tests/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/ensure-tools.sh (scripts/test.sh does)",
        python.display()
    );
    python
}

/// Runs psql with `conninfo` and one command; returns (success, stdout, stderr).
pub fn psql(conninfo: &str, command: &str) -> (bool, String, String) {
    let output = Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", command])
        .output()
        .expect("run psql");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `SELECT current_user` through psql with a client certificate and no password
/// (`-w`: psql must not ask for one, and `PGPASSWORD` is unset): ok, stdout, stderr.
pub fn psql_with_certificate(conninfo: &str, cert: &Path, key: &Path) -> (bool, String, String) {
    let conninfo = format!(
        "{conninfo} sslmode=require sslcert={} sslkey={}",
        cert.display(),
        key.display()
    );
    let output = Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-w", "-c", "SELECT current_user"])
        .env_remove("PGPASSWORD")
        .output()
        .expect("run psql");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The SQLSTATE of a failed tokio-postgres call, if the server sent one.
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.as_db_error().map(|e| e.code().code().to_owned())
}

/// Sends `bytes` on a fresh connection and returns everything the gateway answers until
/// it closes the connection (or `limit` passes).
pub async fn raw_exchange(port: u16, bytes: &[u8], limit: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    answer
}

/// The SQLSTATE (`C` field) of the first ErrorResponse in a raw backend byte stream.
pub fn error_code(stream: &[u8]) -> Option<String> {
    let mut rest = stream;
    while rest.len() >= 5 {
        let tag = rest[0];
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let body = rest.get(5..1 + len)?;
        if tag == b'E' {
            for field in body.split(|b| *b == 0) {
                if let Some(code) = field.strip_prefix(b"C") {
                    return Some(String::from_utf8_lossy(code).into_owned());
                }
            }
        }
        rest = &rest[1 + len..];
    }
    None
}

/// A StartupMessage (protocol 3.0) with the given parameters.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A blocking HTTP client for the admin API that keeps every answer, so a test can check
/// at the end that no secret was ever in one.
pub struct Http {
    base: String,
    agent: ureq::Agent,
    seen: std::sync::Mutex<Vec<String>>,
}

impl Http {
    pub fn new(port: u16) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Http {
            base: format!("http://127.0.0.1:{port}"),
            agent,
            seen: Default::default(),
        }
    }

    /// Over https, trusting only the certificate in `ca` (PEM).
    pub fn new_tls(port: u16, ca: &Path) -> Http {
        let pem = std::fs::read(ca).expect("read CA");
        let roots: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item.expect("PEM") {
                ureq::tls::PemItem::Certificate(cert) => Some(cert),
                _ => None,
            })
            .collect();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                    .build(),
            )
            .build()
            .into();
        Http {
            base: format!("https://127.0.0.1:{port}"),
            agent,
            seen: Default::default(),
        }
    }

    /// `method path` with an optional bearer token and body; (status, body).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (method, body) => {
                let mut r = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    other => panic!("method {other}"),
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                let (content_type, text) = body.unwrap_or(("application/json", ""));
                r.header("Content-Type", content_type).send(text)
            }
        };
        let mut response = response.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        self.seen.lock().unwrap().push(text.clone());
        (status, text)
    }

    pub fn get(&self, path: &str, token: &str) -> (u16, String) {
        self.call("GET", path, Some(token), None)
    }

    pub fn send_json(&self, method: &str, path: &str, token: &str, json: &str) -> (u16, String) {
        self.call(method, path, Some(token), Some(("application/json", json)))
    }

    /// Every body answered so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The bytes of the component the `plugins/` crate `name` builds (`-` as `_`).
pub fn plugin_component(name: &str) -> Vec<u8> {
    let path = plugin_components().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example and test plugins of `plugins/`, built for wasm32-wasip2 once per test
/// binary (cargo makes later builds no-ops): the directory holding `<crate>.wasm`. They
/// get their own target directory under `target/`, so this build never waits on the
/// lock of the build that runs the tests.
pub fn plugin_components() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = root.join("target/plugins");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                "wasm32-wasip2",
            ])
            .arg("--manifest-path")
            .arg(root.join("plugins/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status();
        match status {
            Ok(status) if status.success() => target.join("wasm32-wasip2/release"),
            other => panic!(
                "building plugins/ for wasm32-wasip2 failed ({other:?}); \
                 `rustup target add wasm32-wasip2` adds the target"
            ),
        }
    })
}
