//! What a login reads, kept per gateway when the state is shared in PostgreSQL, where each
//! read is a round trip: the resources (its service, identity, role bindings, target,
//! Intents) as of one resource epoch, read whole, and the API-key verifiers and secrets it
//! looked up as of one credential epoch (triggers move it on every change to `api_keys`
//! and `secrets`). Both epochs are the ones the proxy reads every 100 ms (or read here when
//! that is older than [`EPOCH_FRESH`]); after each of this gateway's own writes they are
//! read again before the next cached read.
//! So another gateway's change, a revoked key included, shows here within the epoch's
//! polling, this gateway's own at once. Role passwords (managed and static roles) are read
//! fresh. On SQLite every read goes to the database (reads are local and cheap there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_model::{Kind, SecretValue};

use crate::db::{args, Dialect};
use crate::store::{lock, StoredResource};
use crate::{StateError, Store};

/// How long an epoch read by the proxy's poller is taken as current.
const EPOCH_FRESH: Duration = Duration::from_millis(250);

/// The resources as of `epoch`, by kind, namespace and name.
struct Snapshot {
    epoch: i64,
    resources: HashMap<(Kind, String, String), StoredResource>,
}

/// The two counters a cached read is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epochs {
    pub resources: i64,
    pub credentials: i64,
}

/// Verifiers and secrets looked up as of the credential epoch `epoch`, by namespace and
/// name (of the identity, of the secret).
#[derive(Default)]
struct Credentials {
    epoch: i64,
    verifiers: HashMap<(String, String), Vec<String>>,
    secrets: HashMap<(String, String), Option<SecretValue>>,
}

/// The caches and the newest epochs seen, per store.
#[derive(Default)]
pub(crate) struct Snapshots {
    current: Mutex<Option<Arc<Snapshot>>>,
    credentials: Mutex<Credentials>,
    epoch_seen: Mutex<EpochSeen>,
}

/// The epochs last read and when; `writes` counts this store's writes, so epochs read
/// before one of them finished are not taken for current after it.
#[derive(Default)]
struct EpochSeen {
    epochs: Option<(Epochs, Instant)>,
    writes: u64,
}

impl Snapshots {
    /// This store's writes so far, to give [`Snapshots::note_epochs`] once the epochs are
    /// read.
    fn writes(&self) -> u64 {
        lock(&self.epoch_seen).writes
    }

    /// Notes epochs read after `writes` of this store's writes, unless another write
    /// finished meanwhile (the epochs might predate it).
    fn note_epochs(&self, epochs: Epochs, writes: u64) {
        let mut seen = lock(&self.epoch_seen);
        if seen.writes == writes {
            seen.epochs = Some((epochs, Instant::now()));
        }
    }

    /// Forgets the epochs seen (after a write of this store's), so the next cached read
    /// checks them afresh: when the write moved one, what was kept for it is read again.
    pub(crate) fn forget_epochs(&self) {
        let mut seen = lock(&self.epoch_seen);
        seen.epochs = None;
        seen.writes += 1;
    }
}

const EPOCH_SQL: &str = "SELECT epoch FROM resource_epoch";
/// Both counters (PostgreSQL only: SQLite has no credential epoch).
const EPOCHS_SQL: &str = "SELECT r.epoch, c.epoch FROM resource_epoch AS r, credential_epoch AS c";

impl Store {
    /// Reads the epochs (the credential one is 0 on SQLite) and notes them.
    pub(crate) fn read_epochs(&self) -> Result<Epochs, StateError> {
        let writes = self.snapshots.writes();
        let epochs = self.read(|db| match db.dialect() {
            Dialect::Sqlite => Ok(Epochs {
                resources: db.query_value(EPOCH_SQL, args![])?,
                credentials: 0,
            }),
            Dialect::Postgres => db.query_row(EPOCHS_SQL, args![], |row| {
                Ok(Epochs {
                    resources: row.get(0)?,
                    credentials: row.get(1)?,
                })
            }),
        })?;
        self.snapshots.note_epochs(epochs, writes);
        Ok(epochs)
    }

    /// The epochs, as seen within [`EPOCH_FRESH`] or read now.
    fn current_epochs(&self) -> Result<Epochs, StateError> {
        if let Some((epochs, at)) = lock(&self.snapshots.epoch_seen).epochs {
            if at.elapsed() < EPOCH_FRESH {
                return Ok(epochs);
            }
        }
        self.read_epochs()
    }

    /// The snapshot for the current epoch (read whole when it moved); `None` on SQLite.
    fn snapshot(&self) -> Result<Option<Arc<Snapshot>>, StateError> {
        if !self.is_shared() {
            return Ok(None);
        }
        let epoch = self.current_epochs()?.resources;
        // A snapshot newer than the epoch seen (read after a change the poller has not
        // caught up with) serves too.
        if let Some(snapshot) = lock(&self.snapshots.current)
            .as_ref()
            .filter(|s| s.epoch >= epoch)
        {
            return Ok(Some(snapshot.clone()));
        }
        // The epoch first: a change landing between the two reads leaves a snapshot newer
        // than its epoch says, which costs one more read, never a stale answer.
        let (epoch, all) = self.read(|db| {
            let epoch: i64 = db.query_value(EPOCH_SQL, args![])?;
            Ok((epoch, Self::list_in(db, None, None)?))
        })?;
        let snapshot = Arc::new(Snapshot {
            epoch,
            resources: all
                .into_iter()
                .map(|stored| {
                    let key = (
                        stored.resource.kind(),
                        stored.resource.namespace().to_owned(),
                        stored.resource.name().to_owned(),
                    );
                    (key, stored)
                })
                .collect(),
        });
        *lock(&self.snapshots.current) = Some(snapshot.clone());
        Ok(Some(snapshot))
    }

    /// A cached credential (`get`s from the table `pick` chooses) as of the current
    /// credential epoch, looked up with `read` on a miss; read fresh on SQLite.
    fn cached_credential<T: Clone>(
        &self,
        key: (String, String),
        pick: fn(&mut Credentials) -> &mut HashMap<(String, String), T>,
        read: impl FnOnce() -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        if !self.is_shared() {
            return read();
        }
        let epoch = self.current_epochs()?.credentials;
        {
            let mut cache = lock(&self.snapshots.credentials);
            if cache.epoch < epoch {
                *cache = Credentials {
                    epoch,
                    ..Credentials::default()
                };
            }
            if let Some(found) = pick(&mut cache).get(&key) {
                return Ok(found.clone());
            }
        }
        // Read after the epoch: a change in between is newer than the epoch it is kept
        // under, which the next epoch read clears.
        let found = read()?;
        // Kept only under the epoch it was read after: a cache started meanwhile for a
        // newer epoch must not take a value that may predate that epoch's change.
        let mut cache = lock(&self.snapshots.credentials);
        if cache.epoch == epoch {
            pick(&mut cache).insert(key, found.clone());
        }
        Ok(found)
    }

    /// The identity's API-key verifiers, for a login.
    pub(crate) fn login_verifiers(
        &self,
        identity: &postern_model::QualifiedName,
    ) -> Result<Vec<String>, StateError> {
        self.cached_credential(
            (identity.namespace.clone(), identity.name.clone()),
            |c| &mut c.verifiers,
            || self.api_key_verifiers(identity),
        )
    }

    /// A secret's value, for a login's upstream password.
    pub(crate) fn login_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretValue>, StateError> {
        self.cached_credential(
            (namespace.to_owned(), name.to_owned()),
            |c| &mut c.secrets,
            || self.secret_value(namespace, name),
        )
    }

    /// One resource, for the login path ([`Store::get_resource`] served from the
    /// snapshot when the state is shared).
    pub(crate) fn resource(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredResource>, StateError> {
        match self.snapshot()? {
            Some(snapshot) => Ok(snapshot
                .resources
                .get(&(kind, namespace.to_owned(), name.to_owned()))
                .cloned()),
            None => self.get_resource(kind, namespace, name),
        }
    }

    /// Resources of `kind` (in `namespace`, or all), ordered by namespace and name, for
    /// the login path.
    pub(crate) fn resources(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredResource>, StateError> {
        match self.snapshot()? {
            Some(snapshot) => {
                let mut found: Vec<StoredResource> = snapshot
                    .resources
                    .iter()
                    .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
                    .map(|(_, stored)| stored.clone())
                    .collect();
                found.sort_by(|a, b| {
                    (a.resource.namespace(), a.resource.name())
                        .cmp(&(b.resource.namespace(), b.resource.name()))
                });
                Ok(found)
            }
            None => self.list_resources(Some(kind), namespace),
        }
    }
}
