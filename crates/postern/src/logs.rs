//! `postern logs`: the access log's recent events from the state database, filtered, as
//! a table or JSON lines, optionally followed as they arrive.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use postern_model::EventType;
use postern_state::{AuditQuery, Store, StoredEvent};

use crate::cli::{LogsArgs, LogsOutput};

/// How often `--follow` looks for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

pub fn run(store: &Store, args: &LogsArgs) -> anyhow::Result<()> {
    let event_type = match &args.event_type {
        Some(text) => match EventType::parse(text) {
            Some(t) => Some(t.as_str().to_owned()),
            None => bail!(
                "--type {text:?}: unknown event type (expected one of {})",
                EventType::ALL.map(EventType::as_str).join(", ")
            ),
        },
        None => None,
    };
    let since_ms = match &args.since {
        Some(text) => {
            let age = postern_model::parse_duration(text)
                .map_err(|e| anyhow::anyhow!("--since {text:?}: {e}"))?;
            let now = postern_model::unix_millis(std::time::SystemTime::now());
            Some(now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)))
        }
        None => None,
    };
    let mut query = AuditQuery {
        after_id: None,
        since_ms,
        identity: args.identity.clone(),
        service: args.service.clone(),
        event_type,
        limit: args.limit,
        ..AuditQuery::default()
    };
    let mut out = std::io::stdout().lock();
    if args.output == LogsOutput::Table {
        writeln!(
            out,
            "{:<24} {:<14} {:<20} {:<20} DETAIL",
            "TIME", "TYPE", "IDENTITY", "SERVICE"
        )?;
    }
    loop {
        let events = store
            .audit_events(&query)
            .context("cannot read the access log")?;
        for event in &events {
            print_event(&mut out, event, args.output)?;
        }
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        if let Some(last) = events.last() {
            query.after_id = Some(last.id);
        } else if query.after_id.is_none() {
            query.after_id = Some(0);
        }
        query.limit = 10_000;
        std::thread::sleep(FOLLOW_EVERY);
    }
}

fn print_event(
    out: &mut impl Write,
    event: &StoredEvent,
    output: LogsOutput,
) -> anyhow::Result<()> {
    if output == LogsOutput::Json {
        writeln!(out, "{}", event.json)?;
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_str(&event.json).unwrap_or_default();
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let identity = format!(
        "{}.{}",
        value
            .pointer("/identity/name")
            .and_then(|v| v.as_str())
            .unwrap_or(""),
        value
            .pointer("/identity/namespace")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    );
    let mut detail = Vec::new();
    for key in ["rule", "command_tag", "sqlstate", "error_message", "reason"] {
        if !text(key).is_empty() {
            detail.push(format!("{key}={}", text(key)));
        }
    }
    if let Some(rows) = value.get("rows").and_then(|v| v.as_u64()) {
        detail.push(format!("rows={rows}"));
    }
    if let Some(ms) = value.get("duration_ms").and_then(|v| v.as_f64()) {
        detail.push(format!("{ms:.2}ms"));
    }
    if !text("statement").is_empty() {
        let statement: String = text("statement")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        detail.push(statement.chars().take(120).collect());
    }
    writeln!(
        out,
        "{:<24} {:<14} {:<20} {:<20} {}",
        text("time"),
        text("type"),
        identity,
        text("service"),
        detail.join(" ")
    )?;
    Ok(())
}
