//! The access log's events and the two traits around them: [`AccessLog`], which the proxy
//! hands events to without ever waiting, and [`AuditSink`], which a destination (file,
//! stdout, the state store, later a WASM plugin) implements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    SessionStart,
    SessionEnd,
    Query,
    Parse,
    Bind,
    Execute,
    Close,
    FunctionCall,
    AuthFailed,
    PolicyDenied,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::SessionStart,
        EventType::SessionEnd,
        EventType::Query,
        EventType::Parse,
        EventType::Bind,
        EventType::Execute,
        EventType::Close,
        EventType::FunctionCall,
        EventType::AuthFailed,
        EventType::PolicyDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionStart => "SESSION_START",
            EventType::SessionEnd => "SESSION_END",
            EventType::Query => "QUERY",
            EventType::Parse => "PARSE",
            EventType::Bind => "BIND",
            EventType::Execute => "EXECUTE",
            EventType::Close => "CLOSE",
            EventType::FunctionCall => "FUNCTION_CALL",
            EventType::AuthFailed => "AUTH_FAILED",
            EventType::PolicyDenied => "POLICY_DENIED",
        }
    }

    /// What the access log records unless `audit.events` says otherwise: one event per
    /// statement executed, and the session, authentication and denial events. PARSE, BIND
    /// and CLOSE (full protocol capture) are opt-in.
    pub const DEFAULT_RECORDED: [EventType; 7] = [
        EventType::SessionStart,
        EventType::SessionEnd,
        EventType::Query,
        EventType::Execute,
        EventType::FunctionCall,
        EventType::AuthFailed,
        EventType::PolicyDenied,
    ];

    /// Parses a type as written in the log, case-insensitively.
    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IdentityInfo {
    pub name: String,
    pub namespace: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamInfo {
    pub target: String,
    pub user: String,
    pub database: String,
}

/// What every event of one session carries; shared, so an event costs no copies of it.
#[derive(Debug, Default, Serialize)]
pub struct SessionInfo {
    pub connection_id: u64,
    pub session_id: String,
    pub identity: IdentityInfo,
    /// `name.namespace` of the service.
    pub service: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamInfo>,
    pub client_address: String,
    pub application_name: String,
    /// Events of this session that were lost (sink down and disk budget spent).
    #[serde(skip)]
    pub dropped: AtomicU64,
    /// The fields above as JSON object members, serialized once for all of its events.
    #[serde(skip)]
    pub json_members: OnceLock<String>,
}

impl SessionInfo {
    /// This session's fields as JSON object members (`"a":1,"b":"x"`, no braces), made
    /// at its first event and shared by every event after.
    pub fn json_members(&self) -> &str {
        self.json_members.get_or_init(|| {
            serde_json::to_string(self)
                .ok()
                .and_then(|json| {
                    json.strip_prefix('{')
                        .and_then(|j| j.strip_suffix('}'))
                        .map(str::to_owned)
                })
                .unwrap_or_default()
        })
    }

    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Totals of a finished session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionTotals {
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub statements: u64,
    pub duration_ms: f64,
    pub end_reason: String,
    pub events_dropped: u64,
}

/// One access-log event. Fields that do not apply to a type are left out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Its fields join the event's own in the log line (see [`AuditRecord`]).
    #[serde(skip)]
    pub session: Arc<SessionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// CLOSE: `statement` or `portal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closes: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter_count: Option<u16>,
    /// Only with `audit.log_parameters`; `null` for SQL NULL, `\x…` for binary values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<Option<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_oid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// POLICY_DENIED: the deciding rule and the refused statement kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_kind: Option<String>,
    /// AUTH_FAILED and connect-time refusals: why, as the client was told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<SessionTotals>,
}

fn serialize_time<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::rfc3339_millis(crate::time::unix_millis(
        *time,
    )))
}

impl AuditEvent {
    /// An event of `event_type` for `session`, now, with no details yet.
    pub fn new(event_type: EventType, session: Arc<SessionInfo>) -> AuditEvent {
        AuditEvent {
            time: SystemTime::now(),
            event_type,
            session,
            statement: None,
            statement_name: None,
            portal: None,
            closes: None,
            parameter_count: None,
            parameters: None,
            function_oid: None,
            duration_ms: None,
            command_tag: None,
            rows: None,
            sqlstate: None,
            error_message: None,
            rule: None,
            statement_kind: None,
            reason: None,
            totals: None,
        }
    }
}

/// Where the proxy puts events. `record` never blocks: a full queue counts the event as
/// dropped (on its session) instead.
pub trait AccessLog: Send + Sync + 'static {
    fn record(&self, event: AuditEvent);

    /// False while events would be lost and the log is configured to block: statements
    /// are then refused instead of run unaudited.
    fn accepting(&self) -> bool;

    /// With `audit.log_parameters`, the byte cap per parameter value.
    fn parameter_cap(&self) -> Option<usize>;

    /// Whether events of this type are recorded at all (`audit.events`); callers skip
    /// building the others.
    fn records(&self, event_type: EventType) -> bool;
}

/// One event ready for a sink: its JSON line (secrets already redacted) and the columns a
/// queryable sink indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub event_id: String,
    pub time_ms: i64,
    pub event_type: String,
    pub identity: String,
    pub namespace: String,
    pub service: String,
    pub session_id: String,
    /// `{"event_id":…,<session members>,<event members>}`.
    pub json: String,
    /// Where the session's members (the same in every event of the session) sit in
    /// `json`, so a sink can store them once per session. `None` in records spilled by
    /// older versions, whose line is whole.
    #[serde(default)]
    pub session_members: Option<(usize, usize)>,
}

impl AuditRecord {
    /// The line without the session's members, and those members; `None` when the record
    /// does not say where they are.
    pub fn split_session(&self) -> Option<(String, &str)> {
        let (start, end) = self.session_members?;
        let members = self.json.get(start..end)?;
        // The members are followed by the comma before the event's own.
        let rest = self.json.get(end + 1..)?;
        Some((format!("{}{}", self.json.get(..start)?, rest), members))
    }
}

/// The whole line again from a line without its session's members and those members.
pub fn join_session(event: &str, session_members: &str) -> String {
    // The line starts `{"event_id":"<id>",`; the id holds no quote.
    match event.find("\",") {
        Some(at) if !session_members.is_empty() => {
            let head = at + 2;
            format!("{}{},{}", &event[..head], session_members, &event[head..])
        }
        _ => event.to_owned(),
    }
}

/// A destination of audit records. Called from the audit pipeline's own thread, never
/// from the hot path; an error makes the pipeline keep the batch on disk and retry.
pub trait AuditSink: Send + 'static {
    fn name(&self) -> &str;
    fn write(&mut self, batch: &[&AuditRecord]) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_splits_into_its_session_and_its_own_members_and_joins_again() {
        let session = Arc::new(SessionInfo {
            session_id: "s-1".into(),
            service: "orders.team-a".into(),
            ..SessionInfo::default()
        });
        let members = session.json_members().to_owned();
        assert!(members.contains("\"session_id\":\"s-1\""), "{members}");
        assert!(!members.starts_with('{'));
        let head = "{\"event_id\":\"ab-01\",";
        let json = format!("{head}{members},\"type\":\"QUERY\"}}");
        let record = AuditRecord {
            event_id: "ab-01".into(),
            time_ms: 0,
            event_type: "QUERY".into(),
            identity: String::new(),
            namespace: String::new(),
            service: String::new(),
            session_id: "s-1".into(),
            json: json.clone(),
            session_members: Some((head.len(), head.len() + members.len())),
        };
        let (own, kept) = record.split_session().unwrap();
        assert_eq!(own, "{\"event_id\":\"ab-01\",\"type\":\"QUERY\"}");
        assert_eq!(kept, members);
        assert_eq!(join_session(&own, kept), json);
        let whole: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(whole["service"], "orders.team-a");
        // A record from an older spill file says nothing of its session.
        let old = AuditRecord {
            session_members: None,
            ..record
        };
        assert!(old.split_session().is_none());
    }
}
