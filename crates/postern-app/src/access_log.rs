//! The access log: the pipeline and the sinks `[audit]` names.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_config::Config;
use tracing::info;

/// The access log with the sinks `[audit]` names; `None` when it is off.
pub fn access_log(
    config: &Config,
    store: &Arc<postern_state::Store>,
    log_sinks: &postern_plugins::LogSinks,
) -> anyhow::Result<Option<Arc<postern_audit::AuditPipeline>>> {
    use postern_audit::{AuditPipeline, AuditSettings};
    let audit = &config.audit;
    if !audit.enabled {
        return Ok(None);
    }
    let sinks = sinks(config, store, log_sinks)?;
    let settings = AuditSettings {
        queue_capacity: audit.queue_capacity,
        log_parameters: audit.log_parameters.then_some(audit.max_parameter_bytes),
        secret_functions: audit.redact_functions.clone().unwrap_or_else(|| {
            postern_policy::DEFAULT_SECRET_FUNCTIONS
                .iter()
                .map(|s| s.to_string())
                .collect()
        }),
        spill_dir: config.audit_spill_dir(),
        spill_budget: audit.spill_max_bytes,
        block_on_failure: audit.on_failure == postern_config::AuditFailure::Block,
        events: config.audit_events(),
    };
    let spill_dir = settings.spill_dir.clone();
    let pipeline = AuditPipeline::start(settings, sinks).with_context(|| {
        format!(
            "cannot start the access log (spill dir {})",
            spill_dir.display()
        )
    })?;
    info!(file = ?audit.file, state = audit.state, stdout = audit.stdout, "access log on");
    Ok(Some(pipeline))
}

/// The sinks `[audit]` names: the state store, a JSON Lines file, stdout, plugins.
pub fn sinks(
    config: &Config,
    store: &Arc<postern_state::Store>,
    log_sinks: &postern_plugins::LogSinks,
) -> anyhow::Result<Vec<Box<dyn postern_model::AuditSink>>> {
    use postern_audit::{JsonlFileSink, StdoutSink};
    let audit = &config.audit;
    let mut sinks: Vec<Box<dyn postern_model::AuditSink>> = Vec::new();
    if audit.state {
        sinks.push(Box::new(postern_state::StateAuditSink::new(
            store.clone(),
            Duration::from_secs(audit.state_retention_secs),
        )));
    }
    if let Some(path) = &audit.file {
        sinks.push(Box::new(JsonlFileSink::new(
            path.clone(),
            audit.file_max_bytes,
            Duration::from_secs(audit.file_max_age_secs),
            audit.file_keep,
        )));
    }
    if audit.stdout {
        sinks.push(Box::new(StdoutSink));
    }
    for entry in &audit.plugin_sinks {
        if let Some((namespace, name)) = Config::plugin_sink(entry) {
            let sink = log_sinks
                .sink(&namespace, &name)
                .context("cannot start a plugin sink's runtime")?;
            sinks.push(Box::new(sink));
        }
    }
    Ok(sinks)
}

/// The `[audit]` settings [`sinks`] reads: a reload replaces the sinks when one changed.
pub const SINK_SETTINGS: &[&str] = &[
    "audit.state",
    "audit.state_retention_secs",
    "audit.file",
    "audit.file_max_bytes",
    "audit.file_max_age_secs",
    "audit.file_keep",
    "audit.stdout",
    "audit.plugin_sinks",
];
