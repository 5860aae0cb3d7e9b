//! The access log's queryable store: batches written by the audit pipeline's state sink,
//! each as one compressed segment of events ([`segment`]), read back by `postern logs`
//! (with filters, and by id for `--follow`), pruned by age.

mod legacy;
mod segment;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::db::{args, Db};
use postern_model::{log_line, AuditRecord, AuditSink, SessionInfo};

pub(crate) use legacy::convert_legacy_events;
use segment::{Body, DecodedSegment, EventHead, SegmentWriter, INDEX_BITS};

use crate::{StateError, Store};

/// Which events to read; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only events after this id (for following).
    pub after_id: Option<i64>,
    /// Only events before this id (for paging to older ones).
    pub before_id: Option<i64>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// `name` or `name.namespace`.
    pub identity: Option<String>,
    /// `name` or `name.namespace`.
    pub service: Option<String>,
    pub event_type: Option<String>,
    /// Only sessions of services in these namespaces (a caller's readable ones).
    pub namespaces: Option<Vec<String>>,
    pub limit: usize,
}

/// One stored event: its id (ids grow with every write; to follow from) and its line.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub json: String,
}

/// The keys of the sessions the state sink has stored, and when each was last marked
/// used. (foldhash, not SipHash: the seed is per process and the map is bounded.)
#[derive(Default)]
pub struct AuditKeys {
    sessions: HashMap<String, (i64, i64), foldhash::fast::RandomState>,
}

/// Sessions remembered; past it the sink starts over.
const SESSIONS_KEPT: usize = 16_384;

/// A stored session's `last_ms` is moved forward at most this often, so its newest event
/// is known to within this; pruning keeps that much more.
const TOUCH_MS: i64 = 60_000;

impl Store {
    /// Stores a batch in one transaction, as segments of up to
    /// [`segment::SEGMENT_EVENTS`] events; a session's fields are stored once, in
    /// `audit_sessions`. With `replayed`, records already stored (same time and event
    /// id) are skipped.
    pub fn insert_audit_records(
        &self,
        batch: &[&AuditRecord],
        keys: &mut AuditKeys,
        replayed: bool,
    ) -> Result<(), StateError> {
        let written = self.write_log(|tx| {
            let stored = match replayed {
                true => stored_event_ids(tx, batch)?,
                false => HashSet::new(),
            };
            let mut segment = SegmentWriter::default();
            for record in batch {
                let time_ms = record.time_ms();
                if replayed && stored.contains(&(time_ms, record.event_id.to_string())) {
                    continue;
                }
                let head = EventHead {
                    event_id: &record.event_id,
                    time_ms,
                    event_type: record.event.event_type.as_str(),
                    session_key: keys.session(tx, record.session(), time_ms)?,
                };
                segment.push_event(
                    &head,
                    record.event.statement.as_deref(),
                    &record.event.details,
                )?;
                if segment.is_full() {
                    write_segment(tx, &mut segment)?;
                }
            }
            write_segment(tx, &mut segment)
        });
        // Keys handed out in a transaction that did not commit point nowhere.
        if written.is_err() || keys.sessions.len() > SESSIONS_KEPT {
            keys.sessions.clear();
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
        let namespaces = match &query.namespaces {
            Some(list) if list.is_empty() => return Ok(Vec::new()),
            Some(list) => Some(serde_json::Value::from(list.clone()).to_string()),
            None => None,
        };
        let by_session = identity.is_some() || service.is_some() || namespaces.is_some();
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        self.read(|conn| {
            // The sessions' members, looked up as their events are met; with a filter,
            // only the matching sessions are known, and events of others are skipped.
            let mut sessions: HashMap<i64, Option<String>> = HashMap::new();
            if by_session {
                let sql = format!(
                    "SELECT key, json FROM audit_sessions
                     WHERE (identity = ?1 OR ?1 IS NULL) AND (namespace = ?2 OR ?2 IS NULL)
                       AND (service LIKE ?3 OR ?3 IS NULL)
                       AND (EXISTS (SELECT 1 FROM {} WHERE service LIKE '%.' || ns.value)
                            OR ?4 IS NULL)",
                    conn.json_elements("?4", &[], "ns")
                );
                let rows = conn.query_map(
                    &sql,
                    args![identity, identity_ns, service, namespaces],
                    |row| Ok((row.get(0)?, Some(row.get(1)?))),
                )?;
                sessions.extend(rows);
                if sessions.is_empty() {
                    return Ok(Vec::new());
                }
            }
            // Read a page of segments at a time, newest first, until enough events are
            // found: no result is held open while sessions are looked up (PostgreSQL's
            // connection answers one statement at a time).
            let segments = format!(
                "SELECT id, data FROM audit_segments
                 WHERE (id >= ?1 OR ?1 IS NULL) AND (last_ms >= ?2 OR ?2 IS NULL)
                   AND (id <= ?7 OR ?7 IS NULL) AND (id < ?10 OR ?10 IS NULL)
                   AND (?3 = 0 OR id IN (
                       SELECT ss.segment_id FROM audit_segment_sessions AS ss
                       JOIN audit_sessions AS s ON s.key = ss.session_key
                       WHERE (s.identity = ?4 OR ?4 IS NULL) AND (s.namespace = ?5 OR ?5 IS NULL)
                         AND (s.service LIKE ?6 OR ?6 IS NULL)
                         AND (EXISTS (SELECT 1 FROM {} WHERE s.service LIKE '%.' || ns.value)
                              OR ?8 IS NULL)))
                   AND (first_ms <= ?9 OR ?9 IS NULL)
                 ORDER BY id DESC LIMIT {SEGMENTS_PER_READ}",
                conn.json_elements("?8", &[], "ns")
            );
            let mut found = Vec::new();
            let mut older_than: Option<i64> = None;
            'pages: loop {
                let page: Vec<(i64, DecodedSegment)> = conn.query_map(
                    &segments,
                    args![
                        query.after_id.map(|id| id >> INDEX_BITS),
                        query.since_ms,
                        by_session,
                        identity,
                        identity_ns,
                        service,
                        query.before_id.map(|id| id >> INDEX_BITS),
                        namespaces,
                        query.until_ms,
                        older_than
                    ],
                    |row| Ok((row.get(0)?, DecodedSegment::decode(row.blob(1)?)?)),
                )?;
                let complete = page.len() < SEGMENTS_PER_READ;
                for (segment_id, decoded) in &page {
                    let segment_id = *segment_id;
                    older_than = Some(segment_id);
                    for (index, event) in decoded.events()?.iter().enumerate().rev() {
                        let id = (segment_id << INDEX_BITS) | i64::try_from(index).unwrap_or(0);
                        if query.after_id.is_some_and(|after| id <= after) {
                            // Ids only fall from here on.
                            break 'pages;
                        }
                        if query.before_id.is_some_and(|before| id >= before)
                            || query
                                .since_ms
                                .is_some_and(|since| event.head.time_ms < since)
                            || query
                                .until_ms
                                .is_some_and(|until| event.head.time_ms > until)
                            || query
                                .event_type
                                .as_deref()
                                .is_some_and(|wanted| event.head.event_type != wanted)
                        {
                            continue;
                        }
                        let members = match sessions.entry(event.head.session_key) {
                            Entry::Occupied(known) => known.into_mut(),
                            Entry::Vacant(_) if by_session => continue,
                            Entry::Vacant(unknown) => unknown.insert(conn.query_opt(
                                "SELECT json FROM audit_sessions WHERE key = ?1",
                                args![event.head.session_key],
                                |row| row.get(0),
                            )?),
                        };
                        // A session is pruned once its newest event is past retention; its
                        // events still in a segment kept for younger ones are past it too.
                        let Some(members) = members else {
                            continue;
                        };
                        let json = match &event.body {
                            Body::Line(line) => (*line).to_owned(),
                            Body::Parts { statement, details } => log_line(
                                event.head.event_id,
                                members,
                                event.head.time_ms,
                                event.head.event_type,
                                *statement,
                                details,
                            ),
                        };
                        found.push(StoredEvent { id, json });
                        if found.len() >= query.limit {
                            break 'pages;
                        }
                    }
                }
                if complete {
                    break;
                }
            }
            found.reverse();
            Ok(found)
        })
    }

    /// Deletes events older than `before_ms` (whole segments, so an event may outlive
    /// it by one batch's span); returns how many. Sessions with no event left go too.
    pub fn prune_audit_events(&self, before_ms: i64) -> Result<usize, StateError> {
        self.write_log(|tx| {
            tx.execute(
                "DELETE FROM audit_sessions WHERE last_ms < ?1",
                args![before_ms.saturating_sub(TOUCH_MS)],
            )?;
            let deleted: i64 = tx
                .query_map(
                    "DELETE FROM audit_segments WHERE last_ms < ?1 RETURNING events",
                    args![before_ms],
                    |row| row.get::<i64>(0),
                )?
                .into_iter()
                .sum();
            Ok(usize::try_from(deleted).unwrap_or(0))
        })
    }
}

/// Writes a filled segment and the sessions it holds, and empties it.
fn write_segment(conn: &Db<'_>, segment: &mut SegmentWriter) -> Result<(), StateError> {
    if segment.events == 0 {
        return Ok(());
    }
    let segment_id: i64 = conn.query_value(
        "INSERT INTO audit_segments (first_ms, last_ms, events, data)
         VALUES (?1, ?2, ?3, ?4) RETURNING id",
        args![
            segment.first_ms,
            segment.last_ms,
            segment.events,
            segment.compressed()
        ],
    )?;
    // Every session of the segment in one statement (one round trip on PostgreSQL,
    // inside the fleet's write lock), its keys given as a JSON array.
    let keys = serde_json::to_string(segment.sessions())
        .map_err(|e| StateError::Corrupt(format!("session keys: {e}")))?;
    conn.execute(
        &format!(
            "INSERT INTO audit_segment_sessions (session_key, segment_id)
             SELECT CAST(keys.value AS BIGINT), ?2 FROM {}",
            conn.json_elements("?1", &[], "keys")
        ),
        args![keys, segment_id],
    )?;
    segment.clear();
    Ok(())
}

/// The (time, event id) of stored events as old as the batch's: what a replay skips.
fn stored_event_ids(
    tx: &Db<'_>,
    batch: &[&AuditRecord],
) -> Result<HashSet<(i64, String)>, StateError> {
    let times = batch.iter().map(|record| record.time_ms());
    let (Some(first), Some(last)) = (times.clone().min(), times.max()) else {
        return Ok(HashSet::new());
    };
    let mut stored = HashSet::new();
    tx.query_each(
        "SELECT data FROM audit_segments WHERE last_ms >= ?1 AND first_ms <= ?2",
        args![first, last],
        |row| {
            let decoded = DecodedSegment::decode(row.blob(0)?)?;
            for event in decoded.events()? {
                stored.insert((event.head.time_ms, event.head.event_id.to_owned()));
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    Ok(stored)
}

impl AuditKeys {
    /// The key of `session` in `audit_sessions`, stored now if this sink has not stored
    /// it yet, its use at `time_ms` noted (to within [`TOUCH_MS`]).
    fn session(
        &mut self,
        tx: &Db<'_>,
        session: &SessionInfo,
        time_ms: i64,
    ) -> Result<i64, StateError> {
        if let Some((key, last_ms)) = self.sessions.get_mut(session.session_id.as_str()) {
            if time_ms - *last_ms >= TOUCH_MS {
                tx.execute(
                    &format!(
                        "UPDATE audit_sessions SET last_ms = {}(last_ms, ?2) WHERE key = ?1",
                        tx.greatest()
                    ),
                    args![*key, time_ms],
                )?;
                *last_ms = time_ms;
            }
            return Ok(*key);
        }
        let key = tx.query_value(
            &format!(
                "INSERT INTO audit_sessions
                     (session_id, identity, namespace, service, json, last_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (session_id)
                     DO UPDATE SET last_ms = {}(audit_sessions.last_ms, excluded.last_ms)
                 RETURNING key",
                tx.greatest()
            ),
            args![
                session.session_id,
                session.identity.name,
                session.identity.namespace,
                session.service,
                session.json_members(),
                time_ms
            ],
        )?;
        self.sessions
            .insert(session.session_id.clone(), (key, time_ms));
        Ok(key)
    }

    /// Forgets every key (after pruning, which may have deleted some).
    fn clear(&mut self) {
        self.sessions.clear();
    }
}

/// Segments read by one statement while looking for events (a segment holds up to
/// [`segment::SEGMENT_EVENTS`]).
const SEGMENTS_PER_READ: usize = 8;

/// How often the state sink prunes expired events.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The audit sink that keeps recent events in the state database for `postern logs`.
pub struct StateAuditSink {
    store: std::sync::Arc<Store>,
    retention: Duration,
    last_prune: Option<Instant>,
    keys: AuditKeys,
}

impl StateAuditSink {
    pub fn new(store: std::sync::Arc<Store>, retention: Duration) -> StateAuditSink {
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
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use postern_model::{AuditEvent, EventType, IdentityInfo, SessionInfo};

    use super::*;
    use crate::testing::on_both_backends;
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
        // Two prepared statements' texts, shared by their events as the proxy shares them.
        let texts: [Arc<str>; 2] = [Arc::from("SELECT 0"), Arc::from("SELECT 1")];
        (first..first + count)
            .map(|n| {
                let mut event = AuditEvent::new(EventType::Execute, session.clone());
                event.statement = Some(texts[n % 2].clone());
                event.details.rows = Some(n as u64);
                AuditRecord::new(format!("ev-{n:04}"), event)
            })
            .collect()
    }

    fn query(limit: usize) -> AuditQuery {
        AuditQuery {
            limit,
            ..AuditQuery::default()
        }
    }

    fn read(store: &Store, query: &AuditQuery) -> Vec<String> {
        let events = store.audit_events(query).unwrap();
        events.into_iter().map(|e| e.json).collect()
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store
            .read(|conn| conn.query_row(sql, args![], |row| row.get(0)))
            .unwrap()
    }

    #[test]
    fn rows_stored_by_older_versions_read_back_after_the_upgrade() {
        // Schema 8 held three kinds of rows: whole lines, lines without their session's
        // members (kept in `audit_sessions`), and parts.
        let dir = tempfile::tempdir().unwrap();
        let record = &records("s-old", 1, 0)[0];
        let line = record.json().to_owned();
        let members = record.session().json_members().to_owned();
        let own = line.replacen(&format!("{members},"), "", 1);
        let mut conn = rusqlite::Connection::open(dir.path().join(crate::STATE_DB_FILE)).unwrap();
        crate::migrations::migrate_to(&mut conn, 8).unwrap();
        conn.execute(
            "INSERT INTO audit_sessions (session_id, json, last_ms) VALUES ('s-old', ?1, 3)",
            rusqlite::params![&members],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO audit_events
                 (id, event_id, time_ms, type, identity, namespace, service, session_id, statement, json)
             VALUES (1, 'ev-0000', 1, 'EXECUTE', 'alice', 'team-a', 'orders.team-a', 's-old', NULL, ?1),
                    (2, 'ev-0000', 2, 'EXECUTE', 'alice', 'team-a', 'orders.team-a', 's-old', NULL, ?2),
                    (3, 'ev-0000', 3, 'EXECUTE', 'alice', 'team-a', 'orders.team-a', 's-old', ?3, ?4)",
            rusqlite::params![line, own, record.event.statement.as_deref(), record.detail_members()],
        )
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
        let all = store.audit_events(&query(10)).unwrap();
        let lines: Vec<&str> = all.iter().map(|e| e.json.as_str()).collect();
        assert_eq!(lines, [line.as_str(), &line, &parts_line]);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'legacy_%'"
            ),
            0
        );
        let filtered = AuditQuery {
            identity: Some("alice.team-a".into()),
            service: Some("orders".into()),
            ..query(10)
        };
        assert_eq!(store.audit_events(&filtered).unwrap().len(), 3);
        // New events follow the converted ones.
        let mut sink = StateAuditSink::new(store.clone(), Duration::from_secs(3600));
        let newer = records("s-old", 1, 1);
        sink.write(&newer.iter().collect::<Vec<_>>()).unwrap();
        let after = AuditQuery {
            after_id: all.last().map(|e| e.id),
            ..query(10)
        };
        assert_eq!(read(&store, &after), [newer[0].json()]);
    }

    on_both_backends! {
        fn events_read_back_as_the_lines_they_were_a_batch_is_one_row_a_session_stored_once(state) {
            let store = Arc::new(state.open());
            let mut sink = StateAuditSink::new(store.clone(), Duration::from_secs(3600));
            let records = records("s-1", 6, 0);
            sink.write(&records.iter().collect::<Vec<_>>()).unwrap();
            let lines: Vec<String> = records.iter().map(|r| r.json().to_owned()).collect();
            assert_eq!(read(&store, &query(1000)), lines);
            assert_eq!(count(&store, "SELECT count(*) FROM audit_segments"), 1);
            assert_eq!(count(&store, "SELECT count(*) FROM audit_sessions"), 1);
            // Filters on the session's fields; the newest `limit` come back, oldest first.
            let filtered = AuditQuery {
                identity: Some("alice.team-a".into()),
                service: Some("orders".into()),
                limit: 2,
                ..AuditQuery::default()
            };
            assert_eq!(read(&store, &filtered), lines[4..]);
            let other = AuditQuery {
                identity: Some("bob".into()),
                ..query(10)
            };
            assert!(read(&store, &other).is_empty());
        }

        fn paging_back_by_id_bounding_by_time_and_keeping_to_namespaces(state) {
            let store = Arc::new(state.open());
            let mut sink = StateAuditSink::new(store.clone(), Duration::from_secs(3600));
            let mut older = records("s-1", 3, 0);
            for record in &mut older {
                record.event.time = SystemTime::now() - Duration::from_secs(600);
            }
            sink.write(&older.iter().collect::<Vec<_>>()).unwrap();
            let newer = records("s-2", 3, 3);
            sink.write(&newer.iter().collect::<Vec<_>>()).unwrap();
            let all = store.audit_events(&query(1000)).unwrap();
            assert_eq!(all.len(), 6);
            // Before an id: the older ones, across the segment boundary, none twice.
            let before = AuditQuery {
                before_id: Some(all[4].id),
                ..query(1000)
            };
            let page: Vec<i64> = store
                .audit_events(&before)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect();
            assert_eq!(page, all[..4].iter().map(|e| e.id).collect::<Vec<_>>());
            // Until a time: the older segment only.
            let until = AuditQuery {
                until_ms: Some(postern_model::unix_millis(SystemTime::now()) - 300_000),
                ..query(1000)
            };
            assert_eq!(store.audit_events(&until).unwrap().len(), 3);
            // Namespaces: the sessions of services in them (orders.team-a here), or nothing.
            let readable = |namespaces: &[&str]| AuditQuery {
                namespaces: Some(namespaces.iter().map(|s| s.to_string()).collect()),
                ..query(1000)
            };
            assert_eq!(store.audit_events(&readable(&["team-a"])).unwrap().len(), 6);
            assert_eq!(
                store
                    .audit_events(&readable(&["team-b", "team-a"]))
                    .unwrap()
                    .len(),
                6
            );
            assert!(store
                .audit_events(&readable(&["team-b"]))
                .unwrap()
                .is_empty());
            assert!(store.audit_events(&readable(&["team"])).unwrap().is_empty());
            assert!(store.audit_events(&readable(&[])).unwrap().is_empty());
        }

        fn reads_go_on_past_a_page_of_segments_until_enough_events_are_found(state) {
            // More segments than one read fetches, most of them without a matching event.
            let store = Arc::new(state.open());
            let mut sink = StateAuditSink::new(store.clone(), Duration::from_secs(3600));
            let batches = 3 * SEGMENTS_PER_READ;
            let mut written = Vec::new();
            for n in 0..batches {
                let mut batch = records(&format!("s-{n}"), 1, n);
                if n % 5 == 0 {
                    batch[0].event.event_type = EventType::Query;
                }
                sink.write(&batch.iter().collect::<Vec<_>>()).unwrap();
                written.extend(batch);
            }
            assert_eq!(
                count(&store, "SELECT count(*) FROM audit_segments"),
                i64::try_from(batches).unwrap()
            );
            let all = read(&store, &query(1000));
            assert_eq!(all.len(), batches);
            let newest: Vec<&str> = written[batches - 10..].iter().map(|r| r.json()).collect();
            assert_eq!(read(&store, &query(10)), newest);
            let queries: Vec<&str> = written
                .iter()
                .filter(|r| r.event.event_type == EventType::Query)
                .map(|r| r.json())
                .collect();
            let only_queries = AuditQuery {
                event_type: Some("QUERY".into()),
                ..query(1000)
            };
            assert_eq!(read(&store, &only_queries), queries);
            let two_queries = AuditQuery {
                limit: 2,
                ..only_queries
            };
            assert_eq!(read(&store, &two_queries), queries[queries.len() - 2..]);
        }

        fn following_by_id_and_filtering_by_type_and_time_span_segments(state) {
            let store = Arc::new(state.open());
            let mut sink = StateAuditSink::new(store.clone(), Duration::from_secs(3600));
            let mut first = records("s-1", 3, 0);
            first[1].event.event_type = EventType::Query;
            first[0].event.time = SystemTime::now() - Duration::from_secs(600);
            let second = records("s-2", 2, 3);
            sink.write(&first.iter().collect::<Vec<_>>()).unwrap();
            let seen = store.audit_events(&query(1000)).unwrap();
            assert_eq!(seen.len(), 3);
            sink.write(&second.iter().collect::<Vec<_>>()).unwrap();
            // Following from the last id seen gives exactly what came after.
            let after = AuditQuery {
                after_id: seen.last().map(|e| e.id),
                ..query(1000)
            };
            let newer = store.audit_events(&after).unwrap();
            let newer_lines: Vec<&str> = newer.iter().map(|e| e.json.as_str()).collect();
            assert_eq!(newer_lines, [second[0].json(), second[1].json()]);
            assert!(newer.iter().all(|e| e.id > seen[2].id));
            let queries = AuditQuery {
                event_type: Some("QUERY".into()),
                ..query(1000)
            };
            assert_eq!(read(&store, &queries), [first[1].json()]);
            let recent = AuditQuery {
                since_ms: Some(postern_model::unix_millis(SystemTime::now()) - 60_000),
                ..query(1000)
            };
            assert_eq!(read(&store, &recent).len(), 4);
        }

        fn a_replayed_batch_skips_what_was_stored_already(state) {
            let store = Arc::new(state.open());
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
            let stored = read(&store, &query(1000));
            assert_eq!(stored.len(), 5, "{stored:#?}");
            assert_eq!(stored[4], spilled[4].json());
        }

        fn pruning_drops_old_segments_and_their_sessions(state) {
            let store = Arc::new(state.open());
            let mut keys = AuditKeys::default();
            let mut old = records("s-old", 2, 0);
            for record in &mut old {
                record.event.time = SystemTime::now() - Duration::from_secs(7200);
            }
            let new = records("s-new", 4, 0);
            for batch in [&old, &new] {
                store
                    .insert_audit_records(&batch.iter().collect::<Vec<_>>(), &mut keys, false)
                    .unwrap();
            }
            let cutoff = postern_model::unix_millis(SystemTime::now()) - 3_600_000;
            assert_eq!(store.prune_audit_events(cutoff).unwrap(), 2);
            assert_eq!(count(&store, "SELECT count(*) FROM audit_sessions"), 1);
            assert_eq!(
                count(&store, "SELECT count(*) FROM audit_segment_sessions"),
                1
            );
            assert_eq!(
                read(&store, &query(1000)),
                new.iter().map(|r| r.json()).collect::<Vec<_>>()
            );
        }
    }
}
