//! The work that must run on one gateway at a time (the lease reaper, static-role
//! rotation, the reconciler, signing-key rotation) runs where the store's leader lock is
//! held: always on SQLite, on one gateway of a fleet sharing PostgreSQL. Leadership is
//! checked every second; the work starts when it is won and stops when it is lost.

use std::sync::Arc;
use std::time::Duration;

use postern_api::TokenAuthority;
use postern_issuer::Issuer;
use postern_state::Store;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::background;
use crate::metrics::ReconcileRuns;

/// How often leadership is taken, or checked to be still held.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

/// What the leader runs, and what it needs.
pub struct LeaderWork {
    pub store: Arc<Store>,
    pub reconcile_interval: Option<Duration>,
    pub reconcile_wake: Arc<Notify>,
    pub reconcile_runs: Arc<ReconcileRuns>,
    pub issuer: Arc<Issuer>,
    pub rotation_wake: Arc<Notify>,
    pub tokens: Arc<TokenAuthority>,
}

impl LeaderWork {
    fn start(&self, running: &mut JoinSet<()>) {
        running.spawn(background::reconcile_when_due(
            self.store.clone(),
            self.reconcile_interval,
            self.reconcile_wake.clone(),
            self.reconcile_runs.clone(),
        ));
        running.spawn(background::issuer_work(
            self.issuer.clone(),
            self.rotation_wake.clone(),
        ));
        running.spawn(background::maintain_signing_keys(self.tokens.clone()));
    }
}

/// Takes the lead when it is free and runs `work` while it is held, until aborted.
pub async fn lead(work: LeaderWork) {
    let mut running = JoinSet::new();
    let mut leading = false;
    let mut ticker = tokio::time::interval(LEADERSHIP_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let store = work.store.clone();
        let now_leading = tokio::task::spawn_blocking(move || store.try_lead())
            .await
            .unwrap_or(false);
        match (leading, now_leading) {
            (false, true) => {
                if work.store.is_shared() {
                    info!(
                        "this gateway leads: it runs the reaper, the reconciler and the rotations"
                    );
                }
                work.start(&mut running);
            }
            (true, false) => {
                warn!(
                    "this gateway lost the lead (its state connection failed); another takes over"
                );
                running.abort_all();
            }
            _ => {}
        }
        leading = now_leading;
    }
}
