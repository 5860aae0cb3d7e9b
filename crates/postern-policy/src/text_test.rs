//! Conditions that only test the statement's text against a string literal —
//! `ctx.request.postgres.statement.text.contains('pg_sleep')`, `startsWith`, `endsWith`,
//! each maybe negated with `!` — are decided natively. They are the rules that run on
//! every statement (their outcome cannot be kept), and through the CEL interpreter such a
//! test was about half of a ten-rule check: the text copied into `ctx`, a map lookup per
//! path step, the call's arguments cloned. Natively it is one substring search, with the
//! meaning CEL gives these functions on strings (code points, so Rust's `str` methods).

use cel_parser::ast::{operators, Expr, IdedExpr};
use cel_parser::reference::Val;

use crate::dependence::ctx_path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextOperation {
    Contains,
    StartsWith,
    EndsWith,
}

/// A condition that is one test of the statement's text against a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextTest {
    operation: TextOperation,
    literal: String,
    negated: bool,
}

impl TextTest {
    /// The test `condition` is, when it is one this module decides natively.
    pub fn of(condition: &IdedExpr) -> Option<TextTest> {
        let Expr::Call(call) = &condition.expr else {
            return None;
        };
        if call.func_name == operators::LOGICAL_NOT && call.target.is_none() {
            let [inner] = call.args.as_slice() else {
                return None;
            };
            let test = TextTest::of(inner)?;
            return Some(TextTest {
                negated: !test.negated,
                ..test
            });
        }
        let operation = match call.func_name.as_str() {
            "contains" => TextOperation::Contains,
            "startsWith" => TextOperation::StartsWith,
            "endsWith" => TextOperation::EndsWith,
            _ => return None,
        };
        let target = call.target.as_deref()?;
        if ctx_path(&target.expr)? != ["request", "postgres", "statement", "text"] {
            return None;
        }
        let [argument] = call.args.as_slice() else {
            return None;
        };
        let Expr::Literal(Val::String(literal)) = &argument.expr else {
            return None;
        };
        Some(TextTest {
            operation,
            literal: literal.clone(),
            negated: false,
        })
    }

    /// The condition's outcome for a statement with this text.
    pub fn holds_for(&self, text: &str) -> bool {
        let found = match self.operation {
            TextOperation::Contains => text.contains(self.literal.as_str()),
            TextOperation::StartsWith => text.starts_with(self.literal.as_str()),
            TextOperation::EndsWith => text.ends_with(self.literal.as_str()),
        };
        found != self.negated
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::collections::HashMap;

    use cel_interpreter::objects::{Key, Map};
    use cel_interpreter::{Context, Program, Value};

    use super::*;

    fn parse(source: &str) -> IdedExpr {
        cel_parser::Parser::new().parse(source).unwrap()
    }

    /// What the CEL interpreter makes of `source` for a statement with `text`.
    fn interpreted(source: &str, text: &str) -> bool {
        let nest = |key: &str, value: Value| {
            let entries = HashMap::from([(Key::from(key.to_owned()), value)]);
            Value::Map(Map {
                map: Arc::new(entries),
            })
        };
        let text = Value::String(Arc::new(text.to_owned()));
        let ctx = nest(
            "request",
            nest("postgres", nest("statement", nest("text", text))),
        );
        let mut context = Context::default();
        context.add_variable_from_value("ctx", ctx);
        match Program::compile(source).unwrap().execute(&context) {
            Ok(Value::Bool(outcome)) => outcome,
            other => panic!("{source}: {other:?}"),
        }
    }

    #[test]
    fn text_tests_decide_as_the_cel_interpreter_does() {
        let conditions = [
            "ctx.request.postgres.statement.text.contains('pg_sleep')",
            "ctx.request.postgres.statement.text.startsWith('SELECT')",
            "ctx.request.postgres.statement.text.endsWith(';')",
            "!ctx.request.postgres.statement.text.contains('é')",
            "!!ctx.request.postgres.statement.text.startsWith('')",
            "ctx.request.postgres.statement.text.contains(\"it's\")",
        ];
        let texts = [
            "SELECT pg_sleep(1)",
            "select 1;",
            "SELECT 'café'",
            "",
            "UPDATE t SET a = 'it''s'",
            "SELECT 'it's';",
        ];
        for condition in conditions {
            let test = TextTest::of(&parse(condition))
                .unwrap_or_else(|| panic!("{condition} is decided natively"));
            for text in texts {
                assert_eq!(
                    test.holds_for(text),
                    interpreted(condition, text),
                    "{condition} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn other_conditions_are_left_to_the_interpreter() {
        for condition in [
            "ctx.request.postgres.statement.text.contains('a') || ctx.identity.name == 'b'",
            "ctx.request.postgres.statement.text.matches('^SELECT')",
            "ctx.request.postgres.statement.text.contains(ctx.identity.name)",
            "ctx.request.postgres.statement.kind.contains('ddl')",
            "ctx.identity.name.contains('a')",
            "'x'.contains(ctx.request.postgres.statement.text)",
            "size(ctx.request.postgres.statement.text) > 3",
        ] {
            assert_eq!(TextTest::of(&parse(condition)), None, "{condition}");
        }
    }
}
