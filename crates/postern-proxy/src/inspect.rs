//! Statement-level watching of a session, for the access log and the service's rules: the
//! client's Query / Parse / Bind / Execute / Close / FunctionCall messages are checked
//! and recorded as they pass, and the server's replies are matched to them in order to
//! time them and read their command tag, row count or error.
//!
//! A denied statement never reaches the upstream. In its place goes a `DO` block that
//! raises 42501 naming the rule, so the error reaches the client in order and the
//! upstream's transaction fails exactly as it would have for the real statement
//! (extended protocol: unnamed Parse + Bind + Execute, whose ParseComplete and
//! BindComplete are kept from the client).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::BytesMut;
use postern_model::{
    AccessLog, AuditEvent, ClientFacts, Closes, CompactString, Denial, Directory, EventType,
    QualifiedName, RouteLookup, SessionInfo, SessionPolicy,
};
use postern_wire::backend::parse_error_fields;
use postern_wire::frame::{take_cstr_bytes, utf8};
use postern_wire::frontend;
use postern_wire::tags::{backend as be, frontend as fe};
use postern_wire::{TagSet, WireError};

use crate::sql::literal;

/// Close's target type byte: a prepared statement (the other is `P`, a portal).
const CLOSE_STATEMENT: u8 = b'S';

/// Statement texts kept per session for EXECUTE events; beyond it the oldest names are
/// forgotten (their events then say `[unknown statement]`).
const MAX_TRACKED_STATEMENTS: usize = 10_000;
/// Longest statement text kept for EXECUTE events.
const MAX_TRACKED_TEXT: usize = 64 * 1024;

/// What a client message turns into.
pub(crate) enum ClientAction {
    Forward,
    /// Send these bytes upstream instead.
    Replace(BytesMut),
}

/// A request whose reply is still to come.
enum Pending {
    Query {
        text: Arc<str>,
        started: Instant,
        /// The command tag of the last statement that completed.
        tag: Option<CompactString>,
        rows: u64,
        /// Boxed: rarely there, and every pending request would carry its room.
        error: Option<Box<(String, String)>>,
        /// Replaced by a refusal; no QUERY event.
        refused: bool,
    },
    Parse,
    Bind,
    Describe,
    Close,
    Sync,
    Execute {
        statement_name: Arc<str>,
        portal: Arc<str>,
        text: Arc<str>,
        started: Instant,
        rows: u64,
    },
    FunctionCall {
        oid: u32,
        started: Instant,
        refused: bool,
    },
    /// A reply to a message the gateway put in itself, kept from the client.
    Swallow(u8),
    /// The refusal standing in for a denied Parse.
    Refusal,
}

/// Maps keyed by names the client chooses, looked up several times per statement:
/// SipHash was a tenth of a watched session's instructions. foldhash is seeded per
/// process, and a client can only slow its own session's bounded maps.
type NameMap<V> = HashMap<Arc<str>, V, foldhash::fast::RandomState>;

/// Names a client chooses, each with a value; the unnamed one (`""`), which drivers use
/// for nearly every portal and many statements, in a slot of its own: no hashing on the
/// common path. Past [`MAX_TRACKED_STATEMENTS`] named ones the oldest are forgotten (all
/// at once).
struct Names<V> {
    unnamed: Option<(Arc<str>, V)>,
    named: NameMap<V>,
}

impl<V> Default for Names<V> {
    fn default() -> Self {
        Names {
            unnamed: None,
            named: NameMap::default(),
        }
    }
}

impl<V> Names<V> {
    fn get_key_value(&self, name: &str) -> Option<(&Arc<str>, &V)> {
        match name.is_empty() {
            true => self.unnamed.as_ref().map(|(name, value)| (name, value)),
            false => self.named.get_key_value(name),
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        match name.is_empty() {
            true => self.unnamed.as_mut().map(|(_, value)| value),
            false => self.named.get_mut(name),
        }
    }

    fn insert(&mut self, name: &str, value: V) {
        if name.is_empty() {
            self.unnamed = Some((Arc::from(name), value));
            return;
        }
        if self.named.len() >= MAX_TRACKED_STATEMENTS {
            self.named.clear();
        }
        self.named.insert(Arc::from(name), value);
    }

    fn remove(&mut self, name: &str) {
        match name.is_empty() {
            true => self.unnamed = None,
            false => {
                self.named.remove(name);
            }
        }
    }
}

struct Tracking {
    pending: VecDeque<Pending>,
    /// Prepared statement name → text.
    statements: Names<Arc<str>>,
    /// Portal → (statement name, text).
    portals: Names<(Arc<str>, Arc<str>)>,
    /// Statements run (Query statements and Executes).
    statements_run: u64,
    /// The last command tag the server sent and the rows it reports: a session runs
    /// the same kind of statement again and again, and a tag met just before is not
    /// read again (checking it as UTF-8 and its row count were 200 instructions).
    last_tag: (CompactString, Option<u64>),
}

impl Tracking {
    /// The tag of a CommandComplete body and the rows it reports.
    fn command_tag(&mut self, body: Option<&[u8]>) -> (CompactString, Option<u64>) {
        let mut rest = body.unwrap_or_default();
        let bytes = take_cstr_bytes(&mut rest).unwrap_or_default();
        if self.last_tag.0.as_bytes() != bytes {
            // Inline (no allocation) for every tag PostgreSQL sends but very long ones.
            let text = utf8(bytes).unwrap_or_default();
            self.last_tag = (CompactString::from(text), tag_rows(text));
        }
        self.last_tag.clone()
    }
}

/// What a watched session needs to bind its service's rules again after a change.
pub(crate) struct Rebind {
    pub directory: Arc<dyn Directory>,
    /// The gateway's view of the store's resource epoch.
    pub epoch: Arc<AtomicU64>,
    pub service: QualifiedName,
    pub identity: QualifiedName,
    pub client: ClientFacts,
}

/// Rule name of refusals after a change took the session's access away (the service,
/// the identity or its rights to the namespace are gone).
const ACCESS_REVOKED: &str = "access-revoked";

/// A refusal that names no rule of the service: the session's access itself is gone.
fn revoked() -> Denial {
    Denial {
        rule: ACCESS_REVOKED.into(),
        kind: CONNECT.into(),
        reason: None,
    }
}

impl Rebind {
    /// The service's rules for this session as they stand now; a denial when they now
    /// refuse the session, or it may no longer reach the service; `None` when the store
    /// cannot be read. Blocks briefly on the store: it runs only after a resource changed.
    fn lookup(&self) -> Option<Result<Option<Arc<dyn SessionPolicy>>, Denial>> {
        match self
            .directory
            .upstream_route(&self.service, &self.identity, &self.client)
        {
            Ok(RouteLookup::Found(route)) => Some(Ok(route.policy)),
            Ok(RouteLookup::PolicyDenied(denial)) => Some(Err(denial)),
            Ok(_) => Some(Err(revoked())),
            Err(_) => None,
        }
    }
}

/// The kind a connect-time denial names.
const CONNECT: &str = "connect";

/// The rules a session checks statements against, and the resource epoch they are from.
struct BoundPolicy {
    epoch: u64,
    rules: Result<Option<Arc<dyn SessionPolicy>>, Denial>,
}

/// Everything the relay needs to watch one session.
pub(crate) struct Inspector {
    policy: Mutex<BoundPolicy>,
    rebind: Option<Rebind>,
    log: Option<Arc<dyn AccessLog>>,
    session: Arc<SessionInfo>,
    tracking: Mutex<Tracking>,
    bytes_from_client: AtomicU64,
    bytes_to_client: AtomicU64,
    statements_denied: AtomicU64,
}

fn truncated(text: &str) -> Arc<str> {
    if text.len() <= MAX_TRACKED_TEXT {
        return Arc::from(text);
    }
    let mut end = MAX_TRACKED_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(&text[..end])
}

/// Rows a command tag reports (`SELECT 5`, `INSERT 0 5`, `UPDATE 3`…).
fn tag_rows(tag: &str) -> Option<u64> {
    // By bytes: splitting into words was ~300 instructions per statement.
    let first_space = tag.bytes().position(|b| b == b' ')?;
    match &tag[..first_space] {
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "COPY" | "FETCH" | "MOVE" | "MERGE" => {
            let last_space = tag.bytes().rposition(|b| b == b' ')?;
            tag[last_space + 1..].parse().ok()
        }
        _ => None,
    }
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// The `DO` block that fails with `sqlstate` and `message` in place of a statement.
fn refusal_sql(sqlstate: &str, message: &str) -> String {
    format!(
        "DO $postern$BEGIN RAISE EXCEPTION USING ERRCODE = {}, MESSAGE = {}; END$postern$",
        literal(sqlstate),
        literal(message)
    )
}

impl Inspector {
    /// `policy` was bound at resource epoch `epoch`; with `rebind`, it is bound again
    /// before the first statement after the epoch moved.
    pub fn new(
        policy: Option<Arc<dyn SessionPolicy>>,
        epoch: u64,
        rebind: Option<Rebind>,
        log: Option<Arc<dyn AccessLog>>,
        session: Arc<SessionInfo>,
    ) -> Inspector {
        Inspector {
            policy: Mutex::new(BoundPolicy {
                epoch,
                rules: Ok(policy),
            }),
            rebind,
            log,
            session,
            tracking: Mutex::new(Tracking {
                pending: VecDeque::new(),
                statements: Names::default(),
                portals: Names::default(),
                statements_run: 0,
                last_tag: (CompactString::const_new(""), None),
            }),
            bytes_from_client: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            statements_denied: AtomicU64::new(0),
        }
    }

    /// Statements the rules refused.
    pub fn statements_denied(&self) -> u64 {
        self.statements_denied.load(Ordering::Relaxed)
    }

    pub fn count_from_client(&self, bytes: usize) {
        self.bytes_from_client
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn count_to_client(&self, bytes: usize) {
        self.bytes_to_client
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes relayed (from the client, to the client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_from_client.load(Ordering::Relaxed),
            self.bytes_to_client.load(Ordering::Relaxed),
        )
    }

    pub fn session(&self) -> &Arc<SessionInfo> {
        &self.session
    }

    pub fn statements_run(&self) -> u64 {
        self.tracking.lock().map_or(0, |t| t.statements_run)
    }

    /// The session's tracking, for the messages of one read.
    pub fn watch(&self) -> Watch<'_> {
        Watch {
            inspector: self,
            // Every change to the tracking leaves it whole: a panic elsewhere while it
            // was held does not make it unusable (and statements are still checked).
            tracking: self.tracking.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Logs an event of this session, when there is an access log that records its type.
    pub fn record(&self, event: AuditEvent) {
        if let Some(log) = &self.log {
            if log.records(event.event_type) {
                log.record(event);
            }
        }
    }

    /// Whether events of this type are recorded: callers skip building the others.
    fn records(&self, event_type: EventType) -> bool {
        self.log.as_ref().is_some_and(|log| log.records(event_type))
    }

    fn event(&self, event_type: EventType) -> AuditEvent {
        AuditEvent::new(event_type, self.session.clone())
    }

    /// Whether a statement may run now: the rules allow it and, when the log must not
    /// lose events, the log is taking them. Logs POLICY_DENIED; the error is
    /// (sqlstate, message) for the client.
    /// The rules in force: bound again first when a resource changed since.
    fn current_policy(&self) -> Result<Option<Arc<dyn SessionPolicy>>, Denial> {
        let Ok(mut bound) = self.policy.lock() else {
            return Err(revoked());
        };
        if let Some(rebind) = &self.rebind {
            let now = rebind.epoch.load(Ordering::Relaxed);
            if now != bound.epoch {
                match rebind.lookup() {
                    Some(rules) => {
                        bound.rules = rules;
                        bound.epoch = now;
                    }
                    // Fail closed, and ask the store again at the next statement.
                    None => return Err(revoked()),
                }
            }
        }
        bound.rules.clone()
    }

    fn admit(
        &self,
        text: Option<&str>,
        check: impl FnOnce(&dyn SessionPolicy) -> Result<(), Denial>,
    ) -> Result<(), (String, String)> {
        let verdict = match self.current_policy() {
            Ok(Some(policy)) => check(policy.as_ref()),
            Ok(None) => Ok(()),
            Err(denial) => Err(denial),
        };
        if let Err(denial) = verdict {
            self.statements_denied.fetch_add(1, Ordering::Relaxed);
            let mut event = self.event(EventType::PolicyDenied);
            event.statement = text.map(Arc::from);
            event.details.rule = Some(denial.rule.clone());
            event.details.statement_kind = Some(denial.kind.clone());
            event.details.sqlstate = Some("42501".into());
            self.record(event);
            let message = if let Some(reason) = &denial.reason {
                format!(
                    "permission denied by {} of service {}: {reason}",
                    denial.rule.replace(':', " "),
                    self.session.service
                )
            } else if denial.kind == CONNECT {
                format!(
                    "permission denied: rule \"{}\" of service {} refuses this session now",
                    denial.rule, self.session.service
                )
            } else {
                format!(
                    "permission denied: rule \"{}\" of service {} does not allow this {} statement",
                    denial.rule, self.session.service, denial.kind
                )
            };
            return Err(("42501".into(), message));
        }
        if self.log.as_ref().is_some_and(|log| !log.accepting()) {
            return Err((
                "58030".into(),
                "the access log cannot record statements right now and audit.on_failure is \"block\"; statement not run".into(),
            ));
        }
        Ok(())
    }

    fn client_message(
        &self,
        t: &mut Tracking,
        tag: u8,
        body: &[u8],
    ) -> Result<ClientAction, WireError> {
        match tag {
            fe::QUERY => {
                let text = frontend::parse_query(body)?;
                let refusal = self.admit(Some(text), |p| p.check_statement(text)).err();
                t.pending.push_back(Pending::Query {
                    text: Arc::from(text),
                    started: Instant::now(),
                    tag: None,
                    rows: 0,
                    error: None,
                    refused: refusal.is_some(),
                });
                if let Some((sqlstate, message)) = refusal {
                    let mut out = BytesMut::new();
                    frontend::query(&mut out, &refusal_sql(&sqlstate, &message));
                    return Ok(ClientAction::Replace(out));
                }
            }
            fe::PARSE => {
                let (name, raw) = frontend::parse_parse_bytes(body)?;
                // Drivers parse the unnamed statement again and again, often with the
                // same text: then the text kept for the name serves (it was checked as
                // UTF-8 when it was kept) and stays.
                let kept = t
                    .statements
                    .get_key_value(name)
                    .filter(|(_, kept)| kept.as_bytes() == raw)
                    .map(|(_, kept)| kept.clone());
                let text: &str = match &kept {
                    Some(kept) => kept,
                    None => utf8(raw)?,
                };
                if let Err((sqlstate, message)) =
                    self.admit(Some(text), |p| p.check_statement(text))
                {
                    t.pending.push_back(Pending::Swallow(be::PARSE_COMPLETE));
                    t.pending.push_back(Pending::Swallow(be::BIND_COMPLETE));
                    t.pending.push_back(Pending::Refusal);
                    // PostgreSQL drops the old unnamed statement even when a Parse fails.
                    t.statements.remove(name);
                    let mut out = BytesMut::new();
                    frontend::parse_bind_execute(&mut out, &refusal_sql(&sqlstate, &message));
                    return Ok(ClientAction::Replace(out));
                }
                if kept.is_none() {
                    match t.statements.get_mut(name) {
                        Some(slot) => *slot = truncated(text),
                        None => t.statements.insert(name, truncated(text)),
                    }
                }
                t.pending.push_back(Pending::Parse);
                if self.records(EventType::Parse) {
                    let mut event = self.event(EventType::Parse);
                    event.details.statement_name = Some(Arc::from(name));
                    event.statement = Some(match &kept {
                        Some(kept) => kept.clone(),
                        None => Arc::from(text),
                    });
                    self.record(event);
                }
            }
            fe::BIND => {
                let (portal, statement) = frontend::parse_bind_names(body)?;
                let found = t.statements.get_key_value(statement);
                let bound = || match found {
                    Some((name, text)) => (name.clone(), text.clone()),
                    None => (Arc::from(statement), Arc::from("[unknown statement]")),
                };
                match t.portals.get_mut(portal) {
                    // The portal bound again to the statement it had (the unnamed ones,
                    // usually): nothing changes.
                    Some((name, text))
                        if found.is_some_and(|(n, tx)| {
                            Arc::ptr_eq(name, n) && Arc::ptr_eq(text, tx)
                        }) => {}
                    // Rebinding a portal allocates nothing.
                    Some(entry) => *entry = bound(),
                    None => t.portals.insert(portal, bound()),
                }
                t.pending.push_back(Pending::Bind);
                if !self.records(EventType::Bind) {
                    return Ok(ClientAction::Forward);
                }
                let bind = frontend::parse_bind(body)?;
                let mut event = self.event(EventType::Bind);
                event.details.portal = Some(Arc::from(bind.portal));
                event.details.statement_name = Some(Arc::from(bind.statement));
                event.details.parameter_count =
                    Some(u16::try_from(bind.parameters.len()).unwrap_or(u16::MAX));
                if let Some(cap) = self.log.as_ref().and_then(|l| l.parameter_cap()) {
                    event.details.parameters = Some(
                        bind.parameters
                            .iter()
                            .map(|p| p.value.map(|v| show_parameter(v, p.binary, cap)))
                            .collect(),
                    );
                }
                self.record(event);
            }
            fe::EXECUTE => {
                let portal = frontend::parse_execute(body)?;
                let (portal, (statement_name, text)) = match t.portals.get_key_value(portal) {
                    Some((portal, bound)) => (portal.clone(), bound.clone()),
                    None => (
                        Arc::from(portal),
                        (Arc::from(""), Arc::from("[unknown portal]")),
                    ),
                };
                t.pending.push_back(Pending::Execute {
                    statement_name,
                    portal,
                    text,
                    started: Instant::now(),
                    rows: 0,
                });
            }
            fe::DESCRIBE => t.pending.push_back(Pending::Describe),
            fe::CLOSE => {
                let (which, name) = frontend::parse_close(body)?;
                let closes = if which == CLOSE_STATEMENT {
                    t.statements.remove(name);
                    Closes::Statement
                } else {
                    t.portals.remove(name);
                    Closes::Portal
                };
                t.pending.push_back(Pending::Close);
                if self.records(EventType::Close) {
                    let mut event = self.event(EventType::Close);
                    let name = Some(Arc::from(name));
                    match closes {
                        Closes::Statement => event.details.statement_name = name,
                        Closes::Portal => event.details.portal = name,
                    }
                    event.details.closes = Some(closes);
                    self.record(event);
                }
            }
            fe::SYNC => t.pending.push_back(Pending::Sync),
            fe::FUNCTION_CALL => {
                let oid = frontend::parse_function_call(body)?;
                let refusal = self.admit(None, |p| p.check_function_call()).err();
                t.pending.push_back(Pending::FunctionCall {
                    oid,
                    started: Instant::now(),
                    refused: refusal.is_some(),
                });
                // A FunctionCall is answered with its own ReadyForQuery.
                t.pending.push_back(Pending::Sync);
                if let Some((sqlstate, message)) = refusal {
                    let mut out = BytesMut::new();
                    frontend::query(&mut out, &refusal_sql(&sqlstate, &message));
                    return Ok(ClientAction::Replace(out));
                }
            }
            _ => {}
        }
        Ok(ClientAction::Forward)
    }

    /// Looks at one server message; false keeps it from the client.
    fn upstream_message(&self, t: &mut Tracking, tag: u8, body: Option<&[u8]>) -> bool {
        match tag {
            be::DATA_ROW => {
                if let Some(Pending::Execute { rows, .. }) = t.pending.front_mut() {
                    *rows += 1;
                }
            }
            be::COMMAND_COMPLETE => {
                let (tag_text, tag_rows) = t.command_tag(body);
                match t.pending.front_mut() {
                    Some(Pending::Query { tag, rows, .. }) => {
                        *rows += tag_rows.unwrap_or(0);
                        *tag = Some(tag_text);
                        t.statements_run += 1;
                    }
                    Some(Pending::Execute { .. }) => {
                        t.statements_run += 1;
                        if let Some(done) = t.pending.pop_front() {
                            self.finish_execute(done, Some(tag_text), tag_rows, None);
                        }
                    }
                    _ => {}
                }
            }
            be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED => {
                if matches!(t.pending.front(), Some(Pending::Execute { .. })) {
                    if let Some(done) = t.pending.pop_front() {
                        let suspended = (tag == be::PORTAL_SUSPENDED)
                            .then_some(CompactString::const_new("[suspended]"));
                        self.finish_execute(done, suspended, None, None);
                    }
                }
            }
            be::ERROR_RESPONSE => {
                let fields = body
                    .and_then(|b| parse_error_fields(b).ok())
                    .unwrap_or_default();
                let error = (fields.code, fields.message);
                if matches!(
                    t.pending.front(),
                    Some(Pending::Query { .. } | Pending::Execute { .. })
                ) {
                    t.statements_run += 1;
                }
                match t.pending.front_mut() {
                    Some(Pending::Query { error: slot, .. }) => *slot = Some(Box::new(error)),
                    Some(Pending::Sync) | None => {}
                    Some(_) => {
                        if let Some(failed) = t.pending.pop_front() {
                            match failed {
                                Pending::Execute { .. } => {
                                    self.finish_execute(failed, None, None, Some(error))
                                }
                                Pending::FunctionCall { .. } => {
                                    self.finish_function_call(failed, Some(error))
                                }
                                _ => {}
                            }
                        }
                        // The server skips everything up to the next Sync.
                        while t
                            .pending
                            .front()
                            .is_some_and(|p| !matches!(p, Pending::Sync))
                        {
                            t.pending.pop_front();
                        }
                    }
                }
            }
            be::READY_FOR_QUERY => {
                while let Some(done) = t.pending.pop_front() {
                    match done {
                        Pending::Query { .. } => {
                            self.finish_query(done);
                            break;
                        }
                        Pending::Sync => break,
                        _ => {}
                    }
                }
            }
            be::PARSE_COMPLETE | be::BIND_COMPLETE => match t.pending.front() {
                Some(Pending::Swallow(expected)) if *expected == tag => {
                    t.pending.pop_front();
                    return false;
                }
                Some(Pending::Parse | Pending::Bind) => {
                    t.pending.pop_front();
                }
                _ => {}
            },
            be::CLOSE_COMPLETE => {
                if matches!(t.pending.front(), Some(Pending::Close)) {
                    t.pending.pop_front();
                }
            }
            be::ROW_DESCRIPTION | be::NO_DATA => {
                if matches!(t.pending.front(), Some(Pending::Describe)) {
                    t.pending.pop_front();
                }
            }
            be::FUNCTION_CALL_RESPONSE => {
                if matches!(t.pending.front(), Some(Pending::FunctionCall { .. })) {
                    if let Some(done) = t.pending.pop_front() {
                        self.finish_function_call(done, None);
                    }
                }
            }
            _ => {}
        }
        true
    }

    fn finish_query(&self, done: Pending) {
        let Pending::Query {
            text,
            started,
            tag,
            rows,
            error,
            refused: false,
        } = done
        else {
            return;
        };
        let mut event = self.event(EventType::Query);
        event.details.duration_ms = Some(millis(started));
        event.statement = Some(text);
        event.details.command_tag = tag;
        event.details.rows = Some(rows);
        set_error(&mut event, error.map(|e| *e));
        self.record(event);
    }

    fn finish_execute(
        &self,
        done: Pending,
        tag: Option<CompactString>,
        tag_rows: Option<u64>,
        error: Option<(String, String)>,
    ) {
        let Pending::Execute {
            statement_name,
            portal,
            text,
            started,
            rows,
        } = done
        else {
            return;
        };
        let mut event = self.event(EventType::Execute);
        event.details.duration_ms = Some(millis(started));
        event.statement = Some(text);
        event.details.statement_name = Some(statement_name);
        event.details.portal = Some(portal);
        event.details.command_tag = tag;
        event.details.rows = Some(tag_rows.unwrap_or(rows));
        set_error(&mut event, error);
        self.record(event);
    }

    fn finish_function_call(&self, done: Pending, error: Option<(String, String)>) {
        let Pending::FunctionCall {
            oid,
            started,
            refused: false,
        } = done
        else {
            return;
        };
        let mut event = self.event(EventType::FunctionCall);
        event.details.function_oid = Some(oid);
        event.details.duration_ms = Some(millis(started));
        set_error(&mut event, error);
        self.record(event);
    }
}

/// The messages of one read looked at under one lock of the session's tracking. The
/// relay's two directions take turns in one task, so the lock is never contended; taken
/// per message it was ~40 instructions each, eleven messages per extended-protocol
/// statement. Held only while a read is scanned, never across an await.
pub(crate) struct Watch<'a> {
    inspector: &'a Inspector,
    tracking: MutexGuard<'a, Tracking>,
}

impl Watch<'_> {
    /// Looks at one whole client message.
    pub fn client_message(&mut self, tag: u8, body: &[u8]) -> Result<ClientAction, WireError> {
        self.inspector.client_message(&mut self.tracking, tag, body)
    }

    /// Looks at one server message (whole for the tags in [`UPSTREAM_WHOLE`], header only
    /// otherwise); false keeps it from the client.
    pub fn upstream_message(&mut self, tag: u8, body: Option<&[u8]>) -> bool {
        self.inspector
            .upstream_message(&mut self.tracking, tag, body)
    }
}

/// The SQLSTATE and message of a failed request, if it failed.
fn set_error(event: &mut AuditEvent, error: Option<(String, String)>) {
    if let Some((sqlstate, message)) = error {
        event.details.sqlstate = Some(sqlstate);
        event.details.error_message = Some(message);
    }
}

/// A bind parameter for the log: text as is, binary as `\x` hex, cut to `cap` bytes.
fn show_parameter(value: &[u8], binary: bool, cap: usize) -> String {
    let value = &value[..value.len().min(cap)];
    if binary {
        let mut hex = String::with_capacity(2 + value.len() * 2);
        hex.push_str("\\x");
        for b in value {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    } else {
        String::from_utf8_lossy(value).into_owned()
    }
}

/// Client messages the inspector needs whole.
pub(crate) const CLIENT_WHOLE: TagSet = TagSet::of(&[
    fe::QUERY,
    fe::PARSE,
    fe::BIND,
    fe::EXECUTE,
    fe::CLOSE,
    fe::FUNCTION_CALL,
]);

/// Server messages the inspector needs whole (the rest it sees by header).
pub(crate) const UPSTREAM_WHOLE: TagSet = TagSet::of(&[
    be::COMMAND_COMPLETE,
    be::ERROR_RESPONSE,
    be::PARSE_COMPLETE,
    be::BIND_COMPLETE,
]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_from_command_tags() {
        assert_eq!(tag_rows("SELECT 5"), Some(5));
        assert_eq!(tag_rows("INSERT 0 7"), Some(7));
        assert_eq!(tag_rows("CREATE TABLE"), None);
        assert_eq!(tag_rows("SELECT"), None);
        assert_eq!(tag_rows("MOVE 12"), Some(12));
        assert_eq!(tag_rows("SELECT x"), None);
        assert_eq!(tag_rows("SELECT 1x"), None);
        assert_eq!(tag_rows("SELECT"), None);
        assert_eq!(tag_rows("42"), None);
        assert_eq!(
            tag_rows("UPDATE 9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(tag_rows("UPDATE 99999999999999999999"), None);
        assert_eq!(tag_rows("DELETE  3"), Some(3));
        assert_eq!(tag_rows("ALTER 3"), None);
    }

    #[test]
    fn names_keep_the_unnamed_one_apart_and_stay_bounded() {
        let mut names: Names<u32> = Names::default();
        names.insert("", 1);
        names.insert("s1", 2);
        assert_eq!(
            names.get_key_value("").map(|(k, v)| (&**k, *v)),
            Some(("", 1))
        );
        if let Some(value) = names.get_mut("") {
            *value = 3;
        }
        assert_eq!(names.get_key_value("").map(|(_, v)| *v), Some(3));
        assert_eq!(
            names.get_key_value("s1").map(|(k, v)| (&**k, *v)),
            Some(("s1", 2))
        );
        for n in 0..MAX_TRACKED_STATEMENTS as u32 {
            names.insert(&format!("n{n}"), n);
        }
        // The named ones were forgotten once there were too many; the unnamed one stays.
        assert!(names.named.len() <= MAX_TRACKED_STATEMENTS);
        assert_eq!(names.get_key_value("s1"), None);
        assert_eq!(names.get_key_value("").map(|(_, v)| *v), Some(3));
        names.remove("");
        assert_eq!(names.get_key_value(""), None);
        names.remove("n9999");
        assert_eq!(names.get_mut("n9999"), None);
    }

    #[test]
    fn refusals_quote_their_message() {
        let sql = refusal_sql("42501", "rule \"it's\"");
        assert!(sql.contains("MESSAGE = E'rule \"it''s\"'"), "{sql}");
    }
}
