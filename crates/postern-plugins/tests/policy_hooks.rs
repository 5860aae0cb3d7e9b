//! Policy hooks as real wasm components: the table-window example plugin end to end
//! through the runtime (fake clock), and the failure cases — a plugin that spins, one
//! that allocates past its limit, one that traps, one that imports what it may not, one
//! that refuses its config, one that tries the network through wasi:sockets, bytes that
//! are no component.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use postern_plugins::types::{Decision, Identity, Statement};
use postern_plugins::{
    Capability, PluginError, PluginSpec, PolicyHook, Runtime, RuntimeSettings, UNHEALTHY_AFTER,
};

fn component(name: &str) -> Arc<[u8]> {
    postern_testkit::plugin_component(name).into()
}

/// A clock the test sets: seconds since the Unix epoch.
fn fake_clock() -> (Arc<AtomicU64>, RuntimeSettings) {
    let now = Arc::new(AtomicU64::new(0));
    let read = now.clone();
    let settings = RuntimeSettings {
        cache_dir: None,
        clock: Some(Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(read.load(Ordering::Relaxed))
        })),
        log_lines: None,
    };
    (now, settings)
}

fn identity(name: &str, groups: &[&str]) -> Identity {
    Identity {
        name: name.into(),
        namespace: "default".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        attributes: Vec::new(),
        expires_at: None,
    }
}

fn statement(kind: &str, tables: &[&str]) -> Statement {
    Statement {
        kind: kind.into(),
        tables: tables.iter().map(|t| t.to_string()).collect(),
        functions: Vec::new(),
        fingerprint: 1,
        text: None,
    }
}

fn denial(decision: &Decision) -> Option<&str> {
    match decision {
        Decision::Allow => None,
        Decision::Deny(reason) => Some(reason),
    }
}

const WINDOW: &str =
    r#"{"tables": ["payroll.*"], "from_hour": 8, "until_hour": 18, "exempt_groups": ["on-call"]}"#;

#[tokio::test]
async fn table_window_denies_outside_its_hours_unless_on_call() {
    let (now, settings) = fake_clock();
    let runtime = Runtime::new(settings).unwrap();
    let hook = PolicyHook::load(
        &runtime,
        PluginSpec::new("payroll-hours", WINDOW),
        component("table_window"),
    )
    .await
    .unwrap();
    let day = 20_000 * 86_400;
    let alice = identity("alice", &["analysts"]);
    let payroll = statement("select", &["payroll.salaries"]);

    // 03:00 UTC: outside the window.
    now.store(day + 3 * 3600 + 60, Ordering::Relaxed);
    let verdict = hook.on_statement(&alice, &payroll).await;
    let reason = denial(&verdict.decision).expect("payroll at 03:00 is denied");
    assert!(reason.contains("payroll.salaries"), "{reason}");
    // The verdict may be kept until the hour ends, not longer.
    assert_eq!(verdict.cache_ttl_ms, (3600 - 60) * 1000);
    // Other tables, and the on-call group, are not held to the window.
    let other = statement("select", &["public.orders", "payrollx.t"]);
    assert_eq!(
        hook.on_statement(&alice, &other).await.decision,
        Decision::Allow
    );
    let bob = identity("bob", &["on-call"]);
    assert_eq!(
        hook.on_statement(&bob, &payroll).await.decision,
        Decision::Allow
    );

    // 09:00 UTC: inside.
    now.store(day + 9 * 3600, Ordering::Relaxed);
    assert_eq!(
        hook.on_statement(&alice, &payroll).await.decision,
        Decision::Allow
    );

    let stats = hook.stats();
    assert_eq!(stats.calls.load(Ordering::Relaxed), 4);
    assert_eq!(stats.denies.load(Ordering::Relaxed), 1);
    // One warm instance served every call.
    assert_eq!(stats.instances_created.load(Ordering::Relaxed), 1);
}

async fn misbehave(runtime: &Arc<Runtime>) -> PolicyHook {
    let mut spec = PluginSpec::new("misbehave", "{}");
    spec.memory_bytes = 8 << 20;
    spec.call_timeout = Duration::from_millis(50);
    PolicyHook::load(runtime, spec, component("misbehave"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_plugin_that_spins_is_stopped_and_denies() {
    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    let hook = misbehave(&runtime).await;
    let someone = identity("someone", &[]);
    let verdict = hook.on_statement(&someone, &statement("spin", &[])).await;
    let reason = denial(&verdict.decision).expect("a call past its time denies");
    assert!(
        reason.contains("misbehave") && reason.contains("timed out"),
        "{reason}"
    );
    assert_eq!(hook.stats().timeouts.load(Ordering::Relaxed), 1);
    // The plugin keeps serving, from a new instance.
    let verdict = hook.on_statement(&someone, &statement("select", &[])).await;
    assert_eq!(verdict.decision, Decision::Allow);
    assert_eq!(hook.stats().instances_created.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn an_instance_that_idled_past_the_time_limit_still_gets_its_whole_time() {
    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    let hook = misbehave(&runtime).await;
    let someone = identity("someone", &[]);
    for _ in 0..2 {
        // Idle for several call timeouts: what a quiet gateway does between statements.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let verdict = hook.on_statement(&someone, &statement("select", &[])).await;
        assert_eq!(verdict.decision, Decision::Allow);
    }
    assert_eq!(hook.stats().timeouts.load(Ordering::Relaxed), 0);
    assert_eq!(hook.stats().instances_created.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_plugin_past_its_memory_limit_traps_and_is_replaced() {
    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    let hook = misbehave(&runtime).await;
    let someone = identity("someone", &[]);
    for kind in ["hog", "trap"] {
        let verdict = hook.on_statement(&someone, &statement(kind, &[])).await;
        let reason = denial(&verdict.decision).expect("a trapped call denies");
        assert!(
            reason.contains("misbehave") && reason.contains("trapped"),
            "{kind}: {reason}"
        );
    }
    assert_eq!(hook.stats().traps.load(Ordering::Relaxed), 2);
    assert_eq!(hook.idle_instances(), 0, "trapped instances are not kept");
    assert_eq!(
        hook.on_statement(&someone, &statement("select", &[]))
            .await
            .decision,
        Decision::Allow
    );
    assert_eq!(hook.idle_instances(), 1);
}

#[tokio::test]
async fn failures_in_a_row_make_a_plugin_unhealthy_and_it_fails_closed() {
    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    let hook = misbehave(&runtime).await;
    let someone = identity("someone", &[]);
    for _ in 0..UNHEALTHY_AFTER {
        let verdict = hook.on_statement(&someone, &statement("trap", &[])).await;
        assert!(denial(&verdict.decision).is_some());
    }
    // Resting: even a harmless statement is denied without running the plugin.
    let verdict = hook.on_statement(&someone, &statement("select", &[])).await;
    let reason = denial(&verdict.decision).expect("an unhealthy plugin denies");
    assert!(reason.contains("unhealthy"), "{reason}");
    assert_eq!(hook.stats().skipped.load(Ordering::Relaxed), 1);
    assert_eq!(
        hook.stats().traps.load(Ordering::Relaxed),
        u64::from(UNHEALTHY_AFTER)
    );
}

#[tokio::test]
async fn with_failure_open_a_failing_plugin_allows_and_is_tried_again_after_its_rest() {
    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    let mut spec = PluginSpec::new("lenient", "{}");
    spec.call_timeout = Duration::from_millis(50);
    spec.failure = postern_plugins::FailureMode::Open;
    let hook = PolicyHook::load(&runtime, spec, component("misbehave"))
        .await
        .unwrap();
    let someone = identity("someone", &[]);
    for _ in 0..UNHEALTHY_AFTER {
        let verdict = hook.on_statement(&someone, &statement("trap", &[])).await;
        assert_eq!(verdict.decision, Decision::Allow, "failure: open allows");
    }
    assert!(!hook.healthy());
    // Resting: allowed without running the plugin.
    let verdict = hook.on_statement(&someone, &statement("deny", &[])).await;
    assert_eq!(verdict.decision, Decision::Allow);
    assert_eq!(hook.stats().skipped.load(Ordering::Relaxed), 1);
    // After the rest it runs again, from a fresh instance: its own deny is heard.
    postern_testkit::wait_for("the rest to end", Duration::from_secs(10), || {
        hook.healthy().then_some(())
    })
    .await;
    let before = hook.stats().instances_created.load(Ordering::Relaxed);
    let verdict = hook.on_statement(&someone, &statement("deny", &[])).await;
    assert_eq!(verdict.decision, Decision::Deny("denied, as asked".into()));
    assert_eq!(
        hook.stats().instances_created.load(Ordering::Relaxed),
        before + 1
    );
}

#[tokio::test]
async fn a_plugin_is_refused_at_load_for_what_it_imports_or_its_config() {
    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    // A policy hook importing http-client: never given to policy hooks.
    let err = PolicyHook::load(&runtime, PluginSpec::new("nosy", "{}"), component("nosy"))
        .await
        .err()
        .expect("nosy is refused");
    assert!(matches!(err, PluginError::UngrantedImport { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("postern:plugin/http-client@0.1.0") && message.contains("never given"),
        "{message}"
    );

    // Built against a major version this gateway does not offer: both versions named.
    let err = PolicyHook::load(
        &runtime,
        PluginSpec::new("next", "{}"),
        component("next_major"),
    )
    .await
    .err()
    .expect("a component of another major version is refused");
    assert!(matches!(err, PluginError::Version { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin next: built against postern:plugin@1.0.0; this gateway loads postern:plugin@0.1.x"
    );

    // Log is offered but not granted.
    let mut spec = PluginSpec::new("payroll-hours", WINDOW);
    spec.capabilities = vec![Capability::Cache];
    let err = PolicyHook::load(&runtime, spec, component("table_window"))
        .await
        .err()
        .expect("an ungranted log import is refused");
    let message = err.to_string();
    assert!(
        message.contains("postern:plugin/log@0.1.0") && message.contains("spec.capabilities"),
        "{message}"
    );

    // init refuses its config: the plugin is not loaded.
    let err = PolicyHook::load(
        &runtime,
        PluginSpec::new("payroll-hours", r#"{"tables": []}"#),
        component("table_window"),
    )
    .await
    .err()
    .expect("a config init refuses fails the load");
    assert!(matches!(err, PluginError::Init { .. }), "{err}");
    assert!(err.to_string().contains("from_hour"), "{err}");

    // Bytes that are no component.
    let err = PolicyHook::load(
        &runtime,
        PluginSpec::new("garbage", "{}"),
        Arc::from(&b"\0asm not really"[..]),
    )
    .await
    .err()
    .expect("garbage is refused");
    assert!(matches!(err, PluginError::Compile { .. }), "{err}");
}

fn session_facts() -> postern_model::SessionFacts {
    use postern_model::{ClientFacts, QualifiedName, SessionFacts};
    SessionFacts {
        identity: QualifiedName::parse("alice", "finance"),
        service: QualifiedName::parse("orders", "finance"),
        identity_type: "human".into(),
        groups: vec!["analysts".into()],
        attributes: Default::default(),
        client: ClientFacts::default(),
        user: "app".into(),
        database: "orders".into(),
    }
}

#[tokio::test]
async fn on_connect_can_refuse_a_session_and_a_filter_spares_other_statements() {
    use postern_model::{HookStatement, PolicyPlugins};

    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    let hooks = postern_plugins::PolicyHooks::new();
    let hook = PolicyHook::load(
        &runtime,
        PluginSpec::new("gatekeeper", "\"deny-connect\""),
        component("misbehave"),
    )
    .await
    .unwrap();
    hooks.install("finance", "gatekeeper", hook);
    let session = hooks
        .bind("finance", "gatekeeper", &session_facts())
        .unwrap();
    let denial = session.check_connect().unwrap_err();
    assert_eq!(denial.kind, "connect");
    assert_eq!(
        denial.reason.as_deref(),
        Some("alice may not connect to orders.finance")
    );

    // Asked only about deletes of payroll tables: a select, or a delete elsewhere, is
    // not its business (not even a call); printing does not break a call.
    let mut spec = PluginSpec::new("deletes", "{}");
    spec.statements = Some(postern_model::StatementFilter {
        kinds: vec!["delete".into(), "print".into()],
        tables: vec!["payroll.*".into()],
    });
    let deletes = PolicyHook::load(&runtime, spec, component("misbehave"))
        .await
        .unwrap();
    hooks.install("finance", "deletes", deletes);
    let session = hooks.bind("finance", "deletes", &session_facts()).unwrap();
    let payroll = ["payroll.salaries".to_string()];
    let elsewhere = ["public.orders".to_string()];
    let statement = |kind, tables| HookStatement {
        kind,
        tables,
        functions: &[],
        text: "",
        fingerprint: None,
    };
    assert!(session
        .check_statement(&statement("deny", &payroll))
        .is_ok());
    assert!(session
        .check_statement(&statement("delete", &elsewhere))
        .is_ok());
    let stats = hooks.get("finance", "deletes").unwrap();
    assert_eq!(stats.stats().calls.load(Ordering::Relaxed), 0);
    assert!(session
        .check_statement(&statement("print", &payroll))
        .is_ok());
    assert_eq!(stats.stats().calls.load(Ordering::Relaxed), 1);
    assert_eq!(stats.stats().traps.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_session_asks_its_hooks_synchronously_and_keeps_reusable_verdicts() {
    use postern_model::{HookStatement, PolicyPlugins};

    let (now, settings) = fake_clock();
    now.store(20_000 * 86_400 + 3 * 3600, Ordering::Relaxed);
    let runtime = Runtime::new(settings).unwrap();
    let hooks = postern_plugins::PolicyHooks::new();
    let hook = PolicyHook::load(
        &runtime,
        PluginSpec::new("payroll-hours", WINDOW),
        component("table_window"),
    )
    .await
    .unwrap();
    hooks.install("finance", "payroll-hours", hook);
    let facts = session_facts();
    let session = hooks.bind("finance", "payroll-hours", &facts).unwrap();
    let tables = ["payroll.salaries".to_string()];
    let statement = HookStatement {
        kind: "select",
        tables: &tables,
        functions: &[],
        text: "SELECT * FROM payroll.salaries",
        fingerprint: Some(42),
    };
    // A plugin that is not loaded denies (fail closed), naming itself.
    let elsewhere = hooks.bind("other", "payroll-hours", &facts).unwrap();
    let denial = elsewhere.check_statement(&statement).unwrap_err();
    assert_eq!(
        denial.reason.as_deref(),
        Some("policy plugin payroll-hours is not loaded")
    );
    for _ in 0..3 {
        let denial = session.check_statement(&statement).unwrap_err();
        assert_eq!(denial.rule, "plugin:payroll-hours");
        assert!(denial.reason.unwrap().contains("payroll.salaries"));
    }
    let stats = hooks.get("finance", "payroll-hours").unwrap();
    let stats = stats.stats();
    // The first answer holds until the hour ends: the plugin ran once.
    assert_eq!(stats.calls.load(Ordering::Relaxed), 1);
    assert_eq!(stats.cache_hits.load(Ordering::Relaxed), 2);
    // Without a fingerprint nothing is kept.
    let unfolded = HookStatement {
        fingerprint: None,
        ..statement
    };
    assert!(session.check_statement(&unfolded).is_err());
    assert_eq!(stats.calls.load(Ordering::Relaxed), 2);

    // A second before the hour ends the plugin's verdict is worth a second: kept for
    // that long, then asked again.
    now.store(20_000 * 86_400 + 4 * 3600 - 1, Ordering::Relaxed);
    let last_second = HookStatement {
        fingerprint: Some(43),
        ..statement
    };
    assert!(session.check_statement(&last_second).is_err());
    assert!(session.check_statement(&last_second).is_err());
    assert_eq!(stats.calls.load(Ordering::Relaxed), 3);
    let kept_once = stats.cache_hits.load(Ordering::Relaxed);
    assert_eq!(kept_once, 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.calls.load(Ordering::Relaxed) == 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the kept verdict outlived its TTL"
        );
        assert!(session.check_statement(&last_second).is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kept at least until the second was over: some calls in between were answered from
    // the kept verdict.
    assert!(stats.cache_hits.load(Ordering::Relaxed) > kept_once);
}

#[tokio::test]
async fn an_auth_provider_that_fails_refuses_and_rests_after_failures_in_a_row() {
    use postern_plugins::types::ClientInfo;
    use postern_plugins::AuthProviderPlugin;

    let password = |text: &str| postern_plugins::AuthCredential::Password(text.into());
    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    let mut spec = PluginSpec::new("shaky", "{}");
    spec.call_timeout = Duration::from_millis(50);
    let provider = AuthProviderPlugin::load(&runtime, spec, component("misbehave_auth"), None)
        .await
        .unwrap();
    let client = ClientInfo {
        peer_address: "127.0.0.1:5000".into(),
        database: "orders.default".into(),
        user: "alice.default".into(),
        application_name: String::new(),
        tls: true,
    };
    assert!(matches!(
        provider.authenticate(&client, &password("ok:alice")).await,
        Ok(postern_plugins::AuthOutcome::Authenticated(_))
    ));
    assert!(matches!(
        provider.authenticate(&client, &password("spin")).await,
        Err(PluginError::Timeout { .. })
    ));
    for _ in 1..UNHEALTHY_AFTER {
        assert!(matches!(
            provider.authenticate(&client, &password("trap")).await,
            Err(PluginError::Trap { .. })
        ));
    }
    // Resting: even a good credential is refused without running the plugin.
    assert!(!provider.healthy());
    assert!(matches!(
        provider.authenticate(&client, &password("ok:alice")).await,
        Err(PluginError::Unhealthy { .. })
    ));
    assert_eq!(provider.stats().skipped.load(Ordering::Relaxed), 1);
}

/// `wasi:sockets` may be imported (interpreters inside components import it whether they
/// use it or not), but every use of it is refused: a TCP connection to a listener on
/// loopback, a UDP send, a name lookup.
#[tokio::test]
async fn a_plugin_gets_no_network_through_wasi_sockets() {
    // A TCP listener and a UDP socket on the same port number: where the plugin aims.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    udp.set_nonblocking(true).unwrap();
    let runtime = Runtime::new(RuntimeSettings::default()).unwrap();
    let mut spec = PluginSpec::new("sockets", &port.to_string());
    spec.capabilities = Vec::new();
    let hook = PolicyHook::load(&runtime, spec, component("sockets"))
        .await
        .unwrap();
    let verdict = hook
        .on_statement(&identity("alice", &[]), &statement("select", &[]))
        .await;
    let reason = denial(&verdict.decision).expect("the plugin reports by denying");
    for attempt in ["tcp: refused", "udp: refused", "dns: refused"] {
        assert!(reason.contains(attempt), "{attempt}: {reason}");
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection reached the listener"
    );
    let mut buffer = [0u8; 16];
    assert!(
        matches!(udp.recv_from(&mut buffer), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a datagram reached the socket"
    );
}

/// What a plugin prints reaches the runtime's log lines (for `postern plugin logs`),
/// tagged with its namespace and name; past the rate limit, lines are dropped and the
/// gap is one line of its own.
#[tokio::test]
async fn printed_lines_reach_the_plugin_log_and_a_flood_leaves_a_marked_gap() {
    let seen: Arc<std::sync::Mutex<Vec<(String, String, String)>>> = Arc::default();
    let sink = seen.clone();
    let runtime = Runtime::new(RuntimeSettings {
        log_lines: Some(Arc::new(move |namespace, name, level, line| {
            sink.lock().unwrap().push((
                format!("{namespace}/{name}"),
                level.to_owned(),
                line.to_owned(),
            ));
        })),
        ..RuntimeSettings::default()
    })
    .unwrap();
    let mut spec = PluginSpec::new("chatty", "{}");
    spec.namespace = "team-a".into();
    let hook = PolicyHook::load(&runtime, spec, component("misbehave"))
        .await
        .unwrap();
    // Far more than the burst the limit allows, faster than it refills.
    for _ in 0..400 {
        hook.on_statement(&identity("alice", &[]), &statement("print", &[]))
            .await;
    }
    // The gap is marked when the next line gets through, once the limit has refilled.
    let marked = |seen: &[(String, String, String)]| {
        seen.iter()
            .any(|(_, level, line)| level == "warn" && line.contains("lines dropped here"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !marked(&seen.lock().unwrap()) {
        assert!(std::time::Instant::now() < deadline, "no gap marked");
        tokio::time::sleep(Duration::from_millis(20)).await;
        hook.on_statement(&identity("alice", &[]), &statement("print", &[]))
            .await;
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|(who, level, line)| who == "team-a/chatty"
            && level == "info"
            && line == "a line on stdout"),
        "{seen:?}"
    );
    assert!(seen.len() < 400, "nothing was dropped: {}", seen.len());
}
