//! Tenancy commands and wiring: identity client credentials, access tokens, and the
//! admin API that `serve` runs beside the proxy (bootstrap token, metrics sources).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_api::{MetricFamily, MetricType, MetricsSource, TokenAuthority, TokenSettings};
use postern_config::Config;
use postern_model::QualifiedName;
use postern_state::Store;
use tracing::info;

use crate::cli::{ClientCommand, TokenCommand};
use crate::resources::print_table;

/// The file the bootstrap admin token is written to on first start.
pub const BOOTSTRAP_TOKEN_FILE: &str = "admin-token";

pub fn token_settings(config: &Config) -> TokenSettings {
    TokenSettings {
        default_ttl: Duration::from_secs(config.api.token_ttl_secs),
        max_ttl: Duration::from_secs(config.api.max_token_ttl_secs),
        rotation: Duration::from_secs(config.api.signing_key_rotation_secs),
    }
}

pub fn client(store: &Store, command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Create {
            identity,
            namespace,
        } => {
            let created = store.create_identity_client(&QualifiedName::new(namespace, identity))?;
            eprintln!(
                "client created for Identity {}; exchange it at POST /api/v1/token (grant_type=client_credentials). The secret is shown only this once:",
                created.identity
            );
            println!("client_id={}", created.client_id);
            println!("client_secret={}", created.secret.expose());
        }
        ClientCommand::List {
            identity,
            namespace,
        } => {
            let clients = store.list_identity_clients(&QualifiedName::new(namespace, identity))?;
            let mut rows = vec![vec!["CLIENT ID".to_owned(), "CREATED".to_owned()]];
            rows.extend(
                clients
                    .iter()
                    .map(|c| vec![c.client_id.clone(), c.created_at.to_string()]),
            );
            print_table(&rows);
        }
        ClientCommand::Delete {
            identity,
            client_id,
            namespace,
        } => {
            let who = QualifiedName::new(namespace, identity);
            store.delete_identity_client(&who, &client_id)?;
            println!("client {client_id} of Identity {who} deleted");
        }
    }
    Ok(())
}

pub fn token(store: Store, config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let store = Arc::new(store);
    let authority = TokenAuthority::new(store.clone(), token_settings(config))?;
    match command {
        TokenCommand::Issue {
            identity,
            namespace,
            ttl,
        } => {
            let ttl = ttl
                .map(|t| postern_model::parse_duration(&t).map_err(anyhow::Error::msg))
                .transpose()
                .context("--ttl")?;
            let issued = authority.issue(&QualifiedName::new(namespace, identity), ttl)?;
            eprintln!(
                "token {} for {} expires in {}s; it is shown only this once:",
                issued.claims.jti,
                issued.claims.identity(),
                issued.claims.exp - issued.claims.iat
            );
            println!("{}", issued.token.expose());
        }
        TokenCommand::Revoke { jti } => {
            store.revoke_access_token(&jti)?;
            println!("token {jti} revoked");
        }
        TokenCommand::RotateKey => {
            let kid = authority.rotate()?;
            println!(
                "signing key {kid} is now current; older keys verify until their tokens expire"
            );
        }
    }
    Ok(())
}

/// Writes the bootstrap admin token (0600) into the state directory on first start and
/// says where; later starts find one already made and say nothing new.
pub fn write_bootstrap_token(store: &Store, state_dir: &Path) -> anyhow::Result<()> {
    let path: PathBuf = state_dir.join(BOOTSTRAP_TOKEN_FILE);
    let created = store
        .create_bootstrap_token(|token| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            // `mode` applies only to a new file; an old one is tightened as well.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            writeln!(file, "{}", token.expose())?;
            file.sync_all()
        })
        .with_context(|| {
            format!(
                "cannot write the bootstrap admin token to {}",
                path.display()
            )
        })?;
    if created {
        info!(path = %path.display(), "bootstrap admin token written (account-admin; use it as a Bearer token and keep it safe)");
    }
    Ok(())
}

/// What `serve`'s reconcile loop has done, for `/metrics` and the service status.
#[derive(Debug, Default)]
pub struct ReconcileRuns {
    runs: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<ReconcileSummary>>,
}

/// The outcome of one reconcile run.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileSummary {
    /// Statements run to correct drift.
    pub corrections: usize,
    /// Intents or targets it could not bring in line.
    pub problems: usize,
}

impl ReconcileRuns {
    pub fn record(&self, summary: ReconcileSummary) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last.lock() {
            *last = Some(summary);
        }
    }

    pub fn count(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    pub fn last(&self) -> Option<ReconcileSummary> {
        self.last.lock().ok().and_then(|last| *last)
    }
}

/// What `/metrics` reports: the proxy's counters, the access log's, leases and
/// reconcile runs.
pub struct GatewayMetrics {
    pub gateway: Arc<postern_proxy::Gateway>,
    pub audit: Option<Arc<postern_audit::AuditPipeline>>,
    pub store: Arc<Store>,
    pub reconcile_runs: Arc<ReconcileRuns>,
}

impl MetricsSource for GatewayMetrics {
    fn collect(&self) -> Vec<MetricFamily> {
        use MetricType::{Counter, Gauge};
        let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        let stats = &self.gateway.stats;
        let mut families = vec![
            MetricFamily::single(
                "postern_sessions_started_total",
                "Client sessions that logged in",
                Counter,
                read(&stats.sessions_started),
            ),
            MetricFamily::single(
                "postern_sessions_active",
                "Client sessions open now",
                Gauge,
                read(&stats.sessions_active),
            ),
            MetricFamily::single(
                "postern_statements_total",
                "Statements run through inspected sessions",
                Counter,
                read(&stats.statements),
            ),
            MetricFamily::single(
                "postern_client_connections_refused_total",
                "Client connections refused because max_client_connections were open",
                Counter,
                read(&stats.connections_refused),
            ),
            MetricFamily::single(
                "postern_auth_failures_total",
                "Failed client logins",
                Counter,
                read(&stats.auth_failures),
            ),
            MetricFamily::single(
                "postern_policy_denials_total",
                "Connections and statements refused by service rules",
                Counter,
                read(&stats.policy_denials),
            ),
            MetricFamily::single(
                "postern_pool_idle_connections",
                "Idle upstream connections kept for reuse",
                Gauge,
                self.gateway.pooled_connections() as f64,
            ),
            MetricFamily::single(
                "postern_reconcile_runs_total",
                "Grant reconciler runs by serve",
                Counter,
                self.reconcile_runs.count() as f64,
            ),
        ];
        if let Some(audit) = &self.audit {
            let counters = audit.counters();
            families.push(MetricFamily::single(
                "postern_audit_events_recorded_total",
                "Access-log events taken",
                Counter,
                read(&counters.recorded),
            ));
            families.push(MetricFamily::single(
                "postern_audit_events_spilled_total",
                "Access-log events a sink could not take at once, kept on disk",
                Counter,
                read(&counters.spilled),
            ));
            families.push(MetricFamily::single(
                "postern_audit_events_dropped_total",
                "Access-log events lost past the spill budget",
                Counter,
                read(&counters.dropped),
            ));
        }
        if let Some(engine) = self.store.policy_engine() {
            let cache = engine.statement_cache();
            families.push(MetricFamily {
                name: "postern_statement_cache_lookups_total",
                help: "Statement classifications asked of the cache, by result (a miss parses)",
                kind: Counter,
                samples: vec![
                    (vec![("result", "hit".into())], cache.hits as f64),
                    (vec![("result", "miss".into())], cache.misses as f64),
                ],
            });
            families.push(MetricFamily::single(
                "postern_statement_cache_evictions_total",
                "Statement shapes evicted from the classification cache",
                Counter,
                cache.evictions as f64,
            ));
            families.push(MetricFamily::single(
                "postern_statement_cache_entries",
                "Statement shapes in the classification cache",
                Gauge,
                cache.entries as f64,
            ));
            families.push(MetricFamily::single(
                "postern_statement_cache_bytes",
                "Bytes the classification cache holds (its bound is 16 MiB)",
                Gauge,
                cache.bytes as f64,
            ));
        }
        if let Ok(counts) = self.store.lease_counts() {
            families.push(MetricFamily {
                name: "postern_leases",
                help: "Credential leases by state",
                kind: Gauge,
                samples: counts
                    .into_iter()
                    .map(|(state, n)| (vec![("state", state)], n as f64))
                    .collect(),
            });
        }
        families
    }
}
