//! Resource kinds, their specs and validation. The file format is
//! `kind`, `metadata {name, namespace, labels}`, `spec` (camelCase keys), as in
//! `shared/examples/quickstart.yaml`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::credentials::{CredentialRoleSpec, StaticRoleSpec};
use crate::intents::IntentsSpec;
use crate::name::{validate_name, QualifiedName, DEFAULT_NAMESPACE};
use crate::plugin::PluginSpec;
use crate::policy::{AuthorizationSpec, DynamicConfigUpstream};
use crate::rbac::RoleBindingSpec;

/// The kinds this build manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Namespace,
    Target,
    Service,
    Identity,
    Intents,
    CredentialRole,
    StaticRole,
    RoleBinding,
    Plugin,
}

impl Kind {
    /// In dependency order: a kind may refer only to kinds before it.
    pub const ALL: [Kind; 9] = [
        Kind::Namespace,
        Kind::Plugin,
        Kind::Target,
        Kind::StaticRole,
        Kind::CredentialRole,
        Kind::Service,
        Kind::Identity,
        Kind::Intents,
        Kind::RoleBinding,
    ];

    /// Each kind's spellings and scope, declared once: everything that names kinds (files,
    /// the CLI, the admin API's paths) reads them from here.
    fn names(self) -> KindNames {
        let (name, plural, aliases, namespaced): (_, _, &'static [&'static str], _) = match self {
            Kind::Namespace => ("Namespace", "namespaces", &["ns"], false),
            Kind::Target => ("Target", "targets", &[], true),
            Kind::Service => ("Service", "services", &["svc"], true),
            Kind::Identity => ("Identity", "identities", &[], true),
            Kind::Intents => ("Intents", "intents", &["intent"], true),
            Kind::CredentialRole => (
                "CredentialRole",
                "credentialroles",
                &["credential-role", "credential-roles"],
                true,
            ),
            Kind::StaticRole => (
                "StaticRole",
                "staticroles",
                &["static-role", "static-roles"],
                true,
            ),
            Kind::RoleBinding => (
                "RoleBinding",
                "rolebindings",
                &["role-binding", "role-bindings"],
                true,
            ),
            Kind::Plugin => ("Plugin", "plugins", &[], true),
        };
        KindNames {
            name,
            plural,
            aliases,
            namespaced,
        }
    }

    /// The document's spelling (`kind: CredentialRole`).
    pub fn as_str(self) -> &'static str {
        self.names().name
    }

    /// Lowercase plural: the admin API's collection segment (`credentialroles`).
    pub fn plural(self) -> &'static str {
        self.names().plural
    }

    pub fn is_namespaced(self) -> bool {
        self.names().namespaced
    }

    /// `Service team-a/orders`, or `Namespace team-a`: how messages name a resource,
    /// whether or not it exists.
    pub fn describe(self, namespace: &str, name: &str) -> String {
        if self.is_namespaced() {
            format!("{self} {namespace}/{name}")
        } else {
            format!("{self} {name}")
        }
    }

    /// Parses the `kind:` field of a document (exact spelling).
    pub fn from_document(text: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                if text == "Secret" {
                    "Secrets are not applied from files; set their values with `postern secret set`"
                        .to_owned()
                } else {
                    let known: Vec<&str> = Kind::ALL.iter().map(|kind| kind.as_str()).collect();
                    format!(
                        "unknown kind {text:?} (expected one of {})",
                        known.join(", ")
                    )
                }
            })
    }
}

/// What [`Kind::names`] declares for one kind.
struct KindNames {
    name: &'static str,
    plural: &'static str,
    /// Further CLI spellings, besides the name and plural in any case.
    aliases: &'static [&'static str],
    namespaced: bool,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    /// CLI spelling: any case, singular, plural or short form (`svc`, `ns`).
    fn from_str(s: &str) -> Result<Kind, String> {
        let lower = s.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|kind| {
                let names = kind.names();
                names.name.eq_ignore_ascii_case(&lower)
                    || names.plural == lower
                    || names.aliases.contains(&lower.as_str())
            })
            .ok_or_else(|| {
                let known: Vec<String> = Kind::ALL
                    .iter()
                    .map(|kind| kind.as_str().to_ascii_lowercase())
                    .collect();
                format!(
                    "unknown kind {s:?} (expected {} or secret)",
                    known.join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Set by the store on output; ignored on input so `get -o yaml` re-applies cleanly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `sslMode` of the upstream leg, with libpq's meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminCredentials {
    pub user: String,
    pub password_secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// `host:port` of the upstream server.
    pub address: String,
    #[serde(default)]
    pub ssl_mode: SslMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminCredentials>,
    /// The most connections the gateway keeps open to this server, in use and idle
    /// together. Unset: 90 % of what the server allows (`max_connections` less its
    /// reserved slots), read from the server at the first login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// The same bound for each upstream user. Unset: the role's own `CONNECTION LIMIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_user: Option<u32>,
}

/// One fixed upstream user for every identity: `user` with the password in
/// `passwordSecret`, or the user and current password of a `staticRole`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticUpstream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_role: Option<String>,
}

/// `mode: dynamic`: every session gets a fresh role from a CredentialRole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DynamicUpstream {
    pub credential_role: String,
}

/// `mode: intents` takes no settings: the role is the identity's managed role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentsUpstream {}

/// How the gateway logs in upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum UpstreamSpec {
    /// One fixed user and password secret for every identity.
    Static(StaticUpstream),
    /// Each identity as its own role, which the reconciler keeps equal to its Intents.
    Intents(IntentsUpstream),
    /// A fresh role per session from a CredentialRole, dropped when the session ends.
    Dynamic(DynamicUpstream),
    /// One of several named logins, chosen per session by ordered CEL rules.
    DynamicConfig(DynamicConfigUpstream),
}

/// Reuse of idle upstream connections between client sessions of a service. A session
/// still has one upstream session of its own for its lifetime; a connection is reused
/// only after the client said goodbye and `resetQuery` left it idle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default = "PoolSpec::default_enabled")]
    pub enabled: bool,
    /// Idle connections kept per upstream user and startup parameters.
    #[serde(default = "PoolSpec::default_max_idle")]
    pub max_idle: u32,
    #[serde(default = "PoolSpec::default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    #[serde(default = "PoolSpec::default_max_lifetime_secs")]
    pub max_lifetime_secs: u64,
    #[serde(default = "PoolSpec::default_reset_query")]
    pub reset_query: String,
}

impl PoolSpec {
    fn default_enabled() -> bool {
        true
    }
    fn default_max_idle() -> u32 {
        20
    }
    fn default_idle_timeout_secs() -> u64 {
        60
    }
    fn default_max_lifetime_secs() -> u64 {
        3600
    }
    fn default_reset_query() -> String {
        "DISCARD ALL".to_owned()
    }
    pub fn is_default(&self) -> bool {
        *self == PoolSpec::default()
    }
}

impl Default for PoolSpec {
    fn default() -> Self {
        PoolSpec {
            enabled: PoolSpec::default_enabled(),
            max_idle: PoolSpec::default_max_idle(),
            idle_timeout_secs: PoolSpec::default_idle_timeout_secs(),
            max_lifetime_secs: PoolSpec::default_max_lifetime_secs(),
            reset_query: PoolSpec::default_reset_query(),
        }
    }
}

/// Limits on idle client sessions; 0 means off (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutSpec {
    /// Close a session idle outside a transaction for this long (SQLSTATE 57P05).
    #[serde(default)]
    pub idle_secs: u64,
    /// Close a session idle inside a transaction for this long (SQLSTATE 25P03).
    #[serde(default)]
    pub idle_in_transaction_secs: u64,
}

impl TimeoutSpec {
    pub fn is_default(&self) -> bool {
        *self == TimeoutSpec::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub target: String,
    pub database: String,
    pub upstream: UpstreamSpec,
    #[serde(default, skip_serializing_if = "PoolSpec::is_default")]
    pub pool: PoolSpec,
    #[serde(default, skip_serializing_if = "TimeoutSpec::is_default")]
    pub timeouts: TimeoutSpec,
    #[serde(default, skip_serializing_if = "AuthorizationSpec::is_empty")]
    pub authorization: AuthorizationSpec,
    #[serde(default, skip_serializing_if = "ServiceAuth::is_empty")]
    pub auth: ServiceAuth,
}

/// How clients of a service may log in besides API keys and the gateway's own access
/// tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAuth {
    /// Auth-provider Plugins of the service's namespace, asked in order about a
    /// cleartext password that is no access token of the gateway.
    #[serde(default)]
    pub providers: Vec<String>,
}

impl ServiceAuth {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityType {
    #[default]
    Human,
    Workload,
}

/// A TLS client certificate that logs the identity in, like PostgreSQL's `cert` method:
/// verified against the gateway's client CA, matched by the subject's common name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCertificateSpec {
    pub common_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySpec {
    #[serde(rename = "type", default)]
    pub identity_type: IdentityType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificateSpec>,
}

/// The typed spec of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Namespace(NamespaceSpec),
    Target(TargetSpec),
    Service(ServiceSpec),
    Identity(IdentitySpec),
    Intents(IntentsSpec),
    CredentialRole(CredentialRoleSpec),
    StaticRole(StaticRoleSpec),
    RoleBinding(RoleBindingSpec),
    Plugin(PluginSpec),
}

/// Upper bound on durations in specs, far from any clock's overflow.
const MAX_DURATION_SECS: u64 = 365 * 24 * 3600;

/// A validation failure: the field path (`spec.upstream.user`) and what is wrong.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(path: impl Into<String>, message: impl fmt::Display) -> Self {
        ValidationError {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// One resource: kind, metadata and typed spec. Namespaced kinds always carry a namespace
/// after construction (omitted in a file means `default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub metadata: Metadata,
    pub spec: Spec,
}

fn decode_spec<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        ValidationError::new(path, e.into_inner())
    })
}

pub(crate) fn check_name(path: &str, name: &str) -> Result<(), ValidationError> {
    validate_name(name).map_err(|e| ValidationError::new(path, e))
}

pub(crate) fn check_not_empty(path: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(path, "must not be empty"));
    }
    Ok(())
}

impl Resource {
    /// Builds and validates a resource from its parts, as read from a file or the store.
    pub fn from_parts(
        kind: Kind,
        mut metadata: Metadata,
        spec: serde_json::Value,
    ) -> Result<Resource, ValidationError> {
        check_name("metadata.name", &metadata.name)?;
        metadata.generation = None;
        if kind.is_namespaced() {
            let namespace = metadata
                .namespace
                .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
            check_name("metadata.namespace", namespace)?;
        } else if metadata.namespace.is_some() {
            return Err(ValidationError::new(
                "metadata.namespace",
                format!("a {kind} is not namespaced"),
            ));
        }
        // A missing spec reads as an empty mapping, so kinds with all-optional specs
        // may omit it.
        let spec = if spec.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            spec
        };
        let spec = match kind {
            Kind::Namespace => Spec::Namespace(decode_spec(spec)?),
            Kind::Target => Spec::Target(decode_spec(spec)?),
            Kind::Service => Spec::Service(decode_spec(spec)?),
            Kind::Identity => Spec::Identity(decode_spec(spec)?),
            Kind::Intents => Spec::Intents(decode_spec(spec)?),
            Kind::CredentialRole => Spec::CredentialRole(decode_spec(spec)?),
            Kind::StaticRole => Spec::StaticRole(decode_spec(spec)?),
            Kind::RoleBinding => Spec::RoleBinding(decode_spec(spec)?),
            Kind::Plugin => Spec::Plugin(decode_spec(spec)?),
        };
        let resource = Resource { metadata, spec };
        resource.validate_spec()?;
        Ok(resource)
    }

    fn validate_spec(&self) -> Result<(), ValidationError> {
        match &self.spec {
            Spec::Namespace(_) => Ok(()),
            Spec::Target(t) => {
                let (host, port) = t
                    .address
                    .rsplit_once(':')
                    .ok_or_else(|| ValidationError::new("spec.address", "must be host:port"))?;
                check_not_empty("spec.address", host)?;
                port.parse::<u16>().map_err(|_| {
                    ValidationError::new("spec.address", format!("invalid port {port:?}"))
                })?;
                if matches!(t.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull)
                    && t.ca_file.is_none()
                {
                    return Err(ValidationError::new(
                        "spec.caFile",
                        "is required with sslMode verify-ca and verify-full",
                    ));
                }
                if let Some(admin) = &t.admin {
                    check_not_empty("spec.admin.user", &admin.user)?;
                    check_name("spec.admin.passwordSecret", &admin.password_secret)?;
                }
                for (path, limit) in [
                    ("spec.maxConnections", t.max_connections),
                    ("spec.maxConnectionsPerUser", t.max_connections_per_user),
                ] {
                    if limit == Some(0) {
                        return Err(ValidationError::new(path, "must be at least 1"));
                    }
                }
                Ok(())
            }
            Spec::Service(s) => {
                check_name("spec.target", &s.target)?;
                check_not_empty("spec.database", &s.database)?;
                match &s.upstream {
                    UpstreamSpec::Static(up) => {
                        match (&up.user, &up.password_secret, &up.static_role) {
                            (Some(user), Some(secret), None) => {
                                check_not_empty("spec.upstream.user", user)?;
                                check_name("spec.upstream.passwordSecret", secret)?;
                            }
                            (None, None, Some(role)) => {
                                check_name("spec.upstream.staticRole", role)?
                            }
                            _ => return Err(ValidationError::new(
                                "spec.upstream",
                                "mode static takes either user and passwordSecret, or staticRole",
                            )),
                        }
                    }
                    UpstreamSpec::Dynamic(up) => {
                        check_name("spec.upstream.credentialRole", &up.credential_role)?
                    }
                    UpstreamSpec::DynamicConfig(up) => up.validate()?,
                    UpstreamSpec::Intents(_) => {}
                }
                s.authorization.validate()?;
                for (index, provider) in s.auth.providers.iter().enumerate() {
                    check_name(&format!("spec.auth.providers[{index}]"), provider)?;
                }
                if s.pool.enabled {
                    check_not_empty("spec.pool.resetQuery", &s.pool.reset_query)?;
                }
                for (path, secs) in [
                    ("spec.pool.idleTimeoutSecs", s.pool.idle_timeout_secs),
                    ("spec.pool.maxLifetimeSecs", s.pool.max_lifetime_secs),
                    ("spec.timeouts.idleSecs", s.timeouts.idle_secs),
                    (
                        "spec.timeouts.idleInTransactionSecs",
                        s.timeouts.idle_in_transaction_secs,
                    ),
                ] {
                    if secs > MAX_DURATION_SECS {
                        return Err(ValidationError::new(
                            path,
                            format!("must be at most {MAX_DURATION_SECS} (a year)"),
                        ));
                    }
                }
                Ok(())
            }
            Spec::Identity(i) => {
                for (index, group) in i.groups.iter().enumerate() {
                    check_not_empty(&format!("spec.groups[{index}]"), group)?;
                }
                if let Some(cert) = &i.client_certificate {
                    check_not_empty("spec.clientCertificate.commonName", &cert.common_name)?;
                }
                Ok(())
            }
            Spec::Intents(i) => i.validate(),
            Spec::CredentialRole(c) => c.validate(),
            Spec::StaticRole(r) => r.validate(),
            Spec::RoleBinding(b) => b.validate(),
            Spec::Plugin(p) => p.validate(),
        }
    }

    pub fn kind(&self) -> Kind {
        match self.spec {
            Spec::Namespace(_) => Kind::Namespace,
            Spec::Target(_) => Kind::Target,
            Spec::Service(_) => Kind::Service,
            Spec::Identity(_) => Kind::Identity,
            Spec::Intents(_) => Kind::Intents,
            Spec::CredentialRole(_) => Kind::CredentialRole,
            Spec::StaticRole(_) => Kind::StaticRole,
            Spec::RoleBinding(_) => Kind::RoleBinding,
            Spec::Plugin(_) => Kind::Plugin,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The namespace, or `""` for cluster-scoped kinds (the store's key form).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }

    pub fn qualified_name(&self) -> QualifiedName {
        QualifiedName::new(self.namespace(), self.name())
    }

    /// `Service team-a/orders`, or `Namespace team-a`.
    pub fn describe(&self) -> String {
        self.kind().describe(self.namespace(), self.name())
    }

    pub fn spec_json(&self) -> serde_json::Value {
        let value = match &self.spec {
            Spec::Namespace(s) => serde_json::to_value(s),
            Spec::Target(s) => serde_json::to_value(s),
            Spec::Service(s) => serde_json::to_value(s),
            Spec::Identity(s) => serde_json::to_value(s),
            Spec::Intents(s) => serde_json::to_value(s),
            Spec::CredentialRole(s) => serde_json::to_value(s),
            Spec::StaticRole(s) => serde_json::to_value(s),
            Spec::RoleBinding(s) => serde_json::to_value(s),
            Spec::Plugin(s) => serde_json::to_value(s),
        };
        // Serialising these plain structs cannot fail.
        value.unwrap_or(serde_json::Value::Null)
    }

    /// The whole resource in file form: `{kind, metadata, spec}`.
    pub fn to_document(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind().as_str(),
            "metadata": self.metadata,
            "spec": self.spec_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(name: &str, ns: Option<&str>) -> Metadata {
        Metadata {
            name: name.into(),
            namespace: ns.map(Into::into),
            labels: Default::default(),
            generation: None,
        }
    }

    #[test]
    fn service_spec_round_trips_and_defaults_namespace() {
        let spec = json!({"target": "main-pg", "database": "orders",
            "upstream": {"mode": "static", "user": "app_rw", "passwordSecret": "app-rw-password"}});
        let r = Resource::from_parts(Kind::Service, meta("orders", None), spec.clone()).unwrap();
        assert_eq!(r.namespace(), "default");
        assert_eq!(r.spec_json(), spec);
    }

    #[test]
    fn errors_name_the_field_path() {
        let spec = json!({"target": "main-pg", "database": "orders",
            "upstream": {"mode": "static", "user": "app", "passwordSecrett": "x"}});
        let err = Resource::from_parts(Kind::Service, meta("orders", None), spec).unwrap_err();
        assert!(err.path.starts_with("spec"), "{err}");
        assert!(err.message.contains("passwordSecrett"), "{err}");

        let err = Resource::from_parts(
            Kind::Target,
            meta("pg", Some("a")),
            json!({"address": "localhost:99999"}),
        )
        .unwrap_err();
        assert_eq!(err.path, "spec.address");

        let err = Resource::from_parts(
            Kind::Target,
            meta("pg", Some("a")),
            json!({"address": "h:1", "sslMode": "sometimes"}),
        )
        .unwrap_err();
        assert_eq!(err.path, "spec.sslMode");

        let err =
            Resource::from_parts(Kind::Namespace, meta("a", Some("b")), json!(null)).unwrap_err();
        assert_eq!(err.path, "metadata.namespace");
    }

    #[test]
    fn kinds_parse_and_plugin_origins_are_checked() {
        assert_eq!(Kind::from_document("Plugin"), Ok(Kind::Plugin));
        assert!(Kind::from_document("Widget")
            .unwrap_err()
            .contains("unknown kind"));
        let err = Resource::from_parts(
            Kind::Plugin,
            meta("okta", Some("default")),
            json!({"type": "authProvider", "source": {"path": "okta.wasm"}, "http": {"allow": ["okta.com"]}}),
        )
        .unwrap_err();
        assert_eq!(err.path, "spec.http.allow[0]");
        assert_eq!(
            crate::parse_origin("http://127.0.0.1:4318"),
            Some(("http".into(), "127.0.0.1".into(), 4318))
        );
        assert_eq!(
            crate::parse_origin("https://IdP.example.com"),
            Some(("https".into(), "idp.example.com".into(), 443))
        );
        for bad in [
            "ftp://x",
            "https://x/path",
            "https://",
            "https://u@x:1",
            "x:1",
        ] {
            assert_eq!(crate::parse_origin(bad), None, "{bad}");
        }
        assert!(Kind::from_document("Secret")
            .unwrap_err()
            .contains("secret set"));
        assert_eq!("svc".parse::<Kind>(), Ok(Kind::Service));
    }
}
