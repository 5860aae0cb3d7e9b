//! The access log over HTTP: `GET /api/v1/logs` (filtered, newest first, paged),
//! `/api/v1/logs/export` (CSV or NDJSON download) and `/api/v1/logs/stream` (NDJSON that
//! follows new events; fetch-readable, since EventSource cannot send a bearer token; its
//! keep-alives `{"cursor": id}` say where to resume).
//! A caller sees the events of the namespaces it may read; account roles see all.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use postern_model::EventType;
use postern_state::AuditQuery;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{blocking, Api};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
const EXPORT_LIMIT: usize = 10_000;
/// Events read from the store per step while filtering.
const SCAN_BATCH: usize = 500;
/// Events looked at for one page before giving up on filling it.
const SCAN_MAX: usize = 200_000;
/// How often a stream looks for new events.
const STREAM_POLL: Duration = Duration::from_millis(250);
/// Batches of new events one poll reads at most (a client far behind skips the oldest).
const STREAM_MAX_BATCHES: usize = 50;
/// A stream sends a keep-alive (`{"cursor": id}`) after this long without events, so
/// proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The filters of a request, from its query string.
#[derive(Debug, Default, Clone)]
struct LogFilter {
    identity: Option<String>,
    service: Option<String>,
    event_type: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    /// Lower-cased substring of the statement.
    text: Option<String>,
    session: Option<String>,
    before: Option<i64>,
    after: Option<i64>,
    limit: usize,
    format: Option<String>,
}

fn now_ms() -> i64 {
    postern_model::unix_millis(std::time::SystemTime::now())
}

/// An RFC 3339 time, or a duration ago (`15m`, `2h`, `7d`).
fn parse_time(text: &str, field: &str) -> Result<i64, ApiError> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    let age = postern_model::parse_duration(text).map_err(|e| {
        ApiError::bad_request(format!(
            "{field}: {e} (expected an RFC 3339 time or a duration such as 15m)"
        ))
        .with_field(field)
    })?;
    Ok(now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)))
}

fn parse_filter(uri: &Uri) -> Result<LogFilter, ApiError> {
    let mut filter = LogFilter {
        limit: DEFAULT_LIMIT,
        ..LogFilter::default()
    };
    let query = uri.query().unwrap_or("");
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim().to_owned();
        if value.is_empty() {
            continue;
        }
        let id = |field: &str| {
            value.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("{field} must be an event id")).with_field(field)
            })
        };
        match key.as_ref() {
            "identity" => filter.identity = Some(value),
            "service" => filter.service = Some(value),
            "type" => {
                let parsed = EventType::parse(&value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "type {value:?}: expected one of {}",
                        EventType::ALL.map(EventType::as_str).join(", ")
                    ))
                    .with_field("type")
                })?;
                filter.event_type = Some(parsed.as_str().to_owned());
            }
            "since" => filter.since_ms = Some(parse_time(&value, "since")?),
            "until" => filter.until_ms = Some(parse_time(&value, "until")?),
            "q" => filter.text = Some(value.to_lowercase()),
            "session" => filter.session = Some(value),
            "before" => filter.before = Some(id("before")?),
            "after" => filter.after = Some(id("after")?),
            "limit" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}"))
                            .with_field("limit")
                    })?;
            }
            "format" => match value.as_str() {
                "csv" | "ndjson" => filter.format = Some(value),
                _ => {
                    return Err(
                        ApiError::bad_request("format must be csv or ndjson").with_field("format")
                    )
                }
            },
            _ => {}
        }
    }
    Ok(filter)
}

impl LogFilter {
    /// The part of the filter the store applies itself, with the namespaces the caller
    /// may read (`None`: all).
    fn store_query(&self, limit: usize, readable: Option<Vec<String>>) -> AuditQuery {
        AuditQuery {
            namespaces: readable,
            after_id: self.after,
            before_id: self.before,
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            identity: self.identity.clone(),
            service: self.service.clone(),
            event_type: self.event_type.clone(),
            limit,
        }
    }

    /// The rest: the caller's visibility (again: the store's namespace filter is the fast
    /// path, this the rule), the statement text and the session.
    fn admits(&self, caller: &Caller, event: &Value) -> bool {
        let visible = caller.access.reads_account()
            || event
                .get("namespace")
                .and_then(Value::as_str)
                .is_some_and(|ns| {
                    !ns.is_empty() && caller.access.allows(ns, postern_model::Permission::Read)
                });
        let text = |key| event.get(key).and_then(Value::as_str).unwrap_or("");
        visible
            && self
                .text
                .as_ref()
                .is_none_or(|wanted| text("statement").to_lowercase().contains(wanted))
            && self
                .session
                .as_ref()
                .is_none_or(|wanted| text("session_id") == wanted)
    }
}

/// The namespaces whose events `caller` may read; `None` for account roles (all, and the
/// events of no namespace).
fn readable_namespaces(api: &Api, caller: &Caller) -> Result<Option<Vec<String>>, ApiError> {
    if caller.access.reads_account() {
        return Ok(None);
    }
    Ok(Some(
        api.store
            .list_resources(Some(postern_model::Kind::Namespace), None)?
            .iter()
            .map(|stored| stored.resource.name().to_owned())
            .filter(|ns| caller.access.allows(ns, postern_model::Permission::Read))
            .collect(),
    ))
}

/// An event's line as JSON with its id, for the caller; `None` when filtered out.
fn event_value(filter: &LogFilter, caller: &Caller, id: i64, line: &str) -> Option<Value> {
    let mut value: Value = serde_json::from_str(line).ok()?;
    if !filter.admits(caller, &value) {
        return None;
    }
    value
        .as_object_mut()?
        .insert("id".to_owned(), Value::from(id));
    Some(value)
}

/// Up to `limit` events that pass `filter`, newest first, and the id to continue from
/// (`before=`) when there may be older ones.
fn newest(
    api: &Api,
    caller: &Caller,
    filter: &LogFilter,
    limit: usize,
) -> Result<(Vec<Value>, Option<i64>), ApiError> {
    let mut found = Vec::new();
    let mut query = filter.store_query(SCAN_BATCH, readable_namespaces(api, caller)?);
    let mut scanned = 0;
    loop {
        let batch = api.store.audit_events(&query)?;
        scanned += batch.len();
        for event in batch.iter().rev() {
            if let Some(value) = event_value(filter, caller, event.id, &event.json) {
                found.push(value);
                if found.len() == limit {
                    return Ok((found, Some(event.id)));
                }
            }
        }
        match batch.first() {
            Some(oldest) if batch.len() == SCAN_BATCH && scanned < SCAN_MAX => {
                query.before_id = Some(oldest.id);
            }
            // Ran out of events, or of patience: what is left is older than `oldest`.
            Some(oldest) if batch.len() == SCAN_BATCH => return Ok((found, Some(oldest.id))),
            _ => return Ok((found, None)),
        }
    }
}

pub async fn list(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let filter = parse_filter(&uri)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        // Read first: a stream that follows from here may repeat an event of the page
        // (the client drops it by id) but misses none.
        let latest = newest_id(&api)?;
        let (items, next) = newest(&api, &caller, &filter, filter.limit)?;
        Ok(Json(
            json!({"items": items, "next": next, "latest": latest}),
        ))
    })
    .await
}

/// The CSV export's columns, from the event's JSON.
const CSV_COLUMNS: [(&str, &str); 12] = [
    ("id", "/id"),
    ("time", "/time"),
    ("type", "/type"),
    ("identity", "/identity/name"),
    ("identity_namespace", "/identity/namespace"),
    ("service", "/service"),
    ("session_id", "/session_id"),
    ("client_address", "/client_address"),
    ("statement", "/statement"),
    ("command_tag", "/command_tag"),
    ("sqlstate", "/sqlstate"),
    ("rule", "/rule"),
];

/// One CSV field (RFC 4180): quoted when it holds a separator, quote or line break; a
/// leading `=`, `+`, `-`, `@`, tab or carriage return is prefixed with `'` so spreadsheets do not run it.
fn csv_field(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

pub async fn export(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let filter = parse_filter(&uri)?;
    blocking(move || {
        let caller = api.caller(&headers)?;
        let (items, _) = newest(&api, &caller, &filter, EXPORT_LIMIT)?;
        let csv = filter.format.as_deref() == Some("csv");
        let mut out = String::new();
        if csv {
            let names: Vec<&str> = CSV_COLUMNS.iter().map(|(name, _)| *name).collect();
            out.push_str(&names.join(","));
            out.push_str("\r\n");
        }
        for item in &items {
            if csv {
                let fields: Vec<String> = CSV_COLUMNS
                    .iter()
                    .map(|(_, pointer)| csv_field(item.pointer(pointer).unwrap_or(&Value::Null)))
                    .collect();
                out.push_str(&fields.join(","));
                out.push_str("\r\n");
            } else {
                out.push_str(&item.to_string());
                out.push('\n');
            }
        }
        // Said in a header, since the file itself has no place for it.
        let truncated = if items.len() == EXPORT_LIMIT {
            "true"
        } else {
            "false"
        };
        let (content_type, extension) = if csv {
            ("text/csv; charset=utf-8", "csv")
        } else {
            ("application/x-ndjson", "ndjson")
        };
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"postern-access-log.{extension}\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_owned()),
                (
                    axum::http::HeaderName::from_static("x-postern-truncated"),
                    truncated.to_owned(),
                ),
            ],
            out,
        )
            .into_response())
    })
    .await
}

/// A following stream's position and what it has read but not yet sent.
struct Follow {
    api: Arc<Api>,
    headers: HeaderMap,
    filter: LogFilter,
    pending: VecDeque<Bytes>,
    last_sent: Instant,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Follow {
    /// New events after the last one seen, oldest first, as lines; checks the token again
    /// each time, so a revoked or expired token ends the stream.
    async fn poll(&mut self) -> Result<Vec<Bytes>, ApiError> {
        let api = self.api.clone();
        let headers = self.headers.clone();
        let filter = self.filter.clone();
        let (lines, last) = blocking(move || {
            let caller = api.caller(&headers)?;
            // The store answers with the newest events after `after`: while a batch is
            // full there may be older new ones, read by paging back before it.
            let mut batches = Vec::new();
            let mut query = filter.store_query(MAX_LIMIT, readable_namespaces(&api, &caller)?);
            loop {
                let batch = api.store.audit_events(&query)?;
                let older = (batch.len() == MAX_LIMIT).then(|| batch.first().map(|e| e.id));
                batches.push(batch);
                match older.flatten() {
                    Some(first) if batches.len() < STREAM_MAX_BATCHES => {
                        query.before_id = Some(first);
                    }
                    _ => break,
                }
            }
            let last = batches.first().and_then(|b| b.last()).map(|e| e.id);
            let lines = batches
                .iter()
                .rev()
                .flatten()
                .filter_map(|e| event_value(&filter, &caller, e.id, &e.json))
                .map(|v| Bytes::from(format!("{v}\n")))
                .collect::<Vec<_>>();
            Ok((lines, last))
        })
        .await?;
        if let Some(last) = last {
            self.filter.after = Some(last);
        }
        Ok(lines)
    }

    /// A keep-alive that says how far the stream has read (events the filter passed over
    /// included), so a client that reconnects resumes there and misses nothing.
    fn cursor_line(&self) -> Bytes {
        Bytes::from(format!("{}\n", json!({"cursor": self.filter.after})))
    }

    /// The next chunk: events, a keep-alive, or `None` when the token stops working or
    /// the server shuts down.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Follow)> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                self.last_sent = Instant::now();
                return Some((Ok(line), self));
            }
            if self.last_sent.elapsed() >= KEEP_ALIVE {
                self.last_sent = Instant::now();
                return Some((Ok(self.cursor_line()), self));
            }
            tokio::select! {
                _ = tokio::time::sleep(STREAM_POLL) => {}
                _ = self.stopping.wait_for(|stopping| *stopping) => return None,
            }
            match self.poll().await {
                Ok(lines) => self.pending.extend(lines),
                // A refused token ends the stream; a store failure is logged as it ends.
                Err(e) if e.status.is_server_error() => {
                    tracing::warn!(error = %e.message, "access-log stream ended");
                    return None;
                }
                Err(_) => return None,
            }
        }
    }
}

/// The id of the newest event now, so a stream without `after` starts from here.
fn newest_id(api: &Api) -> Result<i64, ApiError> {
    let query = AuditQuery {
        limit: 1,
        ..AuditQuery::default()
    };
    Ok(api.store.audit_events(&query)?.last().map_or(0, |e| e.id))
}

pub async fn stream(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut filter = parse_filter(&uri)?;
    let check = api.clone();
    let check_headers = headers.clone();
    let start = blocking(move || {
        check.caller(&check_headers)?;
        newest_id(&check)
    })
    .await?;
    // A stream follows from now on: an upper bound would end what it follows.
    filter.before = None;
    filter.until_ms = None;
    filter.after = Some(filter.after.unwrap_or(start));
    let follow = Follow {
        stopping: api.stopping(),
        api,
        headers,
        filter,
        pending: VecDeque::new(),
        last_sent: Instant::now(),
    };
    // The first chunk goes out at once, so the client knows the stream is open.
    let opening = follow.cursor_line();
    let opening = futures_util::stream::once(async { Ok(opening) });
    let events = futures_util::stream::unfold(follow, Follow::next);
    let body = Body::from_stream(futures_util::StreamExt::chain(opening, events));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field(&json!("plain")), "plain");
        assert_eq!(csv_field(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_field(&json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field(&json!("=cmd()")), "'=cmd()");
        assert_eq!(csv_field(&json!(12)), "12");
        assert_eq!(csv_field(&Value::Null), "");
    }

    #[test]
    fn filters_parse_and_refuse_bad_values() {
        let uri: Uri = "/api/v1/logs?type=query&q=SELECT&limit=5&since=2026-01-01T00:00:00Z"
            .parse()
            .unwrap();
        let filter = parse_filter(&uri).unwrap();
        assert_eq!(filter.event_type.as_deref(), Some("QUERY"));
        assert_eq!(filter.text.as_deref(), Some("select"));
        assert_eq!(filter.limit, 5);
        assert_eq!(filter.since_ms, Some(1_767_225_600_000));
        for bad in [
            "type=nope",
            "limit=0",
            "limit=5000",
            "since=yesterday",
            "before=x",
        ] {
            let uri: Uri = format!("/api/v1/logs?{bad}").parse().unwrap();
            assert!(parse_filter(&uri).is_err(), "{bad}");
        }
    }
}
