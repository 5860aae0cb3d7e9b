//! Events per second the access-log pipeline sustains from `record` until a sink has
//! written them: into the state store's table, and into a JSON Lines file. Run with
//! `cargo bench -p postern-state --bench audit_pipeline`; the figure is printed as
//! criterion's throughput (elements = events).

// Bench code: a failed unwrap is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use postern_audit::{AuditPipeline, AuditSettings, JsonlFileSink};
use postern_model::{
    AccessLog, AuditEvent, AuditRecord, AuditSink, EventType, IdentityInfo, SessionInfo,
    UpstreamInfo,
};
use postern_state::{KeySettings, StateAuditSink, Store};

/// Events recorded per measured iteration.
const EVENTS: u64 = 50_000;

fn session() -> Arc<SessionInfo> {
    Arc::new(SessionInfo {
        connection_id: 7,
        session_id: "0123456789abcdef".into(),
        identity: IdentityInfo {
            name: "bench".into(),
            namespace: "bench".into(),
            groups: vec!["engineering".into()],
        },
        service: "pgbench.bench".into(),
        namespace: "bench".into(),
        upstream: Some(UpstreamInfo {
            target: "pg.bench".into(),
            user: "bench".into(),
            database: "pgbench".into(),
        }),
        client_address: "127.0.0.1:50000".into(),
        application_name: "pgbench".into(),
        ..SessionInfo::default()
    })
}

/// A pgbench `-S` EXECUTE event.
fn event(session: &Arc<SessionInfo>, n: u64) -> AuditEvent {
    let mut event = AuditEvent::new(EventType::Execute, session.clone());
    event.statement = Some("SELECT abalance FROM pgbench_accounts WHERE aid = $1;".into());
    event.details.statement_name = Some("P0_1".into());
    event.details.portal = Some("".into());
    event.details.command_tag = Some("SELECT 1".into());
    event.details.rows = Some(1);
    event.details.duration_ms = Some(0.05 + (n % 7) as f64 / 100.0);
    event
}

fn pipeline(dir: &std::path::Path, sink: Box<dyn AuditSink>) -> Arc<AuditPipeline> {
    AuditPipeline::start(
        AuditSettings {
            queue_capacity: 65_536,
            log_parameters: None,
            secret_functions: postern_policy_functions(),
            spill_dir: dir.join("spill"),
            spill_budget: 1 << 30,
            block_on_failure: false,
            events: EventType::ALL.to_vec(),
        },
        vec![sink],
    )
    .unwrap()
}

fn postern_policy_functions() -> Vec<String> {
    [
        "pgp_sym_encrypt",
        "pgp_sym_decrypt",
        "crypt",
        "dblink_connect",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Records `EVENTS` events as fast as a gateway could and waits until the sink has them.
fn run(pipeline: &AuditPipeline, session: &Arc<SessionInfo>) -> Duration {
    let before = pipeline.counters().written.load(Ordering::Relaxed);
    let started = Instant::now();
    for n in 0..EVENTS {
        pipeline.record(event(session, n));
        // Stay under the inbox's capacity, as a gateway at this rate would.
        if n % 8192 == 0 {
            while pipeline.counters().written.load(Ordering::Relaxed) + 60_000 < before + n {
                std::thread::yield_now();
            }
        }
    }
    while pipeline.counters().written.load(Ordering::Relaxed) < before + EVENTS {
        assert_eq!(pipeline.counters().dropped.load(Ordering::Relaxed), 0);
        std::thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

/// The state store's access-log sink over a new store in `dir`.
fn state_sink(dir: &std::path::Path) -> StateAuditSink {
    let keys = KeySettings {
        inline: None,
        credentials_directory: None,
        key_file: dir.join("master.key"),
    };
    let store = Arc::new(Store::open(dir, &keys).unwrap());
    StateAuditSink::new(store, Duration::from_secs(3600))
}

fn audit_pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit pipeline");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    let session = session();

    let dir = tempfile::tempdir().unwrap();
    let state = pipeline(dir.path(), Box::new(state_sink(dir.path())));
    group.bench_function("into the state store", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| run(&state, &session)).sum())
    });

    let file_dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        file_dir.path(),
        Box::new(JsonlFileSink::new(
            file_dir.path().join("access.jsonl"),
            1 << 40,
            Duration::from_secs(3600),
            1,
        )),
    );
    group.bench_function("into a JSON Lines file", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| run(&file, &session)).sum())
    });
    group.finish();
}

/// The state sink's cost per row: batches of 512 records (as the pipeline hands them)
/// written into the table, with one repeated statement text (prepared statements) and
/// with a distinct text in each (literals inline).
fn state_rows(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = state_sink(dir.path());
    let session = session();
    let mut sequence = 0u64;
    let mut group = c.benchmark_group("state sink");
    group.throughput(Throughput::Elements(512));
    for distinct in [false, true] {
        let name = if distinct {
            "write 512 rows, distinct texts"
        } else {
            "write 512 rows, one text"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    let records: Vec<AuditRecord> = (0..512)
                        .map(|n| {
                            sequence += 1;
                            let mut event = event(&session, n);
                            if distinct {
                                event.statement = Some(Arc::from(format!(
                                    "SELECT abalance FROM pgbench_accounts WHERE aid = {sequence};"
                                )));
                            }
                            AuditRecord::new(format!("abcd-{sequence:012x}"), event)
                        })
                        .collect();
                    let batch: Vec<&AuditRecord> = records.iter().collect();
                    let started = Instant::now();
                    sink.write(&batch).unwrap();
                    spent += started.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

/// What recording costs the proxy: pushing events built beforehand into the pipeline's
/// inbox (the sinks' work happens on their own threads, outside the measurement).
fn record_cost(c: &mut Criterion) {
    const PUSHED: u64 = 1024;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.jsonl");
    let sink = JsonlFileSink::new(file, 1 << 40, Duration::from_secs(3600), 1);
    let pipeline = pipeline(dir.path(), Box::new(sink));
    let session = session();
    let mut group = c.benchmark_group("audit record");
    group.throughput(Throughput::Elements(PUSHED));
    group.bench_function("push 1024 events", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                let events: Vec<AuditEvent> = (0..PUSHED).map(|n| event(&session, n)).collect();
                let written = pipeline.counters().written.load(Ordering::Relaxed);
                let started = Instant::now();
                for event in events {
                    pipeline.record(event);
                }
                spent += started.elapsed();
                // The inbox drains before the next round, so none is dropped.
                while pipeline.counters().written.load(Ordering::Relaxed) < written + PUSHED {
                    std::thread::yield_now();
                }
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, audit_pipeline, state_rows, record_cost);
criterion_main!(benches);
