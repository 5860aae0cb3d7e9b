//! `postern demo` end to end: it starts, the psql line it prints works, and Ctrl-C
//! (SIGINT) stops everything and removes its temporary files.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

#[test]
fn demo_prints_a_psql_line_that_works_and_cleans_up_on_ctrl_c() {
    let temp_dirs = || -> Vec<String> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("postern-demo-") || n.starts_with("postern-pg-"))
            .collect()
    };
    let before = temp_dirs();
    let mut demo = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reading stdout line by line blocks until the demo prints; the reader thread makes
    // the wait bounded.
    let stdout = demo.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut printed = Vec::new();
    while !printed.iter().any(|l: &String| l.contains("Press Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines_rx.recv_timeout(left) else {
            let _ = demo.kill();
            let output = demo.wait_with_output().unwrap();
            panic!(
                "demo did not finish starting: {printed:?}; {}; stderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        };
        printed.push(line);
    }
    let command = printed
        .iter()
        .find(|l| l.trim_start().starts_with("psql \"") && l.contains(" -c "))
        .expect("a one-shot psql line")
        .trim()
        .to_owned();
    let conninfo = command.split('"').nth(1).unwrap();
    assert!(conninfo.contains("user=alice.demo") && conninfo.contains("dbname=orders.demo"));
    let created: Vec<String> = temp_dirs()
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    assert_eq!(
        created.len(),
        2,
        "a PostgreSQL dir and a state dir: {created:?}"
    );

    // Run the printed line through a shell, exactly as a user would paste it.
    let output = Command::new("sh").args(["-c", &command]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("app_rw") && table.contains("apples"),
        "{table}"
    );

    // The web UI's address and a sign-in token are printed, and its access log already
    // holds the demo's first statements.
    let ui = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("http://"))
        .expect("the web UI's address");
    let (authority, path) = ui.split_once('/').unwrap();
    assert_eq!(path, "ui/");
    let token_at = printed
        .iter()
        .position(|l| l.contains("Sign in with"))
        .expect("a sign-in token line");
    let token = printed[token_at + 1].trim().to_owned();
    let api_port: u16 = authority.rsplit(':').next().unwrap().parse().unwrap();
    let http = postern_testkit::Http::new(api_port);
    let (status, page) = http.call("GET", "/ui/", None, None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<div id=\"app\""), "{page}");
    // The access log writes in batches: wait for the demo's statements to land.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, events) = http.get("/api/v1/logs?type=QUERY", &token);
        assert_eq!(status, 200, "{events}");
        if events.contains("FROM example") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no demo statement in the access log: {events}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let pid = rustix::process::Pid::from_raw(demo.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let leftovers: Vec<String> = temp_dirs()
        .into_iter()
        .filter(|d| created.contains(d))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
