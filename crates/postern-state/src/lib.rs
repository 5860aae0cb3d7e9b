//! Postern's state: one database holding resources, sealed secrets and API-key verifiers,
//! on SQLite (WAL; one host) or PostgreSQL (shared by many gateways). Writes go through
//! one connection inside a transaction each; reads use a small pool of their own
//! connections, so they never wait for a writer.

mod audit;
mod backup;
mod copy;
mod db;
mod documents;
mod error;
mod explain;
mod leases;
mod managed;
mod master_key;
mod migrations;
mod pg;
mod route;
mod snapshot;
mod store;
#[cfg(test)]
mod suite;
mod tenancy;
#[cfg(test)]
mod testing;

pub use audit::{AuditKeys, AuditQuery, StateAuditSink, StoredEvent};
pub use backup::backup;
pub use copy::CopyReport;
pub use documents::secret_document;
pub use error::StateError;
pub use explain::{ConnectVerdict, Explanation, RouteSummary, StatementVerdict};
pub use leases::{Lease, LeaseState, NewLease, StaticRolePassword};
pub use managed::{IntentsStatus, ManagedRole, PluginLogLine, PLUGIN_LOG_LINES_KEPT};
pub use master_key::{KeySettings, MasterKey};
pub use pg::PostgresSettings;
pub use store::{ApiKeyInfo, CreatedApiKey, SecretInfo, Store, StoredResource, STATE_DB_FILE};
pub use tenancy::{
    unguarded, AccessView, ClientInfo, CreatedClient, Precondition, SigningKey, TokenRecord,
};
