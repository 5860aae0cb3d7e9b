//! `postern reconcile`, and the reconcile that follows `apply`/`delete`/rotation (the
//! periodic run inside `serve` is postern-app's).

use anyhow::{bail, Context};
use postern_model::{Change, QualifiedName};
use postern_reconciler::{reconcile, Options, Report};
use postern_state::Store;

pub fn changes_affect_grants(changes: &[Change]) -> bool {
    changes.iter().any(|c| {
        !matches!(c, Change::Unchanged(_)) && postern_app::affects_grants(c.resource().kind())
    })
}

fn run_once(store: &Store, options: Options) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(reconcile(store, options))?)
}

fn print_statements(report: &Report) {
    let mut place = None;
    for statement in &report.statements {
        if place != Some(&statement.place) {
            println!("-- {}", statement.place);
            place = Some(&statement.place);
        }
        println!("{};", statement.sql);
    }
}

/// `postern reconcile [--dry-run]`: prints the SQL run (or, dry, to be run); problems go
/// to stderr and make the exit status non-zero.
pub fn command(store: &Store, dry_run: bool) -> anyhow::Result<()> {
    let report = run_once(store, Options { dry_run })?;
    print_statements(&report);
    for problem in &report.problems {
        eprintln!("problem: {problem}");
    }
    let verb = if dry_run { "would run" } else { "ran" };
    eprintln!(
        "reconcile: {verb} {} statements, {} problems",
        report.statements.len(),
        report.problems.len()
    );
    if !report.problems.is_empty() {
        bail!(
            "reconcile finished with {} problems (see above and `postern get intents`)",
            report.problems.len()
        );
    }
    Ok(())
}

/// The reconcile after a change made by the CLI. The change itself stands either way, so
/// a failure here is a warning; the server's periodic run tries again.
pub fn after_change(store: &Store) {
    match run_once(store, Options::default()) {
        Ok(report) => {
            eprintln!(
                "reconcile: ran {} statements, {} problems",
                report.statements.len(),
                report.problems.len()
            );
            for problem in &report.problems {
                eprintln!("warning: {problem}");
            }
        }
        Err(error) => eprintln!("warning: reconcile failed: {error:#}"),
    }
}

/// `postern identity rotate-password`: new passwords for the identity's managed roles,
/// set upstream at once.
pub fn rotate(store: &Store, identity: &QualifiedName) -> anyhow::Result<()> {
    let rotated = store.rotate_managed_passwords(identity)?;
    if rotated == 0 {
        bail!("Identity {identity} has no managed upstream roles to rotate");
    }
    println!("rotated the password of {rotated} managed role(s) of Identity {identity}");
    after_change(store);
    Ok(())
}
