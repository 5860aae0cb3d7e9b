//! What a component is before any resource names it (`postern plugin inspect`): the kind
//! of plugin its exports make it, the interface version it was built against, what each
//! import would need granted, and whether this gateway could load it.

use std::sync::Arc;

use postern_model::PluginType;

use crate::auth::AUTH_OFFERS;
use crate::error::PluginError;
use crate::host::{
    classify_import, compatible_version, package_versions, supported_versions, Capability,
    ImportNeed, PACKAGE,
};
use crate::policy::POLICY_OFFERS;
use crate::runtime::Runtime;
use crate::sink::SINK_OFFERS;

/// One import of a component and what it would take.
#[derive(Debug, Clone)]
pub struct Import {
    pub name: String,
    /// What it needs, or why no plugin of its kind may have it.
    pub need: Result<ImportNeed, &'static str>,
}

#[derive(Debug, Clone)]
pub struct Inspection {
    pub size: usize,
    /// The kind its exports make it, when they make it one.
    pub kind: Option<PluginType>,
    /// Versions of `postern:plugin` its imports and exports name.
    pub built_against: Vec<String>,
    pub imports: Vec<Import>,
    pub exports: Vec<String>,
    /// The largest initial linear memory of its modules, in bytes.
    pub initial_memory_bytes: Option<u64>,
    /// The capabilities its resource must grant for it to load here, or why it cannot.
    pub loadable: Result<Vec<Capability>, String>,
}

/// The kind of plugin an export makes a component (`postern:plugin/policy-hook@…`).
fn kind_of_export(name: &str) -> Option<PluginType> {
    let interface = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    match interface.split_once('@').map_or(interface, |(i, _)| i) {
        "policy-hook" => Some(PluginType::Policy),
        "authn" => Some(PluginType::AuthProvider),
        "sink" => Some(PluginType::LogSink),
        _ => None,
    }
}

/// What a plugin of `kind` may be granted.
pub(crate) fn offers(kind: PluginType) -> &'static [Capability] {
    match kind {
        PluginType::Policy => &POLICY_OFFERS,
        PluginType::AuthProvider => &AUTH_OFFERS,
        PluginType::LogSink => &SINK_OFFERS,
    }
}

const WASM_PAGE_BYTES: u64 = 64 * 1024;

impl Runtime {
    /// Compiles `bytes` (called `name` in errors) and reports what they are; an error
    /// only when they are no component at all.
    pub async fn inspect(&self, name: &str, bytes: Arc<[u8]>) -> Result<Inspection, PluginError> {
        let size = bytes.len();
        let component = self.compile(name, bytes).await?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let kind = exports.iter().find_map(|name| kind_of_export(name));
        let offered = kind.map_or(&[][..], offers);
        let imports: Vec<Import> = ty
            .imports(&self.engine)
            .map(|(name, _)| Import {
                name: name.to_owned(),
                need: classify_import(name, offered),
            })
            .collect();
        let built_against = package_versions(&self.engine, &component);
        let loadable = match (kind, built_against.iter().find(|v| !compatible_version(v))) {
            (_, Some(built)) => Err(format!(
                "built against {PACKAGE}@{built}; this gateway loads {}",
                supported_versions()
            )),
            (None, None) => Err(format!(
                "exports none of {PACKAGE}'s policy-hook, authn or sink: not a plugin"
            )),
            (Some(kind), None) => match imports.iter().find(|i| i.need.is_err()) {
                Some(Import {
                    name,
                    need: Err(why),
                }) => Err(format!("imports {name}, which {why}")),
                _ => self
                    .linker(kind)
                    .instantiate_pre(&component)
                    .map(|_| {
                        imports
                            .iter()
                            .filter_map(|i| match i.need {
                                Ok(ImportNeed::Capability(c)) => Some(c),
                                _ => None,
                            })
                            .collect()
                    })
                    .map_err(|e| format!("{e:#}")),
            },
        };
        Ok(Inspection {
            size,
            kind,
            built_against,
            imports,
            exports,
            initial_memory_bytes: component
                .resources_required()
                .and_then(|r| r.max_initial_memory_size)
                .map(|pages| pages * WASM_PAGE_BYTES),
            loadable,
        })
    }
}
