//! The same policy hook in Rust, Python (componentize-py) and JavaScript
//! (componentize-js), as `postern plugin new --lang` scaffolds it: each builds with
//! `postern plugin build` (with the toolchains scripts/ensure-tools.sh installs: the test
//! venv's componentize-py, .js-tools' componentize-js), loads in the gateway's runtime
//! and passes the same cases, the Rust project's; then, as the guide goes on, each is
//! applied, named by a Service of a real gateway, and psql's statement on the payroll
//! table through it is denied naming the plugin. Sizes and times for the three are
//! printed (`-- --nocapture` shows them); nothing here asserts a time. And the guide's
//! tutorial (plugins/README.md) runs as it is written there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use postern_testkit::{psql, shared_pg, wait_for, Gateway};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const WAIT: std::time::Duration = std::time::Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `postern ARGS` in `dir`, with the plugin toolchains on PATH and cargo's target
/// directory shared with the example plugins (their dependencies are built there).
fn postern(dir: &Path, args: &[&str]) -> Output {
    let repo = repo();
    let path = std::env::join_paths(
        [
            repo.join(".venv-tests/bin"),
            repo.join(".js-tools/node_modules/.bin"),
        ]
        .into_iter()
        .chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .unwrap();
    let shared_target = postern_testkit::plugin_components()
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", &shared_target)
        // Compiled components are kept under target/ between commands and runs.
        .env(
            "XDG_CACHE_HOME",
            shared_target.with_file_name("plugin-cache"),
        )
        .output()
        .unwrap()
}

fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_policy_hook_in_rust_python_and_javascript_denies_a_statement_through_psql() {
    let dir = tempfile::tempdir().unwrap();
    let shared_cases = dir.path().join("no-payroll-rust/cases.yaml");
    let mut rows = Vec::new();
    let mut resources = Vec::new();
    for lang in ["rust", "python", "js"] {
        // The guide's steps: new, build, test, inspect (apply comes below, with a gateway).
        let name = format!("no-payroll-{lang}");
        let project = dir.path().join(&name);
        ok(
            postern(
                dir.path(),
                &["plugin", "new", &name, "--kind", "policy", "--lang", lang],
            ),
            &format!("{lang}: plugin new"),
        );
        let built = ok(
            postern(&project, &["plugin", "build"]),
            &format!("{lang}: plugin build"),
        );
        let wasm = built
            .lines()
            .find_map(|l| l.strip_prefix("component: "))
            .unwrap_or_else(|| panic!("{lang}: {built}"))
            .to_owned();

        // The same cases as the Rust project's (only the plugin's spec differs: an
        // interpreter needs more memory and its bindings import `cache`), and they pass.
        let cases_file = project.join("cases.yaml");
        let cases = std::fs::read_to_string(&cases_file).unwrap();
        let shared = std::fs::read_to_string(&shared_cases).unwrap();
        let cases_part = |text: &str| text[text.find("\ncases:").unwrap()..].to_owned();
        assert_eq!(cases_part(&cases), cases_part(&shared), "{lang}");
        let report = ok(
            postern(
                &project,
                &["plugin", "test", &wasm, "--cases", "cases.yaml"],
            ),
            &format!("{lang}: plugin test"),
        );
        assert!(report.contains("3 of 3 cases passed"), "{lang}: {report}");
        let report: Value = serde_json::from_str(&ok(
            postern(&project, &["plugin", "inspect", &wasm, "-o", "json"]),
            &format!("{lang}: plugin inspect"),
        ))
        .unwrap();
        assert_eq!(report["kind"], "policy", "{lang}");
        assert_eq!(report["loadable"], true, "{lang}: {report}");
        let bench = ok(
            postern(
                &project,
                &["plugin", "test", &wasm, "--cases", "cases.yaml", "--bench"],
            ),
            &format!("{lang}: plugin test --bench"),
        );
        rows.push(format!(
            "{lang}: {} KiB, initial memory {} KiB\n{}",
            report["size"].as_u64().unwrap() / 1024,
            report["initialMemoryBytes"].as_u64().unwrap_or(0) / 1024,
            bench
                .lines()
                .filter(|l| l.starts_with("bench: "))
                .collect::<Vec<_>>()
                .join("\n")
        ));
        // Where the project's plugin.yaml looks for it: cargo's default target directory,
        // which this test shares with the example plugins' instead.
        let expected = project.join(
            serde_yaml_ng::from_str::<Value>(
                &std::fs::read_to_string(project.join("plugin.yaml")).unwrap(),
            )
            .unwrap()["spec"]["source"]["path"]
                .as_str()
                .unwrap(),
        );
        if !expected.exists() {
            std::fs::create_dir_all(expected.parent().unwrap()).unwrap();
            std::fs::copy(&wasm, &expected).unwrap();
        }
        resources.push((lang, name, project));
    }
    eprintln!("{}", rows.join("\n"));

    // A database with a payroll table, a gateway, and a Service per language naming its
    // plugin, all in the namespace the scaffold's resource uses.
    let pg = shared_pg().await;
    payroll_table(pg).await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = default_namespace(&gateway, pg);

    for (lang, name, project) in &resources {
        // The guide's `postern apply -f plugin.yaml`, then its Service.
        gateway.cli_ok(&["apply", "-f", project.join("plugin.yaml").to_str().unwrap()]);
        let service = gateway.write_file(
            &format!("service-{lang}.yaml"),
            &format!(
                "kind: Service\nmetadata: {{name: orders-{lang}, namespace: default}}\n\
                 spec:\n  target: main-pg\n  database: app\n  \
                 upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}\n  \
                 authorization:\n    plugins: [{name}]\n"
            ),
        );
        gateway.cli_ok(&["apply", "-f", service.to_str().unwrap()]);
        let conninfo = format!(
            "host=127.0.0.1 port={} dbname=orders-{lang}.default user=alice.default password={key}",
            gateway.port()
        );
        let refused = wait_for(
            &format!("{lang}: the plugin to load and deny"),
            WAIT,
            || {
                let (ok, _, err) = psql(&conninfo, "SELECT * FROM payroll.salaries");
                // Until the gateway has loaded it, the plugin refuses sessions ("not loaded").
                (!ok && err.contains("is off limits")).then_some(err)
            },
        )
        .await;
        assert!(
            refused.contains(&format!("plugin {name}"))
                && refused.contains("payroll.salaries is off limits"),
            "{lang}: {refused}"
        );
        let (ok, out, err) = psql(&conninfo, "SELECT count(*) FROM items");
        assert!(ok, "{lang}: {err}");
        assert_eq!(out, "10\n", "{lang}");
    }
}

/// The fenced block that follows `marker` in the guide.
fn guide_block(guide: &str, marker: &str) -> String {
    let after = &guide[guide
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the guide"))..];
    let fence = after.find("```").unwrap();
    let body = fence + after[fence..].find('\n').unwrap() + 1;
    let end = body + after[body..].find("```").unwrap();
    after[body..end].to_owned()
}

/// A database with a payroll table that app_rw owns (either test may make it first).
async fn payroll_table(pg: &postern_localpg::LocalPg) {
    pg.connect("app")
        .await
        .unwrap()
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS payroll AUTHORIZATION app_rw;
             CREATE TABLE IF NOT EXISTS payroll.salaries (who text, amount int);
             ALTER TABLE payroll.salaries OWNER TO app_rw;",
        )
        .await
        .unwrap();
}

/// A gateway with the default namespace's Target `main-pg`, Identity alice and the
/// upstream password: what the guide assumes is there. Returns alice's API key.
fn default_namespace(gateway: &Gateway, pg: &postern_localpg::LocalPg) -> String {
    let base = gateway.write_file(
        "base.yaml",
        &format!(
            "kind: Target\nmetadata: {{name: main-pg, namespace: default}}\nspec: {{address: '{}', sslMode: disable}}\n---\n\
             kind: Identity\nmetadata: {{name: alice, namespace: default}}\nspec: {{type: human, groups: [engineering]}}\n",
            pg.address()
        ),
    );
    gateway.cli_ok(&["apply", "-f", base.to_str().unwrap()]);
    let output = gateway.cli_with_input(
        &["secret", "set", "app-rw-password", "-n", "default"],
        &format!("{}\n", postern_testkit::APP_PASSWORD),
    );
    assert!(output.status.success(), "{output:?}");
    gateway.create_key("alice", "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_tutorial_works_as_written() {
    let guide = std::fs::read_to_string(repo().join("plugins/README.md")).unwrap();
    let pg = shared_pg().await;
    payroll_table(pg).await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = default_namespace(&gateway, pg);
    let dir = tempfile::tempdir().unwrap();
    // The commands as the guide has them, with this build's postern, on this gateway's
    // state directory, and cargo's default target directory (the project's own).
    let bin_dir = Path::new(BIN).parent().unwrap().to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let commands = guide_block(&guide, "<!-- tutorial-commands -->");
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &commands])
        .current_dir(dir.path())
        .env("PATH", &path)
        .env("POSTERN_STATE_DIR", gateway.state_dir())
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let printed = ok(output, "the tutorial's commands");
    assert!(printed.contains("ok    payroll is off limits"), "{printed}");
    assert!(printed.contains("loadable:       yes"), "{printed}");

    // The Service as the guide has it.
    let service = gateway.write_file(
        "service.yaml",
        &guide_block(&guide, "<!-- tutorial-service -->"),
    );
    gateway.cli_ok(&["apply", "-f", service.to_str().unwrap()]);

    // psql as the guide shows it, on this gateway's port, with alice's key.
    let console = guide_block(&guide, "<!-- tutorial-psql -->");
    let (command, said): (Vec<&str>, Vec<&str>) = console
        .lines()
        .partition(|line| line.starts_with("$ ") || line.starts_with("    "));
    let command = command
        .join("\n")
        .trim_start_matches("$ ")
        .replace("port=6432", &format!("port={}", gateway.port()));
    let said = said.join("\n");
    let refused = wait_for("the tutorial's plugin to load and deny", WAIT, || {
        let output = Command::new("bash")
            .args(["-c", &command])
            .env("ALICE_KEY", &key)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        (!output.status.success() && stderr.contains("is off limits")).then_some(stderr)
    })
    .await;
    // psql's first line, as the guide shows it (a CONTEXT line may follow).
    assert!(
        refused.trim().starts_with(said.trim()),
        "the guide says:\n{said}\npsql said:\n{refused}"
    );
}
