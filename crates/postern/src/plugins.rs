//! Keeps the gateway's loaded policy-hook plugins equal to the Plugin resources in the
//! store: loaded before the gateway listens, then looked at every second. A changed
//! Plugin is loaded beside the old version and swapped in only once it started (its
//! `init` accepted the config); one that fails to load is logged and the old version, if
//! any, keeps serving. A deleted Plugin is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_model::{Kind, Spec};
use postern_plugins::{PluginSpec, PolicyHook, PolicyHooks, Runtime, RuntimeSettings};
use postern_state::Store;
use tracing::{error, info};

/// How often the store is asked whether a Plugin changed.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub struct PluginLoader {
    store: Arc<Store>,
    hooks: Arc<PolicyHooks>,
    settings: RuntimeSettings,
    /// Made at the first Plugin: a gateway without plugins runs no engine.
    runtime: Option<Arc<Runtime>>,
    /// `(namespace, name)` → the generation last tried.
    tried: HashMap<(String, String), i64>,
}

impl PluginLoader {
    pub fn new(store: Arc<Store>, hooks: Arc<PolicyHooks>, settings: RuntimeSettings) -> Self {
        PluginLoader {
            store,
            hooks,
            settings,
            runtime: None,
            tried: HashMap::new(),
        }
    }

    /// Brings the loaded plugins up to date with the store.
    pub async fn sync(&mut self) -> anyhow::Result<()> {
        let store = self.store.clone();
        let plugins =
            tokio::task::spawn_blocking(move || store.list_resources(Some(Kind::Plugin), None))
                .await
                .context("listing plugins")??;
        let mut present = Vec::new();
        for stored in plugins {
            let Spec::Plugin(spec) = &stored.resource.spec else {
                continue;
            };
            let key = (
                stored.resource.namespace().to_owned(),
                stored.resource.name().to_owned(),
            );
            present.push(key.clone());
            if self.tried.get(&key) == Some(&stored.generation) {
                continue;
            }
            self.tried.insert(key.clone(), stored.generation);
            let (namespace, name) = &key;
            match self.load(name, spec).await {
                Ok(hook) => {
                    info!(plugin = %name, %namespace, generation = stored.generation, "plugin loaded");
                    self.hooks.install(namespace, hook);
                }
                Err(e) => {
                    error!(plugin = %name, %namespace, error = format!("{e:#}"), "plugin not loaded; an earlier version, if any, keeps serving")
                }
            }
        }
        for (namespace, name) in self.hooks.names() {
            if !present.contains(&(namespace.clone(), name.clone())) {
                self.hooks.remove(&namespace, &name);
                self.tried.remove(&(namespace.clone(), name.clone()));
                info!(plugin = %name, %namespace, "plugin unloaded");
            }
        }
        Ok(())
    }

    async fn load(
        &mut self,
        name: &str,
        spec: &postern_model::PluginSpec,
    ) -> anyhow::Result<PolicyHook> {
        let sha = spec.source.sha256.clone().unwrap_or_default();
        let store = self.store.clone();
        let bytes = tokio::task::spawn_blocking(move || store.plugin_component(&sha))
            .await
            .context("reading the component")??
            .context("its component is not in the store")?;
        let runtime = match &self.runtime {
            Some(runtime) => runtime.clone(),
            None => {
                let runtime = Runtime::new(self.settings.clone())?;
                self.runtime = Some(runtime.clone());
                runtime
            }
        };
        Ok(PolicyHook::load(
            &runtime,
            PluginSpec::from_resource(name, spec),
            bytes.into(),
        )
        .await?)
    }

    /// Syncs every [`WATCH_INTERVAL`] until aborted.
    pub async fn watch(mut self) {
        let mut every = tokio::time::interval(WATCH_INTERVAL);
        loop {
            every.tick().await;
            if let Err(e) = self.sync().await {
                error!(error = format!("{e:#}"), "cannot read Plugin resources");
            }
        }
    }
}
