//! The WASM plugin runtime: the only crate that runs wasmtime's `bindgen!` on `wit/`.
//! A [`Runtime`] compiles components (cached on disk by content) and checks what they
//! import against their world and their resource's grants; a [`PolicyHook`] keeps warm
//! instances, stops calls at their time limit, replaces instances that trap and fails
//! closed.

mod auth;
mod bindings;
mod error;
mod hooks;
mod host;
mod inspect;
mod policy;
mod registry;
mod runtime;
mod sink;

pub use auth::{AuthProviderChain, AuthProviderPlugin, ProvidersOf};
pub use bindings::auth_provider::exports::postern::plugin::authn::{
    Credential as AuthCredential, Outcome as AuthOutcome,
};
pub use bindings::types;
pub use error::PluginError;
pub use hooks::PolicyHooks;
pub use host::{
    supported_versions, CannedResponse, Capability, HttpGrant, ImportNeed, LogLines, SecretReader,
    WallClock, PACKAGE, PACKAGE_VERSION,
};
pub use inspect::{Import, Inspection};
pub use policy::{FailureMode, PluginSpec, PluginStats, PolicyHook, UNHEALTHY_AFTER};
pub use registry::Registry;
pub use runtime::{Runtime, RuntimeSettings, EPOCH_TICK, MAX_MEMORY_BYTES};
pub use sink::{LogSinkPlugin, LogSinks, PluginSink, SinkFailure};
