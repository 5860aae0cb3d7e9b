//! Criterion benches for the statement path of a watched session: a statement's shape,
//! classification by PostgreSQL's parser (a cache miss) and from the cache (a hit), and a
//! ten-rule check of one statement. Run with `cargo bench -p postern-policy`.

// Bench code: a failed unwrap is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use postern_model::{
    AuthorizationRule, AuthorizationSpec, ClientFacts, ConnectDecision, PolicyEngine,
    QualifiedName, RuleEffect, SessionFacts,
};
use postern_policy::{classify, CelEngine, StatementCache};

/// What `pgbench -S` sends in the simple protocol.
const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;";

/// The bench's ten rules (bench/src/main.rs): nine DENYs that never match, then ALLOW.
fn ten_rules() -> AuthorizationSpec {
    let deny = |name: &str, condition: &str| AuthorizationRule {
        name: name.into(),
        effect: RuleEffect::Deny,
        condition: Some(condition.into()),
        match_any: false,
    };
    let mut rules =
        vec![
        deny("no-ddl", "ctx.request.postgres.statement.kind == 'ddl'"),
        deny("no-secrets", "'public.secrets' in ctx.request.postgres.statement.tables"),
        deny("no-mallory", "ctx.identity.name == 'mallory'"),
        deny("no-contractors", "'contractors' in ctx.identity.groups"),
        deny(
            "copy-admins",
            "ctx.request.postgres.statement.kind == 'copy' && !('admins' in ctx.identity.groups)",
        ),
        deny("no-app", "ctx.client.application_name == 'forbidden'"),
        deny("no-sleep", "ctx.request.postgres.statement.text.contains('pg_sleep')"),
        deny("no-call", "ctx.request.postgres.statement.kind == 'call'"),
        deny("office-hours", "ctx.time.hour > 99"),
    ];
    rules.push(AuthorizationRule {
        name: "the-rest".into(),
        effect: RuleEffect::Allow,
        condition: None,
        match_any: true,
    });
    AuthorizationSpec {
        rules,
        plugins: Vec::new(),
    }
}

fn statement_path(c: &mut Criterion) {
    c.bench_function("shape of a pgbench select", |b| {
        b.iter(|| postern_policy::shape(black_box(SELECT)))
    });
    c.bench_function("classify (parse, no cache)", |b| {
        b.iter(|| classify(black_box(SELECT)).unwrap())
    });
    let cache = StatementCache::default();
    cache.classify(SELECT).unwrap();
    c.bench_function("classify (cache hit)", |b| {
        b.iter(|| cache.classify(black_box(SELECT)).unwrap())
    });

    let engine = CelEngine::new();
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
    let ConnectDecision::Allow(Some(policy)) =
        engine.connect("bench", &ten_rules(), &facts).unwrap()
    else {
        panic!("the ten rules allow the connection")
    };
    c.bench_function("ten-rule check of a select (cache hit)", |b| {
        b.iter(|| policy.check_statement(black_box(SELECT)).unwrap())
    });
}

criterion_group!(benches, statement_path);
criterion_main!(benches);
