//! Schema migrations, applied in order inside one transaction each and recorded in
//! `schema_migrations`. Never edit a released migration: append a new one.

use rusqlite::Connection;

use crate::db::{args, Db};

use crate::StateError;

const MIGRATIONS: &[&str] = &[
    // 1: resources, sealed secrets, API keys.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE resources (
        kind       TEXT NOT NULL,
        namespace  TEXT NOT NULL,
        name       TEXT NOT NULL,
        metadata   TEXT NOT NULL,
        spec       TEXT NOT NULL,
        generation INTEGER NOT NULL,
        applied    INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (kind, namespace, name)
    );
    CREATE TABLE secrets (
        namespace  TEXT NOT NULL,
        name       TEXT NOT NULL,
        nonce      BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE api_keys (
        id         TEXT PRIMARY KEY,
        namespace  TEXT NOT NULL,
        identity   TEXT NOT NULL,
        verifier   TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX api_keys_by_identity ON api_keys (namespace, identity);
    INSERT INTO resources VALUES
        ('Namespace', '', 'default', '{"name":"default"}', '{}', 1, 0, unixepoch(), unixepoch());
    "#,
    // 2: roles the reconciler manages upstream, and what it last did per Intents resource.
    // A role row is written before its CREATE ROLE runs, so a crash in between leaves a
    // record the next run completes or cleans up, never an unknown role.
    r#"
    CREATE TABLE managed_roles (
        target_namespace   TEXT NOT NULL,
        target_name        TEXT NOT NULL,
        identity_namespace TEXT NOT NULL,
        identity_name      TEXT NOT NULL,
        role_name          TEXT NOT NULL,
        nonce              BLOB NOT NULL,
        ciphertext         BLOB NOT NULL,
        password_version   INTEGER NOT NULL,
        applied_version    INTEGER NOT NULL,
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL,
        PRIMARY KEY (target_namespace, target_name, identity_namespace, identity_name),
        UNIQUE (target_namespace, target_name, role_name)
    );
    CREATE TABLE intents_status (
        namespace  TEXT NOT NULL,
        name       TEXT NOT NULL,
        state      TEXT NOT NULL,
        message    TEXT NOT NULL,
        statement  TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    "#,
    // 3: the credential issuer. A lease row is written (state `creating`) before its role
    // is created upstream and keeps the CredentialRole spec it was made with, so the role
    // can always be rolled back or revoked, even after the resource changed or went.
    r#"
    CREATE TABLE leases (
        id              TEXT PRIMARY KEY,
        namespace       TEXT NOT NULL,
        credential_role TEXT NOT NULL,
        target_name     TEXT NOT NULL,
        username        TEXT NOT NULL,
        issued_for      TEXT NOT NULL,
        spec            TEXT NOT NULL,
        state           TEXT NOT NULL,
        owner           TEXT NOT NULL,
        issued_at       INTEGER NOT NULL,
        expires_at      INTEGER NOT NULL,
        max_expires_at  INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        updated_at      INTEGER NOT NULL
    );
    CREATE INDEX leases_by_state ON leases (state, expires_at);
    CREATE INDEX leases_by_role ON leases (namespace, credential_role);
    CREATE TABLE static_roles (
        namespace          TEXT NOT NULL,
        name               TEXT NOT NULL,
        username           TEXT NOT NULL,
        nonce              BLOB,
        ciphertext         BLOB,
        pending_nonce      BLOB,
        pending_ciphertext BLOB,
        rotated_at         INTEGER NOT NULL DEFAULT 0,
        last_error         TEXT,
        updated_at         INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    "#,
    // 4: the access log's queryable recent events (the JSON line as written, plus the
    // columns `postern logs` filters on).
    r#"
    CREATE TABLE audit_events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id   TEXT NOT NULL,
        time_ms    INTEGER NOT NULL,
        type       TEXT NOT NULL,
        identity   TEXT NOT NULL,
        namespace  TEXT NOT NULL,
        service    TEXT NOT NULL,
        session_id TEXT NOT NULL,
        json       TEXT NOT NULL
    );
    CREATE INDEX audit_events_by_time ON audit_events (time_ms);
    CREATE UNIQUE INDEX audit_events_by_event_id ON audit_events (event_id);
    "#,
    // 5: tenancy: workload client credentials (argon2 hashes), the token signing keys
    // (private halves sealed), issued access tokens by `jti` for revocation, and the
    // admin API's opaque bootstrap token (SHA-256 only).
    r#"
    CREATE TABLE identity_clients (
        client_id   TEXT PRIMARY KEY,
        namespace   TEXT NOT NULL,
        identity    TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX identity_clients_by_identity ON identity_clients (namespace, identity);
    CREATE TABLE signing_keys (
        kid        TEXT PRIMARY KEY,
        nonce      BLOB NOT NULL,
        sealed     BLOB NOT NULL,
        public_key BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        retired_at INTEGER
    );
    CREATE TABLE access_tokens (
        jti        TEXT PRIMARY KEY,
        namespace  TEXT NOT NULL,
        identity   TEXT NOT NULL,
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_at);
    CREATE TABLE admin_tokens (
        token_hash TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
    );
    "#,
    // 6: a counter every change to a resource moves, whichever process and write path
    // made it, so a running gateway notices changed rules with one cheap read.
    r#"
    CREATE TABLE resource_epoch (epoch INTEGER NOT NULL);
    INSERT INTO resource_epoch VALUES (0);
    CREATE TRIGGER resources_epoch_on_insert AFTER INSERT ON resources
        BEGIN UPDATE resource_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER resources_epoch_on_update AFTER UPDATE ON resources
        BEGIN UPDATE resource_epoch SET epoch = epoch + 1; END;
    CREATE TRIGGER resources_epoch_on_delete AFTER DELETE ON resources
        BEGIN UPDATE resource_epoch SET epoch = epoch + 1; END;
    "#,
    // 7: the access log keeps each session's fields once, not in every event's line;
    // `last_ms` is its newest event, for pruning.
    r#"
    CREATE TABLE audit_sessions (
        session_id TEXT PRIMARY KEY,
        json       TEXT NOT NULL,
        last_ms    INTEGER NOT NULL
    );
    "#,
    // 8: the access log keeps parts, not lines: a statement text that repeats is stored
    // once (`last_ms` is its newest use, kept to within a minute, for pruning) and
    // referenced, one seen once sits in its row; `json` holds the event's other details as
    // object members without braces, and the line is made when read. Rows written before
    // keep their line, which starts with `{`. Event ids lose their index: a batch is
    // written whole or not at all, and records replayed from a spill file are looked up
    // through the time index instead.
    r#"
    DROP INDEX audit_events_by_event_id;
    ALTER TABLE audit_events ADD COLUMN statement TEXT;
    ALTER TABLE audit_events ADD COLUMN statement_id INTEGER;
    CREATE TABLE audit_statements (
        id      INTEGER PRIMARY KEY,
        text    TEXT NOT NULL UNIQUE,
        last_ms INTEGER NOT NULL
    );
    "#,
    // 9: the access log keeps events in segments: one row per batch the sink writes, its
    // events encoded together and compressed, so a batch costs one row however many
    // events it holds, and repeated text (statements, details) almost nothing. A session
    // is stored once, under a number its events carry; `postern logs` filters sessions
    // by identity and service and reads the segments that hold them. The rows of older
    // versions are kept under `legacy_` names here and moved into segments, as whole
    // lines, when the store opens (`audit::legacy`).
    r#"
    ALTER TABLE audit_events RENAME TO legacy_audit_events;
    ALTER TABLE audit_sessions RENAME TO legacy_audit_sessions;
    ALTER TABLE audit_statements RENAME TO legacy_audit_statements;
    CREATE TABLE audit_sessions (
        key        INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL UNIQUE,
        identity   TEXT NOT NULL,
        namespace  TEXT NOT NULL,
        service    TEXT NOT NULL,
        json       TEXT NOT NULL,
        last_ms    INTEGER NOT NULL
    );
    INSERT INTO audit_sessions (session_id, identity, namespace, service, json, last_ms)
        SELECT e.session_id, e.identity, e.namespace, e.service, coalesce(s.json, ''),
               max(e.time_ms, coalesce(s.last_ms, 0))
        FROM (SELECT session_id, identity, namespace, service, max(time_ms) AS time_ms
              FROM legacy_audit_events GROUP BY session_id) AS e
        LEFT JOIN legacy_audit_sessions AS s ON s.session_id = e.session_id;
    CREATE TABLE audit_segments (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        first_ms INTEGER NOT NULL,
        last_ms  INTEGER NOT NULL,
        events   INTEGER NOT NULL,
        data     BLOB NOT NULL
    );
    CREATE INDEX audit_segments_by_last ON audit_segments (last_ms);
    CREATE TABLE audit_segment_sessions (
        session_key INTEGER NOT NULL,
        segment_id  INTEGER NOT NULL REFERENCES audit_segments (id) ON DELETE CASCADE,
        PRIMARY KEY (session_key, segment_id)
    ) WITHOUT ROWID;
    CREATE INDEX audit_segment_sessions_by_segment ON audit_segment_sessions (segment_id);
    "#,
    // 10: WASM components of Plugin resources, by the sha256 of their bytes.
    r#"
    CREATE TABLE plugin_components (
        sha256     TEXT PRIMARY KEY,
        bytes      BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    "#,
    // 11: what the gateway last made of each Plugin (loaded, error, unhealthy).
    r#"
    CREATE TABLE plugin_status (
        namespace  TEXT NOT NULL,
        name       TEXT NOT NULL,
        state      TEXT NOT NULL,
        message    TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    "#,
    // 12: what plugins wrote through `log` (and stdout/stderr), newest kept.
    r#"
    CREATE TABLE plugin_logs (
        id        INTEGER PRIMARY KEY,
        namespace TEXT NOT NULL,
        name      TEXT NOT NULL,
        level     TEXT NOT NULL,
        at        INTEGER NOT NULL,
        message   TEXT NOT NULL
    );
    CREATE INDEX plugin_logs_by_plugin ON plugin_logs (namespace, name, id);
    "#,
    // 13: a counter per kind that every change to a resource of that kind moves, whichever
    // process and write path made it, so `serve` knows what to redo (reconcile, rotate).
    // Marking a resource as applied (`apply` finding it unchanged) is not a change.
    r#"
    CREATE TABLE kind_epochs (kind TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
    CREATE TRIGGER kind_epochs_on_insert AFTER INSERT ON resources BEGIN
        INSERT OR IGNORE INTO kind_epochs VALUES (NEW.kind, 0);
        UPDATE kind_epochs SET epoch = epoch + 1 WHERE kind = NEW.kind;
    END;
    CREATE TRIGGER kind_epochs_on_update AFTER UPDATE OF metadata, spec ON resources BEGIN
        INSERT OR IGNORE INTO kind_epochs VALUES (NEW.kind, 0);
        UPDATE kind_epochs SET epoch = epoch + 1 WHERE kind = NEW.kind;
    END;
    CREATE TRIGGER kind_epochs_on_delete AFTER DELETE ON resources BEGIN
        INSERT OR IGNORE INTO kind_epochs VALUES (OLD.kind, 0);
        UPDATE kind_epochs SET epoch = epoch + 1 WHERE kind = OLD.kind;
    END;
    "#,
    // 14: a managed role's password before its latest rotation, kept until the upstream
    // has the new one, so logins go on while a reconcile is pending or failing.
    r#"
    ALTER TABLE managed_roles ADD COLUMN previous_nonce BLOB;
    ALTER TABLE managed_roles ADD COLUMN previous_ciphertext BLOB;
    "#,
];

/// PostgreSQL's schema, versioned on its own: version 1 is SQLite's schema at its
/// version 14 (without the tables older versions kept the access log in), plus the
/// gateways sharing it (`gateways`: who is alive, by heartbeat) and a counter every
/// change to API keys and secrets moves (`credential_epoch`: what gateways cache of them
/// for logins is dropped when it moves). Text compares and sorts by bytes (`COLLATE "C"`),
/// as SQLite's does, whatever the database's collation. Integers are
/// `bigint` and bytes `bytea`, so both backends hand the store the same values; the
/// triggers do what SQLite's do.
const POSTGRES_MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE meta (
        key   TEXT COLLATE "C" PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE resources (
        kind       TEXT COLLATE "C" NOT NULL,
        namespace  TEXT COLLATE "C" NOT NULL,
        name       TEXT COLLATE "C" NOT NULL,
        metadata   TEXT COLLATE "C" NOT NULL,
        spec       TEXT COLLATE "C" NOT NULL,
        generation BIGINT NOT NULL,
        applied    BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (kind, namespace, name)
    );
    CREATE TABLE secrets (
        namespace  TEXT COLLATE "C" NOT NULL,
        name       TEXT COLLATE "C" NOT NULL,
        nonce      BYTEA NOT NULL,
        ciphertext BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE api_keys (
        id         TEXT COLLATE "C" PRIMARY KEY,
        namespace  TEXT COLLATE "C" NOT NULL,
        identity   TEXT COLLATE "C" NOT NULL,
        verifier   TEXT COLLATE "C" NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX api_keys_by_identity ON api_keys (namespace, identity);
    CREATE TABLE managed_roles (
        target_namespace    TEXT COLLATE "C" NOT NULL,
        target_name         TEXT COLLATE "C" NOT NULL,
        identity_namespace  TEXT COLLATE "C" NOT NULL,
        identity_name       TEXT COLLATE "C" NOT NULL,
        role_name           TEXT COLLATE "C" NOT NULL,
        nonce               BYTEA NOT NULL,
        ciphertext          BYTEA NOT NULL,
        password_version    BIGINT NOT NULL,
        applied_version     BIGINT NOT NULL,
        created_at          BIGINT NOT NULL,
        updated_at          BIGINT NOT NULL,
        previous_nonce      BYTEA,
        previous_ciphertext BYTEA,
        PRIMARY KEY (target_namespace, target_name, identity_namespace, identity_name),
        UNIQUE (target_namespace, target_name, role_name)
    );
    CREATE TABLE intents_status (
        namespace  TEXT COLLATE "C" NOT NULL,
        name       TEXT COLLATE "C" NOT NULL,
        state      TEXT COLLATE "C" NOT NULL,
        message    TEXT COLLATE "C" NOT NULL,
        statement  TEXT COLLATE "C",
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE leases (
        id              TEXT COLLATE "C" PRIMARY KEY,
        namespace       TEXT COLLATE "C" NOT NULL,
        credential_role TEXT COLLATE "C" NOT NULL,
        target_name     TEXT COLLATE "C" NOT NULL,
        username        TEXT COLLATE "C" NOT NULL,
        issued_for      TEXT COLLATE "C" NOT NULL,
        spec            TEXT COLLATE "C" NOT NULL,
        state           TEXT COLLATE "C" NOT NULL,
        owner           TEXT COLLATE "C" NOT NULL,
        issued_at       BIGINT NOT NULL,
        expires_at      BIGINT NOT NULL,
        max_expires_at  BIGINT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL DEFAULT 0,
        last_error      TEXT COLLATE "C",
        updated_at      BIGINT NOT NULL
    );
    CREATE INDEX leases_by_state ON leases (state, expires_at);
    CREATE INDEX leases_by_role ON leases (namespace, credential_role);
    CREATE TABLE static_roles (
        namespace          TEXT COLLATE "C" NOT NULL,
        name               TEXT COLLATE "C" NOT NULL,
        username           TEXT COLLATE "C" NOT NULL,
        nonce              BYTEA,
        ciphertext         BYTEA,
        pending_nonce      BYTEA,
        pending_ciphertext BYTEA,
        rotated_at         BIGINT NOT NULL DEFAULT 0,
        last_error         TEXT COLLATE "C",
        updated_at         BIGINT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE identity_clients (
        client_id   TEXT COLLATE "C" PRIMARY KEY,
        namespace   TEXT COLLATE "C" NOT NULL,
        identity    TEXT COLLATE "C" NOT NULL,
        secret_hash TEXT COLLATE "C" NOT NULL,
        created_at  BIGINT NOT NULL
    );
    CREATE INDEX identity_clients_by_identity ON identity_clients (namespace, identity);
    CREATE TABLE signing_keys (
        kid        TEXT COLLATE "C" PRIMARY KEY,
        nonce      BYTEA NOT NULL,
        sealed     BYTEA NOT NULL,
        public_key BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT
    );
    CREATE TABLE access_tokens (
        jti        TEXT COLLATE "C" PRIMARY KEY,
        namespace  TEXT COLLATE "C" NOT NULL,
        identity   TEXT COLLATE "C" NOT NULL,
        issued_at  BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_at);
    CREATE TABLE admin_tokens (
        token_hash TEXT COLLATE "C" PRIMARY KEY,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE audit_sessions (
        key        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        session_id TEXT COLLATE "C" NOT NULL UNIQUE,
        identity   TEXT COLLATE "C" NOT NULL,
        namespace  TEXT COLLATE "C" NOT NULL,
        service    TEXT COLLATE "C" NOT NULL,
        json       TEXT COLLATE "C" NOT NULL,
        last_ms    BIGINT NOT NULL
    );
    CREATE TABLE audit_segments (
        id       BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        first_ms BIGINT NOT NULL,
        last_ms  BIGINT NOT NULL,
        events   BIGINT NOT NULL,
        data     BYTEA NOT NULL
    );
    CREATE INDEX audit_segments_by_last ON audit_segments (last_ms);
    CREATE TABLE audit_segment_sessions (
        session_key BIGINT NOT NULL,
        segment_id  BIGINT NOT NULL REFERENCES audit_segments (id) ON DELETE CASCADE,
        PRIMARY KEY (session_key, segment_id)
    );
    CREATE INDEX audit_segment_sessions_by_segment ON audit_segment_sessions (segment_id);
    CREATE TABLE plugin_components (
        sha256     TEXT COLLATE "C" PRIMARY KEY,
        bytes      BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE plugin_status (
        namespace  TEXT COLLATE "C" NOT NULL,
        name       TEXT COLLATE "C" NOT NULL,
        state      TEXT COLLATE "C" NOT NULL,
        message    TEXT COLLATE "C" NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE plugin_logs (
        id        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        namespace TEXT COLLATE "C" NOT NULL,
        name      TEXT COLLATE "C" NOT NULL,
        level     TEXT COLLATE "C" NOT NULL,
        at        BIGINT NOT NULL,
        message   TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX plugin_logs_by_plugin ON plugin_logs (namespace, name, id);
    CREATE TABLE gateways (
        id           TEXT COLLATE "C" PRIMARY KEY,
        host         TEXT COLLATE "C" NOT NULL,
        pid          BIGINT NOT NULL,
        started_at   BIGINT NOT NULL,
        heartbeat_at BIGINT NOT NULL
    );
    CREATE TABLE resource_epoch (epoch BIGINT NOT NULL);
    INSERT INTO resource_epoch VALUES (0);
    CREATE TABLE credential_epoch (epoch BIGINT NOT NULL);
    INSERT INTO credential_epoch VALUES (0);
    CREATE FUNCTION postern_credentials_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE credential_epoch SET epoch = epoch + 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION postern_credentials_changed();
    CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OR DELETE ON secrets
        FOR EACH STATEMENT EXECUTE FUNCTION postern_credentials_changed();
    CREATE TABLE kind_epochs (kind TEXT COLLATE "C" PRIMARY KEY, epoch BIGINT NOT NULL);
    CREATE FUNCTION postern_resources_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE resource_epoch SET epoch = epoch + 1;
        IF TG_OP = 'INSERT' OR TG_OP = 'DELETE'
           OR NEW.metadata IS DISTINCT FROM OLD.metadata OR NEW.spec IS DISTINCT FROM OLD.spec THEN
            INSERT INTO kind_epochs VALUES (CASE WHEN TG_OP = 'DELETE' THEN OLD.kind ELSE NEW.kind END, 1)
                ON CONFLICT (kind) DO UPDATE SET epoch = kind_epochs.epoch + 1;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER resources_changed_on_insert AFTER INSERT ON resources
        FOR EACH ROW EXECUTE FUNCTION postern_resources_changed();
    CREATE TRIGGER resources_changed_on_delete AFTER DELETE ON resources
        FOR EACH ROW EXECUTE FUNCTION postern_resources_changed();
    CREATE TRIGGER resources_changed_on_update AFTER UPDATE ON resources
        FOR EACH ROW EXECUTE FUNCTION postern_resources_changed();
    INSERT INTO resources VALUES
        ('Namespace', '', 'default', '{"name":"default"}', '{}', 1, 0,
         extract(epoch FROM now())::bigint, extract(epoch FROM now())::bigint);
    "#];

/// Brings a PostgreSQL state's schema up to date, inside the caller's transaction;
/// returns the version reached.
pub(crate) fn migrate_postgres(db: &Db<'_>) -> Result<usize, StateError> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )",
    )?;
    let current: i64 = db.query_value(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations",
        args![],
    )?;
    let current = usize::try_from(current)
        .map_err(|_| StateError::Corrupt(format!("schema version {current}")))?;
    if current > POSTGRES_MIGRATIONS.len() {
        return Err(StateError::NewerSchema {
            found: current,
            known: POSTGRES_MIGRATIONS.len(),
        });
    }
    for (index, sql) in POSTGRES_MIGRATIONS.iter().enumerate().skip(current) {
        db.execute_batch(sql)?;
        db.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            args![index + 1, crate::store::now()],
        )?;
    }
    Ok(POSTGRES_MIGRATIONS.len())
}

/// The schema version this build brings a database to.
pub(crate) fn known_version() -> usize {
    MIGRATIONS.len()
}

/// Brings the schema up to date; returns the version reached.
pub(crate) fn migrate(conn: &mut Connection) -> Result<usize, StateError> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Brings the schema up to `version` (tests build older databases with it).
pub(crate) fn migrate_to(conn: &mut Connection, version: usize) -> Result<usize, StateError> {
    // All pending migrations in one transaction, which holds the write lock from its start
    // (IMMEDIATE): two processes opening the database at once (a CLI during an upgrade)
    // read the version in turn, so the second finds the work done. An upgrade that fails
    // half-way leaves the database as the previous version left it, which that version
    // still runs on.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    let current = usize::try_from(current)
        .map_err(|_| StateError::Corrupt(format!("schema version {current}")))?;
    if current > MIGRATIONS.len() {
        return Err(StateError::NewerSchema {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().take(version).skip(current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, unixepoch())",
            [i64::try_from(index + 1).unwrap_or(i64::MAX)],
        )?;
    }
    tx.commit()?;
    Ok(version.max(current))
}
