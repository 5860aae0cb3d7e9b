//! CEL rules: compiled once per version of a Service, evaluated at connect and before
//! every statement against `ctx` (identity, client, request.postgres, time).
//!
//! Evaluation is first match wins. A condition that fails to evaluate (a missing
//! attribute, a type mismatch) does not match for ALLOW and does match for DENY, so a
//! broken rule never opens access. At connect there is no statement yet: a rule whose
//! condition needs one leaves the decision to the statement checks.

use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::{Context, Program, Value};
use chrono::{Datelike, Timelike};
use postern_model::{
    AuthorizationSpec, ConnectDecision, Denial, RuleEffect, RuleError, SessionFacts, SessionPolicy,
};

use crate::classify::Statement;
use crate::statement_cache::StatementCache;

/// Rule name reported when rules exist and none matched.
pub const DEFAULT_DENY: &str = "default-deny";

/// One compiled rule; `None` is `matchAny`.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub name: String,
    pub effect: RuleEffect,
    pub program: Option<Program>,
}

/// Compiles a condition, naming `path` in the error.
pub(crate) fn compile(path: &str, condition: Option<&str>) -> Result<Option<Program>, RuleError> {
    let invalid = |message: String| RuleError {
        path: path.to_owned(),
        message: format!("invalid CEL: {}", one_line(&message)),
    };
    condition
        .map(|source| {
            // cel-parser's ANTLR runtime panics on some malformed input instead of
            // returning an error. Catch it, with the panic message kept off stderr (the
            // hook is process-wide; compiling happens at apply and once per rules version).
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let compiled = std::panic::catch_unwind(|| Program::compile(source));
            std::panic::set_hook(hook);
            match compiled {
                Ok(Ok(program)) => Ok(program),
                Ok(Err(e)) => Err(invalid(e.to_string())),
                Err(_) => Err(invalid("the expression is incomplete or malformed".into())),
            }
        })
        .transpose()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn compile_rules(spec: &AuthorizationSpec) -> Result<Vec<CompiledRule>, RuleError> {
    spec.rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            Ok(CompiledRule {
                name: rule.name.clone(),
                effect: rule.effect,
                program: compile(
                    &format!("spec.authorization.rules[{index}].condition"),
                    rule.condition.as_deref(),
                )?,
            })
        })
        .collect()
}

/// The outcome of one condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    True,
    False,
    /// It could not be evaluated (or was not a bool).
    Unknown,
}

pub(crate) fn evaluate(program: Option<&Program>, context: &Context) -> Outcome {
    match program.map(|p| p.execute(context)) {
        None | Some(Ok(Value::Bool(true))) => Outcome::True,
        Some(Ok(Value::Bool(false))) => Outcome::False,
        Some(_) => Outcome::Unknown,
    }
}

fn string(value: &str) -> Value {
    Value::String(Arc::new(value.to_owned()))
}

fn list(items: &[String]) -> Value {
    Value::List(Arc::new(items.iter().map(|s| string(s)).collect()))
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let map: HashMap<String, Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Value::from(map)
}

/// The parts of `ctx` that stay the same for a whole session.
#[derive(Debug)]
pub(crate) struct SessionValues {
    identity: Value,
    client: Value,
    user: Value,
    database: Value,
}

impl SessionValues {
    pub fn new(facts: &SessionFacts) -> SessionValues {
        let attributes: HashMap<String, Value> = facts
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), string(v)))
            .collect();
        SessionValues {
            identity: map(vec![
                ("name", string(&facts.identity.name)),
                ("namespace", string(&facts.identity.namespace)),
                ("type", string(&facts.identity_type)),
                ("groups", list(&facts.groups)),
                ("attributes", Value::from(attributes)),
            ]),
            client: map(vec![
                ("address", string(&facts.client.address)),
                ("tls", Value::Bool(facts.client.tls)),
                ("application_name", string(&facts.client.application_name)),
            ]),
            user: string(&facts.user),
            database: string(&facts.database),
        }
    }

    /// `ctx` for one evaluation; without a statement at connect.
    pub fn context(&self, statement: Option<&Statement>) -> Value {
        let now = chrono::Utc::now();
        let mut postgres = vec![
            ("user", self.user.clone()),
            ("database", self.database.clone()),
        ];
        if let Some(s) = statement {
            postgres.push((
                "statement",
                map(vec![
                    ("kind", string(s.kind)),
                    ("tables", list(&s.tables)),
                    ("functions", list(&s.functions)),
                    ("text", string(&s.text)),
                ]),
            ));
        }
        map(vec![
            ("identity", self.identity.clone()),
            ("client", self.client.clone()),
            ("request", map(vec![("postgres", map(postgres))])),
            (
                "time",
                map(vec![
                    ("now", Value::Timestamp(now.fixed_offset())),
                    (
                        "weekday",
                        Value::Int(i64::from(now.weekday().num_days_from_sunday())),
                    ),
                    ("hour", Value::Int(i64::from(now.hour()))),
                ]),
            ),
        ])
    }
}

/// A service's rules bound to one session.
pub(crate) struct BoundRules {
    rules: Arc<Vec<CompiledRule>>,
    statements: Arc<StatementCache>,
    values: SessionValues,
    /// CEL's built-in functions, registered once per session rather than per statement.
    functions: Context<'static>,
}

impl std::fmt::Debug for BoundRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundRules")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl BoundRules {
    pub fn new(
        rules: Arc<Vec<CompiledRule>>,
        statements: Arc<StatementCache>,
        facts: &SessionFacts,
    ) -> BoundRules {
        BoundRules {
            rules,
            statements,
            values: SessionValues::new(facts),
            functions: Context::default(),
        }
    }

    /// The first rule that decides for `statement` (`None`: connect time).
    fn decide(&self, statement: Option<&Statement>) -> Decision<'_> {
        let mut context = self.functions.new_inner_scope();
        context.add_variable_from_value("ctx", self.values.context(statement));
        for rule in self.rules.iter() {
            match (evaluate(rule.program.as_ref(), &context), rule.effect) {
                (Outcome::True, effect) => return Decision::Rule(rule, effect),
                (Outcome::Unknown, _) if statement.is_none() => return Decision::Undecided,
                (Outcome::Unknown, RuleEffect::Deny) => {
                    return Decision::Rule(rule, RuleEffect::Deny)
                }
                _ => {}
            }
        }
        Decision::NoMatch
    }

    pub fn connect(self) -> ConnectDecision {
        match self.decide(None) {
            Decision::Rule(rule, RuleEffect::Deny) => ConnectDecision::Deny(Denial {
                rule: rule.name.clone(),
                kind: "connect".into(),
            }),
            Decision::NoMatch => ConnectDecision::Deny(Denial {
                rule: DEFAULT_DENY.into(),
                kind: "connect".into(),
            }),
            Decision::Rule(_, RuleEffect::Allow) | Decision::Undecided => {
                ConnectDecision::Allow(Some(Arc::new(self)))
            }
        }
    }

    fn check(&self, statement: &Statement) -> Result<(), Denial> {
        let denial = |rule: &str| Denial {
            rule: rule.to_owned(),
            kind: statement.kind.to_owned(),
        };
        match self.decide(Some(statement)) {
            Decision::Rule(_, RuleEffect::Allow) => Ok(()),
            Decision::Rule(rule, RuleEffect::Deny) => Err(denial(&rule.name)),
            Decision::NoMatch | Decision::Undecided => Err(denial(DEFAULT_DENY)),
        }
    }
}

enum Decision<'a> {
    Rule(&'a CompiledRule, RuleEffect),
    Undecided,
    NoMatch,
}

impl SessionPolicy for BoundRules {
    fn check_statement(&self, sql: &str) -> Result<(), Denial> {
        match self.statements.classify(sql) {
            Ok(statements) => statements.iter().try_for_each(|s| self.check(s)),
            // PostgreSQL refuses what does not parse, so it can pass: the client gets the
            // server's own syntax error. Rules still see it, as kind `other`.
            Err(_) => self.check(&Statement {
                kind: "other",
                tables: Vec::new(),
                functions: Vec::new(),
                text: sql.to_owned(),
            }),
        }
    }

    fn check_function_call(&self) -> Result<(), Denial> {
        self.check(&Statement {
            kind: "call",
            tables: Vec::new(),
            functions: Vec::new(),
            text: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_expressions_are_errors_not_panics() {
        for source in ["'a' in ctx.groups &&", "ctx.(", "1 +"] {
            let error = compile("rules[0].condition", Some(source)).unwrap_err();
            assert!(
                error.message.starts_with("invalid CEL"),
                "{source}: {error}"
            );
        }
        assert!(compile("p", Some("'a' in ctx.groups")).unwrap().is_some());
    }
}
