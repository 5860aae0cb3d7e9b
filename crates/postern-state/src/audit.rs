//! The access log's queryable table: records written by the audit pipeline's state sink,
//! read back by `postern logs` (with filters, and by id for `--follow`), pruned by age.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_model::{AuditRecord, AuditSink};
use rusqlite::params;

use crate::{StateError, Store};

/// Which events to read; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only rows after this row id (for following).
    pub after_id: Option<i64>,
    pub since_ms: Option<i64>,
    /// `name` or `name.namespace`.
    pub identity: Option<String>,
    /// `name` or `name.namespace`.
    pub service: Option<String>,
    pub event_type: Option<String>,
    pub limit: usize,
}

/// One stored event: its row id (to follow from) and its JSON line.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub json: String,
}

impl Store {
    /// Stores a batch in one transaction, [`ROWS_PER_INSERT`] rows per statement; an
    /// event id seen before (a replay after a failure) is skipped.
    pub fn insert_audit_records(&self, batch: &[&AuditRecord]) -> Result<(), StateError> {
        self.write(|tx| {
            for rows in batch.chunks(ROWS_PER_INSERT) {
                let mut insert = tx.prepare_cached(&insert_rows_sql(rows.len()))?;
                let values: Vec<&dyn rusqlite::ToSql> = rows
                    .iter()
                    .flat_map(|r| -> [&dyn rusqlite::ToSql; 8] {
                        [
                            &r.event_id,
                            &r.time_ms,
                            &r.event_type,
                            &r.identity,
                            &r.namespace,
                            &r.service,
                            &r.session_id,
                            &r.json,
                        ]
                    })
                    .collect();
                insert.execute(values.as_slice())?;
            }
            Ok(())
        })
    }

    /// The newest `query.limit` matching events, oldest first.
    pub fn audit_events(&self, query: &AuditQuery) -> Result<Vec<StoredEvent>, StateError> {
        // `name` matches any namespace, `name.namespace` exactly one.
        let split = |value: &Option<String>| -> (Option<String>, Option<String>) {
            match value.as_deref().map(|v| v.split_once('.')) {
                Some(Some((name, ns))) => (Some(name.to_owned()), Some(ns.to_owned())),
                Some(None) => (value.clone(), None),
                None => (None, None),
            }
        };
        let (identity, identity_ns) = split(&query.identity);
        let (service, service_ns) = split(&query.service);
        let service = match (service, service_ns) {
            (Some(name), Some(ns)) => Some(format!("{name}.{ns}")),
            (Some(name), None) => Some(format!("{name}.%")),
            _ => None,
        };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, json FROM (
                     SELECT id, json FROM audit_events
                     WHERE (?1 IS NULL OR id > ?1)
                       AND (?2 IS NULL OR time_ms >= ?2)
                       AND (?3 IS NULL OR identity = ?3)
                       AND (?4 IS NULL OR namespace = ?4)
                       AND (?5 IS NULL OR service LIKE ?5)
                       AND (?6 IS NULL OR type = ?6)
                     ORDER BY id DESC LIMIT ?7
                 ) ORDER BY id",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        query.after_id,
                        query.since_ms,
                        identity,
                        identity_ns,
                        service,
                        query.event_type,
                        limit
                    ],
                    |row| {
                        Ok(StoredEvent {
                            id: row.get(0)?,
                            json: row.get(1)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Deletes events older than `before_ms`; returns how many.
    pub fn prune_audit_events(&self, before_ms: i64) -> Result<usize, StateError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM audit_events WHERE time_ms < ?1", [before_ms])?))
    }
}

/// Rows one INSERT statement writes: fewer statements per batch, well under SQLite's
/// limit on parameters (8 per row).
const ROWS_PER_INSERT: usize = 32;

/// `INSERT OR IGNORE … VALUES (…), (…)` for `rows` rows.
fn insert_rows_sql(rows: usize) -> String {
    let row = "(?, ?, ?, ?, ?, ?, ?, ?)";
    format!(
        "INSERT OR IGNORE INTO audit_events
             (event_id, time_ms, type, identity, namespace, service, session_id, json)
         VALUES {}",
        vec![row; rows].join(", ")
    )
}

/// How often the state sink prunes expired events.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The audit sink that keeps recent events in the state database for `postern logs`.
pub struct StateAuditSink {
    store: Arc<Store>,
    retention: Duration,
    last_prune: Option<Instant>,
}

impl StateAuditSink {
    pub fn new(store: Arc<Store>, retention: Duration) -> StateAuditSink {
        StateAuditSink {
            store,
            retention,
            last_prune: None,
        }
    }
}

impl AuditSink for StateAuditSink {
    fn name(&self) -> &str {
        "state"
    }

    fn write(&mut self, batch: &[&AuditRecord]) -> Result<(), String> {
        self.store
            .insert_audit_records(batch)
            .map_err(|e| e.to_string())?;
        if self.last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
            let cutoff = postern_model::unix_millis(std::time::SystemTime::now())
                .saturating_sub(retention_ms);
            self.store
                .prune_audit_events(cutoff)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
