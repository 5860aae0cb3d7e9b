//! The web UI in a real browser: Playwright (ui/tests, from npm) drives Debian's Chromium
//! against a real gateway in front of the test PostgreSQL, with psql logging in through it.
//! This file sets the scene (tenants, services, a rule, tokens) and runs the browser suite;
//! the browser suite asserts. Screenshots of every page land in target/ui-screenshots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use postern_testkit::{provisioned, psql, shared_pg, APP_PASSWORD, DB, USER};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// A second tenant, a service whose rules deny deletes, team-a's own administrator and
/// reader, and a target with an admin login, a CredentialRole (for leases) and an
/// intents-mode service with one Intents, and a service with a policy-hook plugin.
fn scene(upstream: &str) -> String {
    let component = postern_testkit::plugin_components()
        .join("table_window.wasm")
        .display()
        .to_string();
    format!(
        "kind: Service\nmetadata: {{name: reports, namespace: team-a}}\n\
         spec:\n  target: main-pg\n  database: app\n  \
         upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}\n  \
         authorization:\n    rules:\n      - {{name: no-deletes, effect: DENY, \
         condition: \"ctx.request.postgres.statement.kind == 'delete'\"}}\n      \
         - {{name: the-rest, effect: ALLOW, matchAny: true}}\n---\n\
         kind: Identity\nmetadata: {{name: carol, namespace: team-a}}\nspec: {{type: human}}\n---\n\
         kind: RoleBinding\nmetadata: {{name: carol-admin, namespace: team-a}}\n\
         spec: {{role: namespace-admin, subject: {{identity: carol}}}}\n---\n\
         kind: Identity\nmetadata: {{name: dave, namespace: team-a}}\nspec: {{type: human}}\n---\n\
         kind: RoleBinding\nmetadata: {{name: dave-reads, namespace: team-a}}\n\
         spec: {{role: namespace-reader, subject: {{identity: dave}}}}\n---\n\
         kind: Target\nmetadata: {{name: admin-pg, namespace: team-a}}\n\
         spec: {{address: '{upstream}', sslMode: disable, admin: {{user: postgres, passwordSecret: pg-admin}}}}\n---\n\
         kind: CredentialRole\nmetadata: {{name: readonly, namespace: team-a}}\n\
         spec:\n  target: admin-pg\n  database: app\n  creationStatements:\n    \
         - CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}} VALID UNTIL {{{{expiration}}}}\n    \
         - GRANT SELECT ON items TO {{{{name}}}}\n  defaultTtl: 1h\n  maxTtl: 8h\n---\n\
         kind: Service\nmetadata: {{name: shop, namespace: team-a}}\n\
         spec: {{target: admin-pg, database: app, upstream: {{mode: intents}}}}\n---\n\
         kind: Intents\nmetadata: {{name: alice-reads, namespace: team-a}}\n\
         spec:\n  identity: alice\n  access:\n  \
         - {{service: shop, table: public.items, operations: [SELECT]}}\n---\n\
         kind: Plugin\nmetadata: {{name: table-window, namespace: team-a}}\n\
         spec:\n  type: policy\n  source: {{path: \"{component}\"}}\n  capabilities: [log]\n  \
         limits: {{memoryMib: 16, callTimeoutMs: 200}}\n  \
         config: {{tables: [public.nothing], from_hour: 0, until_hour: 1, exempt_groups: []}}\n---\n\
         kind: Service\nmetadata: {{name: audited, namespace: team-a}}\n\
         spec:\n  target: main-pg\n  database: app\n  \
         upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}\n  \
         authorization:\n    plugins: [table-window]\n---\n\
         kind: Namespace\nmetadata: {{name: team-b}}\n---\n\
         kind: Target\nmetadata: {{name: ledger-pg, namespace: team-b}}\n\
         spec: {{address: '{upstream}', sslMode: disable}}\n---\n\
         kind: Service\nmetadata: {{name: ledger, namespace: team-b}}\n\
         spec: {{target: ledger-pg, database: app, upstream: {{mode: static, user: app_rw, passwordSecret: ledger-password}}}}\n---\n\
         kind: Identity\nmetadata: {{name: bob, namespace: team-b}}\nspec: {{type: workload}}\n"
    )
}

fn ui_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_works_in_a_real_browser() {
    let pg = shared_pg().await;
    let (gateway, alice_key) = provisioned(BIN).await;
    let file = gateway.write_file("scene.yaml", &scene(&pg.address()));
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let output = gateway.cli_with_input(
        &["secret", "set", "ledger-password", "-n", "team-b"],
        &format!("{APP_PASSWORD}\n"),
    );
    assert!(output.status.success(), "secret set failed");
    let output = gateway.cli_with_input(
        &["secret", "set", "pg-admin", "-n", "team-a"],
        &format!("{}\n", pg.superuser_password()),
    );
    assert!(output.status.success(), "secret set failed");
    // Two leases for the leases page: one to renew, one to revoke.
    for _ in 0..2 {
        gateway.cli_ok(&["creds", "issue", "readonly", "-n", "team-a", "-o", "json"]);
    }
    let token = |identity: &str| {
        gateway
            .cli_ok(&["token", "issue", identity, "-n", "team-a", "--ttl", "1h"])
            .trim()
            .to_owned()
    };
    // Something in the access log before the browser looks.
    let (ok, out, err) = psql(
        &gateway.conninfo(USER, DB, &alice_key),
        "SELECT count(*) FROM items",
    );
    assert!(ok, "psql through the gateway failed: {out}{err}");
    let api_port = gateway.api_port().await;

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../ui-screenshots");
    // This run's screenshots only.
    let _ = std::fs::remove_dir_all(&screenshots);
    let playwright = ui_dir().join("node_modules/.bin/playwright");
    // Async, so the runtime's threads stay free while the browser suite runs.
    let output = tokio::process::Command::new(&playwright)
        .args(["test", "--reporter=line"])
        .current_dir(ui_dir())
        .env("UI_TEST_BASE_URL", format!("http://127.0.0.1:{api_port}"))
        .env("UI_TEST_ADMIN_TOKEN", gateway.admin_token())
        .env("UI_TEST_TEAM_A_ADMIN_TOKEN", token("carol"))
        .env("UI_TEST_TEAM_A_READER_TOKEN", token("dave"))
        .env("UI_TEST_PROXY_PORT", gateway.port().to_string())
        .env("UI_TEST_SCREENSHOTS", &screenshots)
        .env("UI_TEST_OUTPUT", gateway.state_dir().join("playwright"))
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e}): run scripts/ensure-tools.sh",
                playwright.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser tests failed:\n{stdout}\n{stderr}"
    );
    // Every page was visited in both themes.
    let shots = std::fs::read_dir(&screenshots)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
                .count()
        })
        .unwrap_or(0);
    assert!(
        shots >= 10,
        "only {shots} screenshots in {}",
        screenshots.display()
    );
}
