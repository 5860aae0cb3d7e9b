//! Issue, renew and revoke leases, and the reaper that revokes them at expiry, retries
//! failed revocations with backoff and rolls back creations a dead process left behind.

use std::time::Duration;

use postern_model::{
    format_duration, CredentialRoleSpec, Kind, QualifiedName, SecretValue, Spec, StatementList,
    Template, STATEMENT_PLACEHOLDERS,
};
use postern_reconciler::verifier_for;
use postern_state::{Lease, LeaseState, NewLease, Store};
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::admin::TargetAccess;
use crate::render::{self, StatementValues, UsernameInput};
use crate::{now, random_hex, secs, Issuer, IssuerError};

/// A creation still `creating` after this long is abandoned, whoever owns it.
const CREATION_LIMIT: i64 = 120;
/// Longest wait between revocation attempts.
const MAX_BACKOFF: i64 = 60;

/// A new credential. The password exists only here: it is not stored anywhere.
#[derive(Debug, Clone)]
pub struct Issued {
    pub lease_id: String,
    pub username: String,
    pub password: SecretValue,
    pub issued_at: i64,
    pub expires_at: i64,
    /// `host:port` and database to log in to.
    pub address: String,
    pub database: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    pub expires_at: i64,
    /// The increment asked for went past the lease's maxTtl and was cut to it.
    pub capped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The role was revoked (or rolled back) just now.
    Done,
    /// The role was already gone upstream; the lease is closed all the same.
    AlreadyGone,
    /// The lease had ended before.
    AlreadyEnded,
}

/// What one reaper pass did.
#[derive(Debug, Default, Clone)]
pub struct ReapReport {
    pub ended: usize,
    pub failed: usize,
}

fn parse_templates(
    role: &QualifiedName,
    spec: &CredentialRoleSpec,
    list: StatementList,
) -> Result<Vec<Template>, IssuerError> {
    spec.templates(list)
        .map_err(|e| IssuerError::Config(format!("CredentialRole {role}: {e}")))
}

/// Makes the issuer's transactions on one target take turns: concurrent GRANTs or DROP
/// OWNEDs on one object fail in PostgreSQL with "tuple concurrently updated" (Vault's
/// issuer trips over this under load).
const TARGET_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(1886352245, hashtext($1))";

fn lock_key(target: &QualifiedName) -> String {
    format!("postern-issuer:{target}")
}

/// Runs one statement list in a transaction, in turn with the issuer's other transactions
/// on the target; a failure names the list and index.
async fn run_statements(
    client: &mut Client,
    role: &QualifiedName,
    target: &QualifiedName,
    list: StatementList,
    templates: &[Template],
    values: &StatementValues,
) -> Result<(), IssuerError> {
    let transaction = client
        .transaction()
        .await
        .map_err(IssuerError::upstream(format!(
            "CredentialRole {role}: BEGIN"
        )))?;
    transaction
        .execute(TARGET_LOCK_SQL, &[&lock_key(target)])
        .await
        .map_err(IssuerError::upstream(format!(
            "CredentialRole {role}: taking the target's lock"
        )))?;
    for (index, template) in templates.iter().enumerate() {
        transaction
            .batch_execute(&render::statement(template, values))
            .await
            .map_err(|e| IssuerError::Statement {
                role: role.to_string(),
                list,
                index,
                reason: postern_reconciler::describe(&e),
            })?;
    }
    transaction
        .commit()
        .await
        .map_err(IssuerError::upstream(format!(
            "CredentialRole {role}: COMMIT"
        )))
}

/// How often the reaper looks for leases of sessions whose gateway is gone.
const ORPHAN_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Runs a `BEGIN; …; COMMIT` script; on failure rolls back, so a pooled connection is
/// never left inside a failed transaction.
async fn run_script(client: &Client, script: &str, what: String) -> Result<(), IssuerError> {
    let result = client.batch_execute(script).await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result.map_err(IssuerError::upstream(what))
}

fn lease_spec(lease: &Lease) -> Result<CredentialRoleSpec, IssuerError> {
    serde_json::from_str(&lease.spec).map_err(|e| {
        IssuerError::Config(format!(
            "lease {} holds an unreadable CredentialRole spec: {e}",
            lease.id
        ))
    })
}

/// The CredentialRole named `role`.
fn credential_role(store: &Store, role: &QualifiedName) -> Result<CredentialRoleSpec, IssuerError> {
    match store
        .get_resource(Kind::CredentialRole, &role.namespace, &role.name)?
        .map(|s| s.resource.spec)
    {
        Some(Spec::CredentialRole(spec)) => Ok(spec),
        _ => Err(IssuerError::Request(format!(
            "CredentialRole {role} does not exist"
        ))),
    }
}

impl Issuer {
    /// Runs `work`, given the store, on tokio's blocking pool. A SQLite call may wait
    /// for the shared writer (up to its busy timeout) and PBKDF2 takes milliseconds: on
    /// the async worker either would hold up every session it relays, and a dynamic-mode
    /// session's role is issued at login and revoked at its end from there.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, IssuerError> + Send + 'static,
    ) -> Result<T, IssuerError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| IssuerError::Internal(format!("blocking task failed: {e}")))?
    }

    /// Moves lease `id` from one of `from` to `to` (see [`Store::move_lease`]), on the
    /// blocking pool.
    async fn move_lease(
        &self,
        id: &str,
        from: &'static [LeaseState],
        to: LeaseState,
    ) -> Result<bool, IssuerError> {
        let id = id.to_owned();
        self.blocking(move |store| Ok(store.move_lease(&id, from, to)?))
            .await
    }

    /// Issues a credential from `role` for `ttl` (its defaultTtl when `None`).
    /// `requester` fills `{{identity}}` of the username; `issued_for` is recorded.
    pub async fn issue(
        &self,
        role: &QualifiedName,
        ttl: Option<Duration>,
        requester: &str,
        issued_for: &str,
    ) -> Result<Issued, IssuerError> {
        let spec = {
            let role = role.clone();
            self.blocking(move |store| credential_role(store, &role))
                .await?
        };
        let ttl = ttl.unwrap_or_else(|| spec.default_ttl());
        if ttl.is_zero() {
            return Err(IssuerError::Request("the TTL must be positive".into()));
        }
        if ttl > spec.max_ttl() {
            return Err(IssuerError::Request(format!(
                "TTL {} exceeds maxTtl {} of CredentialRole {role}",
                format_duration(ttl),
                spec.max_ttl
            )));
        }
        let creation = parse_templates(role, &spec, StatementList::Creation)?;
        let target = QualifiedName::new(&role.namespace, &spec.target);
        let access = {
            let target = target.clone();
            self.blocking(move |store| TargetAccess::load(store, &target))
                .await?
        };
        // Reach the upstream before anything is recorded: an unreachable upstream leaves
        // no lease behind.
        let mut connection = self.admin.get(&access, &spec.database).await?;

        let issued_at = now();
        let expires_at = issued_at.saturating_add(secs(ttl));
        let username = render::username(
            &spec.username_template(),
            &UsernameInput {
                identity: requester,
                role: &role.name,
                namespace: &role.namespace,
                unix_time: issued_at,
            },
        );
        let password = SecretValue::new(render::password(&spec.password_policy));
        let id = format!("{}/{}/{}", role.namespace, role.name, random_hex(8));
        let spec_json = serde_json::to_string(&spec)
            .map_err(|e| IssuerError::Config(format!("CredentialRole {role}: {e}")))?;
        let verifier = {
            let (id, role, target) = (id.clone(), role.clone(), spec.target.clone());
            let (username, issued_for) = (username.clone(), issued_for.to_owned());
            let (owner, password) = (self.store.owner().to_owned(), password.clone());
            let max_expires_at = issued_at.saturating_add(secs(spec.max_ttl()));
            self.blocking(move |store| {
                store.record_lease(&NewLease {
                    id: &id,
                    credential_role: &role,
                    target: &target,
                    username: &username,
                    issued_for: &issued_for,
                    spec: &spec_json,
                    owner: &owner,
                    issued_at,
                    expires_at,
                    max_expires_at,
                })?;
                Ok(verifier_for(&password))
            })
            .await?
        };
        let values = StatementValues::new(&username, &verifier, expires_at);
        let created = run_statements(
            &mut connection.client,
            role,
            &target,
            StatementList::Creation,
            &creation,
            &values,
        )
        .await;
        if let Err(error) = created {
            // The connection may be mid-transaction or broken: it is not reused.
            drop(connection);
            self.undo_failed_creation(&id).await;
            return Err(error);
        }
        self.admin.put(connection);
        if !self
            .move_lease(&id, &[LeaseState::Creating], LeaseState::Active)
            .await?
        {
            return Err(IssuerError::Request(format!(
                "lease {id} was rolled back while it was being created"
            )));
        }
        info!(lease = %id, username = %username, expires_at, "issued a credential");
        Ok(Issued {
            lease_id: id,
            username,
            password,
            issued_at,
            expires_at,
            address: access.spec.address,
            database: spec.database,
        })
    }

    /// After a failed creation: roll back, and drop the record when nothing is left
    /// upstream; otherwise the record stays for the reaper to retry.
    async fn undo_failed_creation(&self, id: &str) {
        let lease = match self.store.lease(id) {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(error) => {
                warn!(lease = %id, error = %error, "cannot read a failed lease back");
                return;
            }
        };
        match self.end(&lease).await {
            Ok(_) => {
                if let Err(error) = self.store.forget_lease(id) {
                    warn!(lease = %id, error = %error, "cannot remove a rolled-back lease");
                }
            }
            Err(error) => {
                warn!(lease = %id, error = %error, "rollback failed; the reaper retries it")
            }
        }
    }

    /// Extends an active lease by `increment` (its role's defaultTtl when `None`), never
    /// past maxTtl from issue.
    pub async fn renew(
        &self,
        id: &str,
        increment: Option<Duration>,
    ) -> Result<Renewed, IssuerError> {
        let lease = self
            .store
            .lease(id)?
            .ok_or_else(|| IssuerError::Request(format!("lease {id} does not exist")))?;
        let now = now();
        if lease.state != LeaseState::Active || lease.expires_at <= now {
            return Err(IssuerError::Request(format!(
                "lease {id} is {}, so it cannot be renewed",
                if lease.state == LeaseState::Active {
                    "expired"
                } else {
                    lease.state.as_str()
                }
            )));
        }
        let spec = lease_spec(&lease)?;
        let wanted = now.saturating_add(secs(increment.unwrap_or_else(|| spec.default_ttl())));
        let expires_at = wanted.min(lease.max_expires_at);
        let templates = if spec.renew_statements.is_empty() {
            vec![Template::parse(
                "ALTER ROLE {{name}} VALID UNTIL {{expiration}}",
                STATEMENT_PLACEHOLDERS,
            )
            .map_err(IssuerError::Config)?]
        } else {
            parse_templates(&lease.credential_role, &spec, StatementList::Renew)?
        };
        let access = TargetAccess::load(&self.store, &lease.target)?;
        let mut connection = self.admin.get(&access, &spec.database).await?;
        let values = StatementValues::new(&lease.username, "", expires_at);
        run_statements(
            &mut connection.client,
            &lease.credential_role,
            &lease.target,
            StatementList::Renew,
            &templates,
            &values,
        )
        .await?;
        self.admin.put(connection);
        self.store.renew_lease(id, expires_at)?;
        Ok(Renewed {
            expires_at,
            capped: wanted > lease.max_expires_at,
        })
    }

    /// Revokes a lease now. A failure is recorded on the lease (state `revoking`) and
    /// retried by the reaper.
    pub async fn revoke(&self, id: &str) -> Result<RevokeOutcome, IssuerError> {
        let lease = {
            let id = id.to_owned();
            self.blocking(move |store| Ok(store.lease(&id)?)).await?
        }
        .ok_or_else(|| IssuerError::Request(format!("lease {id} does not exist")))?;
        if lease.state.is_ended() {
            return Ok(RevokeOutcome::AlreadyEnded);
        }
        if lease.state == LeaseState::Creating && !self.abandoned(&lease) {
            return Err(IssuerError::Request(format!(
                "lease {id} is still being created; try again in a moment"
            )));
        }
        self.end(&lease).await
    }

    /// Revokes every live lease whose id starts with `prefix`; returns each lease's result.
    pub async fn revoke_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Result<RevokeOutcome, IssuerError>)>, IssuerError> {
        let mut results = Vec::new();
        for lease in self.store.list_leases(None, false)? {
            if lease.id.starts_with(prefix) {
                let outcome = self.revoke(&lease.id).await;
                results.push((lease.id, outcome));
            }
        }
        Ok(results)
    }

    /// Whether the process that made `owner`'s leases still looks after them; when the
    /// state cannot tell, it is taken for alive (its leases are left alone, not revoked
    /// under it).
    fn owner_alive(&self, owner: &str) -> bool {
        self.store.owner_alive(owner).unwrap_or(true)
    }

    fn abandoned(&self, lease: &Lease) -> bool {
        lease.issued_at < now() - CREATION_LIMIT || !self.owner_alive(&lease.owner)
    }

    /// Ends a lease: rollback for one still `creating`, revocation otherwise. The state
    /// says which was started before anything runs upstream; a failure is noted on the
    /// lease with the next attempt's time.
    async fn end(&self, lease: &Lease) -> Result<RevokeOutcome, IssuerError> {
        let rolling_back = lease.state == LeaseState::Creating;
        if lease.state == LeaseState::Active {
            self.move_lease(&lease.id, &[LeaseState::Active], LeaseState::Revoking)
                .await?;
        }
        let dropped = match lease_spec(lease) {
            Ok(spec) => {
                self.drop_role(
                    &lease.credential_role,
                    &spec,
                    &lease.target,
                    &lease.username,
                    rolling_back,
                )
                .await
            }
            Err(error) => Err(error),
        };
        match dropped {
            Ok(outcome) => {
                let end = if rolling_back {
                    LeaseState::RolledBack
                } else {
                    LeaseState::Revoked
                };
                self.move_lease(
                    &lease.id,
                    &[
                        LeaseState::Creating,
                        LeaseState::Active,
                        LeaseState::Revoking,
                    ],
                    end,
                )
                .await?;
                info!(lease = %lease.id, username = %lease.username, state = %end, "lease ended");
                Ok(outcome)
            }
            Err(error) => {
                let delay = 1i64
                    .checked_shl(u32::try_from(lease.attempts.clamp(0, 6)).unwrap_or(6))
                    .unwrap_or(MAX_BACKOFF)
                    .min(MAX_BACKOFF);
                let (id, reason) = (lease.id.clone(), error.to_string());
                self.blocking(move |store| {
                    Ok(store.lease_attempt_failed(&id, &reason, now() + delay)?)
                })
                .await?;
                warn!(lease = %lease.id, error = %error, retry_in_secs = delay, "revocation failed");
                Err(error)
            }
        }
    }

    /// Removes the lease's role upstream: its sessions are ended first whatever the
    /// statements are; the role's own statements run if it has them, else the default.
    pub(crate) async fn drop_role(
        &self,
        role: &QualifiedName,
        spec: &CredentialRoleSpec,
        target: &QualifiedName,
        username: &str,
        rolling_back: bool,
    ) -> Result<RevokeOutcome, IssuerError> {
        let access = {
            let target = target.clone();
            self.blocking(move |store| TargetAccess::load(store, &target))
                .await?
        };
        let mut connection = self.admin.get(&access, &spec.database).await?;
        let client = &mut connection.client;
        let exists = client
            .query_opt("SELECT oid FROM pg_roles WHERE rolname = $1", &[&username])
            .await
            .map_err(IssuerError::upstream("looking the role up"))?
            .is_some();
        if !exists {
            self.admin.put(connection);
            return Ok(RevokeOutcome::AlreadyGone);
        }
        let name = postern_reconciler::sql::ident(username);
        client
            .batch_execute(&format!("ALTER ROLE {name} NOLOGIN"))
            .await
            .map_err(IssuerError::upstream(format!(
                "closing role {username} to logins"
            )))?;
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[&username],
            )
            .await
            .map_err(IssuerError::upstream(format!(
                "ending the sessions of role {username}"
            )))?;
        let list = if rolling_back && !spec.rollback_statements.is_empty() {
            Some(StatementList::Rollback)
        } else if !spec.revocation_statements.is_empty() {
            Some(StatementList::Revocation)
        } else {
            None
        };
        match list {
            Some(list) => {
                let templates = parse_templates(role, spec, list)?;
                let values = StatementValues::new(username, "", now());
                run_statements(client, role, target, list, &templates, &values).await?;
            }
            None => {
                self.default_revocation(&access, client, &spec.database, username)
                    .await?
            }
        }
        self.admin.put(connection);
        Ok(RevokeOutcome::Done)
    }

    /// Hands the role's objects to the admin and drops its privileges in every database
    /// where it has any (`pg_shdepend` says which), then drops the role.
    async fn default_revocation(
        &self,
        access: &TargetAccess,
        client: &mut Client,
        home_database: &str,
        username: &str,
    ) -> Result<(), IssuerError> {
        let name = postern_reconciler::sql::ident(username);
        let databases: Vec<String> = client
            .query(
                "SELECT DISTINCT d.datname FROM pg_shdepend s
                 JOIN pg_database d ON d.oid = s.dbid
                 JOIN pg_roles r ON r.oid = s.refobjid
                 WHERE s.refclassid = 'pg_authid'::regclass AND r.rolname = $1",
                &[&username],
            )
            .await
            .map_err(IssuerError::upstream("finding the role's databases"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let cleanup = format!(
            "BEGIN; SELECT pg_advisory_xact_lock(1886352245, hashtext({})); \
             REASSIGN OWNED BY {name} TO CURRENT_USER; DROP OWNED BY {name}; COMMIT",
            postern_reconciler::sql::literal(&lock_key(&access.target))
        );
        for database in &databases {
            let what =
                format!("handing objects of role {username} in database {database} to the admin");
            if database == home_database {
                run_script(client, &cleanup, what).await?;
            } else {
                let other = self.admin.get(access, database).await?;
                run_script(&other.client, &cleanup, what).await?;
                self.admin.put(other);
            }
        }
        client
            .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
            .await
            .map_err(IssuerError::upstream(format!("dropping role {username}")))
    }

    /// One reaper pass: expired leases revoked, failed revocations retried when due,
    /// abandoned creations rolled back.
    pub async fn reap_once(&self) -> Result<ReapReport, IssuerError> {
        let mut report = ReapReport::default();
        for lease in self.store.due_leases(now())? {
            if lease.state == LeaseState::Creating && !self.abandoned(&lease) {
                continue;
            }
            match self.end(&lease).await {
                Ok(_) => report.ended += 1,
                Err(_) => report.failed += 1,
            }
        }
        Ok(report)
    }

    /// Leases of sessions whose gateway process is gone: their sessions ended with it.
    pub async fn end_orphaned_session_leases(&self) -> Result<usize, IssuerError> {
        let mut ended = 0;
        for lease in self.store.list_leases(None, false)? {
            if lease.state == LeaseState::Active
                && lease.issued_for.starts_with("session ")
                && !self.owner_alive(&lease.owner)
                && self.end(&lease).await.is_ok()
            {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The reaper: a pass every `interval`, for as long as the server runs. The first pass
    /// runs at once, so whatever expired while the server was down goes first.
    pub async fn run_reaper(self: std::sync::Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut orphans_checked: Option<tokio::time::Instant> = None;
        loop {
            ticker.tick().await;
            // Gateways sharing the state may stop at any time, not only before this one
            // started: their sessions' leases are looked for again now and then.
            if orphans_checked.is_none_or(|at| at.elapsed() >= ORPHAN_CHECK_INTERVAL) {
                orphans_checked = Some(tokio::time::Instant::now());
                match self.end_orphaned_session_leases().await {
                    Ok(0) => {}
                    Ok(ended) => info!(ended, "ended leases of sessions whose gateway is gone"),
                    Err(error) => warn!(error = %error, "ending orphaned session leases failed"),
                }
            }
            match self.reap_once().await {
                Ok(report) if report.ended + report.failed > 0 => {
                    info!(
                        ended = report.ended,
                        failed = report.failed,
                        "lease reaper pass"
                    )
                }
                Ok(_) => {}
                Err(error) => warn!(error = %error, "lease reaper pass failed"),
            }
        }
    }
}
