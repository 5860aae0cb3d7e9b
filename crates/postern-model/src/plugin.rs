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

/// Outbound HTTP a plugin's `http-client` import may make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginHttp {
    /// `scheme://host:port` origins requests may go to, nothing else (no redirects).
    /// Loopback and private addresses are reached only when an entry names the address
    /// itself: a host name that resolves to one is refused.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default = "PluginHttp::default_timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default = "PluginHttp::default_max_response_bytes")]
    pub max_response_bytes: u64,
}

impl PluginHttp {
    fn default_timeout_ms() -> u32 {
        5000
    }
    fn default_max_response_bytes() -> u64 {
        1 << 20
    }
    fn is_default(&self) -> bool {
        *self == PluginHttp::default()
    }
}

impl Default for PluginHttp {
    fn default() -> Self {
        PluginHttp {
            allow: Vec::new(),
            timeout_ms: PluginHttp::default_timeout_ms(),
            max_response_bytes: PluginHttp::default_max_response_bytes(),
        }
    }
}

/// Splits an allowed origin `scheme://host[:port]` (`http` or `https`; the port defaults
/// to the scheme's; an IPv6 address in brackets needs its port) into its parts, host
/// lowercased.
pub fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => {
            if host.is_empty() {
                return None;
            }
            (host, port.parse().ok()?)
        }
        _ => (rest, default_port),
    };
    Some((scheme.to_owned(), host.to_ascii_lowercase(), port))
}

/// Which statements a policy hook cares about: those of one of `kinds` (when given)
/// that name one of `tables` (when given; `schema.*` for a whole schema).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatementFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

impl StatementFilter {
    /// Whether a statement is the hook's business. A function call and a statement the
    /// classifier could not read (kinds `call`, `other`) always are: what they touch is
    /// unknown.
    pub fn matches(&self, kind: &str, tables: &[String]) -> bool {
        if matches!(kind, "call" | "other") {
            return true;
        }
        let kind_ok = self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind);
        let table_ok = self.tables.is_empty()
            || tables.iter().any(|table| {
                self.tables
                    .iter()
                    .any(|pattern| match pattern.strip_suffix(".*") {
                        Some(schema) => table
                            .strip_prefix(schema)
                            .is_some_and(|rest| rest.starts_with('.')),
                        None => pattern == table,
                    })
            });
        kind_ok && table_ok
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
    /// A policy hook is asked only about statements this matches (unset: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statements: Option<StatementFilter>,
    /// Where `http-client` may go (with the `http-client` capability).
    #[serde(default, skip_serializing_if = "PluginHttp::is_default")]
    pub http: PluginHttp,
    /// Secrets of the plugin's namespace its `secrets` import may read (with the
    /// `secrets` capability).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

impl PluginSpec {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        for (index, origin) in self.http.allow.iter().enumerate() {
            if parse_origin(origin).is_none() {
                return Err(ValidationError::new(
                    format!("spec.http.allow[{index}]"),
                    format!("{origin:?} is not an origin like https://host:443"),
                ));
            }
        }
        for (index, secret) in self.secrets.iter().enumerate() {
            crate::resource::check_name(&format!("spec.secrets[{index}]"), secret)?;
        }
        if !(1..=MAX_PLUGIN_CALL_TIMEOUT_MS).contains(&self.http.timeout_ms) {
            return Err(ValidationError::new(
                "spec.http.timeoutMs",
                format!("must be from 1 to {MAX_PLUGIN_CALL_TIMEOUT_MS}"),
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
