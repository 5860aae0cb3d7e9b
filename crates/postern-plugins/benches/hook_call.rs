//! Criterion benches for what a policy hook costs a statement: one `on_statement` call on a
//! warm instance of a plugin that only allows (`misbehave`, kind "select") and of the
//! table-window example on a `payroll.*` table, inside and outside its hours. Under
//! `cargo bench` it also prints (not asserts) the resident memory that 10 loaded hooks
//! (compiled, and from the disk cache) and 10 warm instances of one hook take. Run with
//! `cargo bench -p postern-plugins --bench hook_call`.

// Bench code: a failed unwrap is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use postern_plugins::types::{Decision, Identity, Statement};
use postern_plugins::{PluginSpec, PolicyHook, Runtime, RuntimeSettings};
use tokio::runtime::Runtime as Tokio;

const WINDOW: &str =
    r#"{"tables": ["payroll.*"], "from_hour": 8, "until_hour": 18, "exempt_groups": ["on-call"]}"#;

/// A day, and the two times of it the table-window bench runs at: a fixed clock keeps the
/// verdict (and so the path measured) the same whenever the bench runs.
const DAY: u64 = 20_000 * 86_400;
const INSIDE_WINDOW: u64 = DAY + 10 * 3600;
const OUTSIDE_WINDOW: u64 = DAY + 3 * 3600;

fn component(name: &str) -> Arc<[u8]> {
    postern_testkit::plugin_component(name).into()
}

fn tokio() -> Tokio {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One engine for every hook, as in the gateway, with a clock the bench sets.
fn plugin_runtime() -> (Arc<AtomicU64>, Arc<Runtime>) {
    let now = Arc::new(AtomicU64::new(INSIDE_WINDOW));
    let read = now.clone();
    let settings = RuntimeSettings {
        cache_dir: None,
        clock: Some(Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(read.load(Ordering::Relaxed))
        })),
        log_lines: None,
    };
    (now, Runtime::new(settings).unwrap())
}

fn alice() -> Identity {
    Identity {
        name: "alice".into(),
        namespace: "default".into(),
        groups: vec!["analysts".into()],
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

/// Resident set size in KiB (`VmRSS`: the same count as statm's second field, already in
/// KiB, so no page size is assumed).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What a bench's calls must answer: allow, or a denial naming this text.
#[derive(Clone, Copy)]
enum Expect {
    Allow,
    DenyNaming(&'static str),
}

impl Expect {
    fn matches(self, decision: &Decision) -> bool {
        match (self, decision) {
            (Expect::Allow, Decision::Allow) => true,
            (Expect::DenyNaming(text), Decision::Deny(reason)) => reason.contains(text),
            _ => false,
        }
    }
}

/// Checks the case first, so a bench never times a failure path by mistake, then times
/// `iters` calls inside one `block_on`: a session's task is already on the executor when it
/// asks a hook, so entering the runtime is no part of a call's cost.
fn bench_calls(
    c: &mut Criterion,
    name: &str,
    (rt, hook): (&Tokio, &PolicyHook),
    s: &Statement,
    expect: Expect,
) {
    let who = alice();
    // The first call after the hook sat idle is reported, not asserted: it shows whether an
    // idle warm instance still answers (see the report printed below when it does not).
    let first = rt.block_on(hook.on_statement(&who, s));
    if !expect.matches(&first.decision) {
        eprintln!(
            "{name}: first call after idle answered {:?} (instances created so far: {})",
            first.decision,
            hook.stats().instances_created.load(Ordering::Relaxed),
        );
    }
    let second = rt.block_on(hook.on_statement(&who, s));
    assert!(expect.matches(&second.decision), "{name}: {second:?}");
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(hook.on_statement(black_box(&who), black_box(s)).await);
                }
                started.elapsed()
            })
        })
    });
}

fn hook_call(c: &mut Criterion) {
    let rt = tokio();
    let (now, runtime) = plugin_runtime();
    let misbehave = rt
        .block_on(PolicyHook::load(
            &runtime,
            PluginSpec::new("misbehave", "{}"),
            component("misbehave"),
        ))
        .unwrap();
    let window = rt
        .block_on(PolicyHook::load(
            &runtime,
            PluginSpec::new("payroll-hours", WINDOW),
            component("table_window"),
        ))
        .unwrap();
    let payroll = statement("select", &["payroll.salaries"]);

    bench_calls(
        c,
        "on_statement/misbehave_select_allow",
        (&rt, &misbehave),
        &statement("select", &[]),
        Expect::Allow,
    );
    bench_calls(
        c,
        "on_statement/table_window_payroll_inside_allow",
        (&rt, &window),
        &payroll,
        Expect::Allow,
    );
    now.store(OUTSIDE_WINDOW, Ordering::Relaxed);
    bench_calls(
        c,
        "on_statement/table_window_payroll_outside_deny",
        (&rt, &window),
        &payroll,
        Expect::DenyNaming("payroll.salaries may only be used"),
    );

    now.store(INSIDE_WINDOW, Ordering::Relaxed);
    session_path(c, &rt, &runtime);

    for hook in [&misbehave, &window] {
        let stats = hook.stats();
        let calls = stats.calls.load(Ordering::Relaxed).max(1);
        eprintln!(
            "{}: {} calls, {} instances created, {} timeouts, {} ns per call by the hook's own clock",
            hook.name(),
            calls,
            stats.instances_created.load(Ordering::Relaxed),
            stats.timeouts.load(Ordering::Relaxed),
            stats.call_nanos.load(Ordering::Relaxed) / calls,
        );
    }
}

/// The path a gateway session takes (`SessionHook::check_statement`: registry lookup, the
/// synchronous call, the kept-verdict map): a no-op hook asked every time, and the
/// table-window hook whose verdict is kept until the hour ends (a kept-verdict hit).
fn session_path(c: &mut Criterion, rt: &Tokio, runtime: &Arc<Runtime>) {
    use postern_model::{ClientFacts, HookStatement, PolicyPlugins, QualifiedName, SessionFacts};
    let hooks = postern_plugins::PolicyHooks::new();
    for (name, config, file) in [
        ("noop", "{}", "misbehave"),
        ("window", WINDOW, "table_window"),
    ] {
        let hook = rt
            .block_on(PolicyHook::load(
                runtime,
                PluginSpec::new(name, config),
                component(file),
            ))
            .unwrap();
        hooks.install("bench", name, hook);
    }
    let facts = SessionFacts {
        identity: QualifiedName::parse("alice", "bench"),
        service: QualifiedName::parse("orders", "bench"),
        identity_type: "human".into(),
        groups: vec!["analysts".into()],
        attributes: Default::default(),
        client: ClientFacts::default(),
        user: "app".into(),
        database: "orders".into(),
    };
    let tables = ["payroll.salaries".to_string()];
    let statement = HookStatement {
        kind: "select",
        tables: &tables,
        functions: &[],
        text: "SELECT * FROM payroll.salaries WHERE id = 1",
        fingerprint: Some(7),
    };
    for (name, label) in [
        ("noop", "session/noop_hook_every_statement"),
        ("window", "session/kept_verdict_hit_allow"),
    ] {
        let session = hooks.bind("bench", name, &facts).unwrap();
        // Allowed inside the window, denied outside: either way the same answer each time.
        let first = session.check_statement(&statement);
        c.bench_function(label, |b| {
            b.iter(|| {
                let answer = session.check_statement(black_box(&statement));
                assert_eq!(answer.is_ok(), first.is_ok());
            })
        });
    }
    let window = hooks.get("bench", "window").unwrap();
    eprintln!(
        "kept verdicts: {} calls into the window hook, {} answered from the kept verdict",
        window.stats().calls.load(Ordering::Relaxed),
        window.stats().cache_hits.load(Ordering::Relaxed)
    );
}

/// Loads 10 hooks of `bytes` on `runtime` and prints what they added to the resident set.
fn load_ten(rt: &Tokio, runtime: &Arc<Runtime>, bytes: &Arc<[u8]>, how: &str) -> Vec<PolicyHook> {
    // One hook first, so the engine's, linker's and cache's one-time costs are not counted.
    let first = PluginSpec::new("payroll-hours", WINDOW);
    let mut hooks = vec![rt
        .block_on(PolicyHook::load(runtime, first, bytes.clone()))
        .unwrap()];
    let before = rss_kib();
    for i in 0..10 {
        let spec = PluginSpec::new(&format!("payroll-hours-{i}"), WINDOW);
        hooks.push(
            rt.block_on(PolicyHook::load(runtime, spec, bytes.clone()))
                .unwrap(),
        );
    }
    let added = rss_kib().saturating_sub(before);
    eprintln!(
        "RSS: 10 table_window hooks {how}: +{added} KiB ({} KiB each: its code + 1 warm instance)",
        added / 10,
    );
    hooks
}

/// Prints the resident memory of 10 loaded table-window hooks (each holds its own copy of
/// the compiled component and one warm instance), compiled and from the disk cache as the
/// gateway loads them, and of 10 warm instances of one hook.
fn memory(_: &mut Criterion) {
    // `cargo test --benches` runs benches once without `--bench`: skip 20 loads there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio();
    let bytes = component("table_window");
    let (_, runtime) = plugin_runtime();
    let compiled = load_ten(&rt, &runtime, &bytes, "compiled");

    let cache_dir = std::env::temp_dir().join(format!("postern-hook-call-{}", std::process::id()));
    let cached = Runtime::new(RuntimeSettings {
        cache_dir: Some(cache_dir.clone()),
        clock: None,
        log_lines: None,
    })
    .unwrap();
    let from_cache = load_ten(&rt, &cached, &bytes, "from the disk cache");

    // A hook only makes a second instance while one is busy, and a call never yields, so
    // warm instances come from calls overlapping on threads: ten threads on few cores are
    // preempted mid-call often enough. Stops at 10 instances or after 10 s.
    let mut spec = PluginSpec::new("payroll-hours-warm", WINDOW);
    spec.warm_instances = 10;
    let warm = rt
        .block_on(PolicyHook::load(&runtime, spec, bytes.clone()))
        .unwrap();
    let before = rss_kib();
    let done = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let payroll = statement("select", &["payroll.salaries"]);
    std::thread::scope(|scope| {
        for _ in 0..10 {
            scope.spawn(|| {
                let rt = tokio();
                let who = alice();
                while !done.load(Ordering::Relaxed) {
                    for _ in 0..100 {
                        black_box(rt.block_on(warm.on_statement(&who, &payroll)));
                    }
                    if warm.stats().instances_created.load(Ordering::Relaxed) >= 10
                        || Instant::now() > deadline
                    {
                        done.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let added = rss_kib().saturating_sub(before);
    let idle = warm.idle_instances();
    let created = warm.stats().instances_created.load(Ordering::Relaxed);
    eprintln!(
        "RSS: one table_window hook with {idle} warm instances ({created} created): +{added} KiB over 1 instance ({} KiB per added instance; includes the 10 threads' malloc arenas)",
        added / u64::try_from(idle.saturating_sub(1).max(1)).unwrap(),
    );
    drop((compiled, from_cache, warm));
    let _ = std::fs::remove_dir_all(&cache_dir);
}

criterion_group!(benches, memory, hook_call);
criterion_main!(benches);
