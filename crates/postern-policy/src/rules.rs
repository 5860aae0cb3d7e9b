//! CEL rules: compiled once per version of a Service, evaluated at connect and before
//! every statement against `ctx` (identity, client, request.postgres, time).
//!
//! Evaluation is first match wins. A condition that fails to evaluate (a missing
//! attribute, a type mismatch) does not match for ALLOW and does match for DENY, so a
//! broken rule never opens access. At connect there is no statement yet: a rule whose
//! condition needs one leaves the decision to the statement checks.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, Program, Value};
use chrono::{Datelike, Timelike};
use postern_model::{
    AuthorizationSpec, ConnectDecision, Denial, RuleEffect, RuleError, SessionFacts, SessionPolicy,
};

use crate::classify::Statement;
use crate::dependence::{dependence, Dependence};
use crate::statement_cache::StatementCache;

/// Rule name reported when rules exist and none matched.
pub const DEFAULT_DENY: &str = "default-deny";

/// One compiled rule; `None` is `matchAny`.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub name: String,
    pub effect: RuleEffect,
    pub program: Option<Program>,
    /// What of `ctx` its condition reads, so its outcome can be kept.
    pub dependence: Dependence,
}

/// Compiles a condition, naming `path` in the error.
pub(crate) fn compile(path: &str, condition: Option<&str>) -> Result<Option<Program>, RuleError> {
    Ok(compile_with_dependence(path, condition)?.0)
}

/// [`compile`], and what the condition depends on.
fn compile_with_dependence(
    path: &str,
    condition: Option<&str>,
) -> Result<(Option<Program>, Dependence), RuleError> {
    let invalid = |message: String| RuleError {
        path: path.to_owned(),
        message: format!("invalid CEL: {}", one_line(&message)),
    };
    let Some(source) = condition else {
        return Ok((None, dependence(None)));
    };
    // cel-parser's ANTLR runtime panics on some malformed input instead of returning an
    // error. Catch it, with the panic message kept off stderr (the hook is process-wide;
    // compiling happens at apply and once per rules version).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let compiled = std::panic::catch_unwind(|| {
        let program = Program::compile(source)?;
        // The same parse again, for its syntax tree (the program keeps its own private).
        let tree = cel_parser::Parser::new().parse(source)?;
        Ok::<_, cel_parser::ParseErrors>((program, dependence(Some(&tree))))
    });
    std::panic::set_hook(hook);
    match compiled {
        Ok(Ok((program, dependence))) => Ok((Some(program), dependence)),
        Ok(Err(e)) => Err(invalid(e.to_string())),
        Err(_) => Err(invalid("the expression is incomplete or malformed".into())),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn compile_rules(spec: &AuthorizationSpec) -> Result<Vec<CompiledRule>, RuleError> {
    spec.rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let (program, dependence) = compile_with_dependence(
                &format!("spec.authorization.rules[{index}].condition"),
                rule.condition.as_deref(),
            )?;
            Ok(CompiledRule {
                name: rule.name.clone(),
                effect: rule.effect,
                program,
                dependence,
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

/// The names in `ctx`, made once: building `ctx` for a statement allocates no key.
struct Keys {
    identity: Key,
    name: Key,
    namespace: Key,
    kind_of_identity: Key,
    groups: Key,
    attributes: Key,
    client: Key,
    address: Key,
    tls: Key,
    application_name: Key,
    request: Key,
    postgres: Key,
    user: Key,
    database: Key,
    statement: Key,
    kind: Key,
    tables: Key,
    functions: Key,
    text: Key,
    time: Key,
    now: Key,
    weekday: Key,
    hour: Key,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let key = |name: &str| Key::from(name.to_owned());
    Keys {
        identity: key("identity"),
        name: key("name"),
        namespace: key("namespace"),
        kind_of_identity: key("type"),
        groups: key("groups"),
        attributes: key("attributes"),
        client: key("client"),
        address: key("address"),
        tls: key("tls"),
        application_name: key("application_name"),
        request: key("request"),
        postgres: key("postgres"),
        user: key("user"),
        database: key("database"),
        statement: key("statement"),
        kind: key("kind"),
        tables: key("tables"),
        functions: key("functions"),
        text: key("text"),
        time: key("time"),
        now: key("now"),
        weekday: key("weekday"),
        hour: key("hour"),
    }
});

/// A CEL map of `entries`.
fn map<const N: usize>(entries: [(&Key, Value); N]) -> Value {
    let mut map = HashMap::with_capacity(N);
    for (key, value) in entries {
        map.insert(key.clone(), value);
    }
    Value::Map(Map { map: Arc::new(map) })
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
        let keys = &*KEYS;
        SessionValues {
            identity: map([
                (&keys.name, string(&facts.identity.name)),
                (&keys.namespace, string(&facts.identity.namespace)),
                (&keys.kind_of_identity, string(&facts.identity_type)),
                (&keys.groups, list(&facts.groups)),
                (&keys.attributes, Value::from(attributes)),
            ]),
            client: map([
                (&keys.address, string(&facts.client.address)),
                (&keys.tls, Value::Bool(facts.client.tls)),
                (
                    &keys.application_name,
                    string(&facts.client.application_name),
                ),
            ]),
            user: string(&facts.user),
            database: string(&facts.database),
        }
    }

    /// `ctx` for one evaluation; without a statement at connect.
    pub fn context(&self, statement: Option<&Statement>) -> Value {
        let keys = &*KEYS;
        let now = chrono::Utc::now();
        let user = (&keys.user, self.user.clone());
        let database = (&keys.database, self.database.clone());
        let postgres = match statement {
            Some(s) => map([
                user,
                database,
                (
                    &keys.statement,
                    map([
                        (&keys.kind, string(s.kind)),
                        (&keys.tables, list(&s.tables)),
                        (&keys.functions, list(&s.functions)),
                        (&keys.text, Value::String(s.text.clone())),
                    ]),
                ),
            ]),
            None => map([user, database]),
        };
        map([
            (&keys.identity, self.identity.clone()),
            (&keys.client, self.client.clone()),
            (&keys.request, map([(&keys.postgres, postgres)])),
            (
                &keys.time,
                map([
                    (&keys.now, Value::Timestamp(now.fixed_offset())),
                    (
                        &keys.weekday,
                        Value::Int(i64::from(now.weekday().num_days_from_sunday())),
                    ),
                    (&keys.hour, Value::Int(i64::from(now.hour()))),
                ]),
            ),
        ])
    }
}

/// Statement classes whose rule outcomes a session keeps before it starts over.
const KEPT_CLASSES: usize = 4096;

/// A service's rules bound to one session. Outcomes that cannot change are worked out
/// once: those of rules reading only the session at bind, those of rules also reading the
/// statement's classification once per statement class. Only rules reading the text or
/// the time are evaluated for every statement.
pub(crate) struct BoundRules {
    rules: Arc<Vec<CompiledRule>>,
    statements: Arc<StatementCache>,
    values: SessionValues,
    /// CEL's built-in functions, registered once per session rather than per statement.
    functions: Context<'static>,
    /// By rule: the outcome of each session-only rule.
    session_outcomes: Vec<Option<Outcome>>,
    /// By statement class, by rule: outcomes of class-only rules seen so far.
    class_outcomes: Mutex<HashMap<u64, Vec<Option<Outcome>>>>,
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
        let values = SessionValues::new(facts);
        let functions = Context::default();
        let session_outcomes = {
            let mut context = functions.new_inner_scope();
            context.add_variable_from_value("ctx", values.context(None));
            rules
                .iter()
                .map(|rule| {
                    (rule.dependence == Dependence::Session)
                        .then(|| evaluate(rule.program.as_ref(), &context))
                })
                .collect()
        };
        BoundRules {
            rules,
            statements,
            values,
            functions,
            session_outcomes,
            class_outcomes: Mutex::new(HashMap::new()),
        }
    }

    /// The first rule that decides for `statement` of class `class` (`None`: a class
    /// that is not kept), from kept outcomes where they can be kept.
    fn decide_statement(&self, statement: &Statement, class: Option<u64>) -> Decision<'_> {
        let mut kept = class
            .and_then(|id| {
                self.class_outcomes
                    .lock()
                    .ok()
                    .and_then(|outcomes| outcomes.get(&id).cloned())
            })
            .unwrap_or_else(|| vec![None; self.rules.len()]);
        let mut learned = false;
        let mut context = None;
        let mut evaluate_now = |rule: &CompiledRule| {
            let context = context.get_or_insert_with(|| {
                let mut context = self.functions.new_inner_scope();
                context.add_variable_from_value("ctx", self.values.context(Some(statement)));
                context
            });
            evaluate(rule.program.as_ref(), context)
        };
        let mut decision = Decision::NoMatch;
        for (index, rule) in self.rules.iter().enumerate() {
            let outcome = match (rule.dependence, self.session_outcomes[index], kept[index]) {
                (Dependence::Session, Some(outcome), _) => outcome,
                (Dependence::StatementClass, _, Some(outcome)) if class.is_some() => outcome,
                (Dependence::StatementClass, _, _) if class.is_some() => {
                    let outcome = evaluate_now(rule);
                    kept[index] = Some(outcome);
                    learned = true;
                    outcome
                }
                _ => evaluate_now(rule),
            };
            match (outcome, rule.effect) {
                (Outcome::True, effect) => {
                    decision = Decision::Rule(rule, effect);
                    break;
                }
                (Outcome::Unknown, RuleEffect::Deny) => {
                    decision = Decision::Rule(rule, RuleEffect::Deny);
                    break;
                }
                _ => {}
            }
        }
        if let (Some(id), true) = (class, learned) {
            if let Ok(mut outcomes) = self.class_outcomes.lock() {
                if outcomes.len() >= KEPT_CLASSES {
                    outcomes.clear();
                }
                outcomes.insert(id, kept);
            }
        }
        decision
    }

    /// The first rule that decides at connect, when there is no statement yet.
    fn decide_at_connect(&self) -> Decision<'_> {
        let mut context = self.functions.new_inner_scope();
        context.add_variable_from_value("ctx", self.values.context(None));
        for rule in self.rules.iter() {
            match (evaluate(rule.program.as_ref(), &context), rule.effect) {
                (Outcome::True, effect) => return Decision::Rule(rule, effect),
                (Outcome::Unknown, _) => return Decision::Undecided,
                _ => {}
            }
        }
        Decision::NoMatch
    }

    pub fn connect(self) -> ConnectDecision {
        match self.decide_at_connect() {
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

    fn check(&self, statement: &Statement, class: Option<u64>) -> Result<(), Denial> {
        let denial = |rule: &str| Denial {
            rule: rule.to_owned(),
            kind: statement.kind.to_owned(),
        };
        match self.decide_statement(statement, class) {
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
        match self.statements.classify_with_class(sql) {
            Ok((statements, class)) => statements.iter().try_for_each(|s| self.check(s, class)),
            // PostgreSQL refuses what does not parse, so it can pass: the client gets the
            // server's own syntax error. Rules still see it, as kind `other`.
            Err(_) => self.check(
                &Statement {
                    kind: "other",
                    tables: Arc::default(),
                    functions: Arc::default(),
                    text: Arc::new(sql.to_owned()),
                },
                None,
            ),
        }
    }

    fn check_function_call(&self) -> Result<(), Denial> {
        self.check(
            &Statement {
                kind: "call",
                tables: Arc::default(),
                functions: Arc::default(),
                text: Arc::default(),
            },
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_model::{AuthorizationRule, ClientFacts, QualifiedName};

    fn bound(identity: &str) -> BoundRules {
        let rule = |name: &str, effect, condition: Option<&str>| AuthorizationRule {
            name: name.into(),
            effect,
            condition: condition.map(str::to_owned),
            match_any: condition.is_none(),
        };
        let spec = AuthorizationSpec {
            rules: vec![
                rule(
                    "no-sleep",
                    RuleEffect::Deny,
                    Some("ctx.request.postgres.statement.text.contains('pg_sleep')"),
                ),
                rule(
                    "no-deletes",
                    RuleEffect::Deny,
                    Some("ctx.request.postgres.statement.kind == 'delete'"),
                ),
                rule(
                    "no-mallory",
                    RuleEffect::Deny,
                    Some("ctx.identity.name == 'mallory'"),
                ),
                rule("the-rest", RuleEffect::Allow, None),
            ],
        };
        let facts = SessionFacts {
            identity: QualifiedName::parse(identity, "default"),
            identity_type: "workload".into(),
            groups: Vec::new(),
            attributes: Default::default(),
            client: ClientFacts::default(),
            user: "app".into(),
            database: "app".into(),
        };
        let rules = Arc::new(compile_rules(&spec).unwrap());
        BoundRules::new(rules, Arc::new(StatementCache::default()), &facts)
    }

    fn verdict(rules: &BoundRules, sql: &str) -> String {
        match rules.check_statement(sql) {
            Ok(()) => "allowed".into(),
            Err(denial) => denial.rule,
        }
    }

    #[test]
    fn kept_outcomes_decide_as_evaluating_every_rule_would() {
        let rules = bound("app");
        // Same class, other literals: the kept class outcome, the text rule evaluated anew.
        assert_eq!(verdict(&rules, "SELECT 'harmless'"), "allowed");
        assert_eq!(verdict(&rules, "SELECT 'pg_sleep'"), "no-sleep");
        assert_eq!(verdict(&rules, "SELECT 'harmless again'"), "allowed");
        assert_eq!(verdict(&rules, "DELETE FROM t WHERE id = 1"), "no-deletes");
        assert_eq!(verdict(&rules, "DELETE FROM t WHERE id = 2"), "no-deletes");
        assert_eq!(verdict(&rules, "SELECT 1; DELETE FROM t"), "no-deletes");
        assert_eq!(rules.class_outcomes.lock().unwrap().len(), 2);
        // A session rule decided at bind.
        let mallory = bound("mallory");
        assert_eq!(verdict(&mallory, "SELECT 'harmless'"), "no-mallory");
        assert_eq!(
            verdict(&mallory, "DELETE FROM t WHERE id = 3"),
            "no-deletes"
        );
        assert_eq!(verdict(&mallory, "SELECT pg_sleep(1)"), "no-sleep");
    }

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
