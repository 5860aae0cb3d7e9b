//! The admin API against its own OpenAPI 3.1 document: schemathesis (from PyPI, installed
//! by scripts/ensure-tools.sh) generates requests for every operation and checks that none
//! gets a 5xx and every answer matches the documented statuses, content types and schemas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use postern_testkit::{test_python, Gateway, Http};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let gateway = Gateway::start(BIN, &[]).await;
    // Something to find: a namespace with one of each simple kind.
    let file = gateway.write_file(
        "seed.yaml",
        "kind: Namespace\nmetadata: {name: team-a}\n---\n\
         kind: Identity\nmetadata: {name: alice, namespace: default}\n---\n\
         kind: RoleBinding\nmetadata: {name: alice, namespace: default}\nspec: {role: namespace-reader, subject: {identity: alice}}\n",
    );
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let port = gateway.api_port().await;
    let schemathesis = test_python().with_file_name("schemathesis");
    let output = std::process::Command::new(&schemathesis)
        .args([
            "run",
            &format!("http://127.0.0.1:{port}/api/v1/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {}", gateway.admin_token()),
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            // The access log's stream never ends on its own (it follows new events).
            "--exclude-path",
            "/api/v1/logs/stream",
            "--no-color",
        ])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Its cache and reports go to the test's state directory, not the source tree.
        .current_dir(gateway.state_dir())
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): run scripts/ensure-tools.sh", schemathesis.display()));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    assert!(
        !gateway.logs().contains("admin API request failed"),
        "{}",
        gateway.logs()
    );
}

/// Every operation the document lists reaches a handler: none answers with the router's
/// fallback (`route not found`) or 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let gateway = Gateway::start(BIN, &[]).await;
    let http = Http::new(gateway.api_port().await);
    let admin = gateway.admin_token();
    let (status, text) = http.call("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() > 20, "{}", paths.len());
    let mut operations = 0;
    for (template, item) in paths {
        // The access log's stream never ends (the browser suite reads it).
        if template == "/api/v1/logs/stream" {
            continue;
        }
        let path = template
            .replace("{namespace}", "default")
            .replace("{name}", "nothing-here")
            .replace("{client_id}", "pc_none")
            .replace("{jti}", "none")
            .replace("{id}", "none");
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let body =
                matches!(method.as_str(), "POST" | "PUT").then_some(("application/json", "{}"));
            let (status, answer) = http.call(&method, &path, Some(&admin), body);
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !answer.contains("route not found"),
                "{method} {path}: {answer}"
            );
            operations += 1;
        }
    }
    assert!(operations >= 50, "{operations}");
}
