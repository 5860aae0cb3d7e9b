//! The credential issuer's records: leases (one per issued upstream role, written before
//! the role exists) and the sealed passwords of static roles. No password of a lease is
//! ever stored: it is shown once, or handed to the session that uses it.

use std::fmt;
use std::str::FromStr;

use crate::db::{args, Row, Value};
use postern_model::{QualifiedName, SecretValue};

use crate::store::{now, Store};
use crate::StateError;

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Recorded; its role may or may not exist upstream yet.
    Creating,
    Active,
    /// Revocation started or failed and is retried; `last_error` says why.
    Revoking,
    Revoked,
    /// Creation failed or was interrupted and its rollback ran.
    RolledBack,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Creating => "creating",
            LeaseState::Active => "active",
            LeaseState::Revoking => "revoking",
            LeaseState::Revoked => "revoked",
            LeaseState::RolledBack => "rolled-back",
        }
    }

    /// Its role is gone for good.
    pub fn is_ended(self) -> bool {
        matches!(self, LeaseState::Revoked | LeaseState::RolledBack)
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeaseState {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, StateError> {
        Ok(match s {
            "creating" => LeaseState::Creating,
            "active" => LeaseState::Active,
            "revoking" => LeaseState::Revoking,
            "revoked" => LeaseState::Revoked,
            "rolled-back" => LeaseState::RolledBack,
            other => return Err(StateError::Corrupt(format!("lease state {other:?}"))),
        })
    }
}

/// One lease as stored.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `<namespace>/<credential-role>/<random>`
    pub id: String,
    pub credential_role: QualifiedName,
    /// The Target, in the role's namespace.
    pub target: QualifiedName,
    pub username: String,
    /// Who asked: `cli`, or `session <identity>`.
    pub issued_for: String,
    /// The CredentialRole spec (JSON) the role was made with.
    pub spec: String,
    pub state: LeaseState,
    /// Run id of the process that created it.
    pub owner: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// What an issue records before it creates the role.
#[derive(Debug, Clone)]
pub struct NewLease<'a> {
    pub id: &'a str,
    pub credential_role: &'a QualifiedName,
    pub target: &'a str,
    pub username: &'a str,
    pub issued_for: &'a str,
    pub spec: &'a str,
    pub owner: &'a str,
    pub issued_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
}

const LEASE_COLUMNS: &str = "id, namespace, credential_role, target_name, username, issued_for, spec, state, owner, issued_at, expires_at, max_expires_at, attempts, next_attempt_at, last_error";

type LeaseRow = (
    (String, String, String, String, String, String, String),
    (String, String, i64, i64, i64, i64, i64, Option<String>),
);

fn lease_row(row: &Row<'_>) -> Result<LeaseRow, StateError> {
    Ok((
        (
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
        ),
        (
            row.get(7)?,
            row.get(8)?,
            row.get(9)?,
            row.get(10)?,
            row.get(11)?,
            row.get(12)?,
            row.get(13)?,
            row.get(14)?,
        ),
    ))
}

fn decode(row: LeaseRow) -> Result<Lease, StateError> {
    let (
        (id, namespace, credential_role, target, username, issued_for, spec),
        (
            state,
            owner,
            issued_at,
            expires_at,
            max_expires_at,
            attempts,
            next_attempt_at,
            last_error,
        ),
    ) = row;
    Ok(Lease {
        id,
        credential_role: QualifiedName::new(&namespace, credential_role),
        target: QualifiedName::new(namespace, target),
        username,
        issued_for,
        spec,
        state: state.parse()?,
        owner,
        issued_at,
        expires_at,
        max_expires_at,
        attempts,
        next_attempt_at,
        last_error,
    })
}

/// A static role's stored passwords.
#[derive(Debug, Clone)]
pub struct StaticRolePassword {
    pub username: String,
    /// The password the role has upstream; `None` before the first rotation.
    pub current: Option<SecretValue>,
    /// A rotation that was recorded but not yet confirmed upstream.
    pub pending: Option<SecretValue>,
    pub rotated_at: i64,
    pub last_error: Option<String>,
}

fn static_aad(role: &QualifiedName, username: &str) -> Vec<u8> {
    format!("static-role:{role}/{username}").into_bytes()
}

type StaticRow = (
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    i64,
    Option<String>,
);

impl Store {
    /// Records a lease in state `creating`, before its role is created upstream.
    pub fn record_lease(&self, lease: &NewLease<'_>) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO leases ({LEASE_COLUMNS}, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'creating', ?8, ?9, ?10, ?11, 0, 0, NULL, ?12)"
                ),
                args![
                    lease.id,
                    lease.credential_role.namespace,
                    lease.credential_role.name,
                    lease.target,
                    lease.username,
                    lease.issued_for,
                    lease.spec,
                    lease.owner,
                    lease.issued_at,
                    lease.expires_at,
                    lease.max_expires_at,
                    now()
                ],
            )?;
            Ok(())
        })
    }

    /// Moves a lease from `from` to `to`; false when it was not in `from` (another
    /// process took it over meanwhile).
    pub fn move_lease(
        &self,
        id: &str,
        from: &[LeaseState],
        to: LeaseState,
    ) -> Result<bool, StateError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let from = serde_json::to_string(&from).unwrap_or_default();
        self.write(|tx| {
            let changed = tx.execute(
                &format!(
                    "UPDATE leases SET state = ?2, updated_at = ?4
                     WHERE id = ?1 AND state IN (SELECT states.value FROM {})",
                    tx.json_elements("?3", &[], "states")
                ),
                args![id, to.as_str(), from, now()],
            )?;
            Ok(changed == 1)
        })
    }

    /// Notes a failed revocation (or rollback) attempt and when to try again.
    pub fn lease_attempt_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE leases SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3,
                     updated_at = ?4
                 WHERE id = ?1",
                args![id, error, next_attempt_at, now()],
            )?;
            Ok(())
        })
    }

    /// Sets a new expiry of an active lease.
    pub fn renew_lease(&self, id: &str, expires_at: i64) -> Result<(), StateError> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE leases SET expires_at = ?2, updated_at = ?3
                 WHERE id = ?1 AND state = 'active'",
                args![id, expires_at, now()],
            )?;
            if changed == 0 {
                return Err(StateError::Conflict(format!("lease {id} is not active")));
            }
            Ok(())
        })
    }

    /// Removes the record of a lease whose role never came to exist.
    pub fn forget_lease(&self, id: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute("DELETE FROM leases WHERE id = ?1", args![id])?;
            Ok(())
        })
    }

    pub fn lease(&self, id: &str) -> Result<Option<Lease>, StateError> {
        let row = self.read(|conn| {
            conn.query_opt(
                &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE id = ?1"),
                args![id],
                lease_row,
            )
        })?;
        row.map(decode).transpose()
    }

    fn query_leases(&self, filter: &str, args: &[Value<'_>]) -> Result<Vec<Lease>, StateError> {
        let rows: Vec<LeaseRow> = self.read(|conn| {
            conn.query_map(
                &format!(
                    "SELECT {LEASE_COLUMNS} FROM leases WHERE {filter} ORDER BY issued_at, id"
                ),
                args,
                lease_row,
            )
        })?;
        rows.into_iter().map(decode).collect()
    }

    /// How many leases are in each state, for metrics.
    pub fn lease_counts(&self) -> Result<Vec<(String, i64)>, StateError> {
        self.read(|conn| {
            conn.query_map(
                "SELECT state, count(*) FROM leases GROUP BY state ORDER BY state",
                args![],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
        })
    }

    /// Leases in `namespace` (all when `None`); ended ones only when asked.
    pub fn list_leases(
        &self,
        namespace: Option<&str>,
        include_ended: bool,
    ) -> Result<Vec<Lease>, StateError> {
        self.query_leases(
            "(namespace = ?1 OR ?1 IS NULL)
             AND (?2 OR state NOT IN ('revoked', 'rolled-back'))",
            args![namespace, include_ended],
        )
    }

    /// Leases needing work at `at`: expired active ones, and revocations and unfinished
    /// creations due for an attempt (the issuer decides whether a creation is abandoned).
    pub fn due_leases(&self, at: i64) -> Result<Vec<Lease>, StateError> {
        self.query_leases(
            "(state = 'active' AND expires_at <= ?1)
             OR (state IN ('revoking', 'creating') AND next_attempt_at <= ?1)",
            args![at],
        )
    }

    /// Usernames of every lease of `target` whose role may still exist.
    pub fn leased_usernames(&self, target: &QualifiedName) -> Result<Vec<String>, StateError> {
        Ok(self
            .query_leases(
                "namespace = ?1 AND target_name = ?2 AND state NOT IN ('revoked', 'rolled-back')",
                args![target.namespace, target.name],
            )?
            .into_iter()
            .map(|l| l.username)
            .collect())
    }

    // ---- static roles -----------------------------------------------------------------

    pub fn static_role_password(
        &self,
        role: &QualifiedName,
    ) -> Result<Option<StaticRolePassword>, StateError> {
        let row: Option<StaticRow> = self.read(|conn| {
            conn.query_opt(
                "SELECT username, nonce, ciphertext, pending_nonce, pending_ciphertext,
                         rotated_at, last_error
                     FROM static_roles WHERE namespace = ?1 AND name = ?2",
                args![role.namespace, role.name],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                    ))
                },
            )
        })?;
        let Some((username, nonce, sealed, pending_nonce, pending_sealed, rotated_at, last_error)) =
            row
        else {
            return Ok(None);
        };
        let aad = static_aad(role, &username);
        let open =
            |nonce: Option<Vec<u8>>, sealed: Option<Vec<u8>>, what: &str| match (nonce, sealed) {
                (Some(nonce), Some(sealed)) => self
                    .unseal_text(
                        &nonce,
                        &sealed,
                        &aad,
                        &format!("{what} password of StaticRole {role}"),
                    )
                    .map(Some),
                _ => Ok(None),
            };
        Ok(Some(StaticRolePassword {
            current: open(nonce, sealed, "current")?,
            pending: open(pending_nonce, pending_sealed, "pending")?,
            username,
            rotated_at,
            last_error,
        }))
    }

    /// Records the password a rotation is about to set, before it is set upstream. A
    /// username change starts afresh (the old role's password is not ours any more).
    pub fn set_static_role_pending(
        &self,
        role: &QualifiedName,
        username: &str,
        password: &SecretValue,
    ) -> Result<(), StateError> {
        let (nonce, sealed) = self
            .key
            .seal(password.expose().as_bytes(), &static_aad(role, username))?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO static_roles (namespace, name, username, pending_nonce,
                     pending_ciphertext, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (namespace, name) DO UPDATE SET
                     nonce = CASE WHEN static_roles.username = ?3 THEN static_roles.nonce END,
                     ciphertext = CASE WHEN static_roles.username = ?3
                                       THEN static_roles.ciphertext END,
                     username = ?3, pending_nonce = ?4, pending_ciphertext = ?5, updated_at = ?6",
                args![role.namespace, role.name, username, nonce, sealed, now()],
            )?;
            Ok(())
        })
    }

    /// The pending password is now the role's password upstream.
    pub fn confirm_static_role_rotation(&self, role: &QualifiedName) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE static_roles SET nonce = pending_nonce, ciphertext = pending_ciphertext,
                     pending_nonce = NULL, pending_ciphertext = NULL, rotated_at = ?3,
                     last_error = NULL, updated_at = ?3
                 WHERE namespace = ?1 AND name = ?2 AND pending_nonce IS NOT NULL",
                args![role.namespace, role.name, now()],
            )?;
            Ok(())
        })
    }

    pub fn static_role_failed(&self, role: &QualifiedName, error: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE static_roles SET last_error = ?3, updated_at = ?4
                 WHERE namespace = ?1 AND name = ?2",
                args![role.namespace, role.name, error, now()],
            )?;
            Ok(())
        })
    }
}
