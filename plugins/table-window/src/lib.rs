//! A policy hook: statements that use a listed table (`payroll.*` names every table of
//! the schema) are denied outside a daily window of UTC hours, unless the identity is in
//! one of the exempt groups (`on-call`). Reads the time from WASI's wall clock, which the
//! gateway may fake in tests.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use postern_plugin_sdk::policy::exports::postern::plugin::policy_hook::Guest;
use postern_plugin_sdk::policy::postern::plugin::log::{write, Level};
use postern_plugin_sdk::policy::postern::plugin::types::{
    ClientInfo, Identity, Statement, Verdict,
};
use postern_plugin_sdk::policy::{allow, deny};

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
fn until_next_hour(now_secs: u64) -> u32 {
    u32::try_from((3600 - now_secs % 3600) * 1000).unwrap_or(0)
}

impl Guest for TableWindow {
    fn init(config: String) -> Result<(), String> {
        let settings: Settings = postern_plugin_sdk::config(&config)?;
        if settings.from_hour > 23 || settings.until_hour > 24 {
            return Err("config: hours are 0 to 24".into());
        }
        write(
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
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(settings) = SETTINGS.get() else {
            return deny("table-window was not initialised", 0);
        };
        let hour = ((now_secs / 3600) % 24) as u8;
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
}

postern_plugin_sdk::policy::export_policy!(TableWindow);
