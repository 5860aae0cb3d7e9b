//! The store's operations that the modules' own tests do not reach (leases, static
//! roles, signing keys, tokens, plugin and intents status, plugin logs, the simulator),
//! each run on both backends: a statement one backend's SQL dialect refuses fails here.

use postern_model::{parse_documents, Format, Kind, QualifiedName, SecretValue};

use crate::testing::{on_both_backends, TestState};
use crate::{
    unguarded, LeaseState, NewLease, PluginLogLine, Store, TokenRecord, PLUGIN_LOG_LINES_KEPT,
};

const SITE: &str = "kind: Namespace\nmetadata: {name: a}\n---\nkind: Target\nmetadata: {name: pg, namespace: a}\nspec: {address: '127.0.0.1:5432'}\n---\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {target: pg, database: d, upstream: {mode: static, user: u, passwordSecret: pw}}\n---\nkind: Identity\nmetadata: {name: alice, namespace: a}\n---\nkind: Identity\nmetadata: {name: w, namespace: a}\nspec: {type: workload}\n---\nkind: CredentialRole\nmetadata: {name: ro, namespace: a}\nspec: {target: pg, database: d, creationStatements: ['CREATE ROLE {{name}} PASSWORD {{password}}'], defaultTtl: 1h, maxTtl: 2h}\n---\nkind: StaticRole\nmetadata: {name: app, namespace: a}\nspec: {target: pg, username: app, rotationPeriod: 24h}\n";

fn site(state: &TestState) -> Store {
    let store = state.open();
    let docs = parse_documents("site.yaml", SITE, Format::Yaml).unwrap();
    store.apply_resources(&docs, false, false).unwrap();
    store
}

fn new_lease<'a>(id: &'a str, role: &'a QualifiedName, expires_at: i64) -> NewLease<'a> {
    NewLease {
        id,
        credential_role: role,
        target: "pg",
        username: id,
        issued_for: "a/alice",
        spec: "{}",
        owner: "test",
        issued_at: 1,
        expires_at,
        max_expires_at: expires_at + 100,
    }
}

on_both_backends! {
    fn leases_move_through_their_states(state) {
        let store = site(&state);
        let role = QualifiedName::new("a", "ro");
        store.record_lease(&new_lease("l1", &role, 100)).unwrap();
        store.record_lease(&new_lease("l2", &role, 10_000)).unwrap();
        assert_eq!(store.lease("l1").unwrap().unwrap().state, LeaseState::Creating);
        assert!(store
            .move_lease("l1", &[LeaseState::Creating], LeaseState::Active)
            .unwrap());
        assert!(
            !store
                .move_lease("l1", &[LeaseState::Creating, LeaseState::Revoking], LeaseState::Active)
                .unwrap(),
            "not in a state it is moved from"
        );
        store.move_lease("l2", &[LeaseState::Creating], LeaseState::Active).unwrap();
        store.renew_lease("l2", 20_000).unwrap();
        assert_eq!(store.lease("l2").unwrap().unwrap().expires_at, 20_000);
        assert!(store.renew_lease("missing", 5).is_err());
        let due: Vec<String> = store.due_leases(500).unwrap().into_iter().map(|l| l.id).collect();
        assert_eq!(due, ["l1"]);
        store.move_lease("l1", &[LeaseState::Active], LeaseState::Revoking).unwrap();
        store.lease_attempt_failed("l1", "upstream down", 900).unwrap();
        let failed = store.lease("l1").unwrap().unwrap();
        assert_eq!((failed.attempts, failed.last_error.as_deref()), (1, Some("upstream down")));
        assert_eq!(
            store.lease_counts().unwrap(),
            [("active".to_owned(), 1), ("revoking".to_owned(), 1)]
        );
        store.move_lease("l1", &[LeaseState::Revoking], LeaseState::Revoked).unwrap();
        assert_eq!(store.list_leases(Some("a"), false).unwrap().len(), 1);
        assert_eq!(store.list_leases(None, true).unwrap().len(), 2);
        assert_eq!(store.leased_usernames(&QualifiedName::new("a", "pg")).unwrap(), ["l2"]);
        store.forget_lease("l1").unwrap();
        assert!(store.lease("l1").unwrap().is_none());
    }

    fn a_static_role_rotation_is_pending_until_confirmed(state) {
        let store = site(&state);
        let role = QualifiedName::new("a", "app");
        assert!(store.static_role_password(&role).unwrap().is_none());
        store.set_static_role_pending(&role, "app", &SecretValue::new("first-pw")).unwrap();
        let pending = store.static_role_password(&role).unwrap().unwrap();
        assert!(pending.current.is_none());
        assert_eq!(pending.pending.as_ref().map(|p| p.expose()), Some("first-pw"));
        store.confirm_static_role_rotation(&role).unwrap();
        store.static_role_failed(&role, "no route to host").unwrap();
        let confirmed = store.static_role_password(&role).unwrap().unwrap();
        assert_eq!(confirmed.current.as_ref().map(|p| p.expose()), Some("first-pw"));
        assert!(confirmed.pending.is_none());
        assert_eq!(confirmed.last_error.as_deref(), Some("no route to host"));
    }

    fn signing_keys_tokens_and_clients(state) {
        let store = site(&state);
        store.add_signing_key("k1", b"private-one", b"public-one").unwrap();
        store.add_signing_key("k2", b"private-two", b"public-two").unwrap();
        let keys = store.signing_keys().unwrap();
        assert_eq!(keys.len(), 2);
        let signing: Vec<&str> = keys
            .iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.kid.as_str())
            .collect();
        assert_eq!(signing, ["k2"]);
        assert!(keys.iter().any(|k| k.kid == "k1" && k.pkcs8 == b"private-one"));
        assert_eq!(store.prune_signing_keys(i64::MAX).unwrap(), 1);
        assert_eq!(store.signing_keys().unwrap().len(), 1);

        let alice = QualifiedName::new("a", "alice");
        let far = crate::store::now() + 3600;
        store
            .record_access_token(&TokenRecord {
                jti: "t1".into(),
                identity: alice.clone(),
                issued_at: 1,
                expires_at: far,
                revoked_at: None,
            })
            .unwrap();
        assert_eq!(store.access_token("t1").unwrap().unwrap().identity, alice);
        store.revoke_access_token("t1").unwrap();
        assert!(store.access_token("t1").unwrap().unwrap().revoked_at.is_some());
        assert!(store.access_token("t2").unwrap().is_none());

        let w = QualifiedName::new("a", "w");
        let client = store.create_identity_client(&w, unguarded).unwrap();
        assert_eq!(store.list_identity_clients(&w).unwrap().len(), 1);
        store.delete_identity_client(&w, &client.client_id, unguarded).unwrap();
        assert!(store.list_identity_clients(&w).unwrap().is_empty());
        assert!(store
            .verify_identity_client(&client.client_id, client.secret.expose())
            .unwrap()
            .is_none());
    }

    fn statuses_logs_and_components(state) {
        let store = site(&state);
        let intents = QualifiedName::new("a", "needs");
        store.set_intents_status(&intents, "pending", "waiting", None).unwrap();
        store.set_intents_status(&intents, "applied", "ok", None).unwrap();
        let status = store.intents_status(&intents).unwrap().unwrap();
        assert_eq!((status.state.as_str(), status.statement), ("applied", None));
        store.set_intents_status(&intents, "error", "denied", Some("GRANT x")).unwrap();
        let status = store.intents_status(&intents).unwrap().unwrap();
        assert_eq!(status.statement.as_deref(), Some("GRANT x"));
        store.set_plugin_status("a", "p", "loaded", "").unwrap();
        assert_eq!(
            store.plugin_status(&QualifiedName::new("a", "p")).unwrap().unwrap().state,
            "loaded"
        );

        let plugin = QualifiedName::new("a", "p");
        let kept_lines = usize::try_from(PLUGIN_LOG_LINES_KEPT).unwrap();
        let lines: Vec<PluginLogLine> = (0..kept_lines + 5)
            .map(|n| PluginLogLine {
                namespace: "a".into(),
                name: "p".into(),
                level: "info".into(),
                at: i64::try_from(n).unwrap(),
                message: format!("line {n}"),
            })
            .collect();
        store.append_plugin_logs(&lines).unwrap();
        let tail = store.plugin_logs_tail(&plugin, 3).unwrap();
        let tail: Vec<&str> = tail.iter().map(|(_, line)| line.message.as_str()).collect();
        let last = kept_lines + 4;
        assert_eq!(
            tail,
            [
                format!("line {}", last - 2),
                format!("line {}", last - 1),
                format!("line {last}")
            ]
        );
        let kept = store.plugin_logs(&plugin, 0, usize::MAX).unwrap();
        assert_eq!(kept.len(), kept_lines, "older lines pruned");

        let sha = store.store_plugin_component(b"\0asm component").unwrap();
        assert_eq!(store.store_plugin_component(b"\0asm component").unwrap(), sha);
        assert_eq!(store.plugin_component(&sha).unwrap().unwrap(), b"\0asm component");
        assert!(store.plugin_component("00").unwrap().is_none());
    }

    fn secrets_list_and_the_simulator_reads_the_same_state(state) {
        let store = site(&state);
        store.create_secret("a", "pw", &SecretValue::new("pw-value")).unwrap();
        assert!(store.create_secret("a", "pw", &SecretValue::new("other")).is_err());
        assert!(store.set_secret("a", "pw", &SecretValue::new("pw-2")).is_ok());
        let names: Vec<String> = store.list_secrets(None).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["pw"]);
        assert_eq!(store.secret_value("a", "pw").unwrap().unwrap().expose(), "pw-2");
        assert!(store.list_resources(Some(Kind::Service), Some("a")).unwrap().len() == 1);
        let explained = store
            .explain(
                &QualifiedName::new("a", "alice"),
                &QualifiedName::new("a", "s"),
                None,
                &Default::default(),
            )
            .unwrap();
        assert!(explained.connect.allowed, "{explained:?}");
        let json = explained.to_json().to_string();
        assert!(!json.contains("pw-2"), "no password in {json}");
    }
}

#[test]
fn a_site_copied_into_postgres_reads_back_the_same() {
    use postern_model::{AuditEvent, AuditRecord, Directory, EventType, SessionInfo};
    let source_state = TestState::new(crate::testing::Backend::Sqlite);
    let source = site(&source_state);
    source
        .set_secret("a", "pw", &SecretValue::new("pw-value"))
        .unwrap();
    let alice = QualifiedName::new("a", "alice");
    source.create_api_key(&alice, unguarded).unwrap();
    let role = QualifiedName::new("a", "ro");
    source.record_lease(&new_lease("l1", &role, 100)).unwrap();
    let session = std::sync::Arc::new(SessionInfo {
        session_id: "s-1".into(),
        service: "s.a".into(),
        ..SessionInfo::default()
    });
    let records: Vec<AuditRecord> = (0..3)
        .map(|n| {
            AuditRecord::new(
                format!("ev-{n}"),
                AuditEvent::new(EventType::Query, session.clone()),
            )
        })
        .collect();
    let mut keys = crate::AuditKeys::default();
    source
        .insert_audit_records(&records.iter().collect::<Vec<_>>(), &mut keys, false)
        .unwrap();

    let target_state = TestState::new(crate::testing::Backend::Postgres);
    let target = target_state.open_with(&source_state.keys()).unwrap();
    let report = source.copy_into(&target).unwrap();
    assert_eq!(report["secrets"], 1);
    assert_eq!(report["audit_segments"], 1);

    // Opened again, as a gateway of the fleet would open it.
    let target = target_state.open_with(&source_state.keys()).unwrap();
    assert_eq!(target.installation_id(), source.installation_id());
    assert_eq!(target.mock_auth_secret(), source.mock_auth_secret());
    let names = |store: &Store| -> Vec<(String, i64)> {
        store
            .list_resources(None, None)
            .unwrap()
            .into_iter()
            .map(|r| (r.resource.describe(), r.generation))
            .collect()
    };
    assert_eq!(names(&target), names(&source));
    assert_eq!(
        target.secret_value("a", "pw").unwrap().unwrap().expose(),
        "pw-value"
    );
    assert_eq!(
        target
            .identity_credentials(&alice)
            .unwrap()
            .unwrap()
            .verifiers,
        source
            .identity_credentials(&alice)
            .unwrap()
            .unwrap()
            .verifiers
    );
    assert_eq!(target.lease("l1").unwrap().unwrap().username, "l1");
    let log = |store: &Store| -> Vec<(i64, String)> {
        store
            .audit_events(&crate::AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e.json))
            .collect()
    };
    let copied = log(&target);
    assert_eq!(copied, log(&source));
    // New events follow the copied ones.
    let mut keys = crate::AuditKeys::default();
    target
        .insert_audit_records(&records[..1].iter().collect::<Vec<_>>(), &mut keys, false)
        .unwrap();
    let after = log(&target);
    assert_eq!(after.len(), 4);
    assert!(after[3].0 > copied[2].0);
    // A state that holds a site already is not a target.
    let err = source.copy_into(&target).unwrap_err().to_string();
    assert!(err.contains("already holds"), "{err}");
}

#[test]
fn a_postgres_state_of_a_newer_schema_is_refused() {
    let state = TestState::new(crate::testing::Backend::Postgres);
    let store = state.open();
    store
        .write(|db| {
            db.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)",
                crate::db::args![],
            )
        })
        .unwrap();
    drop(store);
    let refused = state.open_with(&state.keys()).unwrap_err();
    assert!(
        matches!(refused, crate::StateError::NewerSchema { found: 99, .. }),
        "{refused}"
    );
}

#[test]
fn on_postgres_an_owner_is_alive_while_its_gateway_beats() {
    let state = TestState::new(crate::testing::Backend::Postgres);
    let one = state.open();
    let other = state.open();
    assert!(one.owner_alive(other.owner()).unwrap());
    assert!(!one.owner_alive("12345:gone").unwrap());
    // Silent for longer than the timeout: taken for dead.
    one.write(|db| {
        db.execute(
            "UPDATE gateways SET heartbeat_at = 0 WHERE id = ?1",
            crate::db::args![other.owner()],
        )
    })
    .unwrap();
    assert!(!one.owner_alive(other.owner()).unwrap());
    // Leadership: one holds it, the other cannot take it while the first lives.
    assert!(one.try_lead());
    assert!(!other.try_lead());
    assert!(one.try_lead(), "still held");
    drop(one);
    // The server lets go of the lock when it notices the session is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !other.try_lead() {
        assert!(
            std::time::Instant::now() < deadline,
            "not taken over once the first is gone"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn on_postgres_logins_read_resources_as_of_the_epoch_the_gateway_last_saw() {
    use postern_model::Directory;
    let state = TestState::new(crate::testing::Backend::Postgres);
    let here = site(&state);
    let elsewhere = state.open();
    let service = |store: &Store| store.resource(Kind::Service, "a", "s").unwrap();
    assert!(service(&here).is_some());
    // Another gateway deletes the service; this one learns of it with the next epoch it
    // reads (its proxy reads one every 100 ms), not later.
    elsewhere.delete_resource(Kind::Service, "a", "s").unwrap();
    here.resource_epoch().unwrap();
    assert!(service(&here).is_none());
    // Its own writes it reads at once.
    let docs = parse_documents("site.yaml", SITE, Format::Yaml).unwrap();
    here.apply_resources(&docs, false, false).unwrap();
    assert!(service(&here).is_some());
    // Lists come back ordered, as list_resources orders them.
    let identities: Vec<String> = here
        .resources(Kind::Identity, Some("a"))
        .unwrap()
        .into_iter()
        .map(|s| s.resource.name().to_owned())
        .collect();
    assert_eq!(identities, ["alice", "w"]);
}

#[test]
fn on_postgres_a_revoked_key_or_changed_secret_is_seen_at_the_next_epoch_read() {
    use postern_model::Directory;
    let state = TestState::new(crate::testing::Backend::Postgres);
    let here = site(&state);
    let elsewhere = state.open();
    let alice = QualifiedName::new("a", "alice");
    let key = here.create_api_key(&alice, unguarded).unwrap();
    here.set_secret("a", "pw", &SecretValue::new("one"))
        .unwrap();
    assert_eq!(here.login_verifiers(&alice).unwrap().len(), 1);
    assert_eq!(
        here.login_secret("a", "pw").unwrap().unwrap().expose(),
        "one"
    );
    // Changed through another gateway: seen here once this gateway reads the epochs
    // (its proxy does every 100 ms).
    elsewhere
        .revoke_api_key(&alice, &key.info.id, unguarded)
        .unwrap();
    elsewhere
        .set_secret("a", "pw", &SecretValue::new("two"))
        .unwrap();
    here.resource_epoch().unwrap();
    assert!(here.login_verifiers(&alice).unwrap().is_empty());
    assert_eq!(
        here.login_secret("a", "pw").unwrap().unwrap().expose(),
        "two"
    );
    // Changed through this one: seen at once.
    here.create_api_key(&alice, unguarded).unwrap();
    assert_eq!(here.login_verifiers(&alice).unwrap().len(), 1);
}
