//! What `serve` redoes when resources change, whoever changed them (a local `apply`, the
//! admin API, `--server`): a reconcile for grant-shaping kinds, a static-role check for
//! StaticRoles. The store counts changes per kind; this reads the counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use postern_model::Kind;
use postern_state::Store;
use tokio::sync::Notify;
use tracing::warn;

/// How often the per-kind change counts are read (one small query).
const CHANGE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Whom a change wakes.
pub struct Wakes {
    /// The reconciler (Intents, Identities, Services, Targets changed), unless
    /// `reconcile_on_change` is off.
    pub reconcile: Option<Arc<Notify>>,
    /// The static-role rotation (a StaticRole changed: a new one needs its password).
    pub rotation: Arc<Notify>,
}

/// Runs until aborted: wakes the work a change calls for, once per check that sees it.
pub async fn watch(store: Arc<Store>, wakes: Wakes) {
    let mut seen: Option<BTreeMap<Kind, i64>> = None;
    let mut every = tokio::time::interval(CHANGE_CHECK_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let reader = store.clone();
        let read = tokio::task::spawn_blocking(move || reader.kind_epochs()).await;
        let now = match read
            .map_err(|e| e.to_string())
            .and_then(|epochs| epochs.map_err(|e| e.to_string()))
        {
            Ok(now) => now,
            Err(error) => {
                warn!(%error, "cannot read which resources changed");
                continue;
            }
        };
        let Some(before) = seen.replace(now.clone()) else {
            continue;
        };
        let changed: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|kind| before.get(kind) != now.get(kind))
            .collect();
        if let Some(reconcile) = &wakes.reconcile {
            if changed
                .iter()
                .any(|kind| crate::background::affects_grants(*kind))
            {
                reconcile.notify_one();
            }
        }
        if changed.contains(&Kind::StaticRole) {
            wakes.rotation.notify_one();
        }
    }
}
