//! What a rule's condition reads of `ctx`, from its syntax tree: only the session (identity,
//! client, upstream user and database), also the statement's classification (kind, tables,
//! functions), also the hour and weekday, or something that changes with every evaluation
//! (the statement's text, `ctx.time.now`, or `ctx` used other than through plain field
//! paths). A rule of the first three kinds gives the same outcome for the same session and
//! statement class within one hour, so its outcome is worked out once and kept (see
//! `BoundRules`).

use cel_parser::ast::{EntryExpr, Expr, IdedExpr};

/// How often a condition's outcome can change, from least to most often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Dependence {
    /// Only session fields: once per session.
    Session,
    /// Also the statement's kind, tables or functions: once per statement class.
    StatementClass,
    /// Also `ctx.time.hour` or `ctx.time.weekday`, which hold still for a whole UTC hour:
    /// once per statement class and hour.
    Hour,
    /// The statement's text, the exact time, or anything not certain: every evaluation.
    Every,
}

/// What reading `path` (field names after `ctx`) depends on.
fn of_path(path: &[&str]) -> Dependence {
    match path {
        ["identity", ..] | ["client", ..] => Dependence::Session,
        ["request", "postgres", "user" | "database", ..] => Dependence::Session,
        ["request", "postgres", "statement", "kind" | "tables" | "functions", ..] => {
            Dependence::StatementClass
        }
        ["time", "hour" | "weekday"] => Dependence::Hour,
        // The text, the exact time, a whole object that holds either, or a field this
        // analysis does not know.
        _ => Dependence::Every,
    }
}

/// What `condition` depends on; `None` (a `matchAny` rule) depends on nothing.
pub(crate) fn dependence(condition: Option<&IdedExpr>) -> Dependence {
    condition.map_or(Dependence::Session, |expr| walk(&expr.expr))
}

/// The field names of a path from `ctx` (`ctx.a.b.c`: `[a, b, c]`); `None` for any other
/// expression.
pub(crate) fn ctx_path(expr: &Expr) -> Option<Vec<&str>> {
    let mut fields = Vec::new();
    let mut operand = expr;
    while let Expr::Select(select) = operand {
        fields.push(select.field.as_str());
        operand = &select.operand.expr;
    }
    match operand {
        Expr::Ident(name) if name == "ctx" && !fields.is_empty() => {
            fields.reverse();
            Some(fields)
        }
        _ => None,
    }
}

/// The innermost operand of a chain of field selections.
fn select_root(expr: &Expr) -> &Expr {
    match expr {
        Expr::Select(select) => select_root(&select.operand.expr),
        other => other,
    }
}

fn walk(expr: &Expr) -> Dependence {
    match expr {
        Expr::Select(_) => match ctx_path(expr) {
            Some(fields) => of_path(&fields),
            None => walk(select_root(expr)),
        },
        // `ctx` itself, or indexed (`ctx['time']`): could be anything.
        Expr::Ident(name) if name == "ctx" => Dependence::Every,
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Dependence::Session,
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| walk(&t.expr))
            .chain(call.args.iter().map(|a| walk(&a.expr)))
            .max()
            .unwrap_or(Dependence::Session),
        Expr::Comprehension(c) => {
            // A loop variable named `ctx` would hide the real one from this analysis.
            if c.iter_var == "ctx" || c.accu_var == "ctx" || c.iter_var2.as_deref() == Some("ctx") {
                return Dependence::Every;
            }
            [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ]
            .into_iter()
            .map(|e| walk(&e.expr))
            .max()
            .unwrap_or(Dependence::Session)
        }
        Expr::List(list) => list
            .elements
            .iter()
            .map(|e| walk(&e.expr))
            .max()
            .unwrap_or(Dependence::Session),
        Expr::Map(map) => entries(map.entries.iter().map(|e| &e.expr)),
        Expr::Struct(s) => entries(s.entries.iter().map(|e| &e.expr)),
    }
}

fn entries<'a>(entries: impl Iterator<Item = &'a EntryExpr>) -> Dependence {
    entries
        .map(|entry| match entry {
            EntryExpr::StructField(field) => walk(&field.value.expr),
            EntryExpr::MapEntry(entry) => walk(&entry.key.expr).max(walk(&entry.value.expr)),
        })
        .max()
        .unwrap_or(Dependence::Session)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(source: &str) -> Dependence {
        let parsed = cel_parser::Parser::new().parse(source).unwrap();
        dependence(Some(&parsed))
    }

    #[test]
    fn conditions_depend_on_what_they_read() {
        assert_eq!(dependence(None), Dependence::Session);
        assert_eq!(of("'admins' in ctx.identity.groups"), Dependence::Session);
        assert_eq!(
            of("ctx.client.application_name == 'x' && ctx.request.postgres.user == 'app'"),
            Dependence::Session
        );
        assert_eq!(
            of("ctx.request.postgres.statement.kind == 'copy' && !('admins' in ctx.identity.groups)"),
            Dependence::StatementClass
        );
        assert_eq!(
            of("ctx.request.postgres.statement.tables.exists(t, t.startsWith('pg_'))"),
            Dependence::StatementClass
        );
        assert_eq!(of("ctx.time.hour > 17"), Dependence::Hour);
        assert_eq!(
            of("ctx.time.weekday == 0 && ctx.request.postgres.statement.kind == 'ddl'"),
            Dependence::Hour
        );
        for every in [
            "ctx.request.postgres.statement.text.contains('pg_sleep')",
            "ctx.time.now > timestamp('2030-01-01T00:00:00Z')",
            "ctx.time.hour > 17 && ctx.request.postgres.statement.text.size() > 0",
            "ctx.time",
            "has(ctx.request.postgres.statement)",
            "ctx['time'].hour > 1",
            "size(ctx) > 0",
            "[1].exists(ctx, ctx > 0) || ctx.identity.name == 'a'",
            "ctx.request.postgres.statement.text.size() > 0 || ctx.identity.name == 'a'",
        ] {
            assert_eq!(of(every), Dependence::Every, "{every}");
        }
    }
}
