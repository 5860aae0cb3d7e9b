//! What `postern version` and `--version` print: the release, its git commit and build date.

/// The release, as `--version` shows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `--version` and `postern version`: release, commit and build date on one line.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILT_FROM_COMMIT"),
    ", built ",
    env!("BUILT_ON_DATE"),
    ")"
);
