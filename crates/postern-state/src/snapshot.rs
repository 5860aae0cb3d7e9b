//! What a login reads of the resources (its service, identity, role bindings, target,
//! Intents), kept per gateway when the state is shared in PostgreSQL, where each read is a
//! round trip: the resources as of one resource epoch, read whole, used while the epoch
//! stands. The epoch is the one the proxy reads every 100 ms (or read here when that is
//! older than [`EPOCH_FRESH`]); this gateway's own writes drop the snapshot at once, so
//! other gateways' changes show within the epoch's polling and its own at once. API keys,
//! secrets and passwords are not resources and are always read fresh: a revoked key or a
//! changed password is never served from here. On SQLite every read goes to the database
//! (reads are local and cheap there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postern_model::Kind;

use crate::db::args;
use crate::store::StoredResource;
use crate::{StateError, Store};

/// How long an epoch read by the proxy's poller is taken as current.
const EPOCH_FRESH: Duration = Duration::from_millis(250);

/// The resources as of `epoch`, by kind, namespace and name.
struct Snapshot {
    epoch: i64,
    resources: HashMap<(Kind, String, String), StoredResource>,
}

/// The snapshot and the newest epoch seen, per store.
#[derive(Default)]
pub(crate) struct Snapshots {
    current: Mutex<Option<Arc<Snapshot>>>,
    epoch_seen: Mutex<Option<(i64, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Snapshots {
    /// Notes the resource epoch just read from the state.
    pub(crate) fn note_epoch(&self, epoch: i64) {
        *lock(&self.epoch_seen) = Some((epoch, Instant::now()));
    }

    /// Forgets everything (after a write of this store's).
    pub(crate) fn invalidate(&self) {
        *lock(&self.current) = None;
        *lock(&self.epoch_seen) = None;
    }
}

const EPOCH_SQL: &str = "SELECT epoch FROM resource_epoch";

impl Store {
    /// The resource epoch, as seen within [`EPOCH_FRESH`] or read now.
    fn current_epoch(&self) -> Result<i64, StateError> {
        if let Some((epoch, at)) = *lock(&self.snapshots.epoch_seen) {
            if at.elapsed() < EPOCH_FRESH {
                return Ok(epoch);
            }
        }
        let epoch = self.read(|db| db.query_value(EPOCH_SQL, args![]))?;
        self.snapshots.note_epoch(epoch);
        Ok(epoch)
    }

    /// The snapshot for the current epoch (read whole when it moved); `None` on SQLite.
    fn snapshot(&self) -> Result<Option<Arc<Snapshot>>, StateError> {
        if !self.is_shared() {
            return Ok(None);
        }
        let epoch = self.current_epoch()?;
        if let Some(snapshot) = lock(&self.snapshots.current)
            .as_ref()
            .filter(|s| s.epoch == epoch)
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
        self.snapshots.note_epoch(epoch);
        *lock(&self.snapshots.current) = Some(snapshot.clone());
        Ok(Some(snapshot))
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
