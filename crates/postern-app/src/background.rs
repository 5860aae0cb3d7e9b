//! The work `serve` runs beside the proxy: the grant reconciler on its timer and on
//! changes, the issuer's lease reaper and static-role rotation, and the token signing keys'
//! rotation.

use std::sync::Arc;
use std::time::Duration;

use postern_api::TokenAuthority;
use postern_issuer::Issuer;
use postern_model::Kind;
use postern_reconciler::{reconcile, Options};
use postern_state::Store;
use tracing::{info, warn};

/// How often the reaper looks for expired leases and due retries.
const REAP_INTERVAL: Duration = Duration::from_secs(1);
/// How often static roles are checked for a due rotation.
const ROTATION_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often the token signing keys are looked at.
const KEY_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// Kinds whose changes can change what the reconciler should do.
pub fn affects_grants(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Intents | Kind::Identity | Kind::Service | Kind::Target
    )
}

/// Runs the reconciler every `interval` (if any) and when woken by `changed`, for as long
/// as the server runs.
pub async fn reconcile_when_due(
    store: std::sync::Arc<Store>,
    interval: Option<Duration>,
    changed: std::sync::Arc<tokio::sync::Notify>,
    runs: std::sync::Arc<crate::metrics::ReconcileRuns>,
) {
    let mut ticker = interval.map(tokio::time::interval);
    if let Some(ticker) = &mut ticker {
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let tick = async {
            match &mut ticker {
                Some(ticker) => drop(ticker.tick().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tick => {}
            () = changed.notified() => {}
        }
        match reconcile(&store, Options::default()).await {
            Ok(report) => {
                runs.record(crate::metrics::ReconcileSummary {
                    corrections: report.statements.len(),
                    problems: report.problems.len(),
                });
                if !report.statements.is_empty() || !report.problems.is_empty() {
                    info!(
                        statements = report.statements.len(),
                        problems = ?report.problems,
                        "reconcile run"
                    );
                }
            }
            Err(error) => {
                runs.record(crate::metrics::ReconcileSummary {
                    corrections: 0,
                    problems: 1,
                });
                warn!(error = %error, "reconcile run failed");
            }
        }
    }
}

/// The issuer's work inside `serve`: the reaper, and static roles rotated when due (and
/// checked at once when a StaticRole changed).
pub async fn issuer_work(issuer: Arc<Issuer>, changed: Arc<tokio::sync::Notify>) {
    let reaper = tokio::spawn(issuer.clone().run_reaper(REAP_INTERVAL));
    let mut ticker = tokio::time::interval(ROTATION_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = changed.notified() => {}
        }
        match issuer.rotate_due_static_roles().await {
            Ok((0, failures)) if failures.is_empty() => {}
            Ok((rotated, failures)) => info!(rotated, ?failures, "static role rotation"),
            Err(error) => warn!(error = %error, "static role rotation failed"),
        }
        if reaper.is_finished() {
            warn!("the lease reaper stopped");
            return;
        }
    }
}

/// Rotates the token signing key when it is due, every hour, until aborted.
pub async fn maintain_signing_keys(tokens: Arc<TokenAuthority>) {
    let mut hourly = tokio::time::interval(KEY_MAINTENANCE_INTERVAL);
    loop {
        hourly.tick().await;
        let tokens = tokens.clone();
        match tokio::task::spawn_blocking(move || tokens.maintain_keys()).await {
            Ok(Ok(Some(kid))) => info!(kid = %kid, "token signing key rotated"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => warn!(error = %e, "token signing key maintenance failed"),
            Err(e) => warn!(error = %e, "token signing key maintenance failed"),
        }
    }
}
