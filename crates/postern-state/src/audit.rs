//! The access log's queryable table: records written by the audit pipeline's state sink,
//! read back by `postern logs` (with filters, and by id for `--follow`), pruned by age.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_model::{log_line, AuditRecord, AuditSink, SessionInfo};
use rusqlite::{params, Transaction};

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

/// Numbers the state sink hands out and remembers: each session's key in
/// `audit_sessions`, and the ids of statement texts that repeat, in `audit_statements`
/// (with when each was last marked used), plus the texts seen once lately (by hash), so a
/// text that repeats is stored once and one that does not (literals inline) costs no
/// dictionary entry.
/// (foldhash, not SipHash: hashing each event's statement text twice with SipHash was a
/// tenth of the sink's time; the seed is per process and the maps are bounded.)
#[derive(Default)]
pub struct AuditKeys {
    sessions: HashMap<String, (i64, i64), FastHash>,
    statements: HashMap<Arc<str>, (i64, i64), FastHash>,
    seen_once: HashSet<u64, FastHash>,
    hasher: FastHash,
}

type FastHash = foldhash::fast::RandomState;

/// Sessions and distinct statements remembered, with keys and seen once; past it each
/// starts over.
const KEYS_KEPT: usize = 16_384;
const SEEN_ONCE_KEPT: usize = 65_536;

/// A stored session's or statement's `last_ms` is moved forward at most this often, so
/// its newest use is known to within this; pruning keeps that much more.
const TOUCH_MS: i64 = 60_000;

impl Store {
    /// Stores a batch in one transaction, [`ROWS_PER_INSERT`] rows per statement. A
    /// session's fields are stored once, in `audit_sessions`, a statement text once, in
    /// `audit_statements`; the line is made again when events are read. With `replayed`,
    /// records already stored (same time and event id) are skipped.
    pub fn insert_audit_records(
        &self,
        batch: &[&AuditRecord],
        keys: &mut AuditKeys,
        replayed: bool,
    ) -> Result<(), StateError> {
        let written = self.write(|tx| {
            let rows = batch
                .iter()
                .map(|record| {
                    let time_ms = record.time_ms();
                    let statement_id = match &record.event.statement {
                        Some(text) => keys.statement(tx, text, time_ms)?,
                        None => None,
                    };
                    Ok(AuditRow {
                        event_id: &record.event_id,
                        time_ms,
                        event_type: record.event.event_type.as_str(),
                        session_key: keys.session(tx, record.session(), time_ms)?,
                        statement: match statement_id {
                            Some(_) => None,
                            None => record.event.statement.as_deref(),
                        },
                        statement_id,
                        details: record.detail_members(),
                    })
                })
                .collect::<Result<Vec<_>, StateError>>()?;
            if replayed {
                let mut insert = tx.prepare_cached(&format!(
                    "INSERT INTO audit_events ({AUDIT_COLUMNS}) SELECT {}
                     WHERE NOT EXISTS (SELECT 1 FROM audit_events WHERE time_ms = ?2 AND event_id = ?1)",
                    ROW_PARAMETERS.replace(['(', ')'], "")
                ))?;
                for row in &rows {
                    insert.execute(row.values().as_slice())?;
                }
                return Ok(());
            }
            // Two statements only, whatever the batch's size: one that varied with the
            // remainder pushed the others out of the statement cache and was parsed again
            // and again.
            let mut full = tx.prepare_cached(&insert_rows_sql(ROWS_PER_INSERT))?;
            let mut single = tx.prepare_cached(&insert_rows_sql(1))?;
            let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
            for chunk in &mut chunks {
                let values: Vec<&dyn rusqlite::ToSql> =
                    chunk.iter().flat_map(AuditRow::values).collect();
                full.execute(values.as_slice())?;
            }
            for row in chunks.remainder() {
                single.execute(row.values().as_slice())?;
            }
            Ok(())
        });
        // Keys handed out in a transaction that did not commit point nowhere.
        if written.is_err() || keys.sessions.len() > KEYS_KEPT {
            keys.sessions.clear();
        }
        if written.is_err() || keys.statements.len() > KEYS_KEPT {
            keys.statements.clear();
        }
        if keys.seen_once.len() > SEEN_ONCE_KEPT {
            keys.seen_once.clear();
        }
        written
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
                "SELECT e.id, e.event_id, e.time_ms, e.type, e.json, e.session_json,
                        coalesce(st.text, e.statement) FROM (
                     SELECT e.id, e.event_id, e.time_ms, e.type, e.json, e.statement,
                            e.statement_id, s.json AS session_json
                     FROM audit_events AS e
                     LEFT JOIN audit_sessions AS s ON s.key = e.session_key
                     WHERE (?1 IS NULL OR e.id > ?1)
                       AND (?2 IS NULL OR e.time_ms >= ?2)
                       AND (?3 IS NULL OR s.identity = ?3)
                       AND (?4 IS NULL OR s.namespace = ?4)
                       AND (?5 IS NULL OR s.service LIKE ?5)
                       AND (?6 IS NULL OR e.type = ?6)
                     ORDER BY e.id DESC LIMIT ?7
                 ) AS e
                 LEFT JOIN audit_statements AS st ON st.id = e.statement_id
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
                        let event_id: String = row.get(1)?;
                        let details: String = row.get(4)?;
                        let session: Option<String> = row.get(5)?;
                        let session = session.unwrap_or_default();
                        let json = if details.starts_with('{') {
                            legacy_line(details, &session)
                        } else {
                            let time_ms: i64 = row.get(2)?;
                            let event_type: String = row.get(3)?;
                            let statement: Option<String> = row.get(6)?;
                            log_line(
                                &event_id,
                                &session,
                                time_ms,
                                &event_type,
                                statement.as_deref(),
                                &details,
                            )
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
    /// Statements and sessions no kept event refers to go too.
    pub fn prune_audit_events(&self, before_ms: i64) -> Result<usize, StateError> {
        let unused_before = before_ms.saturating_sub(TOUCH_MS);
        self.write(|tx| {
            tx.execute(
                "DELETE FROM audit_sessions WHERE last_ms < ?1",
                [unused_before],
            )?;
            tx.execute(
                "DELETE FROM audit_statements WHERE last_ms < ?1",
                [unused_before],
            )?;
            Ok(tx.execute("DELETE FROM audit_events WHERE time_ms < ?1", [before_ms])?)
        })
    }
}

impl AuditKeys {
    /// The key of `session` in `audit_sessions`, stored now if this sink has not stored
    /// it yet, its use at `time_ms` noted (to within [`TOUCH_MS`]).
    fn session(
        &mut self,
        tx: &Transaction<'_>,
        session: &SessionInfo,
        time_ms: i64,
    ) -> Result<i64, StateError> {
        if let Some((key, last_ms)) = self.sessions.get_mut(session.session_id.as_str()) {
            if time_ms - *last_ms >= TOUCH_MS {
                tx.prepare_cached(
                    "UPDATE audit_sessions SET last_ms = max(last_ms, ?2) WHERE key = ?1",
                )?
                .execute(params![*key, time_ms])?;
                *last_ms = time_ms;
            }
            return Ok(*key);
        }
        let key = tx
            .prepare_cached(
                "INSERT INTO audit_sessions
                     (session_id, identity, namespace, service, json, last_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (session_id) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)
                 RETURNING key",
            )?
            .query_row(
                params![
                    session.session_id,
                    session.identity.name,
                    session.identity.namespace,
                    session.service,
                    session.json_members(),
                    time_ms
                ],
                |row| row.get(0),
            )?;
        self.sessions
            .insert(session.session_id.clone(), (key, time_ms));
        Ok(key)
    }

    /// The id of `text` in `audit_statements` if it repeats, stored there now if this is
    /// its second sighting, its use at `time_ms` noted (to within [`TOUCH_MS`]); `None`
    /// the first time it is seen.
    fn statement(
        &mut self,
        tx: &Transaction<'_>,
        text: &Arc<str>,
        time_ms: i64,
    ) -> Result<Option<i64>, StateError> {
        if let Some((id, last_ms)) = self.statements.get_mut(text) {
            if time_ms - *last_ms >= TOUCH_MS {
                tx.prepare_cached(
                    "UPDATE audit_statements SET last_ms = max(last_ms, ?2) WHERE id = ?1",
                )?
                .execute(params![*id, time_ms])?;
                *last_ms = time_ms;
            }
            return Ok(Some(*id));
        }
        if self.seen_once.insert(self.hasher.hash_one(&**text)) {
            return Ok(None);
        }
        let id = tx
            .prepare_cached(
                "INSERT INTO audit_statements (text, last_ms) VALUES (?1, ?2)
                 ON CONFLICT (text) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)
                 RETURNING id",
            )?
            .query_row(params![&**text, time_ms], |row| row.get(0))?;
        self.statements.insert(text.clone(), (id, time_ms));
        Ok(Some(id))
    }

    /// Forgets every key (after pruning, which may have deleted some).
    fn clear(&mut self) {
        self.sessions.clear();
        self.statements.clear();
        self.seen_once.clear();
    }
}

/// One event as its row's columns.
struct AuditRow<'a> {
    event_id: &'a String,
    time_ms: i64,
    event_type: &'static str,
    session_key: i64,
    /// The text, when it is not (yet) in `audit_statements`.
    statement: Option<&'a str>,
    statement_id: Option<i64>,
    details: String,
}

/// The columns an event is written to, in [`AuditRow::values`]' order.
const AUDIT_COLUMNS: &str = "event_id, time_ms, type, session_key, statement, statement_id, json";
const ROW_PARAMETERS: &str = "(?, ?, ?, ?, ?, ?, ?)";

impl AuditRow<'_> {
    fn values(&self) -> [&dyn rusqlite::ToSql; 7] {
        [
            self.event_id,
            &self.time_ms,
            &self.event_type,
            &self.session_key,
            &self.statement,
            &self.statement_id,
            &self.details,
        ]
    }
}

/// A line stored whole (before sessions were kept apart), or stored without its
/// session's members (before events were kept in parts), given back whole.
fn legacy_line(line: String, session_members: &str) -> String {
    if session_members.is_empty() || line.contains("\"session_id\":") {
        return line;
    }
    // The line starts `{"event_id":"<id>",`; the id holds no quote.
    match line.find("\",") {
        Some(at) => {
            let head = at + 2;
            format!("{}{},{}", &line[..head], session_members, &line[head..])
        }
        None => line,
    }
}

/// Rows one INSERT statement writes: fewer statements per batch, well under SQLite's
/// limit on parameters (7 per row).
const ROWS_PER_INSERT: usize = 32;

/// `INSERT … VALUES (…), (…)` for `rows` rows.
fn insert_rows_sql(rows: usize) -> String {
    format!(
        "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES {}",
        vec![ROW_PARAMETERS; rows].join(", ")
    )
}

/// How often the state sink prunes expired events.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The audit sink that keeps recent events in the state database for `postern logs`.
pub struct StateAuditSink {
    store: Arc<Store>,
    retention: Duration,
    last_prune: Option<Instant>,
    keys: AuditKeys,
}

impl StateAuditSink {
    pub fn new(store: Arc<Store>, retention: Duration) -> StateAuditSink {
        StateAuditSink {
            store,
            retention,
            last_prune: None,
            keys: AuditKeys::default(),
        }
    }
}

impl AuditSink for StateAuditSink {
    fn name(&self) -> &str {
        "state"
    }

    fn write(&mut self, batch: &[&AuditRecord]) -> Result<(), String> {
        self.store_batch(batch, false)
    }

    fn replay(&mut self, batch: &[&AuditRecord]) -> Result<(), String> {
        self.store_batch(batch, true)
    }
}

impl StateAuditSink {
    /// Prunes first when it is time: a batch that fails is kept and offered again, so
    /// nothing may fail after it is written.
    fn store_batch(&mut self, batch: &[&AuditRecord], replayed: bool) -> Result<(), String> {
        if self.last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
            let cutoff = postern_model::unix_millis(std::time::SystemTime::now())
                .saturating_sub(retention_ms);
            self.keys.clear();
            self.store
                .prune_audit_events(cutoff)
                .map_err(|e| e.to_string())?;
        }
        self.store
            .insert_audit_records(batch, &mut self.keys, replayed)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use postern_model::{AuditEvent, EventType, IdentityInfo, SessionInfo};

    use super::*;
    use crate::KeySettings;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        let keys = KeySettings {
            inline: None,
            credentials_directory: None,
            key_file: dir.join("master.key"),
        };
        Arc::new(Store::open(dir, &keys).unwrap())
    }

    fn records(session_id: &str, count: usize, first: usize) -> Vec<AuditRecord> {
        let session = Arc::new(SessionInfo {
            session_id: session_id.into(),
            service: "orders.team-a".into(),
            identity: IdentityInfo {
                name: "alice".into(),
                namespace: "team-a".into(),
                groups: vec![],
            },
            ..SessionInfo::default()
        });
        (first..first + count)
            .map(|n| {
                let mut event = AuditEvent::new(EventType::Execute, session.clone());
                event.statement = Some(Arc::from(format!("SELECT {}", n % 2)));
                event.details.rows = Some(n as u64);
                AuditRecord::new(format!("ev-{n:04}"), event)
            })
            .collect()
    }

    fn read_all(store: &Store) -> Vec<String> {
        let query = AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        };
        let events = store.audit_events(&query).unwrap();
        events.into_iter().map(|e| e.json).collect()
    }

    #[test]
    fn events_read_back_as_the_lines_they_were_and_texts_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut sink = StateAuditSink::new(store.clone(), Duration::from_secs(3600));
        let records = records("s-1", 6, 0);
        let batch: Vec<&AuditRecord> = records.iter().collect();
        sink.write(&batch).unwrap();
        let lines: Vec<String> = records.iter().map(|r| r.json().to_owned()).collect();
        assert_eq!(read_all(&store), lines);
        let (texts, sessions): (i64, i64) = store
            .read(|conn| {
                Ok(conn.query_row(
                    "SELECT (SELECT count(*) FROM audit_statements), (SELECT count(*) FROM audit_sessions)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?)
            })
            .unwrap();
        assert_eq!((texts, sessions), (2, 1));
        // Filters still apply to the columns.
        let query = AuditQuery {
            identity: Some("alice.team-a".into()),
            service: Some("orders".into()),
            limit: 2,
            ..AuditQuery::default()
        };
        let newest = store.audit_events(&query).unwrap();
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[1].json, lines[5]);
    }

    #[test]
    fn a_replayed_batch_skips_what_was_stored_already() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut sink = StateAuditSink::new(store.clone(), Duration::from_secs(3600));
        let first = records("s-1", 3, 0);
        sink.write(&first.iter().collect::<Vec<_>>()).unwrap();
        // The spill file held the same three and two more.
        let spilled: Vec<AuditRecord> = records("s-1", 5, 0)
            .into_iter()
            .zip(
                first
                    .iter()
                    .map(|r| r.event.time)
                    .chain([SystemTime::now(); 2]),
            )
            .map(|(mut record, time)| {
                record.event.time = time;
                AuditRecord::from_json(record.json()).unwrap()
            })
            .collect();
        sink.replay(&spilled.iter().collect::<Vec<_>>()).unwrap();
        let stored = read_all(&store);
        assert_eq!(stored.len(), 5, "{stored:#?}");
        assert_eq!(stored[4], spilled[4].json());
    }

    #[test]
    fn rows_stored_by_older_versions_read_back_after_the_upgrade() {
        // Schema 8 held three kinds of rows: whole lines, lines without their session's
        // members (kept in `audit_sessions`), and parts. Row 4 was pruned already.
        let dir = tempfile::tempdir().unwrap();
        let record = &records("s-old", 1, 0)[0];
        let line = record.json().to_owned();
        let members = record.session().json_members().to_owned();
        let own = line.replacen(&format!("{members},"), "", 1);
        let mut conn = rusqlite::Connection::open(dir.path().join(crate::STATE_DB_FILE)).unwrap();
        crate::migrations::migrate_to(&mut conn, 8).unwrap();
        conn.execute(
            "INSERT INTO audit_sessions (session_id, json, last_ms) VALUES ('s-old', ?1, 3)",
            [&members],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO audit_events
                 (id, event_id, time_ms, type, identity, namespace, service, session_id, statement, json)
             VALUES (1, 'ev-0000', 1, 'EXECUTE', 'alice', 'team-a', 'orders.team-a', 's-old', NULL, ?1),
                    (2, 'ev-0000', 2, 'EXECUTE', 'alice', 'team-a', 'orders.team-a', 's-old', NULL, ?2),
                    (3, 'ev-0000', 3, 'EXECUTE', 'alice', 'team-a', 'orders.team-a', 's-old', ?3, ?4),
                    (4, 'ev-gone', 4, 'EXECUTE', 'alice', 'team-a', 'orders.team-a', 's-old', NULL, '')",
            params![line, own, record.event.statement.as_deref(), record.detail_members()],
        )
        .unwrap();
        conn.execute("DELETE FROM audit_events WHERE id = 4", [])
            .unwrap();
        drop(conn);

        let store = store(dir.path());
        // The parts row's time is its column's; the others keep theirs in the line.
        let parts_line = log_line(
            "ev-0000",
            &members,
            3,
            "EXECUTE",
            record.event.statement.as_deref(),
            &record.detail_members(),
        );
        assert_eq!(read_all(&store), vec![line.clone(), line, parts_line]);
        let query = AuditQuery {
            identity: Some("alice.team-a".into()),
            service: Some("orders".into()),
            limit: 10,
            ..AuditQuery::default()
        };
        assert_eq!(store.audit_events(&query).unwrap().len(), 3);
        // Ids go on after the highest ever handed out, so a follower misses nothing.
        let mut sink = StateAuditSink::new(store.clone(), Duration::from_secs(3600));
        let newer = records("s-old", 1, 1);
        sink.write(&newer.iter().collect::<Vec<_>>()).unwrap();
        let after = AuditQuery {
            after_id: Some(3),
            limit: 10,
            ..AuditQuery::default()
        };
        let followed = store.audit_events(&after).unwrap();
        assert_eq!(followed.len(), 1);
        assert_eq!(followed[0].id, 5);
        assert_eq!(followed[0].json, newer[0].json());
    }

    #[test]
    fn pruning_drops_old_events_their_sessions_and_unused_texts() {
        // Each text below is seen twice, so each is kept in `audit_statements`.
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut keys = AuditKeys::default();
        let mut old = records("s-old", 2, 0);
        for record in &mut old {
            record.event.time = SystemTime::now() - Duration::from_secs(7200);
            record.event.statement = Some(Arc::from("SELECT 'old'"));
        }
        let new = records("s-new", 4, 0);
        let batch: Vec<&AuditRecord> = old.iter().chain(&new).collect();
        store
            .insert_audit_records(&batch, &mut keys, false)
            .unwrap();
        let cutoff = postern_model::unix_millis(SystemTime::now()) - 3_600_000;
        assert_eq!(store.prune_audit_events(cutoff).unwrap(), 2);
        let texts: Vec<String> = store
            .read(|conn| {
                let mut stmt = conn.prepare("SELECT text FROM audit_statements ORDER BY text")?;
                let texts = stmt
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(texts)
            })
            .unwrap();
        assert_eq!(texts, ["SELECT 0", "SELECT 1"]);
        assert_eq!(
            read_all(&store),
            new.iter().map(|r| r.json()).collect::<Vec<_>>()
        );
    }
}
