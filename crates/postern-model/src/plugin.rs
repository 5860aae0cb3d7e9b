//! `kind: Plugin`: a WASM component the gateway runs, what it may import, its limits and
//! its config. The component's bytes live in the state store, addressed by `source.sha256`,
//! so every gateway and every restart loads the same bytes.

use serde::{Deserialize, Serialize};

use crate::resource::ValidationError;

/// What a plugin extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PluginType {
    /// Asked about each session and statement of the services that name it.
    Policy,
    AuthProvider,
    LogSink,
}

/// Where the component comes from: `apply` reads `path` (relative to the file) and
/// records the bytes' `sha256`; with both given, the bytes must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What a failing plugin's calls answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PluginFailure {
    #[default]
    Closed,
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory of one instance.
    #[serde(default = "PluginLimits::default_memory_mib")]
    pub memory_mib: u32,
    /// How long one call may run.
    #[serde(default = "PluginLimits::default_call_timeout_ms")]
    pub call_timeout_ms: u32,
}

impl PluginLimits {
    fn default_memory_mib() -> u32 {
        16
    }
    fn default_call_timeout_ms() -> u32 {
        100
    }
    fn is_default(&self) -> bool {
        *self == PluginLimits::default()
    }
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_mib: PluginLimits::default_memory_mib(),
            call_timeout_ms: PluginLimits::default_call_timeout_ms(),
        }
    }
}

/// The most memory and time a plugin may be given.
pub const MAX_PLUGIN_MEMORY_MIB: u32 = 256;
pub const MAX_PLUGIN_CALL_TIMEOUT_MS: u32 = 10_000;
/// Host interfaces a plugin may be granted (`spec.capabilities`).
pub const PLUGIN_CAPABILITIES: [&str; 4] = ["log", "cache", "http-client", "secrets"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSpec {
    #[serde(rename = "type")]
    pub plugin_type: PluginType,
    pub source: PluginSource,
    /// Handed to the plugin's `init` as JSON text.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "PluginLimits::is_default")]
    pub limits: PluginLimits,
    #[serde(default)]
    pub failure: PluginFailure,
    /// Whether a policy hook is given the statement's text (which may hold secrets).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub statement_text: bool,
}

impl PluginSpec {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if self.plugin_type != PluginType::Policy {
            return Err(ValidationError::new(
                "spec.type",
                "only policy plugins are supported by this version (authProvider and logSink are not yet)",
            ));
        }
        match (&self.source.path, &self.source.sha256) {
            (None, None) => {
                return Err(ValidationError::new(
                    "spec.source",
                    "needs a path (or the sha256 of a component already stored)",
                ))
            }
            (_, Some(sha)) if !is_sha256_hex(sha) => {
                return Err(ValidationError::new(
                    "spec.source.sha256",
                    "must be 64 lowercase hex digits",
                ))
            }
            _ => {}
        }
        for (index, capability) in self.capabilities.iter().enumerate() {
            if !PLUGIN_CAPABILITIES.contains(&capability.as_str()) {
                return Err(ValidationError::new(
                    format!("spec.capabilities[{index}]"),
                    format!(
                        "unknown capability {capability:?} (expected one of {})",
                        PLUGIN_CAPABILITIES.join(", ")
                    ),
                ));
            }
        }
        if !(1..=MAX_PLUGIN_MEMORY_MIB).contains(&self.limits.memory_mib) {
            return Err(ValidationError::new(
                "spec.limits.memoryMib",
                format!("must be from 1 to {MAX_PLUGIN_MEMORY_MIB}"),
            ));
        }
        if !(1..=MAX_PLUGIN_CALL_TIMEOUT_MS).contains(&self.limits.call_timeout_ms) {
            return Err(ValidationError::new(
                "spec.limits.callTimeoutMs",
                format!("must be from 1 to {MAX_PLUGIN_CALL_TIMEOUT_MS}"),
            ));
        }
        Ok(())
    }
}

pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
