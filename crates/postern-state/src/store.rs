//! The SQLite store: opening (permissions, WAL, migrations, master-key check), resources
//! with generations, sealed secrets, API keys, and the proxy's `Directory` lookups.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use postern_model::{
    plan_apply, Change, Kind, LoadedResource, Metadata, QualifiedName, Resource, SecretValue, Spec,
};
use postern_wire::scram::{Verifier, DEFAULT_ITERATIONS};
use rand::Rng;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::db::{args, Db, Row};
use crate::master_key::{FoundKey, KeySettings, MasterKey};
use crate::migrations::migrate;
use crate::pg::{self, PostgresSettings};
use crate::StateError;

pub const STATE_DB_FILE: &str = "state.db";
const KEY_CHECK_PLAINTEXT: &[u8] = b"postern master key check";
const KEY_CHECK_AAD: &[u8] = b"meta:key_check";
const MAX_IDLE_READERS: usize = 8;

/// A resource as stored, with bookkeeping.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub resource: Resource,
    pub generation: i64,
    /// Created or last adopted by `apply` (so `--prune` may delete it).
    pub applied: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A secret's name and dates; never its value.
#[derive(Debug, Clone)]
pub struct SecretInfo {
    pub namespace: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct ApiKeyInfo {
    pub id: String,
    pub identity: QualifiedName,
    pub created_at: i64,
}

/// A key just made: the only moment its value exists outside the client.
#[derive(Debug)]
pub struct CreatedApiKey {
    pub info: ApiKeyInfo,
    pub key: SecretValue,
}

pub struct Store {
    backend: Backend,
    pub(crate) key: MasterKey,
    installation_id: String,
    key_origin: String,
    generated_key: bool,
    mock_auth_secret: [u8; 32],
    /// `<pid>:<random>`: names this process in the leases it creates or holds for its
    /// sessions, so another can tell whether they are still looked after.
    owner: String,
    /// Resources as the login path reads them when the state is shared (`snapshot.rs`).
    pub(crate) snapshots: crate::snapshot::Snapshots,
    /// Evaluates services' rules while routes are resolved (see `route.rs`).
    pub(crate) policy_engine: std::sync::OnceLock<std::sync::Arc<dyn postern_model::PolicyEngine>>,
}

/// Where the state lives.
enum Backend {
    Sqlite {
        db_path: PathBuf,
        writer: Mutex<Connection>,
        readers: Mutex<Vec<Connection>>,
    },
    Postgres(Box<pg::Backend>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location())
            .field("key_origin", &self.key_origin)
            .finish_non_exhaustive()
    }
}

/// A `resources` row as read: kind, metadata, spec, generation, applied, created and
/// updated.
type ResourceRow = (String, String, String, i64, bool, i64, i64);

/// What `open` settles about the database: the master key that unseals it and the
/// installation's own values.
struct Identity {
    key: FoundKey,
    generated_key: bool,
    mock_auth_secret: [u8; 32],
    installation_id: String,
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a usable connection (SQLite rolls back the
    // open transaction when it is dropped), so poisoning is not fatal here.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Each connection is used by one thread at a time (behind a `Mutex`, or owned by a
/// reader), so SQLite need not lock it again in every call: without `NO_MUTEX` each
/// value the access log binds took and released a pthread mutex.
pub(crate) fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StateError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

fn secret_aad(namespace: &str, name: &str) -> Vec<u8> {
    format!("secret:{namespace}/{name}").into_bytes()
}

pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    B64URL.encode(buf)
}

/// A conflict naming the resources (`users`) that still refer to `r`, if any do.
fn refuse_if_used(r: &Resource, users: &[String]) -> Result<(), StateError> {
    if users.is_empty() {
        return Ok(());
    }
    Err(StateError::Conflict(format!(
        "{} is used by {}; delete or change those first",
        r.describe(),
        users.join(", ")
    )))
}

/// Whether the process named in an owner tag (`<pid>:<random>`) runs on this host.
fn process_alive(owner: &str) -> bool {
    let pid = owner
        .split(':')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    match pid {
        Some(pid) => match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e == rustix::io::Errno::PERM,
        },
        None => false,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex(&buf)
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir` and checks the master key
    /// against it. Refuses a missing or different key for a database that has one.
    pub fn open(state_dir: &Path, keys: &KeySettings) -> Result<Store, StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(StateError::io(state_dir))?;
        let db_path = state_dir.join(STATE_DB_FILE);
        let mut writer = open_connection(
            &db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o600))
            .map_err(StateError::io(&db_path))?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&mut writer)?;
        crate::audit::convert_legacy_events(&mut writer)?;
        let identity =
            Self::settle_identity(&Db::Sqlite(&writer), keys, &db_path.display().to_string())?;
        Ok(Store::with(
            Backend::Sqlite {
                db_path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            },
            identity,
        ))
    }

    /// Opens the store on PostgreSQL (migrating its schema) and checks the master key
    /// against it, as `open` does. Every gateway of a fleet opens the same database with
    /// the same master key.
    pub fn open_postgres(
        settings: &PostgresSettings,
        keys: &KeySettings,
    ) -> Result<Store, StateError> {
        let backend = pg::Backend::connect(settings)?;
        backend.migrate()?;
        let label = backend.label().to_owned();
        let identity =
            backend.write(|conn| Self::settle_identity(&Db::Postgres(conn), keys, &label))?;
        let store = Store::with(Backend::Postgres(Box::new(backend)), identity);
        if let Backend::Postgres(backend) = &store.backend {
            backend.register(&store.owner)?;
        }
        Ok(store)
    }

    fn with(backend: Backend, identity: Identity) -> Store {
        Store {
            backend,
            installation_id: identity.installation_id,
            mock_auth_secret: identity.mock_auth_secret,
            key: identity.key.key,
            key_origin: identity.key.origin,
            generated_key: identity.generated_key,
            owner: format!("{}:{}", std::process::id(), random_hex(6)),
            snapshots: crate::snapshot::Snapshots::default(),
            policy_engine: std::sync::OnceLock::new(),
        }
    }

    /// Checks the master key against the database's (or records it in a new one), and
    /// reads or makes the installation's id and the mock-auth secret.
    fn settle_identity(
        db: &Db<'_>,
        keys: &KeySettings,
        location: &str,
    ) -> Result<Identity, StateError> {
        let check: Option<Vec<u8>> = db.query_opt(
            "SELECT value FROM meta WHERE key = 'key_check'",
            args![],
            |row| row.get(0),
        )?;
        let (found, generated_key) = match (keys.find()?, &check) {
            (Some(found), Some(check)) => {
                let (nonce, sealed) = check.split_at(check.len().min(12));
                if found.key.unseal(nonce, sealed, KEY_CHECK_AAD).as_deref()
                    != Some(KEY_CHECK_PLAINTEXT)
                {
                    return Err(StateError::MasterKey(format!(
                        "master key from {} does not match state database {location}; refusing to start",
                        found.origin
                    )));
                }
                (found, false)
            }
            (Some(found), None) => (found, false),
            (None, Some(_)) => {
                return Err(StateError::MasterKey(format!(
                    "no master key: {} is missing and POSTERN_MASTER_KEY is unset, but state database {location} holds sealed data; restore the key file",
                    keys.key_file.display()
                )))
            }
            (None, None) => (keys.generate()?, true),
        };
        if check.is_none() {
            let (nonce, sealed) = found.key.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)?;
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
                args![[nonce, sealed].concat()],
            )?;
        }
        let mock_auth_secret = Self::mock_auth_secret_in(db)?;
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('installation_id', ?1) ON CONFLICT DO NOTHING",
            args![random_hex(8)],
        )?;
        let installation_id: String = db.query_value(
            "SELECT value FROM meta WHERE key = 'installation_id'",
            args![],
        )?;
        Ok(Identity {
            key: found,
            generated_key,
            mock_auth_secret,
            installation_id,
        })
    }

    /// The secret behind the fake SCRAM salts shown for unknown identities. It is kept in
    /// the database so the salt for a name stays the same across restarts and across
    /// gateways sharing state; a changing salt would tell "unknown" from "wrong key".
    fn mock_auth_secret_in(db: &Db<'_>) -> Result<[u8; 32], StateError> {
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('mock_auth_secret', ?1) ON CONFLICT DO NOTHING",
            args![fresh],
        )?;
        let stored: Vec<u8> = db.query_value(
            "SELECT value FROM meta WHERE key = 'mock_auth_secret'",
            args![],
        )?;
        stored
            .try_into()
            .map_err(|_| StateError::Corrupt("mock_auth_secret is not 32 bytes".into()))
    }

    /// A random id of this state database, which marks the upstream roles it manages so
    /// two gateways with separate state never take each other's roles.
    pub fn installation_id(&self) -> &str {
        &self.installation_id
    }

    pub fn mock_auth_secret(&self) -> [u8; 32] {
        self.mock_auth_secret
    }

    /// The SQLite file, when the state is in one.
    pub fn db_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite { db_path, .. } => Some(db_path),
            Backend::Postgres(_) => None,
        }
    }

    /// Where the state is, for logs: the SQLite file, or PostgreSQL's hosts and
    /// database (never a password).
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Sqlite { db_path, .. } => db_path.display().to_string(),
            Backend::Postgres(pg) => format!("postgres://{}", pg.label()),
        }
    }

    /// Names this process in the leases it creates or holds for its sessions.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether the process that named itself `owner` still looks after its leases: on
    /// SQLite (one host) whether its process runs; on PostgreSQL whether its gateway
    /// beat lately.
    pub fn owner_alive(&self, owner: &str) -> Result<bool, StateError> {
        if owner == self.owner {
            return Ok(true);
        }
        match &self.backend {
            Backend::Sqlite { .. } => Ok(process_alive(owner)),
            Backend::Postgres(pg) => pg.owner_alive(owner),
        }
    }

    /// True when several gateways may share this state (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Takes or keeps the lead of the gateways sharing this state (always held on
    /// SQLite); the leader alone runs the reaper, the reconciler's timer and the
    /// rotations. Blocks for a round trip on PostgreSQL.
    pub fn try_lead(&self) -> bool {
        match &self.backend {
            Backend::Sqlite { .. } => true,
            Backend::Postgres(pg) => pg.try_lead(),
        }
    }

    /// What the last [`Store::try_lead`] found.
    pub fn is_leader(&self) -> bool {
        match &self.backend {
            Backend::Sqlite { .. } => true,
            Backend::Postgres(pg) => pg.is_leader(),
        }
    }

    /// Where the master key came from (a path or `POSTERN_MASTER_KEY`), for logs.
    pub fn key_origin(&self) -> &str {
        &self.key_origin
    }

    /// True when this open generated the key file.
    pub fn generated_key(&self) -> bool {
        self.generated_key
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Db<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        match &self.backend {
            Backend::Sqlite {
                db_path, readers, ..
            } => {
                let pooled = lock(readers).pop();
                let conn = match pooled {
                    Some(conn) => conn,
                    None => open_connection(db_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
                };
                let result = f(&Db::Sqlite(&conn));
                let mut readers = lock(readers);
                if readers.len() < MAX_IDLE_READERS {
                    readers.push(conn);
                }
                result
            }
            Backend::Postgres(pg) => pg.read(|conn| f(&Db::Postgres(conn))),
        }
    }

    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Db<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let written = self.write_log(f);
        // What this gateway wrote, it reads at once (snapshot.rs).
        self.snapshots.forget_epochs();
        written
    }

    /// A write of what no login reads (the access log, plugin logs): unlike
    /// [`Store::write`], it leaves the epochs this store has seen alone.
    pub(crate) fn write_log<T>(
        &self,
        f: impl FnOnce(&Db<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut conn = lock(writer);
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let value = f(&Db::Sqlite(&tx))?;
                tx.commit()?;
                Ok(value)
            }
            Backend::Postgres(pg) => pg.write(|conn| f(&Db::Postgres(conn))),
        }
    }

    // ---- resources -------------------------------------------------------------------

    fn row_to_resource(row: &Row<'_>) -> Result<ResourceRow, StateError> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
        ))
    }

    fn decode_row(
        (kind, metadata, spec, generation, applied, created_at, updated_at): ResourceRow,
    ) -> Result<StoredResource, StateError> {
        let corrupt = |what: String| StateError::Corrupt(what);
        let kind = Kind::from_document(&kind).map_err(corrupt)?;
        let metadata: Metadata =
            serde_json::from_str(&metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
        let spec: serde_json::Value =
            serde_json::from_str(&spec).map_err(|e| corrupt(format!("spec: {e}")))?;
        let resource =
            Resource::from_parts(kind, metadata, spec).map_err(|e| corrupt(e.to_string()))?;
        Ok(StoredResource {
            resource,
            generation,
            applied,
            created_at,
            updated_at,
        })
    }

    const RESOURCE_COLUMNS: &'static str =
        "kind, metadata, spec, generation, applied, created_at, updated_at";

    /// Resources of `kind` (all kinds when `None`) in `namespace` (all when `None`),
    /// ordered by kind, namespace and name.
    pub fn list_resources(
        &self,
        kind: Option<Kind>,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredResource>, StateError> {
        self.read(|conn| Self::list_in(conn, kind, namespace))
    }

    pub(crate) fn list_in(
        conn: &Db<'_>,
        kind: Option<Kind>,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredResource>, StateError> {
        let sql = format!(
            "SELECT {} FROM resources
             WHERE (kind = ?1 OR ?1 IS NULL) AND (namespace = ?2 OR ?2 IS NULL)
             ORDER BY kind, namespace, name",
            Self::RESOURCE_COLUMNS
        );
        let rows = conn.query_map(
            &sql,
            args![kind.map(Kind::as_str), namespace],
            Self::row_to_resource,
        )?;
        rows.into_iter().map(Self::decode_row).collect()
    }

    /// How often resources of each kind have changed (a kind never written is absent):
    /// two reads that differ for a kind mean it changed in between, whoever wrote it.
    pub fn kind_epochs(&self) -> Result<std::collections::BTreeMap<Kind, i64>, StateError> {
        self.read(|conn| {
            let rows = conn.query_map("SELECT kind, epoch FROM kind_epochs", args![], |row| {
                Ok((row.get::<String>(0)?, row.get::<i64>(1)?))
            })?;
            Ok(rows
                .into_iter()
                .filter_map(|(kind, epoch)| Some((Kind::from_document(&kind).ok()?, epoch)))
                .collect())
        })
    }

    pub fn get_resource(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredResource>, StateError> {
        self.read(|conn| Self::get_in(conn, kind, namespace, name))
    }

    pub(crate) fn get_in(
        conn: &Db<'_>,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredResource>, StateError> {
        let sql = format!(
            "SELECT {} FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            Self::RESOURCE_COLUMNS
        );
        conn.query_opt(
            &sql,
            args![kind.as_str(), namespace, name],
            Self::row_to_resource,
        )?
        .map(Self::decode_row)
        .transpose()
    }

    /// Plans `desired` against the stored resources and, unless `dry_run`, carries the
    /// plan out, all in one write transaction: nothing can change in between, and either
    /// every change lands or none does.
    pub fn apply_resources(
        &self,
        desired: &[LoadedResource],
        prune: bool,
        dry_run: bool,
    ) -> Result<Vec<Change>, StateError> {
        self.check_rules(desired)?;
        self.write(|tx| {
            let current: Vec<(Resource, bool)> = Self::list_in(tx, None, None)?
                .into_iter()
                .map(|s| (s.resource, s.applied))
                .collect();
            let changes = plan_apply(desired, &current, prune)?;
            if !dry_run {
                Self::apply_in(tx, &changes)?;
            }
            Ok(changes)
        })
    }

    /// Services' rules checked by the policy engine, when one is set (without one, no
    /// connection reaches a Service with rules anyway).
    pub(crate) fn check_rules(&self, desired: &[LoadedResource]) -> Result<(), StateError> {
        match self.policy_engine.get() {
            Some(engine) => Ok(postern_model::check_rules(desired, engine.as_ref())?),
            None => Ok(()),
        }
    }

    fn apply_in(tx: &Db<'_>, changes: &[Change]) -> Result<(), StateError> {
        let now = now();
        for change in changes {
            let r = change.resource();
            let metadata = serde_json::to_string(&r.metadata)
                .map_err(|e| StateError::Corrupt(e.to_string()))?;
            let spec = r.spec_json().to_string();
            if matches!(change, Change::Create(_) | Change::Update { .. }) {
                Self::check_component_stored(tx, r)?;
            }
            let touched = match change {
                Change::Create(_) => tx.execute(
                    "INSERT INTO resources VALUES (?1, ?2, ?3, ?4, ?5, 1, 1, ?6, ?6)",
                    args![
                        r.kind().as_str(),
                        r.namespace(),
                        r.name(),
                        metadata,
                        spec,
                        now
                    ],
                )?,
                Change::Update { .. } => tx.execute(
                    "UPDATE resources SET metadata = ?4, spec = ?5, generation = generation + 1,
                         applied = 1, updated_at = ?6
                     WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                    args![
                        r.kind().as_str(),
                        r.namespace(),
                        r.name(),
                        metadata,
                        spec,
                        now
                    ],
                )?,
                Change::Unchanged(_) => tx.execute(
                    "UPDATE resources SET applied = 1
                     WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                    args![r.kind().as_str(), r.namespace(), r.name()],
                )?,
                Change::Delete(_) => {
                    Self::check_deletable(tx, r)?;
                    Self::delete_in(tx, r)?;
                    1
                }
            };
            if touched != 1 {
                return Err(StateError::Conflict(format!(
                    "{} changed while it was being applied; apply again",
                    r.describe()
                )));
            }
        }
        Ok(())
    }

    /// Refuses deleting `r` while something still depends on it: every delete, one by one
    /// or by `apply --prune`, goes through here.
    fn check_deletable(tx: &Db<'_>, r: &Resource) -> Result<(), StateError> {
        match r.kind() {
            Kind::Namespace => Self::check_namespace_deletable(tx, r.name())?,
            Kind::Target => {
                Self::check_unreferenced(tx, r, &["target"])?;
                // Its managed roles can only be dropped through its admin connection.
                let roles: i64 = tx.query_row(
                    "SELECT count(*) FROM managed_roles WHERE target_namespace = ?1 AND target_name = ?2",
                    args![r.namespace(), r.name()],
                    |row| row.get(0),
                )?;
                if roles > 0 {
                    return Err(StateError::Conflict(format!(
                        "{} still has {roles} managed roles; delete the Intents naming it and reconcile first",
                        r.describe()
                    )));
                }
            }
            Kind::StaticRole => Self::check_unreferenced(tx, r, &["upstream", "staticRole"])?,
            Kind::CredentialRole => {
                Self::check_unreferenced(tx, r, &["upstream", "credentialRole"])?;
                let live: i64 = tx.query_row(
                    "SELECT count(*) FROM leases WHERE namespace = ?1 AND credential_role = ?2
                     AND state NOT IN ('revoked', 'rolled-back')",
                    args![r.namespace(), r.name()],
                    |row| row.get(0),
                )?;
                if live > 0 {
                    return Err(StateError::Conflict(format!(
                        "{} still has {live} leases; revoke them first (postern lease revoke --prefix {} -n {})",
                        r.describe(),
                        r.name(),
                        r.namespace()
                    )));
                }
            }
            Kind::Plugin => Self::check_plugin_unused(tx, r)?,
            Kind::Service | Kind::Identity | Kind::Intents | Kind::RoleBinding => {}
        }
        Ok(())
    }

    /// A namespace may go only when empty: secrets are never deleted as a side effect.
    fn check_namespace_deletable(conn: &Db<'_>, name: &str) -> Result<(), StateError> {
        if name == postern_model::DEFAULT_NAMESPACE {
            return Err(StateError::Conflict(
                "the default namespace cannot be deleted".into(),
            ));
        }
        let held: i64 = conn.query_row(
            "SELECT (SELECT COUNT(*) FROM resources WHERE namespace = ?1)
                  + (SELECT COUNT(*) FROM secrets WHERE namespace = ?1)",
            args![name],
            |row| row.get(0),
        )?;
        if held > 0 {
            return Err(StateError::Conflict(format!(
                "Namespace {name} still holds {held} resources or secrets; delete them first"
            )));
        }
        Ok(())
    }

    fn delete_in(tx: &Db<'_>, r: &Resource) -> Result<(), StateError> {
        tx.execute(
            "DELETE FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            args![r.kind().as_str(), r.namespace(), r.name()],
        )?;
        match r.kind() {
            Kind::Identity => {
                // Its tokens go too: a later identity of the same name must not inherit them.
                for table in ["api_keys", "identity_clients", "access_tokens"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE namespace = ?1 AND identity = ?2"),
                        args![r.namespace(), r.name()],
                    )?;
                }
            }
            Kind::Intents => {
                tx.execute(
                    "DELETE FROM intents_status WHERE namespace = ?1 AND name = ?2",
                    args![r.namespace(), r.name()],
                )?;
            }
            Kind::StaticRole => {
                tx.execute(
                    "DELETE FROM static_roles WHERE namespace = ?1 AND name = ?2",
                    args![r.namespace(), r.name()],
                )?;
            }
            // A component stays stored: another Plugin, or a re-apply, may use it again.
            Kind::Plugin => {
                for table in ["plugin_status", "plugin_logs"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE namespace = ?1 AND name = ?2"),
                        args![r.namespace(), r.name()],
                    )?;
                }
            }
            Kind::Namespace
            | Kind::Target
            | Kind::Service
            | Kind::CredentialRole
            | Kind::RoleBinding => {}
        }
        Ok(())
    }

    /// Refuses a Plugin whose component is not stored.
    pub(crate) fn check_component_stored(tx: &Db<'_>, r: &Resource) -> Result<(), StateError> {
        let Spec::Plugin(plugin) = &r.spec else {
            return Ok(());
        };
        let sha = plugin.source.sha256.as_deref().unwrap_or_default();
        let stored: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM plugin_components WHERE sha256 = ?1)",
            args![sha],
            |row| row.get(0),
        )?;
        if stored {
            return Ok(());
        }
        Err(StateError::Conflict(format!(
            "{}: no component with sha256 {sha:?} is stored; apply it from a file whose spec.source.path names the component (postern apply uploads it), or PUT it to /api/v1/namespaces/{}/plugincomponents/{sha} first",
            r.describe(),
            r.namespace()
        )))
    }

    /// Refuses when a Service of the plugin's namespace names it.
    fn check_plugin_unused(tx: &Db<'_>, r: &Resource) -> Result<(), StateError> {
        let sql = format!(
            "SELECT 'Service ' || name FROM resources WHERE namespace = ?1 AND kind = 'Service'
             AND (EXISTS (SELECT 1 FROM {} WHERE plugins.value = ?2)
                  OR EXISTS (SELECT 1 FROM {} WHERE providers.value = ?2))
             ORDER BY name",
            tx.json_elements("spec", &["authorization", "plugins"], "plugins"),
            tx.json_elements("spec", &["auth", "providers"], "providers"),
        );
        let users: Vec<String> =
            tx.query_map(&sql, args![r.namespace(), r.name()], |row| row.get(0))?;
        refuse_if_used(r, &users)
    }

    /// Stores a plugin's component (once per content); returns the sha256 of its bytes
    /// in lowercase hex, as `spec.source.sha256` names it.
    pub fn store_plugin_component(&self, bytes: &[u8]) -> Result<String, StateError> {
        let sha = hex(&Sha256::digest(bytes));
        self.write(|tx| {
            tx.execute(
                "INSERT INTO plugin_components (sha256, bytes, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                args![sha, bytes, now()],
            )?;
            Ok(())
        })?;
        Ok(sha)
    }

    /// A stored component's bytes.
    pub fn plugin_component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.read(|conn| {
            conn.query_opt(
                "SELECT bytes FROM plugin_components WHERE sha256 = ?1",
                args![sha256],
                |row| row.get(0),
            )
        })
    }

    /// Refuses when a resource in the same namespace names `r` at `path` of its spec.
    fn check_unreferenced(tx: &Db<'_>, r: &Resource, path: &[&str]) -> Result<(), StateError> {
        // A dynamicConfig Service may also name targets in its configs.
        let in_configs = match path {
            ["target"] => format!(
                "OR EXISTS (SELECT 1 FROM {} WHERE {} = ?2)",
                tx.json_elements("spec", &["upstream", "configs"], "configs"),
                tx.json_text("configs.value", &["target"])
            ),
            _ => String::new(),
        };
        let sql = format!(
            "SELECT kind || ' ' || name FROM resources WHERE namespace = ?1
             AND kind IN ('Service', 'CredentialRole', 'StaticRole')
             AND ({} = ?2 {in_configs})
             ORDER BY kind, name",
            tx.json_text("spec", path)
        );
        let users: Vec<String> =
            tx.query_map(&sql, args![r.namespace(), r.name()], |row| row.get(0))?;
        refuse_if_used(r, &users)
    }

    /// Deletes one resource after checking nothing still depends on it.
    pub fn delete_resource(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<(), StateError> {
        self.delete_resource_at(kind, namespace, name, None)
    }

    /// Deletes one resource, only if it is still at `generation` when one is given (the
    /// one its deleter checked).
    pub fn delete_resource_at(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        generation: Option<i64>,
    ) -> Result<(), StateError> {
        self.delete_resource_guarded(kind, namespace, name, generation, |_| Ok(()))
    }

    /// [`Store::delete_resource_at`], with `guard` deciding inside the write's
    /// transaction whether its writer may make it.
    pub fn delete_resource_guarded(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        generation: Option<i64>,
        guard: impl FnOnce(&crate::AccessView<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            let Some(stored) = Self::get_in(tx, kind, namespace, name)? else {
                return Err(StateError::NotFound(kind.describe(namespace, name)));
            };
            if generation.is_some_and(|g| g != stored.generation) {
                return Err(StateError::Stale(format!(
                    "{} changed since it was checked; read it again and retry",
                    stored.resource.describe()
                )));
            }
            guard(&crate::AccessView::new(tx))?;
            let r = &stored.resource;
            Self::check_deletable(tx, r)?;
            Self::delete_in(tx, r)
        })
    }

    // ---- secrets -----------------------------------------------------------------------

    fn require_namespace(conn: &Db<'_>, namespace: &str) -> Result<(), StateError> {
        if Self::get_in(conn, Kind::Namespace, "", namespace)?.is_none() {
            return Err(StateError::NotFound(format!("Namespace {namespace}")));
        }
        Ok(())
    }

    /// Seals and stores a secret; returns true when it was created rather than replaced.
    pub fn set_secret(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<bool, StateError> {
        self.store_secret(namespace, name, value, true)
    }

    /// Seals and stores a new secret; one of that name already there is a conflict.
    pub fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<(), StateError> {
        self.store_secret(namespace, name, value, false).map(|_| ())
    }

    fn store_secret(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
        replace: bool,
    ) -> Result<bool, StateError> {
        postern_model::validate_name(name).map_err(|e| StateError::Conflict(e.to_string()))?;
        let (nonce, sealed) = self
            .key
            .seal(value.expose().as_bytes(), &secret_aad(namespace, name))?;
        let now = now();
        self.write(|tx| {
            Self::require_namespace(tx, namespace)?;
            let replaced = if replace {
                tx.execute(
                    "UPDATE secrets SET nonce = ?3, ciphertext = ?4, updated_at = ?5
                     WHERE namespace = ?1 AND name = ?2",
                    args![namespace, name, nonce, sealed, now],
                )?
            } else {
                0
            };
            if replaced == 0 {
                let inserted = tx.execute(
                    "INSERT INTO secrets VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT DO NOTHING",
                    args![namespace, name, nonce, sealed, now],
                )?;
                if inserted == 0 {
                    return Err(StateError::Stale(format!(
                        "Secret {namespace}/{name} already exists"
                    )));
                }
            }
            Ok(replaced == 0)
        })
    }

    pub fn secret_value(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretValue>, StateError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self.read(|conn| {
            conn.query_opt(
                "SELECT nonce, ciphertext FROM secrets WHERE namespace = ?1 AND name = ?2",
                args![namespace, name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
        })?;
        let Some((nonce, sealed)) = row else {
            return Ok(None);
        };
        self.unseal_text(
            &nonce,
            &sealed,
            &secret_aad(namespace, name),
            &format!("secret {namespace}/{name}"),
        )
        .map(Some)
    }

    /// Opens a sealed UTF-8 value; `what` names it in the error when it does not open.
    pub(crate) fn unseal_text(
        &self,
        nonce: &[u8],
        sealed: &[u8],
        aad: &[u8],
        what: &str,
    ) -> Result<SecretValue, StateError> {
        let plain = self
            .key
            .unseal(nonce, sealed, aad)
            .ok_or_else(|| StateError::Corrupt(format!("{what} does not unseal")))?;
        let text = String::from_utf8(plain)
            .map_err(|_| StateError::Corrupt(format!("{what} is not UTF-8")))?;
        Ok(SecretValue::new(text))
    }

    pub fn list_secrets(&self, namespace: Option<&str>) -> Result<Vec<SecretInfo>, StateError> {
        self.read(|conn| {
            let rows = conn.query_map(
                "SELECT namespace, name, created_at, updated_at FROM secrets
                 WHERE (namespace = ?1 OR ?1 IS NULL) ORDER BY namespace, name",
                args![namespace],
                |row| {
                    Ok(SecretInfo {
                        namespace: row.get(0)?,
                        name: row.get(1)?,
                        created_at: row.get(2)?,
                        updated_at: row.get(3)?,
                    })
                },
            )?;
            Ok(rows)
        })
    }

    pub fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), StateError> {
        let deleted = self.write(|tx| {
            tx.execute(
                "DELETE FROM secrets WHERE namespace = ?1 AND name = ?2",
                args![namespace, name],
            )
        })?;
        if deleted == 0 {
            return Err(StateError::NotFound(format!("Secret {namespace}/{name}")));
        }
        Ok(())
    }

    // ---- API keys ----------------------------------------------------------------------

    /// Makes a new API key for an identity, if `guard` (run in the write, on the state it
    /// changes) allows. Only its SCRAM verifier is stored; all keys of one identity share a
    /// salt so one SCRAM exchange can check any of them.
    pub fn create_api_key(
        &self,
        identity: &QualifiedName,
        guard: impl FnOnce(&crate::AccessView<'_>) -> Result<(), StateError>,
    ) -> Result<CreatedApiKey, StateError> {
        let key = SecretValue::new(format!("pst_{}", random_token(32)));
        let id = random_hex(6);
        let now = now();
        self.write(|tx| {
            if Self::get_in(tx, Kind::Identity, &identity.namespace, &identity.name)?.is_none() {
                return Err(StateError::NotFound(format!("Identity {identity}")));
            }
            guard(&crate::AccessView::new(tx))?;
            let existing: Option<String> = tx.query_opt(
                "SELECT verifier FROM api_keys WHERE namespace = ?1 AND identity = ?2 LIMIT 1",
                args![identity.namespace, identity.name],
                |row| row.get(0),
            )?;
            let (salt, iterations) = match existing.map(|v| Verifier::parse(&v)) {
                Some(Ok(v)) => (v.salt, v.iterations),
                Some(Err(e)) => return Err(StateError::Corrupt(e.to_string())),
                None => {
                    let mut salt = vec![0u8; 16];
                    rand::rng().fill_bytes(&mut salt);
                    (salt, DEFAULT_ITERATIONS)
                }
            };
            let verifier = Verifier::generate(key.expose().as_bytes(), &salt, iterations).encode();
            tx.execute(
                "INSERT INTO api_keys VALUES (?1, ?2, ?3, ?4, ?5)",
                args![id, identity.namespace, identity.name, verifier, now],
            )?;
            Ok(())
        })?;
        Ok(CreatedApiKey {
            info: ApiKeyInfo {
                id,
                identity: identity.clone(),
                created_at: now,
            },
            key,
        })
    }

    pub fn list_api_keys(&self, identity: &QualifiedName) -> Result<Vec<ApiKeyInfo>, StateError> {
        self.read(|conn| {
            let rows = conn.query_map(
                "SELECT id, created_at FROM api_keys WHERE namespace = ?1 AND identity = ?2
                 ORDER BY created_at, id",
                args![identity.namespace, identity.name],
                |row| {
                    Ok(ApiKeyInfo {
                        id: row.get(0)?,
                        identity: identity.clone(),
                        created_at: row.get(1)?,
                    })
                },
            )?;
            Ok(rows)
        })
    }

    /// Revokes an API key, if `guard` (run in the write) allows.
    pub fn revoke_api_key(
        &self,
        identity: &QualifiedName,
        id: &str,
        guard: impl FnOnce(&crate::AccessView<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let deleted = self.write(|tx| {
            guard(&crate::AccessView::new(tx))?;
            tx.execute(
                "DELETE FROM api_keys WHERE namespace = ?1 AND identity = ?2 AND id = ?3",
                args![identity.namespace, identity.name, id],
            )
        })?;
        if deleted == 0 {
            return Err(StateError::NotFound(format!(
                "API key {id} of Identity {identity}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{on_both_backends, Backend as TestBackend, TestState};
    use crate::{NewLease, Precondition};
    use postern_model::{parse_documents, Directory, Format, RouteLookup};

    const DOCS: &str = "kind: Namespace\nmetadata: {name: a}\n---\nkind: Target\nmetadata: {name: pg, namespace: a}\nspec: {address: '127.0.0.1:5432'}\n---\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {target: pg, database: d, upstream: {mode: static, user: u, passwordSecret: pw}}\n---\nkind: Identity\nmetadata: {name: alice, namespace: a}\n";

    fn seeded(state: &TestState) -> Store {
        let store = state.open();
        let docs = parse_documents("t.yaml", DOCS, Format::Yaml).unwrap();
        store.apply_resources(&docs, false, false).unwrap();
        store
    }

    on_both_backends! {
        fn intents_mode_routes_to_the_managed_role_once_created(state) {
            let store = seeded(&state);
            let more = "kind: Service\nmetadata: {name: jit, namespace: a}\nspec: {target: pg, database: d, upstream: {mode: intents}}\n---\nkind: Intents\nmetadata: {name: alice-needs, namespace: a}\nspec: {identity: alice, access: [{target: pg, database: d, table: public.t, operations: [SELECT]}]}\n---\nkind: Identity\nmetadata: {name: bob, namespace: a}\n";
            let docs = parse_documents("m.yaml", more, Format::Yaml).unwrap();
            store.apply_resources(&docs, false, false).unwrap();
            let service = QualifiedName::new("a", "jit");
            let alice = QualifiedName::new("a", "alice");
            let target = QualifiedName::new("a", "pg");
            let lookup = |who: &QualifiedName| {
                store
                    .upstream_route(&service, who, &Default::default())
                    .unwrap()
            };
            assert!(matches!(
                lookup(&QualifiedName::new("a", "bob")),
                RouteLookup::Denied(_)
            ));
            assert!(matches!(lookup(&alice), RouteLookup::NotReady(_)));

            let role = store.record_managed_role(&target, &alice).unwrap();
            assert_eq!(role.role, "pn_a_alice");
            assert!(!role.password_applied());
            assert!(matches!(lookup(&alice), RouteLookup::NotReady(_)));
            store
                .mark_password_applied(&target, &alice, role.password_version)
                .unwrap();
            let RouteLookup::Found(route) = lookup(&alice) else {
                panic!("no route");
            };
            assert_eq!(route.user, "pn_a_alice");
            assert_eq!(route.password.as_ref(), Some(&role.password));

            // Recording again keeps the password; rotation changes it and needs applying.
            let again = store.record_managed_role(&target, &alice).unwrap();
            assert_eq!(again.password, role.password);
            assert_eq!(store.rotate_managed_passwords(&alice).unwrap(), 1);
            let rotated = store.managed_role(&target, &alice).unwrap().unwrap();
            assert_ne!(rotated.password, role.password);
            assert!(!rotated.password_applied());
            store.forget_managed_role(&target, &alice).unwrap();
            assert!(store.managed_roles(&target).unwrap().is_empty());
        }

        fn resources_secrets_and_route_round_trip(state) {
            let store = seeded(&state);
            assert!(store.generated_key());
            let mock = store.mock_auth_secret();
            assert_eq!(
                state.open().mock_auth_secret(),
                mock,
                "stable across opens"
            );
            let alice = QualifiedName::new("a", "alice");
            let route = |service: &str| match store
                .upstream_route(
                    &QualifiedName::new("a", service),
                    &alice,
                    &Default::default(),
                )
                .unwrap()
            {
                RouteLookup::Found(route) => Some(*route),
                RouteLookup::NoService => None,
                other => panic!("unexpected {other:?}"),
            };
            let found = route("s").unwrap();
            assert_eq!(found.user, "u");
            assert!(found.password.is_none());
            store
                .set_secret("a", "pw", &SecretValue::new("very-secret-pw"))
                .unwrap();
            assert_eq!(
                route("s").unwrap().password.unwrap().expose(),
                "very-secret-pw"
            );
            assert!(route("nope").is_none());
            let sealed: Vec<Vec<u8>> = store
                .read(|db| db.query_map("SELECT ciphertext FROM secrets", args![], |row| row.get(0)))
                .unwrap();
            assert_eq!(sealed.len(), 1);
            assert!(!sealed[0].windows(14).any(|w| w == b"very-secret-pw"));
            drop(store);
            if state.backend == TestBackend::Sqlite {
                let raw = std::fs::read(state.path().join(STATE_DB_FILE)).unwrap();
                assert!(!raw.windows(14).any(|w| w == b"very-secret-pw"));
            }
        }

        fn api_keys_share_a_salt_and_are_stored_as_verifiers_only(state) {
            let store = seeded(&state);
            let alice = QualifiedName::new("a", "alice");
            let k1 = store.create_api_key(&alice, crate::unguarded).unwrap();
            let k2 = store.create_api_key(&alice, crate::unguarded).unwrap();
            let verifiers = store
                .identity_credentials(&alice)
                .unwrap()
                .unwrap()
                .verifiers;
            assert_eq!(verifiers.len(), 2);
            let v: Vec<Verifier> = verifiers
                .iter()
                .map(|v| Verifier::parse(v).unwrap())
                .collect();
            assert_eq!(v[0].salt, v[1].salt);
            assert_ne!(v[0].keys, v[1].keys);
            assert!(verifiers.iter().all(|v| !v.contains(k1.key.expose())));
            store
                .revoke_api_key(&alice, &k2.info.id, crate::unguarded)
                .unwrap();
            assert_eq!(store.list_api_keys(&alice).unwrap().len(), 1);
            assert!(store
                .revoke_api_key(&alice, &k2.info.id, crate::unguarded)
                .is_err());
            assert!(store
                .identity_credentials(&QualifiedName::new("a", "bob"))
                .unwrap()
                .is_none());
        }

        fn wrong_or_missing_master_key_is_refused(state) {
            drop(seeded(&state));
            let wrong = KeySettings {
                inline: Some(base64::engine::general_purpose::STANDARD.encode([9u8; 32])),
                ..state.keys()
            };
            let err = state.open_with(&wrong).unwrap_err().to_string();
            assert!(err.contains("does not match"), "{err}");
            std::fs::rename(state.key_file(), state.path().join("moved.key")).unwrap();
            let err = state.open_with(&state.keys()).unwrap_err().to_string();
            assert!(err.contains("is missing"), "{err}");
            assert!(!state.key_file().exists(), "must not generate a new key");
        }

        fn prune_never_deletes_secrets_or_the_default_namespace(state) {
            let store = seeded(&state);
            store.set_secret("a", "pw", &SecretValue::new("x")).unwrap();
            let yaml = |text: &str| parse_documents("t.yaml", text, Format::Yaml).unwrap();
            let only_default = yaml("kind: Namespace\nmetadata: {name: default}\n");
            let err = store
                .apply_resources(&only_default, true, false)
                .unwrap_err();
            assert!(err.to_string().contains("still holds"), "{err}");
            // Nothing was applied: the transaction rolled back.
            assert!(store
                .get_resource(Kind::Service, "a", "s")
                .unwrap()
                .is_some());
            store.delete_secret("a", "pw").unwrap();
            store.apply_resources(&only_default, true, false).unwrap();
            assert!(store
                .get_resource(Kind::Namespace, "", "a")
                .unwrap()
                .is_none());
            // `default` was adopted by that apply but survives a prune that omits it.
            let other = yaml("kind: Namespace\nmetadata: {name: b}\n");
            store.apply_resources(&other, true, false).unwrap();
            assert!(store
                .get_resource(Kind::Namespace, "", "default")
                .unwrap()
                .is_some());
        }

        fn prune_refuses_what_delete_refuses_with_the_same_message(state) {
            let store = seeded(&state);
            let yaml = |text: &str| parse_documents("t.yaml", text, Format::Yaml).unwrap();
            let role = "kind: CredentialRole\nmetadata: {name: ro, namespace: a}\nspec: {target: pg, database: d, creationStatements: ['CREATE ROLE {{name}} PASSWORD {{password}}'], defaultTtl: 1h, maxTtl: 2h}\n";
            let with_role = format!("{DOCS}---\n{role}");
            store
                .apply_resources(&yaml(&with_role), false, false)
                .unwrap();
            let pg = QualifiedName::new("a", "pg");
            store
                .record_managed_role(&pg, &QualifiedName::new("a", "alice"))
                .unwrap();
            store
                .record_lease(&NewLease {
                    id: "ro-1",
                    credential_role: &QualifiedName::new("a", "ro"),
                    target: "pg",
                    username: "v_ro_1",
                    issued_for: "a/alice",
                    spec: "{}",
                    owner: "test",
                    issued_at: 0,
                    expires_at: i64::MAX,
                    max_expires_at: i64::MAX,
                })
                .unwrap();
            let by_delete = |kind: Kind, name: &str| {
                store
                    .delete_resource(kind, "a", name)
                    .unwrap_err()
                    .to_string()
            };
            let by_prune = |docs: &str| {
                store
                    .apply_resources(&yaml(docs), true, false)
                    .unwrap_err()
                    .to_string()
            };
            // The CredentialRole has a live lease.
            let lease_refusal = by_delete(Kind::CredentialRole, "ro");
            assert!(
                lease_refusal.contains("still has 1 leases"),
                "{lease_refusal}"
            );
            assert_eq!(by_prune(DOCS), lease_refusal);
            // The Target (no Service, no CredentialRole left naming it) has a managed role.
            let without_target_users =
                "kind: Namespace\nmetadata: {name: a}\n---\nkind: Identity\nmetadata: {name: alice, namespace: a}\n";
            store.forget_lease("ro-1").unwrap();
            store
                .delete_resource(Kind::CredentialRole, "a", "ro")
                .unwrap();
            store.delete_resource(Kind::Service, "a", "s").unwrap();
            let roles_refusal = by_delete(Kind::Target, "pg");
            assert!(
                roles_refusal.contains("still has 1 managed roles"),
                "{roles_refusal}"
            );
            assert_eq!(by_prune(without_target_users), roles_refusal);
            // Refused prunes change nothing.
            assert!(store
                .get_resource(Kind::Target, "a", "pg")
                .unwrap()
                .is_some());
        }

        fn kind_epochs_move_on_every_write_path_and_only_on_changes(state) {
            let store = seeded(&state);
            let epoch = |kind| store.kind_epochs().unwrap().get(&kind).copied();
            let first = epoch(Kind::Service).unwrap();
            // Applying the same files again changes nothing.
            let docs = parse_documents("t.yaml", DOCS, Format::Yaml).unwrap();
            store.apply_resources(&docs, false, false).unwrap();
            assert_eq!(epoch(Kind::Service), Some(first));
            assert_eq!(epoch(Kind::Intents), None);
            // A single-resource write (the API's) moves its kind only.
            let target = epoch(Kind::Target);
            let stored = store
                .get_resource(Kind::Service, "a", "s")
                .unwrap()
                .unwrap();
            let mut service = stored.resource;
            service.metadata.labels.insert("team".into(), "x".into());
            store
                .put_resource(service, Precondition::Generation(stored.generation))
                .unwrap();
            assert_eq!(epoch(Kind::Service), Some(first + 1));
            assert_eq!(epoch(Kind::Target), target);
            store.delete_resource(Kind::Service, "a", "s").unwrap();
            assert_eq!(epoch(Kind::Service), Some(first + 2));
        }

        fn deletes_refuse_to_break_references(state) {
            let store = seeded(&state);
            assert!(store.delete_resource(Kind::Target, "a", "pg").is_err());
            assert!(store.delete_resource(Kind::Namespace, "", "a").is_err());
            assert!(store
                .delete_resource(Kind::Namespace, "", "default")
                .is_err());
            store.delete_resource(Kind::Service, "a", "s").unwrap();
            store.delete_resource(Kind::Target, "a", "pg").unwrap();
            assert!(matches!(
                store.delete_resource(Kind::Target, "a", "pg"),
                Err(StateError::NotFound(_))
            ));
        }
    }
}
