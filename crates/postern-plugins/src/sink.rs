//! Log sinks: a plugin the access log hands batches of events to. One instance per
//! plugin, calls one at a time (the access log writes each sink from one thread). A
//! `retryable` answer, a trap or a timeout leaves the batch to the access log's spill
//! and replay; a `permanent` one drops it, counted as lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use postern_model::{AuditRecord, AuditSink};
use wasmtime::Store;

use crate::bindings::log_sink::exports::postern::plugin::sink::{Event, SinkError};
use crate::bindings::log_sink::{LogSink, LogSinkPre};
use crate::error::PluginError;
use crate::host::{new_store, Capability, HostState, PluginShared, SecretReader};
use crate::policy::{call_failure, PluginSpec, PluginStats};
use crate::registry::{read, Loaded, Registry};
use crate::runtime::{wrong_kind, Runtime};

/// The interfaces a log sink may be granted.
pub(crate) const SINK_OFFERS: [Capability; 3] =
    [Capability::Log, Capability::HttpClient, Capability::Secrets];

/// Why a batch was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkFailure {
    /// Try again later (the plugin said so, or it trapped or timed out).
    Retryable(String),
    /// The batch can never be written.
    Permanent(String),
}

/// A loaded log-sink plugin.
pub struct LogSinkPlugin {
    runtime: Arc<Runtime>,
    spec: PluginSpec,
    pre: LogSinkPre<HostState>,
    shared: Arc<PluginShared>,
    timeout_ticks: u64,
    instance: tokio::sync::Mutex<Option<(Store<HostState>, LogSink)>>,
    stats: PluginStats,
    /// Events in batches the plugin refused for good.
    pub lost: AtomicU64,
}

impl LogSinkPlugin {
    /// Compiles the component, checks its imports and runs `init` on its instance.
    pub async fn load(
        runtime: &Arc<Runtime>,
        spec: PluginSpec,
        component: Arc<[u8]>,
        secrets: Option<SecretReader>,
    ) -> Result<LogSinkPlugin, PluginError> {
        const KIND: &str = "log sink";
        let (instance_pre, timeout_ticks) = runtime
            .prepare(&spec, component, &SINK_OFFERS, &runtime.sink_linker, KIND)
            .await?;
        let pre = LogSinkPre::new(instance_pre).map_err(wrong_kind(&spec.name, KIND))?;
        let sink = LogSinkPlugin {
            runtime: runtime.clone(),
            shared: Arc::new(PluginShared::new(
                &spec,
                secrets,
                runtime.settings.log_lines.clone(),
            )),
            spec,
            pre,
            timeout_ticks,
            instance: tokio::sync::Mutex::new(None),
            stats: PluginStats::default(),
            lost: AtomicU64::new(0),
        };
        let started = sink.instantiate().await?;
        *sink.instance.lock().await = Some(started);
        Ok(sink)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    async fn instantiate(&self) -> Result<(Store<HostState>, LogSink), PluginError> {
        let mut store = new_store(&self.runtime, &self.spec, &self.shared, self.timeout_ticks);
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        let failed = |e: wasmtime::Error| call_failure(&self.spec, &self.stats, &e);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(failed)?;
        bindings
            .postern_plugin_sink()
            .call_init(&mut store, &self.spec.config)
            .await
            .map_err(failed)?
            .map_err(|reason| PluginError::Init {
                plugin: self.spec.name.clone(),
                reason,
            })?;
        Ok((store, bindings))
    }

    /// Hands the plugin one batch of access-log records, as the events the WIT defines.
    pub async fn write_batch(&self, records: &[&AuditRecord]) -> Result<(), SinkFailure> {
        let events: Vec<Event> = records.iter().map(|r| event(r)).collect();
        let started = std::time::Instant::now();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut slot = self.instance.lock().await;
        let (mut store, bindings) = match slot.take() {
            Some(instance) => instance,
            None => self
                .instantiate()
                .await
                .map_err(|e| SinkFailure::Retryable(e.to_string()))?,
        };
        store.set_epoch_deadline(self.timeout_ticks);
        let called = bindings
            .postern_plugin_sink()
            .call_write_batch(&mut store, &events)
            .await;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.count_call_time(nanos);
        match called {
            Err(e) => Err(SinkFailure::Retryable(
                call_failure(&self.spec, &self.stats, &e).to_string(),
            )),
            Ok(answer) => {
                *slot = Some((store, bindings));
                match answer {
                    Ok(()) => Ok(()),
                    Err(SinkError::Retryable(e)) => Err(SinkFailure::Retryable(e)),
                    Err(SinkError::Permanent(e)) => Err(SinkFailure::Permanent(e)),
                }
            }
        }
    }
}

/// Loaded log-sink plugins; the access log's [`PluginSink`]s look theirs up at each
/// batch, so a new version is used from the next batch on.
pub type LogSinks = Registry<LogSinkPlugin>;

impl Registry<LogSinkPlugin> {
    /// The access-log sink that writes through plugin `name` of `namespace`.
    pub fn sink(&self, namespace: &str, name: &str) -> std::io::Result<PluginSink> {
        Ok(PluginSink {
            label: format!("plugin-{namespace}-{name}"),
            key: (namespace.to_owned(), name.to_owned()),
            loaded: self.shared(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }
}

/// An access-log sink backed by a log-sink plugin. While the plugin is not loaded its
/// batches fail (so they wait in the spill file until it is).
pub struct PluginSink {
    label: String,
    key: (String, String),
    loaded: Arc<RwLock<Loaded<LogSinkPlugin>>>,
    /// Runs the plugin's calls on the access log's sink thread.
    runtime: tokio::runtime::Runtime,
}

fn event(record: &AuditRecord) -> Event {
    let session = record.session();
    Event {
        id: record.event_id.to_string(),
        time_ms: record.time_ms(),
        event_type: record.event.event_type.as_str().to_owned(),
        session_id: session.session_id.clone(),
        identity: format!("{}.{}", session.identity.name, session.identity.namespace),
        service: session.service.clone(),
        statement: record.event.statement.as_deref().map(str::to_owned),
        json: record.json().to_owned(),
    }
}

impl AuditSink for PluginSink {
    fn name(&self) -> &str {
        &self.label
    }

    fn write(&mut self, batch: &[&AuditRecord]) -> Result<(), String> {
        let plugin = read(&self.loaded).get(&self.key).cloned().ok_or_else(|| {
            format!(
                "log-sink plugin {}/{} is not loaded",
                self.key.0, self.key.1
            )
        })?;
        match self.runtime.block_on(plugin.write_batch(batch)) {
            Ok(()) => Ok(()),
            Err(SinkFailure::Retryable(e)) => Err(e),
            Err(SinkFailure::Permanent(e)) => {
                plugin.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(plugin = plugin.name(), events = batch.len(), error = %e, "log-sink plugin refused a batch for good; its events are lost");
                Ok(())
            }
        }
    }
}
