//! Loaded plugins of one kind by namespace and name. Users look a plugin up at each use,
//! so installing a new version under a name swaps it in for everyone at their next call
//! (never during one).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Looked up at every statement of a session with a policy hook: a fast hasher.
pub(crate) type Loaded<T> = HashMap<(String, String), Arc<T>, foldhash::fast::RandomState>;

pub struct Registry<T> {
    loaded: Arc<RwLock<Loaded<T>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            loaded: Arc::default(),
        }
    }
}

pub(crate) fn read<T>(loaded: &RwLock<Loaded<T>>) -> RwLockReadGuard<'_, Loaded<T>> {
    // Inserts and removals cannot leave the map torn.
    loaded.read().unwrap_or_else(|p| p.into_inner())
}

impl<T> Registry<T> {
    pub fn new() -> Registry<T> {
        Registry::default()
    }

    pub fn install(&self, namespace: &str, name: &str, plugin: T) {
        self.write()
            .insert((namespace.to_owned(), name.to_owned()), Arc::new(plugin));
    }

    pub fn remove(&self, namespace: &str, name: &str) -> bool {
        self.write()
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        read(&self.loaded)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// `(namespace, name)` of every loaded plugin, sorted.
    pub fn names(&self) -> Vec<(String, String)> {
        let mut names: Vec<_> = read(&self.loaded).keys().cloned().collect();
        names.sort();
        names
    }

    /// The map itself, for users that look their plugin up at each call.
    pub(crate) fn shared(&self) -> Arc<RwLock<Loaded<T>>> {
        self.loaded.clone()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Loaded<T>> {
        self.loaded.write().unwrap_or_else(|p| p.into_inner())
    }
}
