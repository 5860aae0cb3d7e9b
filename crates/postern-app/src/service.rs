//! `serve` under a service manager (systemd's `Type=notify`): readiness, status, reload and
//! stop notifications and the watchdog, all no-ops where `NOTIFY_SOCKET` is unset.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

use crate::metrics::ReconcileRuns;

/// How often `STATUS=` is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);
/// How long the watchdog's health check may take before the ping is skipped.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager");
    }
}

/// Listeners, state, master key and plugins are up.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins; [`ready`] ends it. systemd 253 and later need the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins: sessions drain from here.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining sessions"),
    ]);
}

/// What the gateway is doing, in one line for `systemctl status`.
pub struct Status {
    pub gateway: Arc<postern_proxy::Gateway>,
    pub store: Arc<postern_state::Store>,
    pub reconcile_runs: Arc<ReconcileRuns>,
}

impl Status {
    /// The line; the lease count is read on a blocking thread within
    /// [`HEALTH_CHECK_TIMEOUT`] (a shared state is a network away), else left out.
    pub async fn line(&self) -> String {
        let sessions = self.gateway.stats.sessions_active.load(Ordering::Relaxed);
        let store = self.store.clone();
        let counting = tokio::task::spawn_blocking(move || store.lease_counts());
        let leases = match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, counting).await {
            Ok(Ok(Ok(counts))) => counts
                .into_iter()
                .find(|(state, _)| state == "active")
                .map_or(0, |(_, n)| n)
                .to_string(),
            _ => "?".to_owned(),
        };
        let drift = match self.reconcile_runs.last() {
            None => "not reconciled yet".to_owned(),
            Some(run) => format!(
                "last reconcile: {} corrections, {} problems",
                run.corrections, run.problems
            ),
        };
        format!("{sessions} sessions, {leases} active leases, {drift}")
    }

    /// The health check behind each watchdog ping: the runtime is alive (or this would not
    /// run) and, for a state of its own (SQLite), the state database answers in time. A
    /// shared state (PostgreSQL) being away is not a reason to restart: open sessions go
    /// on, logins get 57P03 and `/readyz` says so until it is back.
    async fn healthy(&self) -> bool {
        if self.store.is_shared() {
            return true;
        }
        let store = self.store.clone();
        let check = tokio::task::spawn_blocking(move || store.lease_counts().is_ok());
        matches!(
            tokio::time::timeout(HEALTH_CHECK_TIMEOUT, check).await,
            Ok(Ok(true))
        )
    }

    /// Refreshes `STATUS=` every few seconds and, when the service manager set a watchdog,
    /// pings it at a third of its interval while the health check passes (a failed check
    /// skips pings, so systemd restarts a gateway that stays unhealthy).
    pub async fn report(self) {
        let mut status = tokio::time::interval(STATUS_INTERVAL);
        let mut watchdog = sd_notify::watchdog_enabled()
            .map(|interval| tokio::time::interval((interval / 3).max(Duration::from_millis(10))));
        loop {
            let watchdog_due = async {
                match &mut watchdog {
                    Some(watchdog) => drop(watchdog.tick().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = status.tick() => notify(&[NotifyState::Status(&self.line().await)]),
                () = watchdog_due => {
                    if self.healthy().await {
                        notify(&[NotifyState::Watchdog]);
                    } else {
                        warn!("health check failed: the state database does not answer; watchdog not pinged");
                    }
                }
            }
        }
    }
}
