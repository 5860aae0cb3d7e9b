//! Postern's grant reconciler: each identity named by Intents gets a managed upstream role
//! per target, whose privileges are kept equal to its Intents — no more, no less.
//!
//! `privileges` and `roles` are pure (`expand`/`diff`/`plan_roles` over a catalog
//! snapshot); `catalog` reads that snapshot in a few queries per database; `run` applies
//! the plan, one transaction per database. It only ever touches roles it recorded in the
//! state store and marked with `COMMENT ON ROLE`; any other role is left alone.
#![forbid(unsafe_code)]

mod catalog;
mod connect;
mod error;
pub mod privileges;
pub mod roles;
mod run;
pub mod sql;

pub use connect::connect;
pub use error::{describe, ReconcileError};
pub use run::{reconcile, verifier_for, Options, PlannedStatement, Report};
