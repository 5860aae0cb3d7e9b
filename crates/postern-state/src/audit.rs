//! The access log's queryable table: records written by the audit pipeline's state sink,
//! read back by `postern logs` (with filters, and by id for `--follow`), pruned by age.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_model::{join_session, AuditRecord, AuditSink};
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
    /// event id seen before (a replay after a failure) is skipped. A session's fields are
    /// stored once, in `audit_sessions`, and joined back when events are read.
    pub fn insert_audit_records(&self, batch: &[&AuditRecord]) -> Result<(), StateError> {
        let split: Vec<Option<(String, &str)>> = batch.iter().map(|r| r.split_session()).collect();
        self.write(|tx| {
            let mut sessions: Vec<(&str, &str, i64)> = Vec::new();
            for (record, split) in batch.iter().zip(&split) {
                if let Some((_, members)) = split {
                    match sessions
                        .iter_mut()
                        .find(|(id, _, _)| *id == record.session_id)
                    {
                        Some(seen) => seen.2 = seen.2.max(record.time_ms),
                        None => sessions.push((&record.session_id, members, record.time_ms)),
                    }
                }
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO audit_sessions (session_id, json, last_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (session_id) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)",
            )?;
            for (id, members, last_ms) in sessions {
                upsert.execute(params![id, members, last_ms])?;
            }
            let rows: Vec<(&AuditRecord, &str)> = batch
                .iter()
                .zip(&split)
                .map(|(record, split)| {
                    let json = split.as_ref().map_or(record.json.as_str(), |(own, _)| own);
                    (*record, json)
                })
                .collect();
            for rows in rows.chunks(ROWS_PER_INSERT) {
                let mut insert = tx.prepare_cached(&insert_rows_sql(rows.len()))?;
                let values: Vec<&dyn rusqlite::ToSql> = rows
                    .iter()
                    .flat_map(|(r, json)| -> [&dyn rusqlite::ToSql; 8] {
                        [
                            &r.event_id,
                            &r.time_ms,
                            &r.event_type,
                            &r.identity,
                            &r.namespace,
                            &r.service,
                            &r.session_id,
                            json,
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
                "SELECT e.id, e.json, s.json FROM (
                     SELECT id, json, session_id FROM audit_events
                     WHERE (?1 IS NULL OR id > ?1)
                       AND (?2 IS NULL OR time_ms >= ?2)
                       AND (?3 IS NULL OR identity = ?3)
                       AND (?4 IS NULL OR namespace = ?4)
                       AND (?5 IS NULL OR service LIKE ?5)
                       AND (?6 IS NULL OR type = ?6)
                     ORDER BY id DESC LIMIT ?7
                 ) AS e LEFT JOIN audit_sessions AS s ON s.session_id = e.session_id
                 ORDER BY e.id",
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
                        let own: String = row.get(1)?;
                        let session: Option<String> = row.get(2)?;
                        // Lines stored whole (before sessions were kept apart) name the
                        // session already.
                        let json = match session {
                            Some(members) if !own.contains("\"session_id\":") => {
                                join_session(&own, &members)
                            }
                            _ => own,
                        };
                        Ok(StoredEvent {
                            id: row.get(0)?,
                            json,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Deletes events older than `before_ms`; returns how many.
    pub fn prune_audit_events(&self, before_ms: i64) -> Result<usize, StateError> {
        self.write(|tx| {
            tx.execute("DELETE FROM audit_sessions WHERE last_ms < ?1", [before_ms])?;
            Ok(tx.execute("DELETE FROM audit_events WHERE time_ms < ?1", [before_ms])?)
        })
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
