//! End-to-end tests of the grant reconciler and Service mode `intents`: real PostgreSQL
//! 15, the real `postern` binary (CLI and server) and tokio-postgres through the gateway.
//! Each test uses its own namespace and database on the binary's shared server.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use postern_testkit::{shared_pg, sqlstate, wait_until, Gateway, Http, LocalPg};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// A gateway whose timer stays off unless a test asks and that does not reconcile on
/// changes, so only the test's own commands reconcile.
async fn gateway(interval_secs: &str) -> Gateway {
    Gateway::start(
        BIN,
        &[
            "--reconcile-interval-secs",
            interval_secs,
            "--reconcile-on-change",
            "false",
        ],
    )
    .await
}

/// Creates database `db` with `public.example` (serial id) and `public.other`, owned by
/// the superuser, which is also the target's admin.
async fn create_database(pg: &LocalPg, db: &str) {
    let admin = pg.connect("postgres").await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let client = pg.connect(db).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE public.example (id serial PRIMARY KEY, v text);
             INSERT INTO public.example (v) VALUES ('first');
             CREATE TABLE public.other (id int);",
        )
        .await
        .unwrap();
}

/// Namespace `ns` with a target (admin = the superuser), a Service `shop` in mode
/// intents on `db`, and the identities named; returns an API key per identity.
fn provision(
    gateway: &Gateway,
    pg: &LocalPg,
    ns: &str,
    db: &str,
    identities: &[&str],
) -> Vec<String> {
    let file = gateway.write_file(
        "ns.yaml",
        &format!("kind: Namespace\nmetadata: {{name: {ns}}}\n"),
    );
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let output = gateway.cli_with_input(
        &["secret", "set", "pg-admin", "-n", ns],
        &format!("{}\n", pg.superuser_password()),
    );
    assert!(output.status.success());
    let mut docs = format!(
        "kind: Target\nmetadata: {{name: main-pg, namespace: {ns}}}\n\
         spec: {{address: '{}', sslMode: disable, admin: {{user: postgres, passwordSecret: pg-admin}}}}\n---\n\
         kind: Service\nmetadata: {{name: shop, namespace: {ns}}}\n\
         spec: {{target: main-pg, database: {db}, upstream: {{mode: intents}}}}\n",
        pg.address()
    );
    for identity in identities {
        docs.push_str(&format!(
            "---\nkind: Identity\nmetadata: {{name: {identity}, namespace: {ns}}}\nspec: {{type: workload}}\n"
        ));
    }
    let file = gateway.write_file("base.yaml", &docs);
    gateway.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    identities
        .iter()
        .map(|identity| gateway.create_key(identity, ns))
        .collect()
}

/// Applies one Intents resource; returns the CLI's stderr (the reconcile summary).
fn apply_intents(gateway: &Gateway, ns: &str, name: &str, identity: &str, access: &str) -> String {
    let file = gateway.write_file(
        &format!("{name}.yaml"),
        &format!(
            "kind: Intents\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  identity: {identity}\n  access:\n{access}"
        ),
    );
    let output = gateway.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The privileges `role` holds on `table`, sorted, comma-separated ("" for none).
async fn table_privileges(pg: &LocalPg, db: &str, role: &str, table: &str) -> String {
    let client = pg.connect(db).await.unwrap();
    let row = client
        .query_one(
            "SELECT coalesce(string_agg(a.privilege_type, ',' ORDER BY a.privilege_type), '')
             FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = $1::text::regclass AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $2)",
            &[&table, &role],
        )
        .await
        .unwrap();
    row.get(0)
}

async fn role_exists(pg: &LocalPg, role: &str) -> bool {
    let client = pg.connect("postgres").await.unwrap();
    client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .is_some()
}

async fn error_code_of(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    client
        .batch_execute(sql)
        .await
        .err()
        .as_ref()
        .and_then(sqlstate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_grant_exactly_what_is_declared_and_changes_apply_without_reconnecting() {
    let pg = shared_pg().await;
    let (ns, db) = ("jit-a", "jit_a");
    create_database(pg, db).await;
    // A role the gateway does not manage, with grants of its own: never touched.
    let superuser = pg.connect(db).await.unwrap();
    superuser
        .batch_execute(
            "CREATE ROLE bystander_a LOGIN;
             GRANT SELECT, UPDATE ON public.example TO bystander_a;
             GRANT pg_read_all_data TO bystander_a;",
        )
        .await
        .unwrap();
    let gateway = gateway("0").await;
    let keys = provision(&gateway, pg, ns, db, &["server"]);
    let (user, dbname) = ("server.jit-a", "shop.jit-a");
    let role = "pn_jit-a_server";

    // Before any Intents the identity is refused at connect.
    let err = gateway.connect(user, dbname, &keys[0]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");

    let summary = apply_intents(
        &gateway,
        ns,
        "server-needs",
        "server",
        "  - {service: shop, table: public.example, operations: [SELECT, INSERT]}\n",
    );
    assert!(summary.contains("0 problems"), "{summary}");
    let client = gateway.connect(user, dbname, &keys[0]).await.unwrap();
    let who: String = client
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, role);
    client
        .batch_execute("SELECT * FROM public.example")
        .await
        .unwrap();
    // INSERT works, including nextval() on the serial column's sequence.
    client
        .batch_execute("INSERT INTO public.example (v) VALUES ('through the gateway')")
        .await
        .unwrap();
    for denied in [
        "UPDATE public.example SET v = 'x'",
        "DELETE FROM public.example",
        "SELECT * FROM public.other",
        "CREATE TABLE public.mine (id int)",
    ] {
        assert_eq!(
            error_code_of(&client, denied).await.as_deref(),
            Some("42501"),
            "{denied}"
        );
    }
    assert_eq!(
        table_privileges(pg, db, role, "public.example").await,
        "INSERT,SELECT"
    );

    // A second run right after has nothing to do.
    let output = gateway.cli(&["reconcile"]);
    assert!(output.status.success());
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("ran 0 statements"));

    // SELECT only: the open session loses INSERT at once.
    apply_intents(
        &gateway,
        ns,
        "server-needs",
        "server",
        "  - {service: shop, table: public.example, operations: [SELECT]}\n",
    );
    assert_eq!(
        error_code_of(&client, "INSERT INTO public.example (v) VALUES ('no')")
            .await
            .as_deref(),
        Some("42501")
    );
    client
        .batch_execute("SELECT * FROM public.example")
        .await
        .unwrap();

    // Drift by hand: a privilege added, one taken away, a role membership added.
    superuser
        .batch_execute(&format!(
            "GRANT DELETE ON public.example TO \"{role}\";
             REVOKE SELECT ON public.example FROM \"{role}\";
             GRANT pg_read_all_data TO \"{role}\";"
        ))
        .await
        .unwrap();
    let dry = gateway.cli_ok(&["reconcile", "--dry-run"]);
    assert!(
        dry.contains(&format!("REVOKE \"pg_read_all_data\" FROM \"{role}\";"))
            && dry.contains(&format!(
                "REVOKE DELETE ON TABLE \"public\".\"example\" FROM \"{role}\" CASCADE;"
            ))
            && dry.contains(&format!(
                "GRANT SELECT ON TABLE \"public\".\"example\" TO \"{role}\";"
            )),
        "{dry}"
    );
    assert_eq!(
        table_privileges(pg, db, role, "public.example").await,
        "DELETE",
        "--dry-run changed nothing"
    );
    gateway.cli_ok(&["reconcile"]);
    assert_eq!(
        table_privileges(pg, db, role, "public.example").await,
        "SELECT"
    );
    let member: i64 = superuser
        .query_one(
            "SELECT count(*) FROM pg_auth_members WHERE member = (SELECT oid FROM pg_roles WHERE rolname = $1)",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(member, 0, "hand-granted membership revoked");

    // The bystander kept everything it had.
    assert_eq!(
        table_privileges(pg, db, "bystander_a", "public.example").await,
        "SELECT,UPDATE"
    );
    let memberships: i64 = superuser
        .query_one(
            "SELECT count(*) FROM pg_auth_members WHERE member = 'bystander_a'::regrole",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(memberships, 1);

    // Rotation sets a new password upstream; the gateway keeps connecting with it.
    let verifier = |client: tokio_postgres::Client| async move {
        let row = client
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&role],
            )
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    let before = verifier(pg.connect(db).await.unwrap()).await;
    let set_admin_password = |password: &str| {
        let output = gateway.cli_with_input(
            &["secret", "set", "pg-admin", "-n", ns],
            &format!("{password}\n"),
        );
        assert!(output.status.success());
    };

    // A rotation whose reconcile fails (the target's admin password is wrong) leaves the
    // old password upstream; new logins (this session holds a fresh one) go on with it.
    set_admin_password("not-the-admin-password");
    let failed = gateway.cli(&["identity", "rotate-password", "server", "-n", ns]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("warning"), "{stderr}");
    assert_eq!(verifier(pg.connect(db).await.unwrap()).await, before);
    let during = gateway.connect(user, dbname, &keys[0]).await.unwrap();
    during
        .batch_execute("SELECT * FROM public.example")
        .await
        .unwrap();
    set_admin_password(pg.superuser_password());

    let rotated = gateway.cli(&["identity", "rotate-password", "server", "-n", ns]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert_ne!(verifier(pg.connect(db).await.unwrap()).await, before);
    let again = gateway.connect(user, dbname, &keys[0]).await.unwrap();
    again
        .batch_execute("SELECT * FROM public.example")
        .await
        .unwrap();

    // The status says applied; no password anywhere in what the CLI printed.
    let status = gateway.cli_ok(&["get", "intents", "server-needs", "-n", ns, "-o", "yaml"]);
    assert!(status.contains("state: applied"), "{status}");
    assert!(!dry.contains("SCRAM-SHA-256$") && !status.contains("SCRAM-SHA-256$"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_intents_and_identities_cleans_up_their_roles() {
    let pg = shared_pg().await;
    let (ns, db) = ("jit-b", "jit_b");
    create_database(pg, db).await;
    let gateway = gateway("0").await;
    // A schema the admin owns: "all tables" intents also set default privileges there.
    let superuser = pg.connect(db).await.unwrap();
    superuser.batch_execute("CREATE SCHEMA app").await.unwrap();
    let keys = provision(&gateway, pg, ns, db, &["reader", "worker"]);
    apply_intents(
        &gateway,
        ns,
        "reader-needs",
        "reader",
        "  - {service: shop, table: 'public.*'}\n",
    );
    apply_intents(
        &gateway,
        ns,
        "worker-needs",
        "worker",
        "  - {service: shop}\n",
    );
    let (reader, worker) = ("pn_jit-b_reader", "pn_jit-b_worker");
    assert_eq!(
        table_privileges(pg, db, reader, "public.other").await,
        "DELETE,INSERT,REFERENCES,SELECT,TRIGGER,TRUNCATE,UPDATE"
    );

    // "All tables" covers a table created later (`public` belongs to pg_database_owner,
    // not the admin, so no default privileges: the next reconcile grants it).
    let superuser = pg.connect(db).await.unwrap();
    superuser
        .batch_execute("CREATE TABLE public.later (id int)")
        .await
        .unwrap();
    gateway.cli_ok(&["reconcile"]);
    assert_eq!(
        table_privileges(pg, db, worker, "public.later").await,
        "DELETE,INSERT,REFERENCES,SELECT,TRIGGER,TRUNCATE,UPDATE"
    );

    // The worker's role owns a table and has a session open through the gateway.
    superuser
        .batch_execute(&format!("CREATE TABLE public.worker_owned (id int); ALTER TABLE public.worker_owned OWNER TO \"{worker}\""))
        .await
        .unwrap();
    let session = gateway
        .connect("worker.jit-b", "shop.jit-b", &keys[1])
        .await
        .unwrap();
    session.batch_execute("SELECT 1").await.unwrap();

    // Deleting the reader's Intents revokes everything it had and drops its role.
    gateway.cli_ok(&["delete", "intents", "reader-needs", "-n", ns]);
    assert!(!role_exists(pg, reader).await);
    assert_eq!(table_privileges(pg, db, reader, "public.example").await, "");

    // Deleting the worker Identity ends its session, hands its table to the admin and
    // drops the role.
    let output = gateway.cli(&["delete", "identity", "worker", "-n", ns]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!role_exists(pg, worker).await);
    assert!(
        session.batch_execute("SELECT 1").await.is_err(),
        "session ended"
    );
    let owner: String = superuser
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'worker_owned'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "postgres");
    // The Intents left behind reports why it does nothing.
    let status = gateway.cli_ok(&["get", "intents", "worker-needs", "-n", ns]);
    assert!(
        status.contains("Identity jit-b/worker does not exist"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_stay_with_their_intents_and_the_timer_corrects_drift() {
    let pg = shared_pg().await;
    let (ns, db) = ("jit-c", "jit_c");
    create_database(pg, db).await;
    // Somebody already has the role name an identity would get: it is not ours to manage.
    pg.connect("postgres")
        .await
        .unwrap()
        .batch_execute("CREATE ROLE \"pn_jit-c_squatter\" LOGIN")
        .await
        .unwrap();
    let gateway = gateway("1").await;
    provision(&gateway, pg, ns, db, &["app", "squatter"]);
    let summary = apply_intents(
        &gateway,
        ns,
        "app-needs",
        "app",
        "  - {service: shop, table: public.missing}\n  - {service: shop, table: public.other, operations: [SELECT]}\n  - {target: main-pg, database: aaa_missing}\n",
    );
    assert!(
        summary.contains("table public.missing does not exist in database jit_c"),
        "{summary}"
    );
    assert!(
        summary.contains("database \"aaa_missing\" does not exist"),
        "{summary}"
    );
    apply_intents(
        &gateway,
        ns,
        "squatter-needs",
        "squatter",
        "  - {service: shop, table: public.other}\n",
    );

    // The missing table is reported; the entry beside it still applied.
    let role = "pn_jit-c_app";
    assert_eq!(
        table_privileges(pg, db, role, "public.other").await,
        "SELECT"
    );
    let status = gateway.cli_ok(&["get", "intents", "-n", ns]);
    assert!(
        status.contains("error: table public.missing does not exist"),
        "{status}"
    );
    assert!(status.contains("not managed by this gateway"), "{status}");
    assert_eq!(
        table_privileges(pg, db, "pn_jit-c_squatter", "public.other").await,
        "",
        "a role the gateway did not create is never granted anything"
    );
    let output = gateway.cli(&["reconcile"]);
    assert!(
        !output.status.success(),
        "problems make the exit status non-zero"
    );

    // The server's timer (1 s here) takes back a privilege granted by hand.
    pg.connect(db)
        .await
        .unwrap()
        .batch_execute(&format!("GRANT UPDATE ON public.other TO \"{role}\""))
        .await
        .unwrap();
    wait_until(
        "the timer to revoke the drift",
        Duration::from_secs(20),
        || async { table_privileges(pg, db, role, "public.other").await == "SELECT" },
    )
    .await;
}

/// Roles upstream whose names start with `prefix`, sorted.
async fn roles_starting(pg: &LocalPg, prefix: &str) -> Vec<String> {
    let client = pg.connect("postgres").await.unwrap();
    client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
            &[&prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_killed_midway_is_finished_by_the_next_run_with_no_orphan_role() {
    let pg = shared_pg().await;
    let (ns, db) = ("jit-k", "jit_k");
    create_database(pg, db).await;
    let gateway = gateway("0").await;
    provision(&gateway, pg, ns, db, &["first", "second"]);
    let docs = ["first", "second"]
        .map(|who| {
            format!(
                "kind: Intents\nmetadata: {{name: {who}-needs, namespace: {ns}}}\n\
                 spec:\n  identity: {who}\n  access:\n  - {{service: shop, table: public.example, operations: [SELECT]}}\n"
            )
        })
        .join("---\n");
    let file = gateway.write_file("intents.yaml", &docs);

    // Another session is creating the second role's name: the reconcile waits on it,
    // midway through its work, and is killed there.
    let blocker = pg.connect("postgres").await.unwrap();
    blocker
        .batch_execute("BEGIN; CREATE ROLE \"pn_jit-k_second\"")
        .await
        .unwrap();
    let mut apply = gateway
        .command()
        .args(["apply", "-f", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin = pg.connect("postgres").await.unwrap();
    wait_until(
        "the reconcile to wait on the lock",
        Duration::from_secs(30),
        || async {
            let row = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE 'CREATE ROLE%'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0) == 1
        },
    )
    .await;
    apply.kill().unwrap();
    apply.wait().unwrap();
    blocker.batch_execute("ROLLBACK").await.unwrap();

    // The next run finishes the work: both roles, their grants, nothing else.
    gateway.cli_ok(&["reconcile"]);
    assert_eq!(
        roles_starting(pg, "pn_jit-k_").await,
        ["pn_jit-k_first", "pn_jit-k_second"]
    );
    for role in ["pn_jit-k_first", "pn_jit-k_second"] {
        assert_eq!(
            table_privileges(pg, db, role, "public.example").await,
            "SELECT"
        );
    }
    let status = gateway.cli_ok(&["get", "intents", "-n", ns]);
    assert_eq!(status.matches(" applied").count(), 2, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_written_through_the_api_are_reconciled_by_the_running_gateway() {
    let pg = shared_pg().await;
    let (ns, db) = ("jit-api", "jit_api");
    create_database(pg, db).await;
    // No timer: only the change itself can make the gateway reconcile.
    let gateway = Gateway::start(BIN, &["--reconcile-interval-secs", "0"]).await;
    let keys = provision(&gateway, pg, ns, db, &["app"]);
    let http = Http::new(gateway.api_port().await);
    let intents = serde_json::json!({
        "kind": "Intents",
        "metadata": {"name": "app-needs", "namespace": ns},
        "spec": {"identity": "app", "access": [
            {"service": "shop", "table": "public.example", "operations": ["SELECT"]}
        ]},
    });
    let (status, body) = http.send_json(
        "POST",
        &format!("/api/v1/namespaces/{ns}/intents"),
        &gateway.admin_token(),
        &intents.to_string(),
    );
    assert_eq!(status, 201, "{body}");
    wait_until(
        "the gateway to reconcile the Intents",
        Duration::from_secs(20),
        || async {
            gateway
                .cli_ok(&["get", "intents", "app-needs", "-n", ns, "-o", "yaml"])
                .contains("state: applied")
        },
    )
    .await;
    assert_eq!(
        table_privileges(pg, db, "pn_jit-api_app", "public.example").await,
        "SELECT"
    );
    let client = gateway
        .connect("app.jit-api", "shop.jit-api", &keys[0])
        .await
        .unwrap();
    client
        .batch_execute("SELECT * FROM public.example")
        .await
        .unwrap();

    // Read back alike: `get -o json` locally and through the admin API (`--server`),
    // statuses and secrets included.
    for kind in [
        "intents",
        "services",
        "identities",
        "targets",
        "secrets",
        "namespaces",
    ] {
        let args = ["get", kind, "-n", ns, "-o", "json"];
        let local = gateway.cli_ok(&args);
        assert!(local.contains("\"kind\""), "{kind}: {local}");
        assert_eq!(gateway.cli_remote_ok(&args).await, local, "{kind}");
    }
}

/// The UI's plan for a namespace: the SQL the reconciler would run (nothing is changed by
/// asking), and nothing once the reconciler has run; other namespaces' plans stay out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_plan_shows_what_would_run_and_changes_nothing() {
    let pg = shared_pg().await;
    let (ns, db) = ("jit-plan", "jit_plan");
    create_database(pg, db).await;
    let gateway = gateway("0").await;
    provision(&gateway, pg, ns, db, &["app"]);
    let http = Http::new(gateway.api_port().await);
    let token = gateway.admin_token();
    let intents = serde_json::json!({
        "kind": "Intents",
        "metadata": {"name": "app-needs", "namespace": ns},
        "spec": {"identity": "app", "access": [
            {"service": "shop", "table": "public.example", "operations": ["SELECT"]}
        ]},
    });
    let (status, body) = http.send_json(
        "POST",
        &format!("/api/v1/namespaces/{ns}/intents"),
        &token,
        &intents.to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let plan = |ns: &str| {
        let (status, body) = http.call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/reconcile-plan"),
            Some(&token),
            None,
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let before = plan(ns);
    let sql: Vec<&str> = before["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sql"].as_str().unwrap())
        .collect();
    assert!(
        sql.iter()
            .any(|s| s.contains("GRANT SELECT") && s.contains("example")),
        "{before}"
    );
    assert!(before["statements"][0]["place"]
        .as_str()
        .unwrap()
        .starts_with("jit-plan/main-pg/"));
    // Asking changed nothing.
    assert!(!role_exists(pg, "pn_jit-plan_app").await);
    // Another namespace's plan does not show this one's work.
    let (status, body) = http.send_json(
        "POST",
        "/api/v1/namespaces",
        &token,
        r#"{"metadata": {"name": "jit-other"}}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(plan("jit-other")["statements"], serde_json::json!([]));

    gateway.cli_ok(&["reconcile"]);
    assert_eq!(
        table_privileges(pg, db, "pn_jit-plan_app", "public.example").await,
        "SELECT"
    );
    let after = plan(ns);
    assert_eq!(after["statements"], serde_json::json!([]), "{after}");
    assert_eq!(after["problems"], serde_json::json!([]), "{after}");
}
