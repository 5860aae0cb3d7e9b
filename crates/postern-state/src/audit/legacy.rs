//! The access log as versions before segments stored it (schema 4 to 8: a row per event,
//! holding its whole line, its line without the session's members, or its parts), moved
//! into segments as whole lines, once, when the store opens after migration 9.

use rusqlite::{Connection, TransactionBehavior};

use super::segment::{EventHead, SegmentWriter};
use super::write_segment;
use crate::StateError;

/// Moves the rows of `legacy_audit_events` into segments, oldest first, and drops the
/// legacy tables, in one transaction; does nothing when there are none.
pub(crate) fn convert_legacy_events(conn: &mut Connection) -> Result<(), StateError> {
    let legacy: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'legacy_audit_events'",
        [],
        |row| row.get(0),
    )?;
    if legacy == 0 {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        // Migration 9 stored each legacy session, with its identity and service.
        let mut rows = tx.prepare(
            "SELECT e.event_id, e.time_ms, e.type, e.json, s.json,
                    coalesce(st.text, e.statement), k.key
             FROM legacy_audit_events AS e
             JOIN audit_sessions AS k ON k.session_id = e.session_id
             LEFT JOIN legacy_audit_sessions AS s ON s.session_id = e.session_id
             LEFT JOIN legacy_audit_statements AS st ON st.id = e.statement_id
             ORDER BY e.id",
        )?;
        let mut rows = rows.query([])?;
        let mut segment = SegmentWriter::default();
        while let Some(row) = rows.next()? {
            let event_id: String = row.get(0)?;
            let time_ms: i64 = row.get(1)?;
            let event_type: String = row.get(2)?;
            let stored: String = row.get(3)?;
            let session: Option<String> = row.get(4)?;
            let session = session.unwrap_or_default();
            let line = if stored.starts_with('{') {
                whole_line(stored, &session)
            } else {
                let statement: Option<String> = row.get(5)?;
                postern_model::log_line(
                    &event_id,
                    &session,
                    time_ms,
                    &event_type,
                    statement.as_deref(),
                    &stored,
                )
            };
            let head = EventHead {
                event_id: &event_id,
                time_ms,
                event_type: &event_type,
                session_key: row.get(6)?,
            };
            segment.push_line(&head, &line)?;
            if segment.is_full() {
                write_segment(&crate::db::Db::Sqlite(&tx), &mut segment)?;
            }
        }
        write_segment(&crate::db::Db::Sqlite(&tx), &mut segment)?;
    }
    tx.execute_batch(
        "DROP TABLE legacy_audit_events;
         DROP TABLE legacy_audit_sessions;
         DROP TABLE legacy_audit_statements;",
    )?;
    tx.commit()?;
    Ok(())
}

/// A line stored whole (before sessions were kept apart), or stored without its
/// session's members (before events were kept in parts), given back whole.
fn whole_line(line: String, session_members: &str) -> String {
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
