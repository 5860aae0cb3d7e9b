//! Rebuilds the crate when the web UI's built assets change: the embed macro includes the
//! files it found, so a file added to `ui/dist` would otherwise go unnoticed.

fn main() {
    println!("cargo:rerun-if-changed=../../ui/dist");
}
