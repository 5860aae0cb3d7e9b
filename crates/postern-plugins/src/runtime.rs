//! The plugin engine: one wasmtime `Engine` for every plugin of a gateway, compiled
//! components cached on disk by content, instances from a pooling allocator (falling back
//! to allocation on demand when the machine refuses its reservations), and a thread that
//! ticks the engine's epoch so a call can be stopped when it runs past its time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::auth_provider::AuthProvider;
use crate::bindings::log_sink::LogSink;
use crate::bindings::policy::Policy;
use crate::error::PluginError;
use crate::host::{check_imports, check_version, Capability, HostState, WallClock};
use crate::policy::{timeout_ticks, PluginSpec};

/// How often the epoch advances: a call's time limit is counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The most memory a plugin's resource may give one instance.
pub const MAX_MEMORY_BYTES: usize = 256 << 20;
/// Instances the pooling allocator keeps slots for, across all plugins.
const POOLED_INSTANCES: u32 = 256;

#[derive(Clone, Default)]
pub struct RuntimeSettings {
    /// Where compiled components are kept between runs (keyed by their content); `None`
    /// compiles every component at every start.
    pub cache_dir: Option<PathBuf>,
    /// The time plugins see; `None` is the real wall clock. Tests fake it.
    pub clock: Option<WallClock>,
    /// Also hands every line plugins log to this (after the rate limit).
    pub log_lines: Option<crate::host::LogLines>,
}

/// Loads and runs plugins. Cheap to share: clone the `Arc`.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) policy_linker: Linker<HostState>,
    pub(crate) sink_linker: Linker<HostState>,
    pub(crate) auth_linker: Linker<HostState>,
    pub(crate) settings: RuntimeSettings,
    pooled: bool,
    /// Numbers each plugin load, so what was kept from one load is not reused after
    /// another.
    loads: std::sync::atomic::AtomicU64,
}

/// The error for a component that is not of the kind it was loaded as.
pub(crate) fn wrong_kind(
    plugin: &str,
    kind: &'static str,
) -> impl Fn(wasmtime::Error) -> PluginError {
    let plugin = plugin.to_owned();
    move |e| PluginError::WrongKind {
        plugin: plugin.clone(),
        kind,
        reason: format!("{e:#}"),
    }
}

fn engine_error(e: impl std::fmt::Display) -> PluginError {
    PluginError::Engine(e.to_string())
}

impl Runtime {
    pub fn new(settings: RuntimeSettings) -> Result<Arc<Runtime>, PluginError> {
        let mut config = Config::new();
        // Concurrent component-model calls cost every call (~0.8 µs against ~0.3 µs
        // without); plugins make plain calls.
        config.concurrency_support(false);
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        if let Some(dir) = &settings.cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache).map_err(engine_error)?));
        }
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(POOLED_INSTANCES)
            .total_core_instances(POOLED_INSTANCES * 4)
            .total_memories(POOLED_INSTANCES * 2)
            .total_tables(POOLED_INSTANCES * 4)
            .total_stacks(POOLED_INSTANCES)
            .max_memory_size(MAX_MEMORY_BYTES);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let (engine, pooled) = match Engine::new(&config) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "plugin instance pool unavailable; allocating instances on demand");
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                (Engine::new(&config).map_err(engine_error)?, false)
            }
        };
        let mut policy_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut policy_linker).map_err(engine_error)?;
        Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut policy_linker, |s| s)
            .map_err(engine_error)?;
        let mut sink_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut sink_linker).map_err(engine_error)?;
        LogSink::add_to_linker::<HostState, HasSelf<HostState>>(&mut sink_linker, |s| s)
            .map_err(engine_error)?;
        let mut auth_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut auth_linker).map_err(engine_error)?;
        AuthProvider::add_to_linker::<HostState, HasSelf<HostState>>(&mut auth_linker, |s| s)
            .map_err(engine_error)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(engine_error)?;
        Ok(Arc::new(Runtime {
            engine,
            policy_linker,
            sink_linker,
            auth_linker,
            settings,
            pooled,
            loads: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    pub(crate) fn next_load_id(&self) -> u64 {
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The linker of a kind of plugin's world.
    pub(crate) fn linker(&self, kind: postern_model::PluginType) -> &Linker<HostState> {
        match kind {
            postern_model::PluginType::Policy => &self.policy_linker,
            postern_model::PluginType::AuthProvider => &self.auth_linker,
            postern_model::PluginType::LogSink => &self.sink_linker,
        }
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooled(&self) -> bool {
        self.pooled
    }

    /// Compiles a component and checks it for its kind: its imports within `offers` and
    /// the spec's grants, its exports what `linker`'s world needs. Returns it ready to
    /// instantiate, and the call time limit in epoch ticks.
    pub(crate) async fn prepare(
        &self,
        spec: &PluginSpec,
        component: Arc<[u8]>,
        offers: &[Capability],
        linker: &Linker<HostState>,
        kind: &'static str,
    ) -> Result<(InstancePre<HostState>, u64), PluginError> {
        let ticks = timeout_ticks(spec)?;
        let compiled = self.compile(&spec.name, component).await?;
        check_version(&spec.name, &self.engine, &compiled)?;
        check_imports(
            &spec.name,
            &self.engine,
            &compiled,
            offers,
            &spec.capabilities,
        )?;
        let instance_pre = linker
            .instantiate_pre(&compiled)
            .map_err(wrong_kind(&spec.name, kind))?;
        Ok((instance_pre, ticks))
    }

    /// Compiles a component off the async workers (cranelift takes a while; the disk
    /// cache makes a second load of the same bytes quick).
    pub(crate) async fn compile(
        &self,
        plugin: &str,
        bytes: Arc<[u8]>,
    ) -> Result<Component, PluginError> {
        let engine = self.engine.clone();
        let compiled = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(engine_error)?;
        compiled.map_err(|e| PluginError::Compile {
            plugin: plugin.to_owned(),
            // One line: the parser's messages spread byte arrays over many.
            reason: format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}
