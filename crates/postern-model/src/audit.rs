//! The access log's events and the two traits around them: [`AccessLog`], which the proxy
//! hands events to without ever waiting, and [`AuditSink`], which a destination (file,
//! stdout, the state store, later a WASM plugin) implements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

mod encoding;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub name: String,
    pub namespace: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpstreamInfo {
    pub target: String,
    pub user: String,
    pub database: String,
}

/// What every event of one session carries; shared, so an event costs no copies of it.
#[derive(Debug, Default, Serialize, Deserialize)]
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
        self.json_members
            .get_or_init(|| members(serde_json::to_string(self).unwrap_or_default()))
    }

    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Totals of a finished session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionTotals {
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub statements: u64,
    pub duration_ms: f64,
    pub end_reason: String,
    pub events_dropped: u64,
}

/// One access-log event: its time, type, session and statement, and the details that
/// apply to its type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Its fields join the event's own in the log line (see [`AuditRecord::json`]).
    #[serde(skip)]
    pub session: Arc<SessionInfo>,
    /// Shared with the session's statement map, so an EXECUTE costs no copy of its text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub statement: Option<Arc<str>>,
    #[serde(flatten)]
    pub details: EventDetails,
}

/// What a CLOSE closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Closes {
    Statement,
    Portal,
}

/// An event's fields besides its time, type and statement. Those that do not apply to a
/// type are left out of the JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventDetails {
    /// Shared with the session's statement and portal maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_name: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closes: Option<Closes>,
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
    pub command_tag: Option<CompactString>,
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
    /// Boxed: one event per session has them, and every event would carry their room.
    pub totals: Option<Box<SessionTotals>>,
}

impl EventDetails {
    /// These details as JSON object members without braces, exactly as serde_json writes
    /// them (tested).
    pub fn members(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_members(&mut out);
        out
    }

    /// [`Self::members`] appended to `out`, by hand: every line a sink writes or the state
    /// store gives back has them, and serde's escaping of each key and value, its
    /// allocations and its float formatting through a writer were a seventh of the state
    /// sink's instructions when it made them for every event. (The state store now keeps
    /// details encoded, [`EventDetails::encode`], and makes them only when read.)
    fn write_members(&self, out: &mut String) {
        let start = out.len();
        let key = |out: &mut String, name: &str| {
            if out.len() > start {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
        };
        let text = |out: &mut String, name: &str, value: Option<&str>| {
            if let Some(value) = value {
                key(out, name);
                json_string(out, value);
            }
        };
        let number = |out: &mut String, name: &str, value: Option<u64>| {
            if let Some(value) = value {
                key(out, name);
                out.push_str(itoa::Buffer::new().format(value));
            }
        };
        let other = |out: &mut String, name: &str, value: Option<&dyn erased::Json>| {
            if let Some(value) = value {
                key(out, name);
                out.push_str(&value.json());
            }
        };
        text(out, "statement_name", self.statement_name.as_deref());
        text(out, "portal", self.portal.as_deref());
        if let Some(closes) = self.closes {
            key(out, "closes");
            out.push_str(match closes {
                Closes::Statement => "\"statement\"",
                Closes::Portal => "\"portal\"",
            });
        }
        number(out, "parameter_count", self.parameter_count.map(u64::from));
        other(out, "parameters", self.parameters.as_ref().map(|p| p as _));
        number(out, "function_oid", self.function_oid.map(u64::from));
        if let Some(duration) = self.duration_ms {
            key(out, "duration_ms");
            // serde_json's own float formatting (NaN and infinities are `null`).
            match duration.is_finite() {
                true => out.push_str(zmij::Buffer::new().format_finite(duration)),
                false => out.push_str("null"),
            }
        }
        text(out, "command_tag", self.command_tag.as_deref());
        number(out, "rows", self.rows);
        text(out, "sqlstate", self.sqlstate.as_deref());
        text(out, "error_message", self.error_message.as_deref());
        text(out, "rule", self.rule.as_deref());
        text(out, "statement_kind", self.statement_kind.as_deref());
        text(out, "reason", self.reason.as_deref());
        other(out, "totals", self.totals.as_ref().map(|t| t as _));
    }
}

/// `text` as a JSON string: copied as it is when nothing in it needs escaping (what
/// serde_json escapes: control characters, `"` and `\\`), through serde_json otherwise.
fn json_string(out: &mut String, text: &str) {
    // No early exit, so the check runs over many bytes at once.
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
    }
}

/// Values written by serde_json inside [`EventDetails::members`].
mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

/// An event's time in the log: RFC 3339, UTC, milliseconds.
mod rfc3339 {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::rfc3339_millis(crate::time::unix_millis(
            *time,
        )))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        crate::time::parse_rfc3339_millis(&text)
            .and_then(|millis| u64::try_from(millis).ok())
            .map(|millis| UNIX_EPOCH + Duration::from_millis(millis))
            .ok_or_else(|| serde::de::Error::custom(format!("not an event time: {text}")))
    }
}

impl AuditEvent {
    /// An event of `event_type` for `session`, now, with no details yet.
    pub fn new(event_type: EventType, session: Arc<SessionInfo>) -> AuditEvent {
        AuditEvent {
            time: SystemTime::now(),
            event_type,
            session,
            statement: None,
            details: EventDetails::default(),
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

/// One event ready for a sink: numbered, its secrets redacted. Its JSON line is made
/// only if a sink asks for it, once for all sinks; a sink that keeps columns (the state
/// store) reads the event itself.
#[derive(Debug)]
pub struct AuditRecord {
    /// Short (21 bytes as the pipeline numbers events): kept inline.
    pub event_id: CompactString,
    pub event: AuditEvent,
    line: OnceLock<String>,
}

impl AuditRecord {
    pub fn new(event_id: impl Into<CompactString>, event: AuditEvent) -> AuditRecord {
        AuditRecord {
            event_id: event_id.into(),
            event,
            line: OnceLock::new(),
        }
    }

    pub fn time_ms(&self) -> i64 {
        crate::time::unix_millis(self.event.time)
    }

    pub fn session(&self) -> &SessionInfo {
        &self.event.session
    }

    /// The JSON line `{"event_id":…,<session members>,"time":…,"type":…,…}`.
    pub fn json(&self) -> &str {
        self.line.get_or_init(|| {
            log_line(
                &self.event_id,
                self.event.session.json_members(),
                self.time_ms(),
                self.event.event_type.as_str(),
                self.event.statement.as_deref(),
                &self.detail_members(),
            )
        })
    }

    /// The event's details as JSON object members, without braces (empty when none apply).
    pub fn detail_members(&self) -> String {
        self.event.details.members()
    }

    /// A line made by [`AuditRecord::json`] read back (a spilled record replayed), or a
    /// line spilled by an older version, which wrapped it as `{"json":"<line>",…}`.
    pub fn from_json(line: &str) -> Result<AuditRecord, serde_json::Error> {
        #[derive(Deserialize)]
        struct Line {
            event_id: String,
            #[serde(flatten)]
            session: SessionInfo,
            #[serde(flatten)]
            event: AuditEvent,
        }
        #[derive(Deserialize)]
        struct Wrapped {
            json: String,
        }
        let parsed: Line = match serde_json::from_str(line) {
            Ok(parsed) => parsed,
            Err(e) => match serde_json::from_str::<Wrapped>(line) {
                Ok(wrapped) => serde_json::from_str(&wrapped.json)?,
                Err(_) => return Err(e),
            },
        };
        let mut event = parsed.event;
        event.session = Arc::new(parsed.session);
        Ok(AuditRecord::new(parsed.event_id, event))
    }
}

/// `{…}` → `…`: an object's members, to join with others.
fn members(mut object: String) -> String {
    if object.len() < 2 || !object.starts_with('{') || !object.ends_with('}') {
        return String::new();
    }
    // In place: this runs for every event the state sink stores.
    object.pop();
    object.remove(0);
    object
}

/// An access-log line from its parts: how a record is written, and how a store that
/// keeps the parts apart gives it back. Members are JSON without braces.
pub fn log_line(
    event_id: &str,
    session_members: &str,
    time_ms: i64,
    event_type: &str,
    statement: Option<&str>,
    detail_members: &str,
) -> String {
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let mut line = String::with_capacity(
        64 + session_members.len() + statement.map_or(0, str::len) + detail_members.len(),
    );
    line.push_str("{\"event_id\":");
    line.push_str(&quoted(event_id));
    line.push(',');
    if !session_members.is_empty() {
        line.push_str(session_members);
        line.push(',');
    }
    line.push_str("\"time\":\"");
    line.push_str(&crate::time::rfc3339_millis(time_ms));
    line.push_str("\",\"type\":");
    line.push_str(&quoted(event_type));
    if let Some(statement) = statement {
        line.push_str(",\"statement\":");
        line.push_str(&quoted(statement));
    }
    if !detail_members.is_empty() {
        line.push(',');
        line.push_str(detail_members);
    }
    line.push('}');
    line
}

/// A destination of audit records. Called from the audit pipeline's own thread, never
/// from the hot path; an error makes the pipeline keep the batch on disk and retry.
pub trait AuditSink: Send + 'static {
    fn name(&self) -> &str;
    fn write(&mut self, batch: &[&AuditRecord]) -> Result<(), String>;

    /// Writes records from the spill file. Some may have reached the sink already (the
    /// process stopped between a write and the spill file's truncation): a sink that can
    /// tell skips them.
    fn replay(&mut self, batch: &[&AuditRecord]) -> Result<(), String> {
        self.write(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Details to check their serializations with: none, an EXECUTE's, every field (with
    /// text that needs escaping), odd numbers.
    pub(super) fn sample_details() -> Vec<EventDetails> {
        let execute = EventDetails {
            statement_name: Some("P0_1".into()),
            portal: Some("".into()),
            duration_ms: Some(0.05),
            command_tag: Some("SELECT 1".into()),
            rows: Some(1),
            ..EventDetails::default()
        };
        let everything = EventDetails {
            statement_name: Some("quote \" back\\slash".into()),
            portal: Some("tab\tnew\nline \u{1} ünï €".into()),
            closes: Some(Closes::Portal),
            parameter_count: Some(u16::MAX),
            parameters: Some(vec![Some("a\"b".into()), None]),
            function_oid: Some(u32::MAX),
            duration_ms: Some(123_456.789),
            command_tag: Some("INSERT 0 5".into()),
            rows: Some(u64::MAX),
            sqlstate: Some("42501".into()),
            error_message: Some("permission \"denied\"\r".into()),
            rule: Some("no-ddl".into()),
            statement_kind: Some("ddl".into()),
            reason: Some("\u{7f}del".into()),
            totals: Some(Box::new(SessionTotals {
                duration_ms: 1.5,
                end_reason: "client".into(),
                statements: 300,
                ..SessionTotals::default()
            })),
        };
        let odd_numbers = EventDetails {
            closes: Some(Closes::Statement),
            duration_ms: Some(f64::NAN),
            rows: Some(0),
            ..EventDetails::default()
        };
        vec![EventDetails::default(), execute, everything, odd_numbers]
    }

    #[test]
    fn detail_members_by_hand_are_what_serde_writes() {
        let serde = |details: &EventDetails| members(serde_json::to_string(details).unwrap());
        for details in sample_details() {
            assert_eq!(details.members(), serde(&details));
        }
    }

    fn record() -> AuditRecord {
        let session = Arc::new(SessionInfo {
            session_id: "s-1".into(),
            service: "orders.team-a".into(),
            identity: IdentityInfo {
                name: "alice".into(),
                namespace: "team-a".into(),
                groups: vec!["dba".into()],
            },
            ..SessionInfo::default()
        });
        let mut event = AuditEvent::new(EventType::Execute, session);
        event.statement = Some(Arc::from("SELECT \"x\" FROM t WHERE a = $1"));
        event.details.statement_name = Some("s1".into());
        event.details.closes = Some(Closes::Portal);
        event.details.rows = Some(3);
        event.details.duration_ms = Some(0.25);
        AuditRecord::new("ab-01", event)
    }

    #[test]
    fn a_line_holds_the_session_the_event_and_its_details_in_order() {
        let record = record();
        let line = record.json();
        assert!(
            line.starts_with("{\"event_id\":\"ab-01\",\"connection_id\":0,"),
            "{line}"
        );
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["service"], "orders.team-a");
        assert_eq!(value["identity"]["groups"][0], "dba");
        assert_eq!(value["type"], "EXECUTE");
        assert_eq!(value["statement"], "SELECT \"x\" FROM t WHERE a = $1");
        assert_eq!(value["closes"], "portal");
        assert_eq!(value["rows"], 3);
        assert!(value.get("portal").is_none(), "{line}");
        // The line is the event's own serialization with the session's members joined in.
        let own = serde_json::to_string(&record.event).unwrap();
        assert!(line.ends_with(&own[1..]), "{line}\n{own}");
    }

    #[test]
    fn a_line_reads_back_into_the_same_record() {
        let record = record();
        let back = AuditRecord::from_json(record.json()).unwrap();
        assert_eq!(back.json(), record.json());
        assert_eq!(back.session().identity.name, "alice");
        assert_eq!(back.time_ms(), record.time_ms());
        // As an older version spilled it: the line wrapped with its columns.
        let wrapped = serde_json::json!({"event_id": "ab-01", "time_ms": 1, "json": record.json()});
        let old = AuditRecord::from_json(&wrapped.to_string()).unwrap();
        assert_eq!(old.json(), record.json());
        assert!(AuditRecord::from_json("{\"event_id\":\"x\"}").is_err());
    }
}
