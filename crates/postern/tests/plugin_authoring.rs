//! The plugin author's commands, as an author runs them: `postern plugin inspect` on the
//! example and test components (a plugin, one of another major version, one of another
//! world, bytes that are no component), and `postern plugin test` with cases files (the
//! table-window example's, a sink answered by canned HTTP, an auth provider, and files
//! that are wrong in each way an author gets them wrong). No gateway, no PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_postern");

fn component(name: &str) -> PathBuf {
    postern_testkit::plugin_components().join(format!("{name}.wasm"))
}

fn postern(args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failed command: exit status non-zero and one line on stderr; that line.
fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded: {output:?}");
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

fn inspect(path: &Path, json: bool) -> Output {
    let mut args = vec!["plugin", "inspect", path.to_str().unwrap()];
    if json {
        args.extend(["-o", "json"]);
    }
    postern(&args)
}

#[test]
fn inspect_says_what_a_component_is_and_whether_it_loads() {
    let table_window = component("table_window");
    let output = inspect(&table_window, false);
    assert!(output.status.success(), "{output:?}");
    let report = text(&output.stdout);
    for line in [
        "kind:           policy",
        "built against:  postern:plugin@0.1.0 (this gateway loads postern:plugin@0.1.x)",
        "loadable:       yes, when its resource grants spec.capabilities: [log]",
        "postern:plugin/policy-hook@0.1.0",
    ] {
        assert!(report.contains(line), "{line:?} missing:\n{report}");
    }
    assert!(
        report.contains("capability log") && report.contains("WASI"),
        "{report}"
    );

    let output = inspect(&component("jwt_auth"), true);
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["kind"], "authProvider");
    assert_eq!(report["loadable"], true);
    let mut needed: Vec<&str> = report["capabilitiesNeeded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    needed.sort_unstable();
    assert_eq!(needed, ["cache", "http-client", "log"]);
    assert!(report["size"].as_u64().unwrap() > 1000);
    assert!(report["initialMemoryBytes"].as_u64().unwrap() >= 64 * 1024);

    // Another major version: the report says so, and the command fails in one line
    // naming both versions.
    let next = component("next_major");
    let output = inspect(&next, false);
    let error = one_line_error(&output);
    assert!(
        error.contains(
            "built against postern:plugin@1.0.0; this gateway loads postern:plugin@0.1.x"
        ),
        "{error}"
    );
    assert!(text(&output.stdout).contains("postern:plugin@1.0.0"));

    // Another world: no plugin at all.
    let error = one_line_error(&inspect(&component("not_a_plugin"), false));
    assert!(error.contains("not a plugin"), "{error}");

    // A policy hook that imports what no policy hook is given.
    let error = one_line_error(&inspect(&component("nosy"), true));
    assert!(
        error.contains("postern:plugin/http-client@0.1.0") && error.contains("never given"),
        "{error}"
    );

    // Bytes that are no component, and a file that is not there.
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, "not wasm at all").unwrap();
    let error = one_line_error(&inspect(&garbage, false));
    assert!(
        error.contains("garbage.wasm") && error.contains("not a loadable WebAssembly component"),
        "{error}"
    );
    let error = one_line_error(&inspect(&dir.path().join("missing.wasm"), false));
    assert!(error.contains("missing.wasm"), "{error}");
}

#[test]
fn inspect_bench_times_the_main_function_on_a_sample_input() {
    let table_window = component("table_window");
    let path = table_window.to_str().unwrap();
    let config = r#"{"tables": ["payroll.*"], "from_hour": 9, "until_hour": 17}"#;
    let output = postern(&[
        "plugin",
        "inspect",
        path,
        "--bench",
        "--plugin-config",
        config,
    ]);
    assert!(output.status.success(), "{output:?}");
    let report = text(&output.stdout);
    for line in [
        "bench: new instance (init included): p50 ",
        "bench: on-statement: select on public.items: p50 ",
    ] {
        assert!(report.contains(line), "{line:?} missing:\n{report}");
    }
    let output = postern(&[
        "plugin",
        "inspect",
        component("otlp_logs").to_str().unwrap(),
        "--bench",
        "--plugin-config",
        r#"{"endpoint": "http://127.0.0.1:9"}"#,
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text(&output.stdout).contains("bench: write-batch: one QUERY event: p50 "),
        "{output:?}"
    );

    // Without the config its init needs, and with a config that is no JSON: one line.
    let error = one_line_error(&postern(&["plugin", "inspect", path, "--bench"]));
    assert!(
        error.contains("--plugin-config") && error.contains("missing field `tables`"),
        "{error}"
    );
    let error = one_line_error(&postern(&[
        "plugin",
        "inspect",
        path,
        "--bench",
        "--plugin-config",
        "{tables",
    ]));
    assert!(error.contains("--plugin-config: not JSON"), "{error}");
}

fn test_cases(wasm: &Path, cases: &Path) -> Output {
    postern(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ])
}

#[test]
fn the_table_window_example_passes_its_own_cases() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/table-window/cases.yaml");
    let output = test_cases(&component("table_window"), &cases);
    assert!(output.status.success(), "{output:?}");
    let report = text(&output.stdout);
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok    ")).count(),
        4,
        "{report}"
    );
    assert!(report.ends_with("4 of 4 cases passed\n"), "{report}");
}

#[test]
fn plugin_test_runs_sinks_against_canned_http_and_auth_providers_against_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let sink_cases = dir.path().join("otlp.yaml");
    let sink = |status: u16, expect: &str| {
        format!(
            r#"plugin:
  type: logSink
  capabilities: [log, http-client, secrets]
  http: {{allow: ["https://collector.example.com"]}}
  config: {{endpoint: "https://collector.example.com"}}
http:
  - {{method: POST, url: "https://collector.example.com/v1/logs", status: {status}}}
cases:
  - name: a batch goes out
    events:
      - {{eventType: QUERY, identity: alice.default, service: app.default, statement: SELECT 1}}
    expect: {expect}
"#
        )
    };
    std::fs::write(&sink_cases, sink(200, "ok")).unwrap();
    let output = test_cases(&component("otlp_logs"), &sink_cases);
    assert!(output.status.success(), "{output:?}");
    // The collector busy: the sink asks for a retry, which this file did not expect.
    std::fs::write(&sink_cases, sink(503, "ok")).unwrap();
    let output = test_cases(&component("otlp_logs"), &sink_cases);
    let error = one_line_error(&output);
    assert!(error.contains("1 of 1 cases failed"), "{error}");
    let report = text(&output.stdout);
    assert!(
        report.contains("FAIL  a batch goes out: expected ok, got retryable"),
        "{report}"
    );
    std::fs::write(&sink_cases, sink(503, "retryable")).unwrap();
    assert!(test_cases(&component("otlp_logs"), &sink_cases)
        .status
        .success());
    // An event type the access log does not have: the case cannot run, one line.
    std::fs::write(
        &sink_cases,
        sink(200, "ok").replace("eventType: QUERY", "eventType: NOPE"),
    )
    .unwrap();
    let error = one_line_error(&test_cases(&component("otlp_logs"), &sink_cases));
    assert!(
        error.contains("cases[0]: events[0].eventType: \"NOPE\" is not one of"),
        "{error}"
    );
    // As the network would: a body past spec.http.maxResponseBytes is too large (the
    // sink retries), and a name that leads inside is refused.
    let limited = sink(200, "ok").replace(
        r#"http: {allow: ["https://collector.example.com"]}"#,
        r#"http: {allow: ["https://collector.example.com"], maxResponseBytes: 4}"#,
    );
    std::fs::write(
        &sink_cases,
        limited.replace(
            "status: 200}",
            "status: 200, body: \"far more than four bytes\"}",
        ),
    )
    .unwrap();
    let output = test_cases(&component("otlp_logs"), &sink_cases);
    one_line_error(&output);
    assert!(
        text(&output.stdout).contains("got retryable \"HttpError::TooLarge\""),
        "{output:?}"
    );
    std::fs::write(
        &sink_cases,
        sink(200, "ok").replace("collector.example.com", "collector.localhost"),
    )
    .unwrap();
    let output = test_cases(&component("otlp_logs"), &sink_cases);
    one_line_error(&output);
    assert!(
        text(&output.stdout)
            .contains("got retryable \"the endpoint is not in the plugin's http.allow\""),
        "{output:?}"
    );

    // A policy hook that traps is denied by the gateway, but its case fails: a trap is a
    // bug, whatever the case expected.
    let policy_cases = dir.path().join("policy.yaml");
    std::fs::write(
        &policy_cases,
        r#"plugin: {type: policy, capabilities: [log]}
cases:
  - {name: a trap is no denial, identity: {name: alice}, statement: {kind: trap}, expect: deny}
  - {name: a denial, identity: {name: alice}, statement: {kind: deny}, expect: deny}
"#,
    )
    .unwrap();
    let output = test_cases(&component("misbehave"), &policy_cases);
    one_line_error(&output);
    let report = text(&output.stdout);
    assert!(
        report.contains("FAIL  a trap is no denial: expected deny, the plugin failed"),
        "{report}"
    );
    assert!(report.contains("ok    a denial"), "{report}");

    let auth_cases = dir.path().join("auth.yaml");
    std::fs::write(
        &auth_cases,
        r#"plugin: {type: authProvider, capabilities: [log]}
cases:
  - {name: a good password, password: "ok:carol", expect: {authenticated: {name: carol, namespace: default}}}
  - {name: not its kind of password, password: "hunter2", expect: notApplicable}
  - {name: a trap is no rejection, password: trap, expect: rejected}
"#,
    )
    .unwrap();
    let output = test_cases(&component("misbehave_auth"), &auth_cases);
    one_line_error(&output);
    let report = text(&output.stdout);
    assert!(report.contains("ok    a good password"), "{report}");
    assert!(
        report.contains("ok    not its kind of password"),
        "{report}"
    );
    assert!(
        report.contains("FAIL  a trap is no rejection: expected rejected, the plugin failed: plugin under-test trapped"),
        "{report}"
    );
}

#[test]
fn a_wrong_cases_file_is_one_line_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    let table_window = component("table_window");
    let policy = "plugin: {type: policy, capabilities: [log], config: {tables: [payroll.*], from_hour: 8, until_hour: 18}}\n";
    for (what, body, said) in [
        ("not YAML", "plugin: [unclosed\n".to_owned(), "line"),
        (
            "an unknown field",
            format!("{policy}cases:\n  - {{name: x, identity: {{name: a}}, statment: {{kind: select}}, expect: allow}}\n"),
            "statment",
        ),
        (
            "a detail where none belongs",
            format!("{policy}cases:\n  - {{name: x, identity: {{name: a}}, statement: {{kind: select}}, expect: {{allow: yes}}}}\n"),
            "cases[0].expect: allow takes no detail",
        ),
        (
            "an unknown expectation",
            format!("{policy}cases:\n  - {{name: x, identity: {{name: a}}, statement: {{kind: select}}, expect: maybe}}\n"),
            "cases[0].expect: \"maybe\" is not one of",
        ),
        (
            "a case of another kind of plugin",
            format!("{policy}cases:\n  - {{name: x, password: secret, expect: rejected}}\n"),
            "cases[0]: identity: a policy hook's case says who asks",
        ),
        (
            "text the gateway would not hand over",
            format!("{policy}cases:\n  - {{name: x, identity: {{name: a}}, statement: {{kind: select, text: SELECT 1}}, expect: allow}}\n"),
            "statementText",
        ),
        (
            "a bad spec",
            "plugin: {type: policy, capabilities: [sockets]}\ncases: []\n".to_owned(),
            "plugin.capabilities",
        ),
        (
            "a bad clock",
            format!("{policy}clock: yesterday\ncases: []\n"),
            "clock: \"yesterday\" is not an RFC 3339 time",
        ),
        (
            "the component's world is not the spec's type",
            "plugin: {type: logSink, capabilities: [log]}\ncases: []\n".to_owned(),
            "not a log sink plugin",
        ),
    ] {
        let cases = dir.path().join("cases.yaml");
        std::fs::write(&cases, body).unwrap();
        let error = one_line_error(&test_cases(&table_window, &cases));
        assert!(error.contains(said), "{what}: {error}");
    }
}

#[test]
fn a_new_project_of_each_kind_builds_and_passes_its_own_cases() {
    let dir = tempfile::tempdir().unwrap();
    // The example plugins' target directory: the dependencies are built there already.
    let shared_target = postern_testkit::plugin_components()
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    for kind in ["policy", "auth-provider", "log-sink"] {
        let name = format!("my-{kind}");
        let project = dir.path().join(&name);
        let project_arg = project.to_str().unwrap();
        let output = postern(&["plugin", "new", &name, "--kind", kind, "--dir", project_arg]);
        assert!(output.status.success(), "{kind}: {output:?}");
        for file in [
            "Cargo.toml",
            "Cargo.lock",
            "src/lib.rs",
            "postern-plugin-sdk/Cargo.toml",
            "postern-plugin-sdk/src/testing.rs",
            "postern-plugin-sdk/wit/plugin.wit",
            "cases.yaml",
            "plugin.yaml",
            "README.md",
        ] {
            assert!(project.join(file).is_file(), "{kind}: {file} missing");
        }
        // Again into the same place: refused, nothing overwritten.
        let error = one_line_error(&postern(&[
            "plugin",
            "new",
            &name,
            "--kind",
            kind,
            "--dir",
            project_arg,
        ]));
        assert!(error.contains("not empty"), "{error}");

        let output = std::process::Command::new(BIN)
            .args(["plugin", "build", project_arg])
            .env("CARGO_TARGET_DIR", &shared_target)
            .output()
            .unwrap();
        assert!(output.status.success(), "{kind}: {}", text(&output.stderr));
        let built = text(&output.stdout);
        let wasm = built
            .lines()
            .find_map(|l| l.strip_prefix("component: "))
            .unwrap_or_else(|| panic!("{kind}: {built}"))
            .to_owned();
        assert!(built.contains("sha256:    "), "{built}");

        let output = test_cases(Path::new(&wasm), &project.join("cases.yaml"));
        assert!(output.status.success(), "{kind}: {output:?}");
        let output = inspect(Path::new(&wasm), true);
        assert!(output.status.success(), "{kind}: {output:?}");

        // Its unit tests run on the host against the SDK's fake host, as the project's
        // README says.
        {
            let output = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .arg("test")
            .current_dir(&project)
            .env(
                "CARGO_TARGET_DIR",
                shared_target.with_file_name("plugins-host"),
            )
            .output()
            .unwrap();
            assert!(
                output.status.success(),
                "cargo test: {}",
                text(&output.stderr)
            );
            let summary = text(&output.stdout);
            assert!(
                summary.contains("test result: ok.") && !summary.contains("ok. 0 passed"),
                "{kind}: {summary}"
            );
        }

        // The resource names the component where cargo puts it in the project.
        let resource = std::fs::read_to_string(project.join("plugin.yaml")).unwrap();
        assert!(
            resource.contains(&format!(
                "path: target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            )),
            "{resource}"
        );
    }
    // A name that cannot be a Plugin's: refused before anything is written.
    let error = one_line_error(&postern(&[
        "plugin",
        "new",
        "Bad_Name",
        "--kind",
        "policy",
        "--dir",
        dir.path().join("bad").to_str().unwrap(),
    ]));
    assert!(error.contains("Bad_Name"), "{error}");
    assert!(!dir.path().join("bad").exists());
}
