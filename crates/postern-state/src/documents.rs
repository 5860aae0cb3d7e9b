//! How stored things read back (`postern get -o json|yaml`, local or through `--server`,
//! and the admin API): one form whoever asks. A resource is its file form plus its
//! generation and, for kinds something reports on, a status; a secret is its name and
//! dates, never its value.

use postern_model::Kind;
use serde_json::{json, Value};

use crate::{IntentsStatus, SecretInfo, StateError, Store, StoredResource};

impl Store {
    /// `stored` as readers see it, with the status of an Intents (its last reconcile)
    /// or a Plugin (what the gateway made of it).
    pub fn resource_document(&self, stored: &StoredResource) -> Result<Value, StateError> {
        let name = stored.resource.qualified_name();
        let status = match stored.resource.kind() {
            Kind::Intents => Some((self.intents_status(&name)?, "not reconciled yet")),
            Kind::Plugin => Some((self.plugin_status(&name)?, "no gateway has loaded it yet")),
            _ => None,
        };
        let mut doc = stored.resource.to_document();
        doc["metadata"]["generation"] = json!(stored.generation);
        if let Some((status, pending)) = status {
            doc["status"] = status_document(status.as_ref(), pending);
        }
        Ok(doc)
    }
}

fn status_document(status: Option<&IntentsStatus>, pending: &str) -> Value {
    match status {
        Some(status) => json!({
            "state": status.state,
            "message": status.message,
            "statement": status.statement,
            "updatedAt": status.updated_at,
        }),
        None => json!({"state": "pending", "message": pending}),
    }
}

/// A secret as readers see it: name and dates; its value is never returned.
pub fn secret_document(info: &SecretInfo) -> Value {
    json!({
        "kind": "Secret",
        "metadata": {"name": info.name, "namespace": info.namespace},
        "createdAt": info.created_at,
        "updatedAt": info.updated_at,
    })
}
