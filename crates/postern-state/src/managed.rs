//! Upstream roles the reconciler manages (one per target and identity, password sealed
//! here) and the last reconcile outcome of each Intents resource.

use crate::db::{args, Row};
use postern_model::{managed_role_name, QualifiedName, SecretValue};

use crate::store::{now, random_token, Store};
use crate::StateError;

/// A managed upstream role and its current password.
#[derive(Debug, Clone)]
pub struct ManagedRole {
    pub target: QualifiedName,
    pub identity: QualifiedName,
    pub role: String,
    pub password: SecretValue,
    /// The password before the latest rotation while that rotation is not applied
    /// upstream (what the upstream most likely still has).
    pub previous_password: Option<SecretValue>,
    /// Bumped by every rotation; the role's password upstream is current when
    /// `applied_version` caught up with it.
    pub password_version: i64,
    pub applied_version: i64,
}

impl ManagedRole {
    pub fn password_applied(&self) -> bool {
        self.applied_version >= self.password_version
    }
}

/// The reconcile outcome of an Intents resource, shown by `postern get intents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentsStatus {
    /// `applied`, `pending` or `error`.
    pub state: String,
    pub message: String,
    /// The statement that failed, for `error`.
    pub statement: Option<String>,
    pub updated_at: i64,
}

fn role_aad(target: &QualifiedName, role: &str) -> Vec<u8> {
    format!("managed-role:{target}/{role}").into_bytes()
}

fn new_password() -> SecretValue {
    SecretValue::new(random_token(24))
}

type RoleRow = (
    String,
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    i64,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

impl Store {
    fn unseal_role(&self, target: &QualifiedName, row: RoleRow) -> Result<ManagedRole, StateError> {
        let (
            identity_namespace,
            identity_name,
            role,
            nonce,
            sealed,
            password_version,
            applied_version,
            previous_nonce,
            previous_sealed,
        ) = row;
        let aad = role_aad(target, &role);
        let password = self.unseal_text(
            &nonce,
            &sealed,
            &aad,
            &format!("password of managed role {role}"),
        )?;
        let previous_password = match (previous_nonce, previous_sealed) {
            (Some(nonce), Some(sealed)) if applied_version < password_version => {
                Some(self.unseal_text(
                    &nonce,
                    &sealed,
                    &aad,
                    &format!("previous password of managed role {role}"),
                )?)
            }
            _ => None,
        };
        Ok(ManagedRole {
            target: target.clone(),
            identity: QualifiedName::new(identity_namespace, identity_name),
            role,
            password,
            previous_password,
            password_version,
            applied_version,
        })
    }

    const ROLE_COLUMNS: &'static str = "identity_namespace, identity_name, role_name, nonce, ciphertext, password_version, applied_version, previous_nonce, previous_ciphertext";

    fn role_row(row: &Row<'_>) -> Result<RoleRow, StateError> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
        ))
    }

    /// Every role managed on `target`.
    pub fn managed_roles(&self, target: &QualifiedName) -> Result<Vec<ManagedRole>, StateError> {
        let rows: Vec<RoleRow> = self.read(|conn| {
            let rows = conn.query_map(
                &format!(
                    "SELECT {} FROM managed_roles WHERE target_namespace = ?1 AND target_name = ?2
                 ORDER BY role_name",
                    Self::ROLE_COLUMNS
                ),
                args![target.namespace, target.name],
                Self::role_row,
            )?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|row| self.unseal_role(target, row))
            .collect()
    }

    /// The role managed for `identity` on `target`, if one is recorded.
    pub fn managed_role(
        &self,
        target: &QualifiedName,
        identity: &QualifiedName,
    ) -> Result<Option<ManagedRole>, StateError> {
        let row: Option<RoleRow> = self.read(|conn| {
            conn.query_opt(
                &format!(
                    "SELECT {} FROM managed_roles WHERE target_namespace = ?1
                         AND target_name = ?2 AND identity_namespace = ?3 AND identity_name = ?4",
                    Self::ROLE_COLUMNS
                ),
                args![
                    target.namespace,
                    target.name,
                    identity.namespace,
                    identity.name
                ],
                Self::role_row,
            )
        })?;
        row.map(|row| self.unseal_role(target, row)).transpose()
    }

    /// Records the role for `identity` on `target` with a fresh password, before it is
    /// created upstream; returns the existing record if there is one.
    pub fn record_managed_role(
        &self,
        target: &QualifiedName,
        identity: &QualifiedName,
    ) -> Result<ManagedRole, StateError> {
        let role = managed_role_name(&identity.namespace, &identity.name);
        let (nonce, sealed) = self
            .key
            .seal(new_password().expose().as_bytes(), &role_aad(target, &role))?;
        let now = now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO managed_roles (target_namespace, target_name,
                     identity_namespace, identity_name, role_name, nonce, ciphertext,
                     password_version, applied_version, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, 0, ?8, ?8)
                 ON CONFLICT DO NOTHING",
                args![
                    target.namespace,
                    target.name,
                    identity.namespace,
                    identity.name,
                    role,
                    nonce,
                    sealed,
                    now
                ],
            )?;
            Ok(())
        })?;
        self.managed_role(target, identity)?.ok_or_else(|| {
            StateError::Conflict(format!(
                "role name {role} on Target {target} is already managed for another identity"
            ))
        })
    }

    /// Notes that the upstream role now has password `version`.
    pub fn mark_password_applied(
        &self,
        target: &QualifiedName,
        identity: &QualifiedName,
        version: i64,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                &format!(
                    "UPDATE managed_roles SET applied_version = {}(applied_version, ?5), updated_at = ?6,
                         previous_nonce = CASE WHEN ?5 >= password_version THEN NULL ELSE previous_nonce END,
                         previous_ciphertext = CASE WHEN ?5 >= password_version THEN NULL ELSE previous_ciphertext END
                     WHERE target_namespace = ?1 AND target_name = ?2
                       AND identity_namespace = ?3 AND identity_name = ?4",
                    tx.greatest()
                ),
                args![target.namespace, target.name, identity.namespace, identity.name, version, now()],
            )?;
            Ok(())
        })
    }

    /// Gives every managed role of `identity` a new password, which the next reconcile
    /// sets upstream; returns how many roles it touched.
    pub fn rotate_managed_passwords(&self, identity: &QualifiedName) -> Result<usize, StateError> {
        let now = now();
        // One transaction: every role of the identity rotates, or none does.
        self.write(|tx| {
            let roles: Vec<(String, String, String)> = tx.query_map(
                "SELECT target_namespace, target_name, role_name FROM managed_roles
                     WHERE identity_namespace = ?1 AND identity_name = ?2",
                args![identity.namespace, identity.name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
            for (target_namespace, target_name, role) in &roles {
                let target = QualifiedName::new(target_namespace, target_name);
                let (nonce, sealed) = self
                    .key
                    .seal(new_password().expose().as_bytes(), &role_aad(&target, role))?;
                tx.execute(
                    // The applied password becomes the previous one; while a
                    // rotation is still pending, the previous one stays what it was.
                    "UPDATE managed_roles SET
                         previous_nonce = CASE WHEN applied_version >= password_version
                             THEN nonce ELSE previous_nonce END,
                         previous_ciphertext = CASE WHEN applied_version >= password_version
                             THEN ciphertext ELSE previous_ciphertext END,
                         nonce = ?4, ciphertext = ?5,
                         password_version = password_version + 1, updated_at = ?6
                     WHERE target_namespace = ?1 AND target_name = ?2 AND role_name = ?3",
                    args![target_namespace, target_name, role, nonce, sealed, now],
                )?;
            }
            Ok(roles.len())
        })
    }

    /// Forgets a role after it was dropped upstream.
    pub fn forget_managed_role(
        &self,
        target: &QualifiedName,
        identity: &QualifiedName,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM managed_roles WHERE target_namespace = ?1 AND target_name = ?2
                 AND identity_namespace = ?3 AND identity_name = ?4",
                args![
                    target.namespace,
                    target.name,
                    identity.namespace,
                    identity.name
                ],
            )?;
            Ok(())
        })
    }

    pub fn set_intents_status(
        &self,
        intents: &QualifiedName,
        state: &str,
        message: &str,
        statement: Option<&str>,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO intents_status VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (namespace, name) DO UPDATE SET state = ?3, message = ?4,
                     statement = ?5, updated_at = ?6",
                args![
                    intents.namespace,
                    intents.name,
                    state,
                    message,
                    statement,
                    now()
                ],
            )?;
            Ok(())
        })
    }

    /// Notes what the gateway made of a Plugin: `loaded`, `error` or `unhealthy`.
    pub fn set_plugin_status(
        &self,
        namespace: &str,
        name: &str,
        state: &str,
        message: &str,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO plugin_status VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (namespace, name) DO UPDATE SET state = ?3, message = ?4,
                     updated_at = ?5",
                args![namespace, name, state, message, now()],
            )?;
            Ok(())
        })
    }

    /// Records lines plugins logged, keeping the newest [`PLUGIN_LOG_LINES_KEPT`] of
    /// each plugin.
    pub fn append_plugin_logs(&self, lines: &[PluginLogLine]) -> Result<(), StateError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.write_log(|tx| {
            let mut touched = std::collections::BTreeSet::new();
            for line in lines {
                tx.execute(
                    "INSERT INTO plugin_logs (namespace, name, level, at, message)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    args![line.namespace, line.name, line.level, line.at, line.message],
                )?;
                touched.insert((line.namespace.as_str(), line.name.as_str()));
            }
            for (namespace, name) in touched {
                tx.execute(
                    "DELETE FROM plugin_logs WHERE namespace = ?1 AND name = ?2 AND id <= (
                         SELECT id FROM plugin_logs WHERE namespace = ?1 AND name = ?2
                         ORDER BY id DESC LIMIT 1 OFFSET ?3)",
                    args![namespace, name, PLUGIN_LOG_LINES_KEPT],
                )?;
            }
            Ok(())
        })
    }

    /// A plugin's last `count` logged lines, oldest first.
    pub fn plugin_logs_tail(
        &self,
        plugin: &QualifiedName,
        count: usize,
    ) -> Result<Vec<(i64, PluginLogLine)>, StateError> {
        // The id just before the last `count` lines (0: fewer lines than that).
        let before: i64 = self.read(|conn| {
            Ok(conn
                .query_opt(
                    "SELECT id FROM plugin_logs WHERE namespace = ?1 AND name = ?2
                     ORDER BY id DESC LIMIT 1 OFFSET ?3",
                    args![
                        plugin.namespace,
                        plugin.name,
                        i64::try_from(count).unwrap_or(i64::MAX)
                    ],
                    |row| row.get(0),
                )?
                .unwrap_or(0))
        })?;
        self.plugin_logs(plugin, before, count)
    }

    /// A plugin's logged lines after `after` (an id), oldest first, at most `limit`.
    pub fn plugin_logs(
        &self,
        plugin: &QualifiedName,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, PluginLogLine)>, StateError> {
        self.read(|conn| {
            conn.query_map(
                "SELECT id, level, at, message FROM plugin_logs
                 WHERE namespace = ?1 AND name = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                args![
                    plugin.namespace,
                    plugin.name,
                    after,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok((
                        row.get::<i64>(0)?,
                        PluginLogLine {
                            namespace: plugin.namespace.clone(),
                            name: plugin.name.clone(),
                            level: row.get(1)?,
                            at: row.get(2)?,
                            message: row.get(3)?,
                        },
                    ))
                },
            )
        })
    }

    /// What the gateway last made of a Plugin (as an [`IntentsStatus`] without a
    /// statement).
    pub fn plugin_status(
        &self,
        plugin: &QualifiedName,
    ) -> Result<Option<IntentsStatus>, StateError> {
        self.read(|conn| {
            conn.query_opt(
                "SELECT state, message, updated_at FROM plugin_status
                     WHERE namespace = ?1 AND name = ?2",
                args![plugin.namespace, plugin.name],
                |row| {
                    Ok(IntentsStatus {
                        state: row.get(0)?,
                        message: row.get(1)?,
                        statement: None,
                        updated_at: row.get(2)?,
                    })
                },
            )
        })
    }

    pub fn intents_status(
        &self,
        intents: &QualifiedName,
    ) -> Result<Option<IntentsStatus>, StateError> {
        self.read(|conn| {
            conn.query_opt(
                "SELECT state, message, statement, updated_at FROM intents_status
                     WHERE namespace = ?1 AND name = ?2",
                args![intents.namespace, intents.name],
                |row| {
                    Ok(IntentsStatus {
                        state: row.get(0)?,
                        message: row.get(1)?,
                        statement: row.get(2)?,
                        updated_at: row.get(3)?,
                    })
                },
            )
        })
    }
}

/// Lines kept per plugin in the state database's plugin log.
pub const PLUGIN_LOG_LINES_KEPT: i64 = 10_000;

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLogLine {
    pub namespace: String,
    pub name: String,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub message: String,
}
