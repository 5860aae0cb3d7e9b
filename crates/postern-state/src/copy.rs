//! `postern state migrate`: a site's whole state copied into a new one (SQLite into
//! PostgreSQL, for a fleet), rows as they are: sealed values stay sealed under the same
//! master key, the installation keeps its id (which names the roles it manages upstream).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use crate::db::{args, Db, Dialect, Value};
use crate::{StateError, Store};

/// Every table of the state and its columns, parents before the rows that refer to them.
/// Not copied: the schema's own bookkeeping, the change counters (the copy moves the
/// target's), and `gateways` (who is alive is not a site's state).
const TABLES: &[(&str, &[&str])] = &[
    ("meta", &["key", "value"]),
    (
        "resources",
        &[
            "kind",
            "namespace",
            "name",
            "metadata",
            "spec",
            "generation",
            "applied",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "secrets",
        &[
            "namespace",
            "name",
            "nonce",
            "ciphertext",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "api_keys",
        &["id", "namespace", "identity", "verifier", "created_at"],
    ),
    (
        "managed_roles",
        &[
            "target_namespace",
            "target_name",
            "identity_namespace",
            "identity_name",
            "role_name",
            "nonce",
            "ciphertext",
            "password_version",
            "applied_version",
            "created_at",
            "updated_at",
            "previous_nonce",
            "previous_ciphertext",
        ],
    ),
    (
        "intents_status",
        &[
            "namespace",
            "name",
            "state",
            "message",
            "statement",
            "updated_at",
        ],
    ),
    (
        "leases",
        &[
            "id",
            "namespace",
            "credential_role",
            "target_name",
            "username",
            "issued_for",
            "spec",
            "state",
            "owner",
            "issued_at",
            "expires_at",
            "max_expires_at",
            "attempts",
            "next_attempt_at",
            "last_error",
            "updated_at",
        ],
    ),
    (
        "static_roles",
        &[
            "namespace",
            "name",
            "username",
            "nonce",
            "ciphertext",
            "pending_nonce",
            "pending_ciphertext",
            "rotated_at",
            "last_error",
            "updated_at",
        ],
    ),
    (
        "identity_clients",
        &[
            "client_id",
            "namespace",
            "identity",
            "secret_hash",
            "created_at",
        ],
    ),
    (
        "signing_keys",
        &[
            "kid",
            "nonce",
            "sealed",
            "public_key",
            "created_at",
            "retired_at",
        ],
    ),
    (
        "access_tokens",
        &[
            "jti",
            "namespace",
            "identity",
            "issued_at",
            "expires_at",
            "revoked_at",
        ],
    ),
    ("admin_tokens", &["token_hash", "created_at"]),
    (
        "audit_sessions",
        &[
            "key",
            "session_id",
            "identity",
            "namespace",
            "service",
            "json",
            "last_ms",
        ],
    ),
    (
        "audit_segments",
        &["id", "first_ms", "last_ms", "events", "data"],
    ),
    ("audit_segment_sessions", &["session_key", "segment_id"]),
    ("plugin_components", &["sha256", "bytes", "created_at"]),
    (
        "plugin_status",
        &["namespace", "name", "state", "message", "updated_at"],
    ),
    (
        "plugin_logs",
        &["id", "namespace", "name", "level", "at", "message"],
    ),
];

/// Identity columns whose next value must follow the copied ids (PostgreSQL).
const GENERATED_IDS: &[(&str, &str)] = &[
    ("audit_sessions", "key"),
    ("audit_segments", "id"),
    ("plugin_logs", "id"),
];

/// Rows copied, by table.
pub type CopyReport = BTreeMap<&'static str, usize>;

impl Store {
    /// Copies this store's state into `target`, which must be new (nothing but its
    /// default namespace) and opened with the same master key: one transaction on the
    /// target, so it gets everything or nothing. The source should not change meanwhile
    /// (stop its gateway first): its leases' owners are then gone, and the target's
    /// leader cleans up what they left.
    pub fn copy_into(&self, target: &Store) -> Result<CopyReport, StateError> {
        // A PostgreSQL source would stream its rows while the target's statements run
        // inside that read, which its connection cannot do.
        if self.is_shared() {
            return Err(StateError::Conflict(
                "the state to copy from must be a SQLite one (a single gateway's)".into(),
            ));
        }
        self.read(|source| {
            target.write(|into| {
                refuse_unless_new(into)?;
                // The target's own values give way to the site's (its key check stays:
                // the same key sealed it).
                into.execute("DELETE FROM resources", args![])?;
                into.execute("DELETE FROM meta WHERE key <> 'key_check'", args![])?;
                let mut report = CopyReport::new();
                for (table, columns) in TABLES {
                    let list = columns.join(", ");
                    let placeholders: Vec<String> =
                        (1..=columns.len()).map(|n| format!("?{n}")).collect();
                    let select = match *table {
                        "meta" => format!("SELECT {list} FROM meta WHERE key <> 'key_check'"),
                        _ => format!("SELECT {list} FROM {table}"),
                    };
                    let insert = format!(
                        "INSERT INTO {table} ({list}) VALUES ({})",
                        placeholders.join(", ")
                    );
                    let mut copied = 0;
                    source.query_each(&select, args![], |row| {
                        let values = (0..columns.len())
                            .map(|index| row.value(index))
                            .collect::<Result<Vec<Value<'_>>, _>>()?;
                        into.execute(&insert, &values)?;
                        copied += 1;
                        Ok(ControlFlow::Continue(()))
                    })?;
                    report.insert(table, copied);
                }
                if into.dialect() == Dialect::Postgres {
                    for (table, column) in GENERATED_IDS {
                        into.execute_batch(&format!(
                            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                                           COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
                        ))?;
                    }
                }
                Ok(report)
            })
        })
    }
}

/// Refuses a target that already holds a site's state.
fn refuse_unless_new(into: &Db<'_>) -> Result<(), StateError> {
    // A gateway started on the target already made a bootstrap token and a signing key:
    // those count too (merged, they would outlive the site's own).
    let held: i64 = into.query_value(
        "SELECT (SELECT count(*) FROM resources
                 WHERE NOT (kind = 'Namespace' AND namespace = '' AND name = 'default'))
              + (SELECT count(*) FROM secrets) + (SELECT count(*) FROM api_keys)
              + (SELECT count(*) FROM identity_clients) + (SELECT count(*) FROM signing_keys)
              + (SELECT count(*) FROM access_tokens) + (SELECT count(*) FROM admin_tokens)
              + (SELECT count(*) FROM managed_roles) + (SELECT count(*) FROM static_roles)
              + (SELECT count(*) FROM leases) + (SELECT count(*) FROM plugin_components)
              + (SELECT count(*) FROM audit_segments)",
        args![],
    )?;
    if held > 0 {
        return Err(StateError::Conflict(format!(
            "the target state already holds {held} rows of a site (resources, secrets, keys, tokens, roles, leases, components or log segments); migrate into a new, empty database before any gateway starts on it"
        )));
    }
    Ok(())
}
