//! A policy hook: statements that use a listed table (`payroll.*` names every table of
//! the schema) are denied outside a daily window of UTC hours, unless the identity is in
//! one of the exempt groups (`on-call`). Reads the time from WASI's wall clock, which the
//! gateway may fake in tests.

use std::sync::OnceLock;

use serde::Deserialize;

use postern_plugin_sdk::policy::{allow, deny, Guest};
use postern_plugin_sdk::{host, ClientInfo, Identity, Level, Statement, Verdict};

/// The plugin's `config`, as its resource gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `schema.table` or `schema.*`.
    tables: Vec<String>,
    /// The window: from this UTC hour (inclusive) to that one (exclusive); a window
    /// that wraps midnight has `from_hour > until_hour`.
    from_hour: u8,
    until_hour: u8,
    #[serde(default)]
    exempt_groups: Vec<String>,
}

impl Settings {
    fn inside_window(&self, hour: u8) -> bool {
        if self.from_hour <= self.until_hour {
            (self.from_hour..self.until_hour).contains(&hour)
        } else {
            hour >= self.from_hour || hour < self.until_hour
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

struct TableWindow;

/// Verdicts on tables are the same for a whole hour at most: the gateway may keep them
/// until the next hour starts.
fn until_next_hour(now_secs: i64) -> u32 {
    u32::try_from((3600 - now_secs.rem_euclid(3600)) * 1000).unwrap_or(0)
}

/// The verdict on `statement` at the host's time.
fn check(settings: &Settings, identity: &Identity, statement: &Statement) -> Verdict {
    let now_secs = host::unix_seconds();
    let hour = u8::try_from(now_secs.rem_euclid(86_400) / 3600).unwrap_or(0);
    let exempt = identity
        .groups
        .iter()
        .any(|group| settings.exempt_groups.contains(group));
    match postern_plugin_sdk::first_covered(&settings.tables, &statement.tables) {
        Some(table) if !exempt && !settings.inside_window(hour) => deny(
            format!(
                "{} may only be used from {}:00 to {}:00 UTC",
                table, settings.from_hour, settings.until_hour
            ),
            until_next_hour(now_secs),
        ),
        _ => allow(until_next_hour(now_secs)),
    }
}

impl Guest for TableWindow {
    fn init(config: String) -> Result<(), String> {
        let settings: Settings = postern_plugin_sdk::config(&config)?;
        if settings.from_hour > 23 || settings.until_hour > 24 {
            return Err("config: hours are 0 to 24".into());
        }
        host::log(
            Level::Info,
            &format!(
                "{} table patterns, window {}:00-{}:00 UTC",
                settings.tables.len(),
                settings.from_hour,
                settings.until_hour
            ),
        );
        SETTINGS
            .set(settings)
            .map_err(|_| "init called twice".to_string())
    }

    fn on_connect(_identity: Identity, _client: ClientInfo) -> Verdict {
        allow(0)
    }

    fn on_statement(identity: Identity, statement: Statement) -> Verdict {
        match SETTINGS.get() {
            Some(settings) => check(settings, &identity, &statement),
            None => deny("table-window was not initialised", 0),
        }
    }
}

postern_plugin_sdk::policy::export_policy!(TableWindow);

#[cfg(test)]
mod tests {
    use postern_plugin_sdk::testing::{identity, statement, FakeHost};
    use postern_plugin_sdk::Decision;

    use super::{check, Settings};

    fn settings() -> Settings {
        postern_plugin_sdk::config(
            r#"{"tables": ["payroll.*"], "from_hour": 9, "until_hour": 17, "exempt_groups": ["on-call"]}"#,
        )
        .unwrap()
    }

    #[test]
    fn payroll_is_open_inside_the_window_only() {
        let (settings, alice) = (settings(), identity("alice", "default"));
        let salaries = statement("select", &["payroll.salaries"]);
        FakeHost::new().at_unix_seconds(10 * 3600).install();
        let inside = check(&settings, &alice, &salaries);
        assert_eq!(inside.decision, Decision::Allow);
        assert_eq!(inside.cache_ttl_ms, 3_600_000, "kept until the hour ends");
        FakeHost::new().at_unix_seconds(20 * 3600 + 1800).install();
        let outside = check(&settings, &alice, &salaries);
        assert_eq!(
            outside.decision,
            Decision::Deny("payroll.salaries may only be used from 9:00 to 17:00 UTC".into())
        );
        assert_eq!(outside.cache_ttl_ms, 1_800_000);
        let items = statement("select", &["public.items"]);
        assert_eq!(check(&settings, &alice, &items).decision, Decision::Allow);
        let mut on_call = identity("bob", "default");
        on_call.groups.push("on-call".into());
        assert_eq!(
            check(&settings, &on_call, &salaries).decision,
            Decision::Allow
        );
    }
}
