//! Instructions per operation of the statement path's hot pieces, counted by callgrind,
//! which is exact where time on a shared 2-core box is not: `bench/instructions.sh` runs
//! `instructions PIECE` under `valgrind --tool=callgrind --toggle-collect=…` once per
//! piece and divides by the operations it printed. Only the piece's own function is
//! counted, not its setup. Run without valgrind, it just does the work.

// Bench code: a failed unwrap is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use postern_model::{
    AccessLog, AuditEvent, AuditRecord, AuditSink, AuthorizationRule, AuthorizationSpec,
    ClientFacts, ConnectDecision, EventType, IdentityInfo, PolicyEngine, QualifiedName, RuleEffect,
    SessionFacts, SessionInfo, SessionPolicy,
};

/// What `pgbench -S` sends in the simple protocol.
const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;";

fn main() {
    let piece = std::env::args().nth(1).unwrap_or_default();
    let ops = match piece.as_str() {
        "classify_miss" => classify_miss(),
        "classify_hit" => classify_hit(),
        "ten_rule_check" => ten_rule_check(false),
        "ten_rule_recheck" => ten_rule_check(true),
        "event_push" => event_push(),
        "state_write" => state_write(),
        "frame_scan" => frame_scan(),
        "frame_scan_watched" => frame_scan_watched(),
        "redact_clean" => redact_clean(),
        other => {
            eprintln!("unknown piece {other:?}");
            std::process::exit(2);
        }
    };
    println!("{ops}");
}

fn classify_miss() -> u64 {
    let texts: Vec<String> = (0..1_000)
        .map(|n| format!("SELECT abalance FROM pgbench_accounts_{n} WHERE aid = $1"))
        .collect();
    piece_classify_miss(&texts)
}

#[inline(never)]
fn piece_classify_miss(texts: &[String]) -> u64 {
    for text in texts {
        black_box(postern_policy::classify(text).unwrap());
    }
    texts.len() as u64
}

/// The access log's redaction of a simple-protocol text with nothing secret in it (every
/// such text differs, so none is redacted from memory): TPC-B's update.
fn redact_clean() -> u64 {
    let functions: Vec<String> = postern_policy::DEFAULT_SECRET_FUNCTIONS
        .iter()
        .map(|f| f.to_string())
        .collect();
    let redactor = postern_policy::Redactor::new(&functions);
    let texts: Vec<String> = (0..20_000)
        .map(|n| format!("UPDATE pgbench_accounts SET abalance = abalance + {n} WHERE aid = {n};"))
        .collect();
    piece_redact_clean(&redactor, &texts)
}

#[inline(never)]
fn piece_redact_clean(redactor: &postern_policy::Redactor, texts: &[String]) -> u64 {
    for text in texts {
        black_box(redactor.redact(text));
    }
    texts.len() as u64
}

fn classify_hit() -> u64 {
    let cache = postern_policy::StatementCache::default();
    cache.classify(SELECT).unwrap();
    piece_classify_hit(&cache, 100_000)
}

#[inline(never)]
fn piece_classify_hit(cache: &postern_policy::StatementCache, ops: u64) -> u64 {
    for _ in 0..ops {
        black_box(cache.classify(black_box(SELECT)).unwrap());
    }
    ops
}

/// A ten-rule check of `pgbench -S` statements: as the simple protocol sends them (each
/// with its own literal), or, with `again`, one text parsed again and again as the
/// extended protocol's unnamed statement is.
fn ten_rule_check(again: bool) -> u64 {
    let deny = |name: &str, condition: &str| AuthorizationRule {
        name: name.into(),
        effect: RuleEffect::Deny,
        condition: Some(condition.into()),
        match_any: false,
    };
    let mut rules: Vec<AuthorizationRule> = postern_bench::TEN_RULE_DENIALS
        .iter()
        .map(|(name, condition)| deny(name, condition))
        .collect();
    rules.push(AuthorizationRule {
        name: "the-rest".into(),
        effect: RuleEffect::Allow,
        condition: None,
        match_any: true,
    });
    let facts = SessionFacts {
        identity: QualifiedName::parse("bench.bench", "default"),
        service: QualifiedName::parse("pgbench.bench", "default"),
        identity_type: "workload".into(),
        groups: vec!["engineering".into()],
        attributes: Default::default(),
        client: ClientFacts::default(),
        user: "bench".into(),
        database: "pgbench".into(),
    };
    let engine = postern_policy::CelEngine::new();
    let ConnectDecision::Allow(Some(policy)) = engine
        .connect(
            "bench",
            &AuthorizationSpec {
                rules,
                plugins: Vec::new(),
            },
            &facts,
        )
        .unwrap()
    else {
        panic!("the ten rules allow the connection")
    };
    let texts: Vec<String> = (0..20_000)
        .map(|n| match again {
            true => SELECT.to_owned(),
            false => format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n};"),
        })
        .collect();
    policy.check_statement(SELECT).unwrap();
    match again {
        true => piece_ten_rule_recheck(policy.as_ref(), &texts),
        false => piece_ten_rule_check(policy.as_ref(), &texts),
    }
}

#[inline(never)]
fn piece_ten_rule_check(policy: &dyn SessionPolicy, texts: &[String]) -> u64 {
    for text in texts {
        policy.check_statement(black_box(text)).unwrap();
    }
    texts.len() as u64
}

#[inline(never)]
fn piece_ten_rule_recheck(policy: &dyn SessionPolicy, texts: &[String]) -> u64 {
    piece_ten_rule_check(policy, texts)
}

fn session() -> Arc<SessionInfo> {
    Arc::new(SessionInfo {
        session_id: "0123456789abcdef".into(),
        identity: IdentityInfo {
            name: "bench".into(),
            namespace: "bench".into(),
            groups: vec!["engineering".into()],
        },
        service: "pgbench.bench".into(),
        namespace: "bench".into(),
        client_address: "127.0.0.1:50000".into(),
        application_name: "pgbench".into(),
        ..SessionInfo::default()
    })
}

/// A pgbench `-S` EXECUTE event, as the proxy makes it.
fn execute_event(session: &Arc<SessionInfo>, text: &Arc<str>, n: u64) -> AuditEvent {
    let mut event = AuditEvent::new(EventType::Execute, session.clone());
    event.statement = Some(text.clone());
    event.details.statement_name = Some("P0_1".into());
    event.details.portal = Some("".into());
    event.details.command_tag = Some("SELECT 1".into());
    event.details.rows = Some(1);
    event.details.duration_ms = Some(0.05 + (n % 7) as f64 / 100.0);
    event
}

fn event_push() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = postern_audit::AuditPipeline::start(
        postern_audit::AuditSettings {
            queue_capacity: 1 << 20,
            log_parameters: None,
            secret_functions: Vec::new(),
            spill_dir: dir.path().join("spill"),
            spill_budget: 1 << 20,
            block_on_failure: false,
            events: EventType::ALL.to_vec(),
        },
        Vec::new(),
    )
    .unwrap();
    let session = session();
    let text: Arc<str> = Arc::from("SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    let events: Vec<AuditEvent> = (0..50_000)
        .map(|n| execute_event(&session, &text, n))
        .collect();
    piece_event_push(pipeline.as_ref(), events)
}

#[inline(never)]
fn piece_event_push(log: &dyn AccessLog, events: Vec<AuditEvent>) -> u64 {
    let ops = events.len() as u64;
    for event in events {
        log.record(event);
    }
    ops
}

fn state_write() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let keys = postern_state::KeySettings {
        inline: None,
        credentials_directory: None,
        key_file: dir.path().join("master.key"),
    };
    let store = Arc::new(postern_state::Store::open(dir.path(), &keys).unwrap());
    let mut sink = postern_state::StateAuditSink::new(store, std::time::Duration::from_secs(3600));
    let session = session();
    let text: Arc<str> = Arc::from("SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    let batches: Vec<Vec<AuditRecord>> = (0..40)
        .map(|b| {
            (0..512)
                .map(|n| {
                    let event = execute_event(&session, &text, n);
                    AuditRecord::new(format!("0a1b2c3d-{:012x}", b * 512 + n), event)
                })
                .collect()
        })
        .collect();
    // The first write prunes and stores the session: not what a row costs.
    sink.write(&batches[0].iter().collect::<Vec<_>>()).unwrap();
    piece_state_write(&mut sink, &batches[1..])
}

#[inline(never)]
fn piece_state_write(sink: &mut dyn AuditSink, batches: &[Vec<AuditRecord>]) -> u64 {
    let mut ops = 0;
    for batch in batches {
        sink.write(&batch.iter().collect::<Vec<_>>()).unwrap();
        ops += batch.len() as u64;
    }
    ops
}

fn frame_scan() -> u64 {
    piece_frame_scan(&select_replies())
}

fn frame_scan_watched() -> u64 {
    piece_frame_scan_watched(&select_replies())
}

/// The server's replies to 10,000 `pgbench -S` transactions in the extended protocol
/// (BindComplete, DataRow, CommandComplete, ReadyForQuery each).
fn select_replies() -> Vec<u8> {
    let message = |tag: u8, body: &[u8]| {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    };
    let mut reply = message(b'2', b"");
    reply.extend(message(b'D', b"\x00\x01\x00\x00\x00\x041234"));
    reply.extend(message(b'C', b"SELECT 1\0"));
    reply.extend(message(b'Z', b"I"));
    reply.repeat(10_000)
}

#[inline(never)]
fn piece_frame_scan(stream: &[u8]) -> u64 {
    let mut scanner =
        postern_wire::FrameScanner::new(1 << 30).counting(postern_wire::TagSet::of(b"Z"));
    black_box(scanner.scan(black_box(stream)).unwrap());
    // Per message: four per transaction.
    scanner.counted() * 4
}

/// The one walk of a watched session's replies: the types the inspector needs whole are
/// held and every message is shown to a visitor.
#[inline(never)]
fn piece_frame_scan_watched(stream: &[u8]) -> u64 {
    let mut scanner =
        postern_wire::FrameScanner::new(1 << 30).counting(postern_wire::TagSet::of(b"Z"));
    scanner.hold_whole({
        use postern_wire::tags::backend as be;
        postern_wire::TagSet::of(&[
            be::COMMAND_COMPLETE,
            be::ERROR_RESPONSE,
            be::PARSE_COMPLETE,
            be::BIND_COMPLETE,
        ])
    });
    let mut seen = 0u64;
    let released = scanner
        .scan_visiting(black_box(stream), |frame| {
            black_box(frame);
            seen += 1;
            Ok::<(), postern_wire::WireError>(())
        })
        .unwrap();
    black_box(released);
    seen
}
