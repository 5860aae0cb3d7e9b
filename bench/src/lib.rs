//! What the bench binaries share: the ten rules the "10 rules" gateway runs.

/// Nine DENY rules (name, CEL condition) that pgbench's statements never match; the
/// bench puts an ALLOW for everything after them, so every statement is checked by all
/// ten.
pub const TEN_RULE_DENIALS: &[(&str, &str)] = &[
    ("no-ddl", "ctx.request.postgres.statement.kind == 'ddl'"),
    (
        "no-secrets",
        "'public.secrets' in ctx.request.postgres.statement.tables",
    ),
    ("no-mallory", "ctx.identity.name == 'mallory'"),
    ("no-contractors", "'contractors' in ctx.identity.groups"),
    (
        "copy-admins",
        "ctx.request.postgres.statement.kind == 'copy' && !('admins' in ctx.identity.groups)",
    ),
    ("no-app", "ctx.client.application_name == 'forbidden'"),
    (
        "no-sleep",
        "ctx.request.postgres.statement.text.contains('pg_sleep')",
    ),
    ("no-call", "ctx.request.postgres.statement.kind == 'call'"),
    ("office-hours", "ctx.time.hour > 99"),
];
