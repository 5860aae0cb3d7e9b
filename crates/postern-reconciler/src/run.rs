//! One reconcile run over every target: gather Intents from the store, plan and apply the
//! role changes, then each database's GRANT/REVOKE list in one transaction, then drop the
//! roles nobody wants any more, and record each Intents resource's outcome.

use std::collections::{BTreeMap, BTreeSet};

use postern_model::{
    managed_role_name, Kind, QualifiedName, Resource, SecretValue, Spec, TargetSpec,
};
use postern_state::Store;
use postern_wire::scram::{Verifier, DEFAULT_ITERATIONS};
use rand::Rng;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::catalog::{databases, read_catalog, read_roles};
use crate::connect::connect;
use crate::error::describe;
use crate::privileges::{diff, expand, Entry, Problem};
use crate::roles::{is_ours, marker_prefix, plan_roles, RoleStatement, WantedRole};
use crate::sql::ident;
use crate::ReconcileError;

const APPLICATION_NAME: &str = "postern-reconciler";

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Plan and print, change nothing (upstream or in the store).
    pub dry_run: bool,
}

/// A changing statement as printable SQL (passwords masked) and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStatement {
    /// `namespace/target/database`
    pub place: String,
    pub sql: String,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Report {
    /// Every changing statement, in order.
    pub statements: Vec<PlannedStatement>,
    /// One line per problem, naming the Intents resource or target.
    pub problems: Vec<String>,
}

/// Entries per target and database, and the identities that need a role on each target.
#[derive(Default)]
struct TargetWork {
    databases: BTreeMap<String, Vec<Entry>>,
    identities: BTreeSet<QualifiedName>,
}

/// Outcome per Intents resource: problems (message, failed statement).
type Outcomes = BTreeMap<QualifiedName, Vec<(String, Option<String>)>>;

fn note(
    outcomes: &mut Outcomes,
    source: &QualifiedName,
    message: String,
    statement: Option<String>,
) {
    outcomes
        .entry(source.clone())
        .or_default()
        .push((message, statement));
}

/// Runs the reconciler once over everything in `store`.
pub async fn reconcile(store: &Store, options: Options) -> Result<Report, ReconcileError> {
    let resources: Vec<Resource> = store
        .list_resources(None, None)?
        .into_iter()
        .map(|s| s.resource)
        .collect();
    let find = |kind: Kind, ns: &str, name: &str| {
        resources
            .iter()
            .find(|r| r.kind() == kind && r.namespace() == ns && r.name() == name)
    };
    let mut outcomes = Outcomes::new();
    let mut work: BTreeMap<QualifiedName, TargetWork> = BTreeMap::new();
    let mut unresolved = BTreeSet::new();
    for resource in &resources {
        let Spec::Intents(intents) = &resource.spec else {
            continue;
        };
        let source = resource.qualified_name();
        outcomes.entry(source.clone()).or_default();
        let ns = resource.namespace();
        if find(Kind::Identity, ns, &intents.identity).is_none() {
            note(
                &mut outcomes,
                &source,
                format!("Identity {ns}/{} does not exist", intents.identity),
                None,
            );
            continue;
        }
        let identity = QualifiedName::new(ns, &intents.identity);
        for (index, access) in intents.access.iter().enumerate() {
            let location = match (&access.service, &access.target, &access.database) {
                (Some(service), _, _) => match find(Kind::Service, ns, service).map(|r| &r.spec) {
                    Some(Spec::Service(s)) => Some((s.target.clone(), s.database.clone())),
                    _ => {
                        note(
                            &mut outcomes,
                            &source,
                            format!("spec.access[{index}]: Service {ns}/{service} does not exist"),
                            None,
                        );
                        None
                    }
                },
                (None, Some(target), Some(database)) => Some((target.clone(), database.clone())),
                _ => None,
            };
            let Some((target, database)) = location else {
                unresolved.insert(identity.clone());
                continue;
            };
            if find(Kind::Target, ns, &target).is_none() {
                unresolved.insert(identity.clone());
                note(
                    &mut outcomes,
                    &source,
                    format!("spec.access[{index}]: Target {ns}/{target} does not exist"),
                    None,
                );
                continue;
            }
            let scope = match access.scope() {
                Ok(scope) => scope,
                Err(message) => {
                    note(
                        &mut outcomes,
                        &source,
                        format!("spec.access[{index}]: {message}"),
                        None,
                    );
                    continue;
                }
            };
            let target_work = work.entry(QualifiedName::new(ns, target)).or_default();
            target_work.identities.insert(identity.clone());
            target_work
                .databases
                .entry(database)
                .or_default()
                .push(Entry {
                    role: managed_role_name(&identity.namespace, &identity.name),
                    scope,
                    source: source.clone(),
                });
        }
    }

    let mut report = Report::default();
    for resource in &resources {
        let Spec::Target(target_spec) = &resource.spec else {
            continue;
        };
        let target = resource.qualified_name();
        let target_work = work.remove(&target).unwrap_or_default();
        let sources: BTreeSet<QualifiedName> = target_work
            .databases
            .values()
            .flatten()
            .map(|e| e.source.clone())
            .collect();
        let run = TargetRun {
            store,
            options,
            target: &target,
            spec: target_spec,
            work: target_work,
            keep: &unresolved,
        };
        if let Err(error) = run.run(&mut report, &mut outcomes).await {
            warn!(target = %target, error = %error, "reconcile of a target failed");
            if sources.is_empty() {
                report.problems.push(format!("Target {target}: {error}"));
            }
            for source in &sources {
                note(&mut outcomes, source, error.to_string(), None);
            }
        }
    }

    for (source, problems) in &outcomes {
        for (message, statement) in problems {
            report.problems.push(match statement {
                Some(statement) => format!("Intents {source}: {message} (statement: {statement})"),
                None => format!("Intents {source}: {message}"),
            });
        }
        if options.dry_run {
            continue;
        }
        match problems.first() {
            None => store.set_intents_status(source, "applied", "all privileges in place", None)?,
            Some((message, statement)) => {
                let all: Vec<&str> = problems.iter().map(|(m, _)| m.as_str()).collect();
                let state = if message.starts_with("pending") {
                    "pending"
                } else {
                    "error"
                };
                store.set_intents_status(source, state, &all.join("; "), statement.as_deref())?;
            }
        }
    }
    Ok(report)
}

struct TargetRun<'a> {
    store: &'a Store,
    options: Options,
    target: &'a QualifiedName,
    spec: &'a TargetSpec,
    work: TargetWork,
    /// Identities with an Intents entry that did not resolve: their roles stay.
    keep: &'a BTreeSet<QualifiedName>,
}

/// The SCRAM-SHA-256 verifier (fresh salt) sent upstream in place of a password, so the
/// password itself never reaches the server or its log.
pub fn verifier_for(password: &SecretValue) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    Verifier::generate(password.expose().as_bytes(), &salt, DEFAULT_ITERATIONS).encode()
}

impl TargetRun<'_> {
    async fn run(self, report: &mut Report, outcomes: &mut Outcomes) -> Result<(), ReconcileError> {
        let target = self.target;
        if self.work.identities.is_empty() && self.store.managed_roles(target)?.is_empty() {
            return Ok(());
        }
        let admin = self.spec.admin.as_ref().ok_or_else(|| {
            ReconcileError::Config(format!(
                "Target {target} has no spec.admin, which the reconciler connects as"
            ))
        })?;
        let password = self
            .store
            .secret_value(&target.namespace, &admin.password_secret)?
            .ok_or_else(|| {
                ReconcileError::Config(format!(
                    "the admin password secret {}/{} of Target {target} is not set",
                    target.namespace, admin.password_secret
                ))
            })?;

        // Cluster-wide work (roles, the database list) goes through the first database an
        // Intents names, else `postgres`; a misspelt database must not stop the rest.
        let label = target.to_string();
        let mut candidates: Vec<String> = self.work.databases.keys().take(1).cloned().collect();
        candidates.push("postgres".to_owned());
        candidates.dedup();
        let mut connected = None;
        let mut last_error = None;
        for database in candidates {
            match connect(
                APPLICATION_NAME,
                &label,
                self.spec,
                &admin.user,
                &password,
                &database,
            )
            .await
            {
                Ok(client) => {
                    connected = Some((client, database));
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let (mut client, maintenance_db) = match (connected, last_error) {
            (Some(found), _) => found,
            (None, Some(error)) => return Err(error),
            (None, None) => return Ok(()),
        };
        // Runs of several gateways (or a CLI beside the server) take turns per target;
        // the records are read only once the lock is held.
        let installation = self.store.installation_id();
        let prefix = marker_prefix(installation, target);
        client
            .execute(
                "SELECT pg_advisory_lock(1886352244, hashtext($1))",
                &[&prefix],
            )
            .await
            .map_err(ReconcileError::query("taking the reconcile lock"))?;
        let records = self.store.managed_roles(target)?;

        // Record every wanted role (with its password) before it is created, so a crash
        // in between leaves something the next run finishes.
        let mut wanted = Vec::new();
        for identity in &self.work.identities {
            let existing = records.iter().find(|r| &r.identity == identity).cloned();
            let record = match existing {
                Some(record) => Some(record),
                None if self.options.dry_run => None,
                None => Some(self.store.record_managed_role(target, identity)?),
            };
            wanted.push(match record {
                Some(r) => (
                    WantedRole {
                        role: r.role.clone(),
                        identity: identity.clone(),
                        password_applied: r.password_applied(),
                        password: Some(r.password),
                    },
                    r.password_version,
                ),
                None => (
                    WantedRole {
                        role: managed_role_name(&identity.namespace, &identity.name),
                        identity: identity.clone(),
                        password: None,
                        password_applied: false,
                    },
                    0,
                ),
            });
        }
        // Roles of identities whose Intents only failed to resolve (a Service renamed, a
        // typo) are kept: a passing mistake must not kill sessions and hand objects away.
        let (kept, dropping): (Vec<_>, Vec<_>) = records
            .iter()
            .filter(|r| !self.work.identities.contains(&r.identity))
            .cloned()
            .partition(|r| self.keep.contains(&r.identity));

        let mut names: Vec<String> = wanted.iter().map(|(w, _)| w.role.clone()).collect();
        names.extend(records.iter().map(|r| r.role.clone()));
        let actual = read_roles(&client, &names, &prefix).await?;
        let only_roles: Vec<WantedRole> = wanted.iter().map(|(w, _)| w.clone()).collect();
        let plan = plan_roles(&only_roles, &actual, installation, target, verifier_for);
        let mut conflicting = BTreeSet::new();
        for (role, message) in &plan.conflicts {
            conflicting.insert(role.role.clone());
            for entry in self
                .work
                .databases
                .values()
                .flatten()
                .filter(|e| e.role == role.role)
            {
                note(outcomes, &entry.source, message.clone(), None);
            }
        }
        // Only roles carrying this target's mark are ever dropped: a record whose role
        // upstream is somebody else's (a name clash) only loses the record. Marked roles
        // no record knows (a state file restored from backup, say) go too.
        let mut drop_roles: Vec<String> = dropping
            .iter()
            .map(|r| r.role.clone())
            .filter(|r| actual.get(r).is_some_and(|a| is_ours(a, &prefix)))
            .collect();
        drop_roles.extend(
            actual
                .values()
                .filter(|a| is_ours(a, &prefix) && !names.contains(&a.name))
                .map(|a| a.name.clone()),
        );

        // Roles first; roles about to go lose LOGIN before their sessions are ended, so
        // none can come back in between.
        let place = format!("{target}/{maintenance_db}");
        let mut role_statements = plan.statements.clone();
        role_statements.extend(drop_roles.iter().map(|role| {
            RoleStatement::plain(format!("ALTER ROLE {} NOLOGIN PASSWORD NULL", ident(role)))
        }));
        self.execute(&mut client, &place, &role_statements, report)
            .await
            .map_err(|(statement, error)| ReconcileError::Query {
                what: format!("changing roles ({statement})"),
                reason: error,
            })?;
        if !self.options.dry_run {
            for (want, version) in &wanted {
                if plan.passwords_set.contains(&want.role) {
                    self.store
                        .mark_password_applied(target, &want.identity, *version)?;
                }
            }
        }
        if !drop_roles.is_empty() {
            let terminate = [RoleStatement::plain(terminate_sql(&drop_roles))];
            self.execute(&mut client, &place, &terminate, report)
                .await
                .map_err(|(statement, error)| ReconcileError::Query {
                    what: format!("ending sessions of roles to drop ({statement})"),
                    reason: error,
                })?;
        }

        let mut managed: Vec<String> = wanted
            .iter()
            .map(|(w, _)| w.role.clone())
            .filter(|r| !conflicting.contains(r))
            .collect();
        managed.extend(
            kept.iter()
                .map(|r| r.role.clone())
                .filter(|r| actual.get(r).is_some_and(|a| is_ours(a, &prefix))),
        );
        let mut drops_blocked = false;
        let all_databases = databases(&client).await?;
        for database in all_databases.iter().chain(
            self.work
                .databases
                .keys()
                .filter(|d| !all_databases.contains(d)),
        ) {
            let entries: Vec<Entry> = self
                .work
                .databases
                .get(database)
                .map(|entries| {
                    entries
                        .iter()
                        .filter(|e| !conflicting.contains(&e.role))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let mut other;
            let db_client = if *database == maintenance_db {
                &mut client
            } else {
                match connect(
                    APPLICATION_NAME,
                    &label,
                    self.spec,
                    &admin.user,
                    &password,
                    database,
                )
                .await
                {
                    Ok(c) => {
                        other = c;
                        &mut other
                    }
                    Err(error) => {
                        warn!(error = %error, "skipping a database the admin cannot reach");
                        drops_blocked |= !drop_roles.is_empty();
                        for entry in &entries {
                            note(outcomes, &entry.source, error.to_string(), None);
                        }
                        continue;
                    }
                }
            };
            let place = format!("{target}/{database}");
            // Objects of roles to drop go to the admin, their privileges with them; in a
            // transaction of its own, so a failure here never blocks the grants.
            let cleanup: Vec<RoleStatement> = drop_roles
                .iter()
                .flat_map(|role| {
                    [
                        format!("REASSIGN OWNED BY {} TO CURRENT_USER", ident(role)),
                        format!("DROP OWNED BY {}", ident(role)),
                    ]
                })
                .map(RoleStatement::plain)
                .collect();
            if let Err((failed, error)) = self.execute(db_client, &place, &cleanup, report).await {
                drops_blocked = true;
                report
                    .problems
                    .push(format!("Target {place}: {error} (statement: {failed})"));
            }

            let catalog = read_catalog(db_client, database, &managed).await?;
            let (desired, problems) = expand(&entries, &catalog);
            for Problem { source, message } in problems {
                note(outcomes, &source, message, None);
            }
            let statements = diff(&desired, &catalog.granted);
            let printable: Vec<RoleStatement> = statements
                .iter()
                .map(|s| RoleStatement::plain(s.sql.clone()))
                .collect();
            if let Err((failed, error)) = self.execute(db_client, &place, &printable, report).await
            {
                let to_blame = statements
                    .iter()
                    .find(|s| s.sql == failed)
                    .map(|s| s.sources.clone())
                    .unwrap_or_default();
                for entry in &entries {
                    if to_blame.contains(&entry.source) || to_blame.is_empty() {
                        note(outcomes, &entry.source, error.clone(), Some(failed.clone()));
                    } else {
                        note(
                            outcomes,
                            &entry.source,
                            format!("pending: another statement in database {database} failed, so nothing there was applied"),
                            None,
                        );
                    }
                }
            }
        }

        if drops_blocked {
            return Ok(());
        }
        let statements: Vec<RoleStatement> = drop_roles
            .iter()
            .map(|role| RoleStatement::plain(format!("DROP ROLE IF EXISTS {}", ident(role))))
            .collect();
        self.execute(&mut client, &place, &statements, report)
            .await
            .map_err(|(statement, error)| ReconcileError::Query {
                what: format!("dropping roles ({statement})"),
                reason: error,
            })?;
        if !self.options.dry_run {
            for record in &dropping {
                self.store.forget_managed_role(target, &record.identity)?;
                info!(role = %record.role, target = %target, "dropped managed role");
            }
        }
        Ok(())
    }

    /// Runs `statements` in one transaction (or, dry, only lists them). On failure the
    /// transaction is rolled back and the failing statement's printable form returned.
    async fn execute(
        &self,
        client: &mut Client,
        place: &str,
        statements: &[RoleStatement],
        report: &mut Report,
    ) -> Result<(), (String, String)> {
        if statements.is_empty() {
            return Ok(());
        }
        report
            .statements
            .extend(statements.iter().map(|s| PlannedStatement {
                place: place.to_owned(),
                sql: s.display.clone(),
            }));
        if self.options.dry_run {
            return Ok(());
        }
        let transaction = client
            .transaction()
            .await
            .map_err(|e| ("BEGIN".to_owned(), describe(&e)))?;
        for statement in statements {
            if let Err(e) = transaction.batch_execute(&statement.sql).await {
                return Err((statement.display.clone(), describe(&e)));
            }
        }
        transaction
            .commit()
            .await
            .map_err(|e| ("COMMIT".to_owned(), describe(&e)))
    }
}

/// Ends the sessions of roles about to be dropped (they already lost LOGIN).
fn terminate_sql(roles: &[String]) -> String {
    let names: Vec<String> = roles.iter().map(|r| crate::sql::literal(r)).collect();
    format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ({}) AND pid <> pg_backend_pid()",
        names.join(", ")
    )
}
