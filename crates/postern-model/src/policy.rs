//! Who may do what through a service: the `authorization.rules` and `mode: dynamicConfig`
//! resource shapes, and the traits through which the proxy asks a policy engine (CEL now,
//! WASM hooks later) without knowing how rules are written.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::name::QualifiedName;
use crate::resource::{check_name, check_not_empty, ValidationError};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RuleEffect {
    Allow,
    Deny,
}

/// One ordered rule: it matches when its CEL `condition` is true, or always with
/// `matchAny: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    pub name: String,
    pub effect: RuleEffect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_any: bool,
}

/// `spec.authorization` of a Service. No rules: everything is allowed. With rules, the
/// first that matches decides and none matching denies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationSpec {
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
    /// Policy-hook Plugins of the service's namespace, asked in order about each
    /// statement the rules allow: a deny from any of them denies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
}

impl AuthorizationSpec {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.plugins.is_empty()
    }
}

/// One upstream login of a `dynamicConfig` service; target and database default to the
/// service's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub user: String,
    pub password_secret: String,
}

/// Picks a config by name when its condition holds (or always, with `matchAny`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_any: bool,
    pub config: String,
}

/// `mode: dynamicConfig`: ordered rules choose one of the named configs at connect; the
/// first match wins and no match refuses the connection (28000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DynamicConfigUpstream {
    pub configs: Vec<UpstreamConfig>,
    pub rules: Vec<RouteRule>,
}

/// Checks that a rule has exactly one of `condition` and `matchAny`.
fn check_condition(
    path: &str,
    condition: &Option<String>,
    match_any: bool,
) -> Result<(), ValidationError> {
    match (condition, match_any) {
        (Some(c), false) if !c.trim().is_empty() => Ok(()),
        (None, true) => Ok(()),
        (Some(_), true) => Err(ValidationError::new(
            path,
            "takes either condition or matchAny: true, not both",
        )),
        _ => Err(ValidationError::new(
            path,
            "needs a condition or matchAny: true",
        )),
    }
}

/// Checks `name` at `{path}.name` and that no earlier `what` in `seen` has it.
fn check_unique_name<'a>(
    seen: &mut std::collections::BTreeSet<&'a str>,
    path: &str,
    what: &str,
    name: &'a str,
) -> Result<(), ValidationError> {
    let path = format!("{path}.name");
    check_name(&path, name)?;
    if !seen.insert(name) {
        return Err(ValidationError::new(
            path,
            format!("{what} {name:?} is named twice"),
        ));
    }
    Ok(())
}

impl AuthorizationSpec {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        let mut seen = std::collections::BTreeSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let path = format!("spec.authorization.rules[{index}]");
            check_unique_name(&mut seen, &path, "rule", &rule.name)?;
            check_condition(&path, &rule.condition, rule.match_any)?;
        }
        let mut plugins = std::collections::BTreeSet::new();
        for (index, plugin) in self.plugins.iter().enumerate() {
            let path = format!("spec.authorization.plugins[{index}]");
            check_name(&path, plugin)?;
            if !plugins.insert(plugin.as_str()) {
                return Err(ValidationError::new(
                    path,
                    format!("{plugin:?} is named twice"),
                ));
            }
        }
        Ok(())
    }
}

impl DynamicConfigUpstream {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if self.configs.is_empty() {
            return Err(ValidationError::new(
                "spec.upstream.configs",
                "needs at least one config",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (index, config) in self.configs.iter().enumerate() {
            let path = format!("spec.upstream.configs[{index}]");
            check_unique_name(&mut names, &path, "config", &config.name)?;
            check_not_empty(&format!("{path}.user"), &config.user)?;
            check_name(&format!("{path}.passwordSecret"), &config.password_secret)?;
            if let Some(target) = &config.target {
                check_name(&format!("{path}.target"), target)?;
            }
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let path = format!("spec.upstream.rules[{index}]");
            check_condition(&path, &rule.condition, rule.match_any)?;
            if !names.contains(rule.config.as_str()) {
                return Err(ValidationError::new(
                    format!("{path}.config"),
                    format!("no config is named {:?}", rule.config),
                ));
            }
        }
        Ok(())
    }
}

/// What the proxy knows of a connecting client.
#[derive(Debug, Clone, Default)]
pub struct ClientFacts {
    pub address: String,
    pub tls: bool,
    pub application_name: String,
    /// Groups an auth-provider plugin read from the client's credential (a token's
    /// `groups` claim); the session has them besides its Identity's own.
    pub credential_groups: Vec<String>,
}

/// What the policy sees of a session at connect; statements add to it.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    pub identity: QualifiedName,
    /// The service the session reaches.
    pub service: QualifiedName,
    /// `human` or `workload`.
    pub identity_type: String,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub client: ClientFacts,
    /// The upstream user and database of the route (empty before a dynamicConfig route is
    /// chosen).
    pub user: String,
    pub database: String,
}

/// A statement was refused; `rule` names the deciding rule (or the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub rule: String,
    /// The statement kind that was refused (`delete`, `ddl`…), for the client and the log.
    pub kind: String,
    /// A policy-hook plugin's own reason (then `rule` is `plugin:NAME`).
    pub reason: Option<String>,
}

/// A statement as policy-hook plugins see it.
#[derive(Debug, Clone, Copy)]
pub struct HookStatement<'a> {
    pub kind: &'a str,
    /// `schema.table`.
    pub tables: &'a [String],
    pub functions: &'a [String],
    pub text: &'a str,
    /// Equal for statements that differ only in their literals; `None` when the
    /// statement was too long to fold (a verdict about it is never reused).
    pub fingerprint: Option<u64>,
}

/// A policy-hook plugin bound to one session.
pub trait SessionHook: Send + Sync + std::fmt::Debug + 'static {
    /// Whether the session may start (its `kind` is `connect`).
    fn check_connect(&self) -> Result<(), Denial>;

    /// Allowed, or the plugin's denial (failing plugins deny unless their resource says
    /// `failure: open`).
    fn check_statement(&self, statement: &HookStatement<'_>) -> Result<(), Denial>;
}

/// The policy-hook plugins a gateway has loaded.
pub trait PolicyPlugins: Send + Sync + 'static {
    /// The plugin `name` of `namespace` bound to a session; `None` when no such plugin is
    /// loaded (the caller fails closed).
    fn bind(
        &self,
        namespace: &str,
        name: &str,
        session: &SessionFacts,
    ) -> Option<Box<dyn SessionHook>>;
}

/// A service's rules bound to one session.
pub trait SessionPolicy: Send + Sync + std::fmt::Debug + 'static {
    /// Checks every statement of one client message (a Query or a Parse); one denied
    /// statement denies the message.
    fn check_statement(&self, sql: &str) -> Result<(), Denial>;

    /// Checks a fastpath FunctionCall, which carries no SQL (kind `call`).
    fn check_function_call(&self) -> Result<(), Denial>;
}

/// The connect-time outcome of a service's rules.
pub enum ConnectDecision {
    /// Connect; statements are checked by the policy, if any.
    Allow(Option<Arc<dyn SessionPolicy>>),
    Deny(Denial),
}

/// A rule that does not compile: where and why, for `apply`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct RuleError {
    pub path: String,
    pub message: String,
}

/// Compiles and evaluates rules. The store calls it while it resolves a route, so the
/// proxy only ever sees the outcome.
pub trait PolicyEngine: Send + Sync + 'static {
    /// Checks every CEL expression of a Service spec; what `apply` runs.
    fn validate(
        &self,
        authorization: &AuthorizationSpec,
        routes: &[RouteRule],
    ) -> Result<(), RuleError>;

    /// Evaluates `authorization` at connect. `cache_key` identifies this version of the
    /// rules (service and generation), so they compile once.
    fn connect(
        &self,
        cache_key: &str,
        authorization: &AuthorizationSpec,
        facts: &SessionFacts,
    ) -> Result<ConnectDecision, RuleError>;

    /// The config name of the first route rule that matches, if any.
    fn choose_route(
        &self,
        cache_key: &str,
        routes: &[RouteRule],
        facts: &SessionFacts,
    ) -> Result<Option<String>, RuleError>;

    /// How the classification cache is doing, for metrics.
    fn statement_cache(&self) -> StatementCacheStats;
}

/// Counts of a policy engine's statement classification cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatementCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: u64,
    pub bytes: u64,
}
