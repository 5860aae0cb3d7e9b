//! Stamps the binary with the git commit it was built from and the build date, for
//! `postern version` and `--version`.

use std::path::Path;
use std::process::Command;

fn main() {
    // Not POSTERN_*: cargo also sets these when it runs the tests, and a child `postern`
    // would take POSTERN_* variables for settings.
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BUILT_FROM_COMMIT={commit}");
    // Reproducible builds (the Debian package among them) pin the date.
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let built = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    println!("cargo:rustc-env=BUILT_ON_DATE={}", built.format("%Y-%m-%d"));
    // A new commit (or checkout) reruns this; edits alone do not.
    for path in ["HEAD", "refs/heads"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            if Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
