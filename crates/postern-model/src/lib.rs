//! Postern's resource model: the kinds users apply, their validation, parsing of resource
//! files, the pure apply planner, and the traits through which the proxy reaches state.
//! No I/O and no async here.

mod audit;
mod credentials;
mod directory;
mod document;
mod error;
mod intents;
mod name;
mod plan;
mod plugin;
mod policy;
mod rbac;
mod resource;
mod time;

pub use audit::{
    log_line, AccessLog, AuditEvent, AuditRecord, AuditSink, Closes, EventDetails, EventType,
    IdentityInfo, SessionInfo, SessionTotals, UpstreamInfo,
};
/// Short texts kept inline (event ids, command tags): no allocation for most.
pub use compact_str::CompactString;
pub use credentials::{
    format_duration, parse_duration, CredentialRoleSpec, PasswordPolicy, Piece, StatementList,
    StaticRoleSpec, Template, DEFAULT_USERNAME_TEMPLATE, STATEMENT_PLACEHOLDERS,
    USERNAME_PLACEHOLDERS,
};
pub use directory::{
    AuthProviders, BoxFuture, ConnectionLimits, Directory, DirectoryError, IdentityCredentials,
    LeaseRefused, ProviderCredential, ProviderVerdict, RouteLookup, SecretValue,
    SessionCredentials, SessionLease, TokenPassword, TokenRejected, TokenVerifier, UpstreamRoute,
};
pub use document::{parse_documents, DocumentError, Format, LoadedResource};
pub use error::ErrorKind;
pub use intents::{
    managed_role_name, AccessIntent, AccessScope, IntentsSpec, ObjectPattern, Privilege,
    MANAGED_ROLE_PREFIX,
};
pub use name::{validate_name, NameError, QualifiedName, DEFAULT_NAMESPACE};
pub use plan::{check_rules, plan_apply, Change, PlanError};
pub use plugin::{
    is_sha256_hex, parse_origin, PluginFailure, PluginHttp, PluginLimits, PluginSource, PluginSpec,
    PluginType, StatementFilter, MAX_PLUGIN_CALL_TIMEOUT_MS, MAX_PLUGIN_MEMORY_MIB,
    PLUGIN_CAPABILITIES,
};
pub use policy::{
    AuthorizationRule, AuthorizationSpec, ClientFacts, ConnectDecision, Denial,
    DynamicConfigUpstream, HookStatement, PolicyEngine, PolicyPlugins, RouteRule, RuleEffect,
    RuleError, SessionFacts, SessionHook, SessionPolicy, StatementCacheStats, UpstreamConfig,
};
pub use rbac::{Access, Permission, Role, RoleBindingSpec, Subject};
pub use resource::{
    AdminCredentials, ClientCertificateSpec, DynamicUpstream, IdentitySpec, IdentityType,
    IntentsUpstream, Kind, Metadata, NamespaceSpec, PoolSpec, Resource, ServiceAuth, ServiceSpec,
    Spec, SslMode, StaticUpstream, TargetSpec, TimeoutSpec, UpstreamSpec, ValidationError,
};
pub use time::{civil_from_unix, parse_rfc3339_millis, rfc3339_millis, unix_millis};
