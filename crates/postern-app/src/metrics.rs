//! What `/metrics` and the service status report of the gateway: the proxy's counters,
//! the access log's, the statement cache's, leases and reconcile runs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use postern_api::{MetricFamily, MetricType, MetricsSource};
use postern_state::Store;

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
                "postern_leader",
                "1 while this gateway leads those sharing its state (runs the reaper, the reconciler and the rotations)",
                Gauge,
                f64::from(u8::from(self.store.is_leader())),
            ),
            MetricFamily::single(
                "postern_resource_epoch",
                "How often resources have changed, as this gateway last read it from the state",
                Gauge,
                self.gateway.resource_epoch() as f64,
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
