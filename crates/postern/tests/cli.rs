//! End-to-end tests of the resource commands: apply (dry run, prune, all-or-nothing), get,
//! delete, secrets and the master key, run as the real binary against a fresh state dir.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// A state dir and no server: these commands never need one.
struct State {
    dir: tempfile::TempDir,
}

impl State {
    fn new() -> State {
        State {
            dir: tempfile::Builder::new()
                .prefix("postern-cli-")
                .tempdir()
                .unwrap(),
        }
    }

    fn run(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        use std::io::Write;
        let mut child = std::process::Command::new(BIN)
            .env_clear()
            .env("POSTERN_STATE_DIR", self.dir.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args, "");
        assert!(ok, "postern {args:?} failed: {stderr}");
        stdout
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

const BASE: &str = "kind: Namespace
metadata: {name: team-a}
---
kind: Target
metadata: {name: main-pg, namespace: team-a}
spec: {address: '127.0.0.1:5432', sslMode: prefer}
---
kind: Service
metadata: {name: orders, namespace: team-a}
spec:
  target: main-pg
  database: orders
  upstream: {mode: static, user: app_rw, passwordSecret: app-rw-password}
---
kind: Identity
metadata: {name: alice, namespace: team-a}
spec: {groups: [engineering], attributes: {team: payments}}
";

#[test]
fn apply_dry_run_prune_get_and_delete_round_trip() {
    let state = State::new();
    let file = state.file("base.yaml", BASE);

    let plan = state.ok(&["apply", "-f", &file, "--dry-run"]);
    assert!(plan.contains("+ Service team-a/orders (create)"), "{plan}");
    assert!(
        plan.contains("4 created, 0 updated, 0 deleted, 0 unchanged (dry run"),
        "{plan}"
    );
    let (ok, _, stderr) = state.run(&["get", "service", "orders", "-n", "team-a"], "");
    assert!(
        !ok && stderr.contains("not found"),
        "dry run changed nothing: {stderr}"
    );

    state.ok(&["apply", "-f", &file]);
    let again = state.ok(&["apply", "-f", &file]);
    assert!(
        again.contains("0 created, 0 updated, 0 deleted, 4 unchanged"),
        "{again}"
    );

    // get -o yaml output applies back unchanged.
    let yaml = state.ok(&["get", "service", "orders", "-n", "team-a", "-o", "yaml"]);
    assert!(yaml.contains("generation: 1"), "{yaml}");
    let exported = state.file("exported.yaml", &yaml);
    let replay = state.ok(&["apply", "-f", &exported, "--dry-run"]);
    assert!(replay.contains("1 unchanged"), "{replay}");

    // An update shows a diff and bumps the generation.
    let changed = state.file(
        "changed.yaml",
        &BASE.replace("database: orders", "database: orders2"),
    );
    let plan = state.ok(&["apply", "-f", &changed, "--dry-run"]);
    assert!(plan.contains("~ Service team-a/orders (update)"), "{plan}");
    assert!(
        plan.contains("-   database: orders\n") && plan.contains("+   database: orders2"),
        "{plan}"
    );
    state.ok(&["apply", "-f", &changed]);
    let json = state.ok(&["get", "svc", "orders", "-n", "team-a", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["spec"]["database"], "orders2");
    assert_eq!(doc["metadata"]["generation"], 2);

    // Prune deletes what the files no longer declare, and only that.
    let fewer: String = BASE
        .split("---\n")
        .take(2)
        .collect::<Vec<_>>()
        .join("---\n");
    let fewer = state.file("fewer.yaml", &fewer);
    let plan = state.ok(&["apply", "-f", &fewer, "--prune", "--dry-run"]);
    assert!(
        plan.contains("- Service team-a/orders") && plan.contains("- Identity team-a/alice"),
        "{plan}"
    );
    assert!(state
        .ok(&["get", "identities", "-n", "team-a"])
        .contains("alice"));
    state.ok(&["apply", "-f", &fewer, "--prune"]);
    let services = state.ok(&["get", "services", "-A"]);
    assert!(!services.contains("orders"), "{services}");
    assert!(
        state.ok(&["get", "namespaces"]).contains("default"),
        "default namespace is never pruned"
    );

    // delete refuses to break references and removes what it may.
    let (ok, _, stderr) = state.run(&["delete", "namespace", "team-a"], "");
    assert!(!ok && stderr.contains("still holds"), "{stderr}");
    state.ok(&["delete", "target", "main-pg", "-n", "team-a"]);
    state.ok(&["delete", "namespace", "team-a"]);
    let (ok, _, stderr) = state.run(&["delete", "namespace", "team-a"], "");
    assert!(
        !ok && stderr.starts_with("error: ") && stderr.contains("not found"),
        "{stderr}"
    );
}

#[test]
fn a_bad_file_is_one_line_naming_file_document_and_field_and_applies_nothing() {
    let state = State::new();
    let bad = BASE.replace("user: app_rw, ", "");
    let file = state.file("bad.yaml", &bad);
    let (ok, stdout, stderr) = state.run(&["apply", "-f", &file], "");
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "bad.yaml: document 3: (Service team-a/orders) spec.upstream: mode static takes either user and passwordSecret, or staticRole"
        ),
        "{stderr}"
    );
    let namespaces = state.ok(&["get", "namespaces"]);
    assert!(
        !namespaces.contains("team-a"),
        "nothing was applied: {namespaces}"
    );

    // A dangling reference across documents fails the whole apply too.
    let dangling = state.file(
        "dangling.yaml",
        &BASE.replace("target: main-pg", "target: other-pg"),
    );
    let (ok, _, stderr) = state.run(&["apply", "-f", &dangling], "");
    assert!(!ok && stderr.contains("document 3: (Service team-a/orders) spec.target: Target team-a/other-pg does not exist"), "{stderr}");

    // TOML with a bad enum value, in a directory with a good YAML file: nothing applied.
    let dir = state.dir.path().join("resources");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), BASE).unwrap();
    std::fs::write(
        dir.join("b.toml"),
        "kind = \"Target\"\nmetadata = { name = \"t\", namespace = \"team-a\" }\nspec = { address = \"h:1\", sslMode = \"sometimes\" }\n",
    )
    .unwrap();
    let (ok, _, stderr) = state.run(&["apply", "-f", dir.to_str().unwrap()], "");
    assert!(
        !ok && stderr.contains("b.toml: document 1: (Target team-a/t) spec.sslMode"),
        "{stderr}"
    );
    assert!(!state.ok(&["get", "namespaces"]).contains("team-a"));

    let (ok, _, stderr) = state.run(&["check-config", "-f", &file], "");
    assert!(!ok && stderr.contains("spec.upstream"), "{stderr}");
}

#[test]
fn secrets_are_write_only_and_the_master_key_is_guarded() {
    let state = State::new();
    let file = state.file("base.yaml", BASE);
    state.ok(&["apply", "-f", &file]);
    let (ok, stdout, _) = state.run(
        &["secret", "set", "app-rw-password", "-n", "team-a"],
        "s3cr3t-from-stdin\n",
    );
    assert!(ok && stdout.contains("created"), "{stdout}");
    let listing = state.ok(&[
        "get",
        "secret",
        "app-rw-password",
        "-n",
        "team-a",
        "-o",
        "json",
    ]);
    assert!(!listing.contains("s3cr3t"), "{listing}");
    let raw = std::fs::read(state.dir.path().join("state.db")).unwrap();
    assert!(!raw.windows(6).any(|w| w == b"s3cr3t"));

    let key_file = state.dir.path().join("master.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let original = std::fs::read(&key_file).unwrap();

    // A different key is refused, and the key file is left alone.
    let (ok, _, stderr) = {
        use std::io::Write;
        let mut child = std::process::Command::new(BIN)
            .env_clear()
            .env("POSTERN_STATE_DIR", state.dir.path())
            .env(
                "POSTERN_MASTER_KEY",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            )
            .args(["get", "secrets", "-n", "team-a"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(
        !ok && stderr.contains("does not match") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(std::fs::read(&key_file).unwrap(), original);

    // A missing key is refused, and no new key is generated over the sealed data.
    std::fs::remove_file(&key_file).unwrap();
    let (ok, _, stderr) = state.run(&["get", "secrets", "-n", "team-a"], "");
    assert!(!ok && stderr.contains("is missing"), "{stderr}");
    assert!(!key_file.exists());
}

#[test]
fn serve_refuses_to_start_without_its_master_key() {
    let gateway_dir = tempfile::tempdir().unwrap();
    let seeded = std::process::Command::new(BIN)
        .env_clear()
        .env("POSTERN_STATE_DIR", gateway_dir.path())
        .args(["get", "namespaces"])
        .output()
        .unwrap();
    assert!(seeded.status.success());
    std::fs::remove_file(gateway_dir.path().join("master.key")).unwrap();
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("POSTERN_STATE_DIR", gateway_dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: ") && stderr.contains("master key"),
        "{stderr}"
    );
}
