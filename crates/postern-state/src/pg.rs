//! The state on PostgreSQL: connections (one writer, up to 16 readers, remade when lost),
//! the runtime their tasks run on, write transactions serialised across every gateway by
//! one transaction-level advisory lock (as SQLite's single writer serialises them within
//! one host), and the conversions between PostgreSQL's types and the store's.

use std::collections::HashMap;
use std::error::Error;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use futures_executor::block_on;
use futures_util::{pin_mut, StreamExt};
use postern_model::SecretValue;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::db::{postgres_placeholders, Cell, Value};
use crate::store::lock;
use crate::StateError;

/// The advisory lock every write transaction holds (`pg_advisory_xact_lock`): "postern"
/// and a 1, so it cannot meet a lock a person takes by hand with a small number.
pub(crate) const WRITE_LOCK: i64 = 0x706f_7374_6572_6e01;
/// The advisory lock the leading gateway holds for as long as its session lives
/// (`pg_try_advisory_lock`): the lease reaper, the reconciler's timer and the rotations run
/// where it is held.
const LEADER_LOCK: i64 = 0x706f_7374_6572_6e02;
/// How often a gateway notes in `gateways` that it is alive.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// A gateway silent for longer is taken for dead: its leases are cleaned up.
const OWNER_TIMEOUT_SECS: i64 = 20;
/// Prepared statements a connection keeps; beyond that it forgets them all and starts
/// again (the store has about a hundred distinct statements).
const STATEMENTS_KEPT: usize = 512;
/// Most reader connections one store keeps open: past it a read waits for one to come
/// back (every connection is a server process of the state database, which a fleet
/// shares).
const READERS: usize = 16;

/// Where the state lives and how to reach it.
#[derive(Clone)]
pub struct PostgresSettings {
    /// A libpq connection string or URL (`host=… dbname=…` or `postgres://…`); its
    /// `sslmode` is honoured.
    pub url: String,
    /// The password, when it is kept apart from the URL (a file, a credential).
    pub password: Option<SecretValue>,
    /// How TLS is verified when `sslmode` asks for it.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresSettings").finish_non_exhaustive()
    }
}

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

/// The reader connections: those idle, and how many are open in all.
#[derive(Default)]
struct Readers {
    idle: Vec<Conn>,
    open: usize,
}

/// A reader connection in use; back to the idle ones when dropped (also when the read
/// panicked).
struct Reader<'a> {
    backend: &'a Backend,
    conn: Option<Conn>,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let mut readers = lock(&self.backend.readers);
        match self.conn.take() {
            Some(conn) if !conn.client.is_closed() => readers.idle.push(conn),
            _ => readers.open = readers.open.saturating_sub(1),
        }
        self.backend.reader_back.notify_one();
    }
}

/// The connections of one store and the runtime their tasks run on.
pub(crate) struct Backend {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    runtime: tokio::runtime::Handle,
    /// Dropped with the backend: the runtime's thread then ends (and drops the runtime
    /// there, never inside a caller's async context).
    _stop: tokio::sync::oneshot::Sender<()>,
    writer: Mutex<Option<Conn>>,
    readers: Mutex<Readers>,
    reader_back: std::sync::Condvar,
    /// The session holding (or trying for) the leader lock.
    leader: Mutex<Option<Conn>>,
    leading: std::sync::atomic::AtomicBool,
    /// A readable name of the server for logs (host, port, database; never a password).
    label: String,
}

/// A tokio-postgres error in words: the server's message and SQLSTATE when it sent one.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match error.source() {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

impl From<tokio_postgres::Error> for StateError {
    fn from(e: tokio_postgres::Error) -> StateError {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(code) if *code == SqlState::DISK_FULL => StateError::DiskFull,
            // The server is shutting down, starting, or the connection broke.
            Some(code) if code.code().starts_with("08") || code.code().starts_with("57P") => {
                StateError::Unavailable(describe(&e))
            }
            Some(_) => StateError::Postgres(describe(&e)),
            // No SQLSTATE: the connection closed or its socket failed, or (a bug of
            // ours) a value did not convert.
            None if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) => {
                StateError::Unavailable(describe(&e))
            }
            None => StateError::Postgres(describe(&e)),
        }
    }
}

impl Backend {
    pub(crate) fn connect(settings: &PostgresSettings) -> Result<Backend, StateError> {
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(|e| {
            StateError::Postgres(format!("the state database's URL is invalid: {e}"))
        })?;
        if let Some(password) = &settings.password {
            config.password(password.expose());
        }
        // Without client_min_messages, `CREATE TABLE IF NOT EXISTS` and the like send
        // NOTICEs, which tokio-postgres logs (and a CLI command would print). The
        // keepalives, both ways, bound how long a silent network cut goes unnoticed: this
        // side's calls fail (logins get 57P03, the leader steps down) and the server ends
        // the session, so its leader lock passes on.
        let ours = "-c client_min_messages=warning -c tcp_keepalives_idle=5 \
                    -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 \
                    -c tcp_user_timeout=15000";
        let options = match config.get_options() {
            Some(given) => format!("{given} {ours}"),
            None => ours.to_owned(),
        };
        config.options(&options);
        config
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(5))
            .keepalives_interval(std::time::Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(std::time::Duration::from_secs(15));
        if config.get_application_name().is_none() {
            config.application_name("postern-state");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        let label = format!(
            "{}/{}",
            config
                .get_hosts()
                .iter()
                .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
                .map(|(host, port)| match host {
                    tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                    tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
                })
                .collect::<Vec<_>>()
                .join(","),
            config.get_dbname().unwrap_or("")
        );
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => None,
            _ => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                settings.tls.as_deref().cloned().ok_or_else(|| {
                    StateError::Unavailable(
                        "the state database's sslmode asks for TLS but no TLS settings were given"
                            .into(),
                    )
                })?,
            )),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("postern-state-pg".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| {
                StateError::Unavailable(format!("cannot start the state's thread: {e}"))
            })?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| StateError::Unavailable("the state's thread ended at start".into()))?
            .map_err(|e| {
                StateError::Unavailable(format!("cannot start the state's runtime: {e}"))
            })?;
        let backend = Backend {
            config,
            tls,
            runtime,
            _stop: stop,
            writer: Mutex::new(None),
            readers: Mutex::new(Readers::default()),
            reader_back: std::sync::Condvar::new(),
            leader: Mutex::new(None),
            leading: std::sync::atomic::AtomicBool::new(false),
            label,
        };
        // Fail now, not at the first request, when the server cannot be reached.
        let first = backend.open()?;
        *lock(&backend.writer) = Some(first);
        Ok(backend)
    }

    /// Brings the schema up to date (see `migrations`), holding the write lock, so
    /// gateways starting together migrate in turn.
    pub(crate) fn migrate(&self) -> Result<usize, StateError> {
        self.write(|conn| crate::migrations::migrate_postgres(&crate::db::Db::Postgres(conn)))
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    fn open(&self) -> Result<Conn, StateError> {
        let connecting = self.runtime.spawn(connect_client(
            self.config.clone(),
            self.tls.clone(),
            self.label.clone(),
        ));
        let client = block_on(connecting).map_err(|e| {
            StateError::Unavailable(format!("connecting to the state database: {e}"))
        })??;
        Ok(Conn {
            client,
            statements: Mutex::new(HashMap::new()),
        })
    }

    /// Notes `owner` in `gateways` now and every [`HEARTBEAT`] from the store's runtime,
    /// for as long as the store is open: other gateways tell by it whether the leases
    /// `owner` is creating or holding for its sessions are still looked after.
    pub(crate) fn register(&self, owner: &str) -> Result<(), StateError> {
        let beat = heartbeat_statement();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let pid = i64::from(std::process::id());
        self.write(|conn| {
            let db = crate::db::Db::Postgres(conn);
            // Gateways and CLI runs silent for a day are gone for good.
            db.execute(
                "DELETE FROM gateways
                 WHERE heartbeat_at < CAST(extract(epoch FROM now()) AS BIGINT) - 86400",
                crate::db::args![],
            )?;
            db.execute(&beat, crate::db::args![owner, host, pid])
                .map(drop)
        })?;
        let beat = postgres_placeholders(&beat);
        let (config, tls, label) = (self.config.clone(), self.tls.clone(), self.label.clone());
        let owner = owner.to_owned();
        self.runtime.spawn(async move {
            let mut client: Option<Client> = None;
            let mut failing = false;
            let mut ticker = tokio::time::interval(HEARTBEAT);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if client.as_ref().is_none_or(Client::is_closed) {
                    client = connect_client(config.clone(), tls.clone(), label.clone())
                        .await
                        .ok();
                }
                // A missed beat is made up by the next; a long outage makes this gateway
                // look dead to the others (its session leases are then ended), so it is
                // said, once per outage.
                let beat_result = match &client {
                    Some(client) => client
                        .execute(&beat, &[&owner, &host, &pid])
                        .await
                        .map(drop)
                        .map_err(|e| describe(&e)),
                    None => Err("no connection".to_owned()),
                };
                match (beat_result, failing) {
                    (Ok(()), true) => {
                        failing = false;
                        tracing::info!("state heartbeat works again");
                    }
                    (Err(error), false) => {
                        failing = true;
                        tracing::warn!(%error, "cannot note this gateway alive in the state; after 20 s the others take it for dead");
                    }
                    _ => {}
                }
            }
        });
        Ok(())
    }

    /// Whether `owner` beat within [`OWNER_TIMEOUT_SECS`] (by the server's clock, so
    /// gateways' clocks need not agree).
    pub(crate) fn owner_alive(&self, owner: &str) -> Result<bool, StateError> {
        self.read(|conn| {
            Ok(crate::db::Db::Postgres(conn)
                .query_opt(
                    "SELECT heartbeat_at >= CAST(extract(epoch FROM now()) AS BIGINT) - ?2
                     FROM gateways WHERE id = ?1",
                    crate::db::args![owner, OWNER_TIMEOUT_SECS],
                    |row| row.get::<bool>(0),
                )?
                .unwrap_or(false))
        })
    }

    /// Takes the leader lock when it is free, or checks the session holding it is still
    /// there; false when another gateway leads or the server cannot be reached.
    pub(crate) fn try_lead(&self) -> bool {
        use std::sync::atomic::Ordering;
        let mut slot = lock(&self.leader);
        let leading = match slot.take() {
            // The lock lives as long as its session: if the session answers, it holds.
            Some(conn) if self.leading.load(Ordering::Relaxed) => {
                let alive = conn.execute_batch("SELECT 1").is_ok();
                if alive {
                    *slot = Some(conn);
                }
                alive
            }
            pooled => {
                let conn = match pooled {
                    Some(conn) if !conn.client.is_closed() => Some(conn),
                    _ => self.open().ok(),
                };
                let got = conn.as_ref().is_some_and(|conn| {
                    crate::db::Db::Postgres(conn)
                        .query_value::<bool>(
                            "SELECT pg_try_advisory_lock(?1)",
                            crate::db::args![LEADER_LOCK],
                        )
                        .unwrap_or(false)
                });
                *slot = conn;
                got
            }
        };
        self.leading.store(leading, Ordering::Relaxed);
        leading
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` on a reader connection (statements commit one by one, as SQLite's do).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Conn) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let reader = self.reader()?;
        match &reader.conn {
            Some(conn) => f(conn),
            None => Err(StateError::Unavailable("no reader connection".into())),
        }
    }

    /// An idle reader, a new one while fewer than [`READERS`] are open, or the next one
    /// given back.
    fn reader(&self) -> Result<Reader<'_>, StateError> {
        let mut readers = lock(&self.readers);
        loop {
            if let Some(conn) = readers.idle.pop() {
                if conn.client.is_closed() {
                    readers.open = readers.open.saturating_sub(1);
                    continue;
                }
                return Ok(Reader {
                    backend: self,
                    conn: Some(conn),
                });
            }
            if readers.open < READERS {
                readers.open += 1;
                drop(readers);
                // A failed open gives its place back (through the guard's drop).
                let mut reader = Reader {
                    backend: self,
                    conn: None,
                };
                reader.conn = Some(self.open()?);
                return Ok(reader);
            }
            readers = self
                .reader_back
                .wait(readers)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Runs `f` in a transaction that holds the store's write lock; commits when it
    /// returns `Ok`, rolls back otherwise.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Conn) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut slot = lock(&self.writer);
        let conn = match slot.take() {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => self.open()?,
        };
        // Taken out of the slot while in use: if `f` panics, the connection is dropped
        // (and the server rolls its transaction back) instead of being reused mid-way.
        conn.execute_batch(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        ))?;
        match f(&conn) {
            Ok(value) => {
                conn.execute_batch("COMMIT")?;
                *slot = Some(conn);
                Ok(value)
            }
            Err(e) => {
                if conn.execute_batch("ROLLBACK").is_ok() {
                    *slot = Some(conn);
                }
                Err(e)
            }
        }
    }
}

impl Conn {
    fn statement(&self, sql: &str) -> Result<Statement, StateError> {
        if let Some(statement) = lock(&self.statements).get(sql) {
            return Ok(statement.clone());
        }
        let statement = block_on(self.client.prepare(&postgres_placeholders(sql)))?;
        let mut statements = lock(&self.statements);
        if statements.len() >= STATEMENTS_KEPT {
            statements.clear();
        }
        statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(crate) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StateError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let changed = block_on(self.client.execute(&statement, &params))?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    pub(crate) fn execute_batch(&self, sql: &str) -> Result<(), StateError> {
        Ok(block_on(self.client.batch_execute(sql))?)
    }

    pub(crate) fn query_each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut each: impl FnMut(&tokio_postgres::Row) -> Result<ControlFlow<()>, StateError>,
    ) -> Result<(), StateError> {
        let statement = self.statement(sql)?;
        block_on(async {
            let rows = self.client.query_raw(&statement, params.iter()).await?;
            pin_mut!(rows);
            while let Some(row) = rows.next().await {
                if each(&row?)?.is_break() {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// A new connection whose task runs on the caller's runtime (the store's own).
async fn connect_client(
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    label: String,
) -> Result<Client, StateError> {
    let connected = match tls {
        None => connect_with(&config, tokio_postgres::NoTls).await,
        Some(tls) => connect_with(&config, tls).await,
    };
    connected.map_err(|e| {
        StateError::Unavailable(format!(
            "cannot connect to the state database {label}: {}",
            describe(&e)
        ))
    })
}

async fn connect_with<T>(
    config: &tokio_postgres::Config,
    tls: T,
) -> Result<Client, tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Registers a gateway (`?1` id, `?2` host, `?3` pid) or notes it is still alive.
fn heartbeat_statement() -> String {
    let now = "CAST(extract(epoch FROM now()) AS BIGINT)";
    format!(
        "INSERT INTO gateways (id, host, pid, started_at, heartbeat_at)
         VALUES (?1, ?2, ?3, {now}, {now})
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = {now}"
    )
}

/// A column of a PostgreSQL row as the store reads it.
pub(crate) fn cell(row: &tokio_postgres::Row, index: usize) -> Result<Cell<'_>, StateError> {
    let column = row
        .columns()
        .get(index)
        .ok_or_else(|| StateError::Corrupt(format!("no column {index}")))?;
    let cell = match *column.type_() {
        Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(Cell::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)?
            .map(|v| Cell::Int(i64::from(v))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)?
            .map(|v| Cell::Int(i64::from(v))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)?
            .map(|v| Cell::Int(i64::from(v))),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(index)?.map(Cell::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)?
            .map(|v| Cell::Real(f64::from(v))),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
            row.try_get::<_, Option<&str>>(index)?.map(Cell::Text)
        }
        Type::BYTEA => row.try_get::<_, Option<&[u8]>>(index)?.map(Cell::Blob),
        ref other => {
            return Err(StateError::Corrupt(format!(
                "column {} has type {other}, which the state does not read",
                column.name()
            )))
        }
    };
    Ok(cell.unwrap_or(Cell::Null))
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                #[allow(clippy::cast_precision_loss)]
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                ref other => Err(format!("an integer cannot be bound as {other}").into()),
            },
            Value::Text(v) => match *ty {
                Type::BYTEA => v.as_bytes().to_sql(ty, out),
                Type::JSONB => {
                    // jsonb's binary form: a version byte, then the text.
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(v.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.extend_from_slice(v.as_bytes());
                    Ok(IsNull::No)
                }
                Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
                    v.to_sql(ty, out)
                }
                ref other => Err(format!("text cannot be bound as {other}").into()),
            },
            Value::Blob(v) => match *ty {
                Type::BYTEA => v.to_sql(ty, out),
                ref other => Err(format!("bytes cannot be bound as {other}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, which names the mismatch.
        true
    }

    tokio_postgres::types::to_sql_checked!();
}
