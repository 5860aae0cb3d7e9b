//! Admin connections to targets: who the admin is (from the Target and its secret), and a
//! small pool of idle connections per target and database, so a burst of issues does not
//! pay a login each, and a cap on how many run at once.

use std::collections::HashMap;
use std::sync::Mutex;

use postern_model::{Kind, QualifiedName, SecretValue, Spec, TargetSpec};
use postern_state::Store;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::Client;

use crate::IssuerError;

const APPLICATION_NAME: &str = "postern-issuer";
/// Admin connections open at once across all targets.
const MAX_ADMIN_CONNECTIONS: usize = 16;
const MAX_IDLE_PER_DATABASE: usize = 4;

/// How to log in to a target as its admin.
#[derive(Debug, Clone)]
pub struct TargetAccess {
    pub target: QualifiedName,
    pub spec: TargetSpec,
    pub user: String,
    pub password: SecretValue,
}

impl TargetAccess {
    pub fn load(store: &Store, target: &QualifiedName) -> Result<TargetAccess, IssuerError> {
        let spec = match store
            .get_resource(Kind::Target, &target.namespace, &target.name)?
            .map(|s| s.resource.spec)
        {
            Some(Spec::Target(spec)) => spec,
            _ => {
                return Err(IssuerError::Config(format!(
                    "Target {target} does not exist"
                )))
            }
        };
        let admin = spec.admin.clone().ok_or_else(|| {
            IssuerError::Config(format!(
                "Target {target} has no spec.admin, which the issuer logs in as"
            ))
        })?;
        let password = store
            .secret_value(&target.namespace, &admin.password_secret)?
            .ok_or_else(|| {
                IssuerError::Config(format!(
                    "the admin password secret {}/{} of Target {target} is not set",
                    target.namespace, admin.password_secret
                ))
            })?;
        Ok(TargetAccess {
            target: target.clone(),
            spec,
            user: admin.user,
            password,
        })
    }
}

/// A checked-out admin connection; give it back with [`AdminPool::put`] when it is clean.
pub struct AdminConnection<'a> {
    pub client: Client,
    key: String,
    _permit: SemaphorePermit<'a>,
}

pub struct AdminPool {
    idle: Mutex<HashMap<String, Vec<Client>>>,
    permits: Semaphore,
}

impl Default for AdminPool {
    fn default() -> Self {
        AdminPool {
            idle: Mutex::new(HashMap::new()),
            permits: Semaphore::new(MAX_ADMIN_CONNECTIONS),
        }
    }
}

fn pool_key(access: &TargetAccess, database: &str) -> String {
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{}",
        access.target, access.spec.address, access.user, database
    )
}

impl AdminPool {
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Client>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `database`, or a new one.
    pub async fn get(
        &self,
        access: &TargetAccess,
        database: &str,
    ) -> Result<AdminConnection<'_>, IssuerError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| IssuerError::Config("the issuer is shutting down".into()))?;
        let key = pool_key(access, database);
        let reused = {
            let mut idle = self.idle();
            let list = idle.entry(key.clone()).or_default();
            std::iter::from_fn(|| list.pop()).find(|c| !c.is_closed())
        };
        let client = match reused {
            Some(client) => client,
            None => {
                postern_reconciler::connect(
                    APPLICATION_NAME,
                    &access.target.to_string(),
                    &access.spec,
                    &access.user,
                    &access.password,
                    database,
                )
                .await?
            }
        };
        Ok(AdminConnection {
            client,
            key,
            _permit: permit,
        })
    }

    /// Keeps a connection that finished its work cleanly (no transaction open).
    pub fn put(&self, connection: AdminConnection<'_>) {
        let mut idle = self.idle();
        let list = idle.entry(connection.key).or_default();
        if list.len() < MAX_IDLE_PER_DATABASE && !connection.client.is_closed() {
            list.push(connection.client);
        }
    }

    /// Closes every idle connection (after the admin password changed).
    pub fn clear(&self) {
        self.idle().clear();
    }
}
