//! Tenancy end to end against a real PostgreSQL 15: client credentials exchanged for a
//! token that logs psql in through the gateway; expired, revoked, wrongly signed and
//! wrong-identity tokens refused on the wire (28P01) and the API (401); role bindings that
//! hide other tenants (404), stop readers writing and admins widening themselves (403);
//! optimistic concurrency (409); and no secret in any answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use postern_testkit::{psql, shared_pg, sqlstate, wait_until, Gateway, Http, APP_PASSWORD};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const WAIT: Duration = Duration::from_secs(30);

const TENANTS: &str = "\
kind: Namespace
metadata: {name: team-b}
---
kind: Identity
metadata: {name: worker, namespace: team-a}
spec: {type: workload, groups: [batch]}
---
kind: Identity
metadata: {name: worker, namespace: team-b}
spec: {type: workload}
---
kind: Identity
metadata: {name: admin-a, namespace: team-a}
---
kind: Identity
metadata: {name: reader-a, namespace: team-a}
---
kind: Identity
metadata: {name: bob, namespace: team-b}
---
kind: RoleBinding
metadata: {name: admin-a, namespace: team-a}
spec: {role: namespace-admin, subject: {identity: admin-a}}
---
kind: RoleBinding
metadata: {name: readers, namespace: team-a}
spec: {role: namespace-reader, subject: {identity: reader-a.team-a}}
---
kind: Identity
metadata: {name: boss, namespace: team-a}
---
kind: RoleBinding
metadata: {name: boss-reads-all, namespace: default}
spec: {role: account-reader, subject: {identity: boss.team-a}}
---
kind: RoleBinding
metadata: {name: future-reads-all, namespace: default}
spec: {role: account-reader, subject: {identity: future.team-a}}
";

/// A token from `postern token issue`, with its jti (from the note on stderr).
fn issue(gateway: &Gateway, identity: &str, namespace: &str, ttl: &str) -> (String, String) {
    let output = gateway.cli(&["token", "issue", identity, "-n", namespace, "--ttl", ttl]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let note = String::from_utf8_lossy(&output.stderr).into_owned();
    let jti = note
        .split_whitespace()
        .nth(1)
        .expect("jti in the note")
        .to_owned();
    (
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        jti,
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Logs in through the gateway with `password`; the SQLSTATE on failure.
async fn login(gateway: &Gateway, user: &str, password: &str) -> Result<(), String> {
    let conninfo = gateway.conninfo(user, "orders.team-a", password);
    match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| sqlstate(&e).unwrap_or_else(|| e.to_string()))?;
            Ok(())
        }
        Err(e) => Err(sqlstate(&e).unwrap_or_else(|| e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_role_bindings_and_the_admin_api() {
    let pg = shared_pg().await;
    // A small body limit, so the test's oversized body fits in the socket's buffers.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[api]\nmax_body_bytes = 16384\n").unwrap();
    let gateway = Gateway::start(
        BIN,
        &[
            "--token-password",
            "tls-or-loopback",
            "--config",
            config.path().to_str().unwrap(),
        ],
    )
    .await;
    let api_key = gateway.provision(&pg.address());
    let file = gateway.write_file("tenants.yaml", TENANTS);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let api_port = gateway.api_port().await;
    let http = Http::new(api_port);
    let admin = gateway.admin_token();

    // Health needs no token; everything else does.
    assert_eq!(http.call("GET", "/healthz", None, None).0, 200);
    assert_eq!(http.call("GET", "/readyz", None, None).0, 200);
    let (status, body) = http.call("GET", "/api/v1/namespaces", None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(json(&body)["code"], "unauthorized");

    // Client credentials → token (RFC 6749 §4.4) → psql through the gateway.
    let created = gateway.cli_ok(&["identity", "client", "create", "worker", "-n", "team-a"]);
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let (client_id, client_secret) = (field("client_id"), field("client_secret"));
    let form = format!(
        "grant_type=client_credentials&client_id={client_id}&client_secret={client_secret}"
    );
    let (status, body) = http.call(
        "POST",
        "/api/v1/token",
        None,
        Some(("application/x-www-form-urlencoded", &form)),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 900);
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let conninfo = gateway.conninfo("worker.team-a", "orders.team-a", &token);
    let (ok, out, err) = psql(&conninfo, "SELECT current_user");
    assert!(ok, "psql with a token failed: {err}");
    assert_eq!(out.trim(), "app_rw");
    // The same identity's token works on the API for its own namespace's... nothing: a
    // workload has no role binding, so team-a is invisible to it.
    assert_eq!(
        http.get("/api/v1/namespaces/team-a/services", &token).0,
        404
    );

    // Token endpoint errors are RFC 6749 §5.2 bodies.
    let wrong =
        format!("grant_type=client_credentials&client_id={client_id}&client_secret=pcs_wrong");
    let (status, body) = http.call(
        "POST",
        "/api/v1/token",
        None,
        Some(("application/x-www-form-urlencoded", &wrong)),
    );
    assert_eq!(
        (status, json(&body)["error"].clone()),
        (401, "invalid_client".into())
    );
    let (status, body) = http.call(
        "POST",
        "/api/v1/token",
        None,
        Some(("application/x-www-form-urlencoded", "grant_type=password")),
    );
    assert_eq!(
        (status, json(&body)["error"].clone()),
        (400, "unsupported_grant_type".into())
    );

    // Refused tokens: 28P01 on the wire, 401 on the API.
    let (admin_a, _) = issue(&gateway, "admin-a", "team-a", "10m");
    let (revoked, jti) = issue(&gateway, "admin-a", "team-a", "10m");
    assert_eq!(http.get("/api/v1/namespaces/team-a", &revoked).0, 200);
    let (status, body) = http.call(
        "DELETE",
        &format!("/api/v1/tokens/{jti}"),
        Some(&admin),
        None,
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(http.get("/api/v1/namespaces/team-a", &revoked).0, 401);
    let (worker_revoked, worker_jti) = issue(&gateway, "worker", "team-a", "10m");
    gateway.cli_ok(&["token", "revoke", &worker_jti]);
    assert_eq!(
        login(&gateway, "worker.team-a", &worker_revoked).await,
        Err("28P01".into())
    );

    let (short, _) = issue(&gateway, "worker", "team-a", "1s");
    let (short_admin, _) = issue(&gateway, "admin-a", "team-a", "1s");
    wait_until("the 1s tokens to expire", WAIT, || {
        let answer = http.get("/api/v1/namespaces/team-a", &short_admin).0;
        async move { answer == 401 }
    })
    .await;
    assert_eq!(
        login(&gateway, "worker.team-a", &short).await,
        Err("28P01".into())
    );

    // Wrongly signed: the signature altered, or signed by another installation's key.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        login(&gateway, "worker.team-a", &tampered).await,
        Err("28P01".into())
    );
    assert_eq!(http.get("/api/v1/namespaces", &tampered).0, 401);
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = {
        let run = |args: &[&str]| {
            let output = std::process::Command::new(BIN)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("POSTERN_STATE_DIR", elsewhere.path())
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        };
        let file = elsewhere.path().join("t.yaml");
        std::fs::write(&file, TENANTS.replace("kind: Namespace\nmetadata: {name: team-b}", "kind: Namespace\nmetadata: {name: team-a}\n---\nkind: Namespace\nmetadata: {name: team-b}")).unwrap();
        run(&["apply", "-f", file.to_str().unwrap()]);
        run(&["token", "issue", "admin-a", "-n", "team-a"])
    };
    assert_eq!(http.get("/api/v1/namespaces", &foreign).0, 401);
    assert_eq!(
        login(&gateway, "admin-a.team-a", &foreign).await,
        Err("28P01".into())
    );

    // Wrong namespace: worker.team-a's token does not log in worker.team-b; nor does a
    // token correctly signed with this gateway's own key whose claims were moved to
    // team-b (made here with the store's key, as an insider could).
    assert_eq!(
        login(&gateway, "worker.team-b", &token).await,
        Err("28P01".into())
    );
    let moved = {
        let keys = postern_state::KeySettings {
            inline: None,
            credentials_directory: None,
            key_file: gateway.state_dir().join("master.key"),
        };
        let store =
            std::sync::Arc::new(postern_state::Store::open(gateway.state_dir(), &keys).unwrap());
        let settings = postern_api::TokenSettings {
            default_ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(3600),
            rotation: Duration::from_secs(3600),
        };
        let authority = postern_api::TokenAuthority::new(store, settings).unwrap();
        let mut claims = authority.verify(&token).unwrap();
        claims.ns = "team-b".into();
        authority.sign(&claims).unwrap().expose().to_owned()
    };
    assert_eq!(
        login(&gateway, "worker.team-b", &moved).await,
        Err("28P01".into())
    );
    assert_eq!(http.get("/api/v1/namespaces", &moved).0, 401);
    // And the identity still logs in with its own token, while API-key identities keep
    // using SCRAM.
    assert_eq!(login(&gateway, "worker.team-a", &token).await, Ok(()));
    assert_eq!(login(&gateway, "alice.team-a", &api_key).await, Ok(()));
    // Other tenants' services need a namespace-connect binding: bob.team-b sees none.
    let bob_key = gateway.create_key("bob", "team-b");
    assert_eq!(
        login(&gateway, "bob.team-b", &bob_key).await,
        Err("3D000".into())
    );
    let binding = r#"{"metadata": {"name": "bob-connects"}, "spec": {"role": "namespace-connect", "subject": {"identity": "bob.team-b"}}}"#;
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/rolebindings",
        &admin_a,
        binding,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(login(&gateway, "bob.team-b", &bob_key).await, Ok(()));

    // A namespace-admin of team-a: team-b is invisible, and it cannot widen itself.
    for path in [
        "/api/v1/namespaces/team-b",
        "/api/v1/namespaces/team-b/identities",
        "/api/v1/namespaces/team-b/identities/worker",
        "/api/v1/namespaces/team-b/identities/no-such-name",
        "/api/v1/namespaces/team-b/secrets",
    ] {
        let (status, body) = http.get(path, &admin_a);
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = http.send_json(
        "PUT",
        "/api/v1/namespaces/team-b/secrets/stolen",
        &admin_a,
        r#"{"value": "x"}"#,
    );
    assert_eq!(status, 404);
    let (_, body) = http.get("/api/v1/namespaces", &admin_a);
    let names: Vec<String> = json(&body)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["team-a"]);
    let widen = r#"{"metadata": {"name": "me-everything"}, "spec": {"role": "account-admin", "subject": {"identity": "admin-a"}}}"#;
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/rolebindings",
        &admin_a,
        widen,
    );
    assert_eq!(status, 403, "{body}");
    let elsewhere_admin = r#"{"metadata": {"name": "me-b"}, "spec": {"role": "namespace-admin", "subject": {"identity": "admin-a.team-a"}}}"#;
    let (status, _) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-b/rolebindings",
        &admin_a,
        elsewhere_admin,
    );
    assert_eq!(status, 404);
    let (status, _) = http.send_json(
        "POST",
        "/api/v1/namespaces",
        &admin_a,
        r#"{"metadata": {"name": "team-c"}}"#,
    );
    assert_eq!(status, 403);
    // Nor may it take over an identity of its namespace that holds more than it could
    // grant (by its groups or login certificate), or create one that bindings await.
    let (status, body) = http.get("/api/v1/namespaces/team-a/identities/boss", &admin_a);
    assert_eq!(status, 200, "{body}");
    let mut boss = json(&body);
    boss["spec"]["clientCertificate"] = serde_json::json!({"commonName": "admin-a-laptop"});
    let (status, body) = http.send_json(
        "PUT",
        "/api/v1/namespaces/team-a/identities/boss",
        &admin_a,
        &boss.to_string(),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        http.call(
            "DELETE",
            "/api/v1/namespaces/team-a/identities/boss",
            Some(&admin_a),
            None
        )
        .0,
        403
    );
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/identities",
        &admin_a,
        r#"{"metadata": {"name": "future"}}"#,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/rolebindings",
        &admin_a,
        r#"{"metadata": {"name": "group-wide"}, "spec": {"role": "account-reader", "subject": {"group": "batch"}}}"#,
    );
    assert_eq!(status, 422, "account roles go to identities only: {body}");
    // An identity deleted and made again does not inherit the old one's tokens.
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/identities",
        &admin_a,
        r#"{"metadata": {"name": "temp"}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (temp_token, _) = issue(&gateway, "temp", "team-a", "10m");
    assert_eq!(http.get("/api/v1/namespaces", &temp_token).0, 200);
    assert_eq!(
        http.call(
            "DELETE",
            "/api/v1/namespaces/team-a/identities/temp",
            Some(&admin_a),
            None
        )
        .0,
        204
    );
    http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/identities",
        &admin_a,
        r#"{"metadata": {"name": "temp"}}"#,
    );
    assert_eq!(http.get("/api/v1/namespaces", &temp_token).0, 401);

    // Within team-a it may work: a secret, write-only.
    let (status, body) = http.send_json(
        "PUT",
        "/api/v1/namespaces/team-a/secrets/api-made",
        &admin_a,
        r#"{"value": "api-Secret-Value-777"}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert!(!body.contains("api-Secret-Value-777"));
    let create = r#"{"name": "api-made", "value": "other"}"#;
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/secrets",
        &admin_a,
        create,
    );
    assert_eq!(status, 409, "creating an existing secret: {body}");

    // A namespace-reader reads and cannot write.
    let (reader, _) = issue(&gateway, "reader-a", "team-a", "10m");
    let (status, body) = http.get("/api/v1/namespaces/team-a/services/orders", &reader);
    assert_eq!(status, 200, "{body}");
    let service = json(&body);
    assert_eq!(service["spec"]["upstream"]["user"], "app_rw");
    let (status, body) = http.send_json(
        "PUT",
        "/api/v1/namespaces/team-a/services/orders",
        &reader,
        &service.to_string(),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        http.call(
            "DELETE",
            "/api/v1/namespaces/team-a/identities/worker",
            Some(&reader),
            None
        )
        .0,
        403
    );
    assert_eq!(
        http.send_json(
            "PUT",
            "/api/v1/namespaces/team-a/secrets/x",
            &reader,
            r#"{"value": "v"}"#
        )
        .0,
        403
    );

    // Plugin components go up by their sha256, checked against the body; only
    // WebAssembly components are taken, and only from the namespace's writers.
    let sha256 = |body: &str| -> String {
        ring::digest::digest(&ring::digest::SHA256, body.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let upload = |token: &str, sha: &str, body: &str| {
        http.call(
            "PUT",
            &format!("/api/v1/namespaces/team-a/plugincomponents/{sha}"),
            Some(token),
            Some(("application/octet-stream", body)),
        )
    };
    let component = "\0asm\r\0\u{1}\0(not really a component past its preamble)";
    let core_module = "\0asm\u{1}\0\0\0";
    let (status, body) = upload(&admin_a, &sha256(core_module), core_module);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("core WebAssembly module"), "{body}");
    let (status, body) = upload(&admin_a, &sha256("plain text"), "plain text");
    assert_eq!(status, 422, "{body}");
    let (status, body) = upload(&admin_a, &sha256(core_module), component);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&sha256(component)), "{body}");
    assert_eq!(upload(&reader, &sha256(component), component).0, 403);
    let (status, body) = upload(&admin_a, &sha256(component), component);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["size"], component.len());
    // A Plugin names a stored component, or is refused.
    let plugin = |sha: &str| {
        format!(
            r#"{{"metadata": {{"name": "hook"}}, "spec": {{"type": "policy", "source": {{"sha256": "{sha}"}}}}}}"#
        )
    };
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/plugins",
        &admin_a,
        &plugin(&"0".repeat(64)),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("plugincomponents"), "{body}");
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/plugins",
        &admin_a,
        &plugin(&sha256(component)),
    );
    assert_eq!(status, 201, "{body}");

    // Optimistic concurrency: two writers from one read; one wins, one gets 409.
    let mut labelled = service.clone();
    labelled["metadata"]["labels"] = serde_json::json!({"tier": "gold"});
    let mut other = service.clone();
    other["metadata"]["labels"] = serde_json::json!({"tier": "silver"});
    let (a, b) = std::thread::scope(|scope| {
        let one = scope.spawn(|| {
            http.send_json(
                "PUT",
                "/api/v1/namespaces/team-a/services/orders",
                &admin_a,
                &labelled.to_string(),
            )
        });
        let two = scope.spawn(|| {
            http.send_json(
                "PUT",
                "/api/v1/namespaces/team-a/services/orders",
                &admin_a,
                &other.to_string(),
            )
        });
        (one.join().unwrap(), two.join().unwrap())
    });
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (status, body) = http.send_json(
        "PUT",
        "/api/v1/namespaces/team-a/services/orders",
        &admin_a,
        &labelled.to_string(),
    );
    assert_eq!(status, 409, "a stale generation is refused: {body}");
    // Label selectors and pagination.
    let (_, body) = http.get(
        "/api/v1/namespaces/team-a/services?labelSelector=tier",
        &admin_a,
    );
    assert_eq!(json(&body)["items"].as_array().unwrap().len(), 1);
    let (_, body) = http.get("/api/v1/namespaces/team-a/identities?limit=2", &admin_a);
    let first = json(&body);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["continue"].as_str().unwrap();
    let (_, body) = http.get(
        &format!("/api/v1/namespaces/team-a/identities?limit=2&continue={cursor}"),
        &admin_a,
    );
    let second = json(&body);
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert_ne!(first["items"][0], second["items"][0]);

    // Validation as in apply, malformed JSON with its position, and the body limit.
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/services",
        &admin_a,
        r#"{"metadata": {"name": "broken"}, "spec": {"target": "nowhere", "database": "d", "upstream": {"mode": "static", "user": "u", "passwordSecret": "p"}}}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("Target team-a/nowhere does not exist"),
        "{body}"
    );
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/identities",
        &admin_a,
        "{\"metadata\": {\"name\": \"x\"},\n \"spec\": {,}}",
    );
    assert_eq!(status, 400);
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("line 2 column"),
        "{body}"
    );
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/identities",
        &admin_a,
        &format!(
            "{{\"metadata\": {{\"name\": \"{}\"}}}}",
            "x".repeat(32 << 10)
        ),
    );
    assert_eq!(status, 413, "{body}");

    // The CLI acts on a gateway through the API, under the same role bindings.
    let token_file = gateway.write_file("admin-a.token", &admin_a);
    let server = format!("http://127.0.0.1:{api_port}");
    let remote = |args: &[&str]| {
        let mut full = vec![
            "--server",
            server.as_str(),
            "--token-file",
            token_file.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        gateway.cli(&full)
    };
    let output = remote(&["get", "services", "-n", "team-a", "-o", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&output.stdout))["metadata"]["name"],
        "orders"
    );
    let output = remote(&["get", "identities", "-n", "team-b"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("404"));
    let remote_file = gateway.write_file(
        "remote.yaml",
        "kind: Identity\nmetadata: {name: remote-made, namespace: team-a}\nspec: {groups: [x]}\n",
    );
    let output = remote(&["apply", "-f", remote_file.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("+ Identity team-a/remote-made (create)")
    );
    let output = remote(&["apply", "-f", remote_file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("(unchanged)"));
    let output = remote(&[
        "secret",
        "set",
        "remote-secret",
        "-n",
        "team-a",
        "--value",
        "remote-Value-9",
    ]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("created"));
    let output = remote(&["get", "secrets", "-n", "team-a", "-o", "json"]);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("remote-Value-9"));

    // Metrics need an account-level reader; they count what happened.
    assert_eq!(http.get("/metrics", &admin_a).0, 403);
    let (status, metrics) = http.get("/metrics", &admin);
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(value("postern_sessions_started_total") >= 3.0);
    assert!(value("postern_auth_failures_total") >= 5.0);

    // The JWKS publishes the key that verifies tokens.
    let (_, jwks) = http.call("GET", "/.well-known/jwks.json", None, None);
    assert_eq!(json(&jwks)["keys"][0]["kty"], "OKP");

    // No answer, and not the gateway's log, ever held a secret.
    let (_, body) = http.get("/api/v1/namespaces/team-a/secrets/app-rw-password", &admin);
    assert_eq!(json(&body)["metadata"]["name"], "app-rw-password");
    let (_, body) = http.get(
        "/api/v1/namespaces/team-a/identities/worker/clients",
        &admin,
    );
    assert_eq!(json(&body)["items"][0]["clientId"], client_id.as_str());
    let log = gateway.logs();
    for secret in [
        APP_PASSWORD,
        "api-Secret-Value-777",
        client_secret.as_str(),
        api_key.as_str(),
        token.as_str(),
        admin.as_str(),
    ] {
        for body in http.seen() {
            if secret != token.as_str() {
                assert!(
                    !body.contains(secret),
                    "an API answer holds a secret: {body}"
                );
            }
        }
        assert!(!log.contains(secret), "the gateway log holds a secret");
    }
}

/// The status line and headers of a GET (lower-cased), read over a raw connection.
async fn response_head(port: u16, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the answer within the wait")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

/// The endpoints the web UI stands on, by role: whoami, an identity's API keys, the
/// access log (only the namespaces a caller may read), its export, and the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_endpoints_answer_by_role() {
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    gateway.provision(&pg.address());
    let file = gateway.write_file("tenants.yaml", TENANTS);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let http = Http::new(gateway.api_port().await);
    let (admin_a, _) = issue(&gateway, "admin-a", "team-a", "10m");
    let (reader_a, _) = issue(&gateway, "reader-a", "team-a", "10m");
    let (worker_b, _) = issue(&gateway, "worker", "team-b", "10m");

    // whoami: who, until when, and what in which namespace.
    let me = json(&http.get("/api/v1/whoami", &admin_a).1);
    assert_eq!(me["name"], "admin-a.team-a");
    assert_eq!(me["accountAdmin"], false);
    assert!(me["expiresAt"].as_str().unwrap().ends_with('Z'), "{me}");
    let namespaces = me["namespaces"].as_array().unwrap();
    assert_eq!(namespaces.len(), 1, "{me}");
    assert_eq!(namespaces[0]["name"], "team-a");
    assert_eq!(namespaces[0]["write"], true);
    let reader = json(&http.get("/api/v1/whoami", &reader_a).1);
    assert_eq!(reader["namespaces"][0]["write"], false, "{reader}");
    let admin = json(&http.get("/api/v1/whoami", &gateway.admin_token()).1);
    assert_eq!(admin["name"], "bootstrap-admin");
    assert_eq!(admin["expiresAt"], Value::Null);

    // API keys: a namespace admin makes one (shown once), it logs in, revoked it does not.
    let keys = "/api/v1/namespaces/team-a/identities/worker/keys";
    let (status, body) = http.send_json("POST", keys, &reader_a, "{}");
    assert_eq!(status, 403, "{body}");
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-b/identities/worker/keys",
        &admin_a,
        "{}",
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = http.send_json("POST", keys, &admin_a, "{}");
    assert_eq!(status, 201, "{body}");
    let created = json(&body);
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let listed = http.get(keys, &reader_a).1;
    assert!(listed.contains(&id) && !listed.contains(&key), "{listed}");
    login(&gateway, "worker.team-a", &key).await.unwrap();
    let conninfo = gateway.conninfo("worker.team-a", "orders.team-a", &key);
    let (ok, out, err) = psql(&conninfo, "SELECT 'console-check', count(*) FROM items");
    assert!(ok, "{out}{err}");

    // A key of an identity bound further than the caller would be a way up: refused.
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/identities/boss/keys",
        &admin_a,
        "{}",
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces/team-a/identities/boss/clients",
        &admin_a,
        "{}",
    );
    assert_eq!(status, 403, "{body}");
    // Nor may it take one away from such an identity.
    let boss_keys = "/api/v1/namespaces/team-a/identities/boss/keys";
    let (status, body) = http.send_json("POST", boss_keys, &gateway.admin_token(), "{}");
    assert_eq!(status, 201, "{body}");
    let boss_key = json(&body)["id"].as_str().unwrap().to_owned();
    let (status, body) = http.call(
        "DELETE",
        &format!("{boss_keys}/{boss_key}"),
        Some(&admin_a),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(http.get(boss_keys, &admin_a).1.contains(&boss_key));

    // The access log: team-a's reader sees the session, team-b's worker does not.
    wait_until("the statement in the access log", WAIT, || async {
        http.get("/api/v1/logs?q=console-check", &reader_a)
            .1
            .contains("console-check")
    })
    .await;
    let page = json(
        &http
            .get("/api/v1/logs?q=CONSOLE-CHECK&type=QUERY", &reader_a)
            .1,
    );
    let event = &page["items"][0];
    assert_eq!(event["identity"]["name"], "worker", "{page}");
    assert!(event["id"].as_i64().is_some(), "{page}");
    // Where a stream picks up from: at least the newest event of the page.
    assert!(page["latest"].as_i64() >= event["id"].as_i64(), "{page}");
    let session = event["session_id"].as_str().unwrap();
    let whole = json(
        &http
            .get(&format!("/api/v1/logs?session={session}"), &reader_a)
            .1,
    );
    let types: Vec<&str> = whole["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"SESSION_START") && types.contains(&"QUERY"),
        "{types:?}"
    );
    let hidden = json(&http.get("/api/v1/logs?q=console-check", &worker_b).1);
    assert_eq!(hidden["items"].as_array().unwrap().len(), 0, "{hidden}");
    let (status, body) = http.get("/api/v1/logs?since=yesterday", &reader_a);
    assert_eq!(status, 400, "{body}");
    let (status, csv) = http.get("/api/v1/logs/export?format=csv&q=console-check", &reader_a);
    assert_eq!(status, 200, "{csv}");
    let mut lines = csv.lines();
    assert!(
        lines.next().unwrap().starts_with("id,time,type,identity"),
        "{csv}"
    );
    assert!(lines.any(|l| l.contains("console-check")), "{csv}");
    // Whether the export was cut at its limit is said in a header (not here: one event).
    let head = response_head(
        gateway.api_port().await,
        "/api/v1/logs/export?format=ndjson&q=console-check",
        &reader_a,
    )
    .await;
    assert!(head.contains("x-postern-truncated: false"), "{head}");
    assert!(
        head.contains("attachment; filename=\"postern-access-log.ndjson\""),
        "{head}"
    );

    // Revoked, the key logs in no more.
    let (status, body) = http.call("DELETE", &format!("{keys}/{id}"), Some(&admin_a), None);
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        login(&gateway, "worker.team-a", &key).await.unwrap_err(),
        "28P01"
    );

    // The simulator: who may connect where, and which rule decides.
    let explain = |token: &str, body: &str| {
        let (status, answer) = http.send_json("POST", "/api/v1/explain", token, body);
        (status, json(&answer))
    };
    let (status, answer) = explain(
        &admin_a,
        r#"{"identity": "worker.team-a", "service": "orders.team-a", "statement": "DELETE FROM items"}"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["connect"]["allowed"], true, "{answer}");
    assert_eq!(answer["connect"]["via"], "home-namespace", "{answer}");
    assert_eq!(answer["route"]["user"], "app_rw", "{answer}");
    assert_eq!(answer["statement"]["allowed"], true, "{answer}");
    let (_, answer) = explain(
        &gateway.admin_token(),
        r#"{"identity": "worker.team-b", "service": "orders.team-a"}"#,
    );
    assert_eq!(answer["connect"]["allowed"], false, "{answer}");
    assert!(
        answer["connect"]["reason"]
            .as_str()
            .unwrap()
            .contains("worker.team-b"),
        "{answer}"
    );
    let (status, answer) = explain(
        &admin_a,
        r#"{"identity": "worker.team-b", "service": "orders.team-a"}"#,
    );
    assert_eq!(status, 404, "{answer}");
    // The CLI asks the same question and exits non-zero on a refusal.
    let output = gateway.cli(&["explain", "worker.team-b", "orders.team-a"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("connect:   refused"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The access log's stream: it opens at once, carries new events that pass its filter as
/// they are written, and ends when the gateway shuts down (graceful shutdown would
/// otherwise wait on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stream_follows_new_events_and_ends_with_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pg = shared_pg().await;
    let gateway = Gateway::start(BIN, &[]).await;
    let key = gateway.provision(&pg.address());
    let port = gateway.api_port().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET /api/v1/logs/stream?type=QUERY HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {}\r\n\r\n",
        gateway.admin_token()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    // Reads until `wanted` is in what arrived (or the stream ends, for `None`).
    async fn read_until(
        stream: &mut tokio::net::TcpStream,
        seen: &mut Vec<u8>,
        wanted: Option<&str>,
    ) {
        let mut buffer = [0u8; 8192];
        let found = |seen: &[u8]| wanted.is_some_and(|w| String::from_utf8_lossy(seen).contains(w));
        while !found(seen) {
            let n = tokio::time::timeout(WAIT, stream.read(&mut buffer))
                .await
                .unwrap_or_else(|_| {
                    panic!("waiting for {wanted:?}: {}", String::from_utf8_lossy(seen))
                })
                .unwrap();
            if n == 0 {
                assert!(
                    wanted.is_none(),
                    "the stream ended: {}",
                    String::from_utf8_lossy(seen)
                );
                return;
            }
            seen.extend_from_slice(&buffer[..n]);
        }
    }
    read_until(&mut stream, &mut seen, Some("application/x-ndjson")).await;
    read_until(&mut stream, &mut seen, Some("{\"cursor\":")).await;
    let conninfo = gateway.conninfo("alice.team-a", "orders.team-a", &key);
    let (ok, out, err) = psql(&conninfo, "SELECT 'stream-check'");
    assert!(ok, "{out}{err}");
    read_until(&mut stream, &mut seen, Some("stream-check")).await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        !text.contains("SESSION_START"),
        "the type filter let through: {text}"
    );
    gateway.terminate();
    read_until(&mut stream, &mut seen, None).await;
}
