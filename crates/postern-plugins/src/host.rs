//! What a plugin's store holds and the host imports it may call: `log` (into Postern's
//! log, tagged and rate-limited) and `cache` (bounded, shared by the plugin's instances).
//! Also the check that a component imports only what its world offers and its resource
//! grants.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, StoreLimits};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{cache, log, types};
use crate::error::PluginError;

/// A host interface a plugin's resource may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    Log,
    Cache,
    HttpClient,
    Secrets,
}

impl Capability {
    /// The interface's name in `wit/plugin.wit`.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Cache => "cache",
            Capability::HttpClient => "http-client",
            Capability::Secrets => "secrets",
        }
    }

    pub fn from_interface(name: &str) -> Option<Capability> {
        [
            Capability::Log,
            Capability::Cache,
            Capability::HttpClient,
            Capability::Secrets,
        ]
        .into_iter()
        .find(|c| c.interface() == name)
    }
}

/// WASI interfaces every plugin may import. Nothing behind them is granted (no
/// environment, no preopened directories, stdin empty, stdout and stderr discarded), so
/// importing them gives a plugin nothing but the clocks and randomness; Rust's standard
/// library imports them whether it uses them or not. Sockets and HTTP are not among them.
const WASI_PACKAGES: [&str; 5] = ["cli", "io", "clocks", "random", "filesystem"];

/// The versions of our package a component may be built against.
const PACKAGE_VERSION_PREFIX: &str = "0.1.";

/// Refuses a component that imports anything but harmless WASI and the interfaces in
/// `offered` that `granted` names. The error names the first such import.
pub(crate) fn check_imports(
    plugin: &str,
    engine: &Engine,
    component: &Component,
    offered: &[Capability],
    granted: &[Capability],
) -> Result<(), PluginError> {
    for (name, _) in component.component_type().imports(engine) {
        let refuse = |why| {
            Err(PluginError::UngrantedImport {
                plugin: plugin.to_owned(),
                import: name.to_owned(),
                why,
            })
        };
        let (path, version) = name.split_once('@').unwrap_or((name, ""));
        let Some((package, interface)) = path.split_once('/') else {
            return refuse("is not an interface of postern:plugin or WASI");
        };
        match package {
            "wasi:sockets" | "wasi:http" => return refuse("plugins are never given"),
            _ if package
                .strip_prefix("wasi:")
                .is_some_and(|p| WASI_PACKAGES.contains(&p)) => {}
            "postern:plugin" => {
                if !version.starts_with(PACKAGE_VERSION_PREFIX) {
                    return refuse("is a version of postern:plugin this gateway does not offer");
                }
                if interface == "types" {
                    continue;
                }
                let Some(capability) = Capability::from_interface(interface) else {
                    return refuse("postern:plugin does not define");
                };
                if !offered.contains(&capability) {
                    return refuse("this kind of plugin is never given");
                }
                if !granted.contains(&capability) {
                    return refuse("the plugin's resource does not grant (spec.capabilities)");
                }
            }
            _ => return refuse("is not an interface of postern:plugin or WASI"),
        }
    }
    Ok(())
}

/// What the gateway gives plugins as the current time; tests fake it.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

pub(crate) struct PluginClock(pub WallClock);

impl HostWallClock for PluginClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        (self.0)().duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

/// Lines a plugin may log per second, and at once after a quiet spell.
const LOG_LINES_PER_SECOND: f64 = 50.0;
const LOG_BURST: f64 = 100.0;
/// A logged line is cut to this many bytes.
const LOG_LINE_BYTES: usize = 2048;
/// The cache's bound per plugin: keys and values together.
const CACHE_BYTES: u64 = 1 << 20;
const CACHE_ENTRIES_ESTIMATE: usize = 4096;

struct LogBudget {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last one written.
    suppressed: u64,
}

#[derive(Clone)]
struct CacheEntry {
    value: Arc<[u8]>,
    expires: Instant,
}

#[derive(Clone)]
struct EntryBytes;

impl quick_cache::Weighter<String, CacheEntry> for EntryBytes {
    fn weight(&self, key: &String, entry: &CacheEntry) -> u64 {
        (key.len() + entry.value.len()) as u64 + 1
    }
}

/// What all instances of one plugin share.
pub(crate) struct PluginShared {
    pub name: String,
    log: Mutex<LogBudget>,
    cache: quick_cache::sync::Cache<String, CacheEntry, EntryBytes>,
}

impl PluginShared {
    pub fn new(name: &str) -> PluginShared {
        PluginShared {
            name: name.to_owned(),
            log: Mutex::new(LogBudget {
                tokens: LOG_BURST,
                refilled: Instant::now(),
                suppressed: 0,
            }),
            cache: quick_cache::sync::Cache::with_weighter(
                CACHE_ENTRIES_ESTIMATE,
                CACHE_BYTES,
                EntryBytes,
            ),
        }
    }

    fn log(&self, level: log::Level, message: &str) {
        let suppressed = {
            let mut budget = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(budget.refilled).as_secs_f64() * LOG_LINES_PER_SECOND;
            budget.tokens = (budget.tokens + refill).min(LOG_BURST);
            budget.refilled = now;
            if budget.tokens < 1.0 {
                budget.suppressed += 1;
                return;
            }
            budget.tokens -= 1.0;
            std::mem::take(&mut budget.suppressed)
        };
        let plugin = self.name.as_str();
        if suppressed > 0 {
            tracing::warn!(target: "postern::plugin", plugin, suppressed, "plugin log lines dropped (rate limit)");
        }
        let mut end = message.len().min(LOG_LINE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        match level {
            log::Level::Trace => tracing::trace!(target: "postern::plugin", plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "postern::plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "postern::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "postern::plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "postern::plugin", plugin, "{message}"),
        }
    }
}

/// The data of one instance's store.
pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub shared: Arc<PluginShared>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) {
        self.shared.log(level, &message);
    }
}

impl cache::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let entry = self.shared.cache.get(&key)?;
        if entry.expires <= Instant::now() {
            self.shared.cache.remove(&key);
            return None;
        }
        Some(entry.value.to_vec())
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u32) {
        let expires = Instant::now() + Duration::from_millis(u64::from(ttl_ms));
        self.shared.cache.insert(
            key,
            CacheEntry {
                value: value.into(),
                expires,
            },
        );
    }

    fn delete(&mut self, key: String) {
        self.shared.cache.remove(&key);
    }
}
