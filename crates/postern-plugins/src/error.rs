//! What can go wrong loading or calling a plugin.

use postern_model::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine could not be set up (the machine refused its memory reservations, say).
    #[error("cannot start the plugin engine: {0}")]
    Engine(String),
    /// The bytes are not a WebAssembly component, or cranelift could not compile it.
    #[error("plugin {plugin}: not a loadable WebAssembly component: {reason}")]
    Compile { plugin: String, reason: String },
    /// The component imports an interface its world does not offer or its resource does
    /// not grant.
    #[error("plugin {plugin}: imports {import}, which {why}")]
    UngrantedImport {
        plugin: String,
        import: String,
        why: &'static str,
    },
    /// The component was built against a version of the interface this gateway cannot
    /// run.
    #[error("plugin {plugin}: built against {built}; this gateway loads {supported}")]
    Version {
        plugin: String,
        built: String,
        supported: String,
    },
    /// The component does not export what its type needs (a log sink loaded as a policy
    /// hook, say).
    #[error("plugin {plugin}: not a {kind} plugin: {reason}")]
    WrongKind {
        plugin: String,
        kind: &'static str,
        reason: String,
    },
    /// The plugin's `init` refused its config.
    #[error("plugin {plugin}: init refused its config: {reason}")]
    Init { plugin: String, reason: String },
    /// A limit in the resource is out of range.
    #[error("plugin {plugin}: {what}")]
    Limits { plugin: String, what: String },
    /// The guest trapped (a panic, an out-of-bounds access, its memory limit).
    #[error("plugin {plugin} trapped")]
    Trap { plugin: String },
    /// The guest ran past its time per call.
    #[error("plugin {plugin} timed out")]
    Timeout { plugin: String },
    /// After too many failures in a row the plugin is not called until its backoff ends.
    #[error("plugin {plugin} is unhealthy")]
    Unhealthy { plugin: String },
}

impl PluginError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PluginError::Engine(_) => ErrorKind::Internal,
            PluginError::Compile { .. }
            | PluginError::UngrantedImport { .. }
            | PluginError::Version { .. }
            | PluginError::WrongKind { .. }
            | PluginError::Init { .. }
            | PluginError::Limits { .. } => ErrorKind::User,
            PluginError::Trap { .. }
            | PluginError::Timeout { .. }
            | PluginError::Unhealthy { .. } => ErrorKind::Internal,
        }
    }
}
