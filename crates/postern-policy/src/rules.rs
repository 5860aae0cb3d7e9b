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
use chrono::{DateTime, Datelike, Timelike, Utc};
use postern_model::{
    AuthorizationSpec, ConnectDecision, Denial, HookStatement, RuleEffect, RuleError, SessionFacts,
    SessionHook, SessionPolicy,
};

use crate::classify::Statement;
use crate::dependence::{dependence, Dependence};
use crate::statement_cache::StatementCache;
use crate::text_test::TextTest;

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
    /// The condition, when it only tests the statement's text: decided natively.
    pub text_test: Option<TextTest>,
}

/// A compiled condition and what the rules need to know of its syntax.
struct Compiled {
    program: Option<Program>,
    dependence: Dependence,
    text_test: Option<TextTest>,
}

/// Compiles a condition, naming `path` in the error.
pub(crate) fn compile(path: &str, condition: Option<&str>) -> Result<Option<Program>, RuleError> {
    Ok(compile_with_dependence(path, condition)?.program)
}

/// [`compile`], what the condition depends on and whether it is a text test.
fn compile_with_dependence(path: &str, condition: Option<&str>) -> Result<Compiled, RuleError> {
    let invalid = |message: String| RuleError {
        path: path.to_owned(),
        message: format!("invalid CEL: {}", one_line(&message)),
    };
    let Some(source) = condition else {
        return Ok(Compiled {
            program: None,
            dependence: dependence(None),
            text_test: None,
        });
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
        Ok::<_, cel_parser::ParseErrors>(Compiled {
            program: Some(program),
            dependence: dependence(Some(&tree)),
            text_test: TextTest::of(&tree),
        })
    });
    std::panic::set_hook(hook);
    match compiled {
        Ok(Ok(compiled)) => Ok(compiled),
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
            let compiled = compile_with_dependence(
                &format!("spec.authorization.rules[{index}].condition"),
                rule.condition.as_deref(),
            )?;
            Ok(CompiledRule {
                name: rule.name.clone(),
                effect: rule.effect,
                program: compiled.program,
                dependence: compiled.dependence,
                text_test: compiled.text_test,
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

/// The parts of `ctx.request.postgres.statement` that stay the same for a statement class.
#[derive(Debug, Clone)]
struct ClassValues {
    kind: Value,
    tables: Value,
    functions: Value,
}

impl ClassValues {
    fn of(statement: &Statement) -> ClassValues {
        ClassValues {
            kind: string(statement.kind),
            tables: list(&statement.tables),
            functions: list(&statement.functions),
        }
    }
}

/// `ctx.time` at `now`.
fn time(now: DateTime<Utc>) -> [Value; 3] {
    [
        Value::Timestamp(now.fixed_offset()),
        Value::Int(i64::from(now.weekday().num_days_from_sunday())),
        Value::Int(i64::from(now.hour())),
    ]
}

/// The UTC hour `now` falls in: hour and weekday are the same throughout one.
fn hour_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(3600)
}

/// The entry `key` of a map value, to change in place (the map is copied first only if
/// something else still holds it).
fn entry_mut<'v>(value: &'v mut Value, key: &Key) -> Option<&'v mut Value> {
    match value {
        Value::Map(map) => Arc::make_mut(&mut map.map).get_mut(key),
        _ => None,
    }
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

    /// `ctx` at connect, when there is no statement yet.
    pub fn connect_context(&self) -> Value {
        self.context_at(None, Utc::now())
    }

    /// `ctx` at `now`, for a statement (of a class with these values, and this text) or
    /// at connect.
    fn context_at(
        &self,
        statement: Option<(&ClassValues, &Arc<String>)>,
        now: DateTime<Utc>,
    ) -> Value {
        let keys = &*KEYS;
        let user = (&keys.user, self.user.clone());
        let database = (&keys.database, self.database.clone());
        let postgres = match statement {
            Some((class, text)) => map([
                user,
                database,
                (
                    &keys.statement,
                    map([
                        (&keys.kind, class.kind.clone()),
                        (&keys.tables, class.tables.clone()),
                        (&keys.functions, class.functions.clone()),
                        (&keys.text, Value::String(text.clone())),
                    ]),
                ),
            ]),
            None => map([user, database]),
        };
        let [now, weekday, hour] = time(now);
        map([
            (&keys.identity, self.identity.clone()),
            (&keys.client, self.client.clone()),
            (&keys.request, map([(&keys.postgres, postgres)])),
            (
                &keys.time,
                map([
                    (&keys.now, now),
                    (&keys.weekday, weekday),
                    (&keys.hour, hour),
                ]),
            ),
        ])
    }
}

/// Points `ctx` (made by [`SessionValues::context_at`] with a statement) at another
/// statement and time by changing its entries in place: no map is built or copied, as
/// the evaluations before have let go of it. The class's values are set only when
/// `new_class`, the hour and weekday only when `new_hour`. `None` when `ctx` is not of
/// that shape.
fn repoint(
    ctx: &mut Value,
    (class, new_class): (&ClassValues, bool),
    text: &Arc<String>,
    (now, new_hour): (DateTime<Utc>, bool),
) -> Option<()> {
    let keys = &*KEYS;
    let statement = entry_mut(ctx, &keys.request)
        .and_then(|request| entry_mut(request, &keys.postgres))
        .and_then(|postgres| entry_mut(postgres, &keys.statement))?;
    if new_class {
        *entry_mut(statement, &keys.kind)? = class.kind.clone();
        *entry_mut(statement, &keys.tables)? = class.tables.clone();
        *entry_mut(statement, &keys.functions)? = class.functions.clone();
    }
    *entry_mut(statement, &keys.text)? = Value::String(text.clone());
    let time_map = entry_mut(ctx, &keys.time)?;
    let [now, weekday, hour] = time(now);
    *entry_mut(time_map, &keys.now)? = now;
    if new_hour {
        *entry_mut(time_map, &keys.weekday)? = weekday;
        *entry_mut(time_map, &keys.hour)? = hour;
    }
    Some(())
}

/// Statement classes whose rule outcomes a session keeps before it starts over.
const KEPT_CLASSES: usize = 4096;

/// What a session keeps of one statement class.
struct KeptClass {
    /// By rule: outcomes of the rules that depend on no more than the class (and the hour).
    outcomes: Vec<Option<Outcome>>,
    /// The hour the kept outcomes of hour-dependent rules are for.
    hour: i64,
    values: ClassValues,
}

/// `ctx` for statement checks, kept from one statement to the next.
struct Scope {
    /// CEL's built-in functions, registered once per session rather than per statement,
    /// and the variable `ctx`.
    context: Context<'static>,
    /// When `ctx` has the shape [`repoint`] changes: the statement class (`None`: not
    /// kept) and the hour it holds.
    holds: Option<(Option<u64>, i64)>,
}

impl Scope {
    /// Sets `ctx` to a statement of class `id` (`None`: not kept) with `values` and
    /// `text`, at `now`.
    fn prepare(
        &mut self,
        session: &SessionValues,
        (id, values): (Option<u64>, &ClassValues),
        text: &Arc<String>,
        now: DateTime<Utc>,
    ) {
        let Context::Root { variables, .. } = &mut self.context else {
            return;
        };
        let hour = hour_of(now);
        let repointed = self.holds.is_some_and(|(held, held_hour)| {
            let new_class = id.is_none() || held != id;
            variables
                .get_mut("ctx")
                .and_then(|ctx| repoint(ctx, (values, new_class), text, (now, held_hour != hour)))
                .is_some()
        });
        if !repointed {
            variables.insert("ctx".into(), session.context_at(Some((values, text)), now));
        }
        self.holds = Some((id, hour));
    }
}

/// What a session's statement checks keep between them.
struct Evaluation {
    scope: Scope,
    /// By class id (a fingerprint: already a hash).
    classes: ClassMap,
}

type ClassMap = HashMap<u64, KeptClass, foldhash::fast::RandomState>;

/// A service's rules bound to one session. Outcomes that cannot change are worked out
/// once: those of rules reading only the session at bind, those of rules also reading the
/// statement's classification (and the hour) once per statement class (and hour). Only
/// rules reading the text or the exact time are evaluated for every statement, and not
/// even those for a text allowed just before, unless one reads the exact time or policy
/// hooks are bound.
pub(crate) struct BoundRules {
    rules: Arc<Vec<CompiledRule>>,
    statements: Arc<StatementCache>,
    values: SessionValues,
    /// By rule: the outcome of each session-only rule.
    session_outcomes: Vec<Option<Outcome>>,
    /// Whether any rule's outcome is kept by statement class.
    keeps_classes: bool,
    /// Whether any rule reads the time at a check: one on the hour, or one evaluated at
    /// every check that is not a plain text test. Reading the clock and making a date of
    /// it is skipped for the others.
    reads_time: bool,
    /// Whether the rules' verdict on a text holds for as long as the text and the hour
    /// stay the same: no rule reads the exact time or anything else that may change
    /// between checks (a text test reads only the text). Hooks are asked every time.
    verdict_per_text: bool,
    evaluation: Mutex<Evaluation>,
    /// Policy-hook plugins asked, in order, about each statement the rules allow.
    hooks: Vec<Box<dyn SessionHook>>,
    last_classified: Mutex<LastClassified>,
}

/// The text this session had classified last, and what it is. Drivers parse one
/// statement again and again (the unnamed statement of pgbench `-M extended`, of JDBC
/// below its prepare threshold, of `query_typed`): classifying it anew, even through the
/// shape cache, was two thirds of a ten-rule check. Classification depends on the text
/// alone, so what it gave holds for as long as the text is the same; so does the rules'
/// allowing it, where nothing else they read can change (within the hour, where a rule
/// reads the hour). Another text costs a copy into the kept text's buffer.
#[derive(Default)]
struct LastClassified {
    text: String,
    statements: Vec<Statement>,
    class: Option<u64>,
    /// The fields above hold `text`'s classification.
    holds: bool,
    /// The rules allowed `text` in this hour (hours since the epoch; 0 where no rule reads
    /// the time). Only an allowing verdict is kept: a refusal is decided again, so its
    /// reason is the rule's own each time.
    allowed_in: Option<i64>,
}

/// Longest text kept as [`LastClassified`].
const LAST_TEXT_KEPT: usize = 16 * 1024;

impl std::fmt::Debug for BoundRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundRules")
            .field("rules", &self.rules.len())
            .field("hooks", &self.hooks)
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
        let context = Context::default();
        let session_outcomes = {
            let mut context = context.new_inner_scope();
            context.add_variable_from_value("ctx", values.connect_context());
            rules
                .iter()
                .map(|rule| {
                    (rule.dependence == Dependence::Session)
                        .then(|| evaluate(rule.program.as_ref(), &context))
                })
                .collect()
        };
        BoundRules {
            keeps_classes: rules
                .iter()
                .any(|r| matches!(r.dependence, Dependence::StatementClass | Dependence::Hour)),
            reads_time: rules.iter().any(|r| match r.dependence {
                Dependence::Hour => true,
                Dependence::Every => r.text_test.is_none(),
                Dependence::Session | Dependence::StatementClass => false,
            }),
            verdict_per_text: rules
                .iter()
                .all(|r| r.dependence != Dependence::Every || r.text_test.is_some()),
            rules,
            statements,
            values,
            session_outcomes,
            evaluation: Mutex::new(Evaluation {
                scope: Scope {
                    context,
                    holds: None,
                },
                classes: ClassMap::default(),
            }),
            hooks: Vec::new(),
            last_classified: Mutex::default(),
        }
    }

    /// Asks `hooks` too, after the rules.
    pub fn with_hooks(mut self, hooks: Vec<Box<dyn SessionHook>>) -> BoundRules {
        self.hooks = hooks;
        self
    }

    /// What this session keeps of class `id` (made now if it is new), with the
    /// hour-dependent outcomes of an earlier hour forgotten.
    fn kept<'c>(
        &self,
        classes: &'c mut ClassMap,
        id: u64,
        statement: &Statement,
        hour: i64,
    ) -> &'c mut KeptClass {
        if classes.len() >= KEPT_CLASSES && !classes.contains_key(&id) {
            classes.clear();
        }
        let kept = classes.entry(id).or_insert_with(|| KeptClass {
            outcomes: vec![None; self.rules.len()],
            hour,
            values: ClassValues::of(statement),
        });
        if kept.hour != hour {
            for (outcome, rule) in kept.outcomes.iter_mut().zip(self.rules.iter()) {
                if rule.dependence == Dependence::Hour {
                    *outcome = None;
                }
            }
            kept.hour = hour;
        }
        kept
    }

    /// The first rule that decides for `statement` of class `class` (`None`: a class
    /// that is not kept) at `now`, from kept outcomes where they can be kept.
    fn decide_statement(
        &self,
        statement: &Statement,
        class: Option<u64>,
        now: DateTime<Utc>,
    ) -> Decision<'_> {
        // One task checks a session's statements: the lock is never contended.
        let mut evaluation = self
            .evaluation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Evaluation { scope, classes } = &mut *evaluation;
        let (mut kept, kept_values) = match class.filter(|_| self.keeps_classes) {
            Some(id) => {
                let KeptClass {
                    outcomes, values, ..
                } = self.kept(classes, id, statement, hour_of(now));
                (Some(outcomes), Some(&*values))
            }
            None => (None, None),
        };
        let mut unkept_values = None;
        let mut prepared = false;
        for (index, rule) in self.rules.iter().enumerate() {
            let known = match (rule.dependence, self.session_outcomes[index], &kept) {
                (Dependence::Session, Some(outcome), _) => Some(outcome),
                (Dependence::StatementClass | Dependence::Hour, _, Some(kept)) => kept[index],
                _ => None,
            };
            let outcome = match (known, &rule.text_test) {
                (Some(outcome), _) => outcome,
                (None, Some(test)) => match test.holds_for(&statement.text) {
                    true => Outcome::True,
                    false => Outcome::False,
                },
                (None, None) => {
                    if !prepared {
                        let values = match kept_values {
                            Some(values) => values,
                            None => unkept_values.insert(ClassValues::of(statement)),
                        };
                        scope.prepare(&self.values, (class, values), &statement.text, now);
                        prepared = true;
                    }
                    let outcome = evaluate(rule.program.as_ref(), &scope.context);
                    if let (Dependence::StatementClass | Dependence::Hour, Some(kept)) =
                        (rule.dependence, &mut kept)
                    {
                        kept[index] = Some(outcome);
                    }
                    outcome
                }
            };
            match (outcome, rule.effect) {
                (Outcome::True, effect) => return Decision::Rule(rule, effect),
                (Outcome::Unknown, RuleEffect::Deny) => {
                    return Decision::Rule(rule, RuleEffect::Deny)
                }
                _ => {}
            }
        }
        Decision::NoMatch
    }

    /// The first rule that decides at connect, when there is no statement yet.
    fn decide_at_connect(&self) -> Decision<'_> {
        let evaluation = self
            .evaluation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut context = evaluation.scope.context.new_inner_scope();
        context.add_variable_from_value("ctx", self.values.connect_context());
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
        if !self.rules.is_empty() {
            if let Some(denied) = self.rules_refuse_connect() {
                return denied;
            }
        }
        // Plugins are asked after the rules, as for statements.
        if let Err(denial) = self.hooks.iter().try_for_each(|hook| hook.check_connect()) {
            return ConnectDecision::Deny(denial);
        }
        ConnectDecision::Allow(Some(Arc::new(self)))
    }

    /// The connect-time denial of the rules, if they deny.
    fn rules_refuse_connect(&self) -> Option<ConnectDecision> {
        let denial = |rule: &str| {
            Some(ConnectDecision::Deny(Denial {
                rule: rule.to_owned(),
                kind: "connect".into(),
                reason: None,
            }))
        };
        match self.decide_at_connect() {
            Decision::Rule(rule, RuleEffect::Deny) => denial(&rule.name),
            Decision::NoMatch => denial(DEFAULT_DENY),
            Decision::Rule(_, RuleEffect::Allow) | Decision::Undecided => None,
        }
    }

    fn check(&self, statement: &Statement, class: Option<u64>) -> Result<(), Denial> {
        self.check_at(statement, class, self.now())
    }

    /// The time rules are decided at: the clock's only if a rule reads it.
    fn now(&self) -> DateTime<Utc> {
        match self.reads_time {
            true => Utc::now(),
            // No rule looks: any time decides the same.
            false => DateTime::UNIX_EPOCH,
        }
    }

    /// PostgreSQL refuses what does not parse, so it can pass: the client gets the
    /// server's own syntax error. Rules still see it, as kind `other`.
    fn check_unparsable(&self, sql: &str) -> Result<(), Denial> {
        self.check(
            &Statement {
                kind: "other",
                tables: Arc::default(),
                functions: Arc::default(),
                text: Arc::new(sql.to_owned()),
            },
            None,
        )
    }

    fn check_at(
        &self,
        statement: &Statement,
        class: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), Denial> {
        let denial = |rule: &str| Denial {
            rule: rule.to_owned(),
            kind: statement.kind.to_owned(),
            reason: None,
        };
        if !self.rules.is_empty() {
            match self.decide_statement(statement, class, now) {
                Decision::Rule(_, RuleEffect::Allow) => {}
                Decision::Rule(rule, RuleEffect::Deny) => return Err(denial(&rule.name)),
                Decision::NoMatch | Decision::Undecided => return Err(denial(DEFAULT_DENY)),
            }
        }
        if self.hooks.is_empty() {
            return Ok(());
        }
        let asked = HookStatement {
            kind: statement.kind,
            tables: &statement.tables,
            functions: &statement.functions,
            text: &statement.text,
            fingerprint: class,
        };
        self.hooks
            .iter()
            .try_for_each(|hook| hook.check_statement(&asked))
    }
}

enum Decision<'a> {
    Rule(&'a CompiledRule, RuleEffect),
    Undecided,
    NoMatch,
}

impl SessionPolicy for BoundRules {
    fn check_statement(&self, sql: &str) -> Result<(), Denial> {
        let last = (sql.len() <= LAST_TEXT_KEPT)
            .then(|| self.last_classified.lock().ok())
            .flatten();
        let Some(mut last) = last else {
            return match self.statements.classify_with_class(sql) {
                Ok((statements, class)) => statements.iter().try_for_each(|s| self.check(s, class)),
                Err(_) => self.check_unparsable(sql),
            };
        };
        if !(last.holds && last.text == sql) {
            last.holds = false;
            last.allowed_in = None;
            let Ok((statements, class)) = self.statements.classify_with_class(sql) else {
                return self.check_unparsable(sql);
            };
            last.text.clear();
            last.text.push_str(sql);
            // Moved, not cloned: the old ones go as they would have without keeping.
            last.statements = statements;
            last.class = class;
            last.holds = true;
        }
        let (class, now) = (last.class, self.now());
        // Where the verdict holds per text, the hour it is reached in (0 where no rule reads
        // the time); with hooks, every check asks them.
        let hour = (self.verdict_per_text && self.hooks.is_empty()).then(|| hour_of(now));
        if hour.is_some() && last.allowed_in == hour {
            return Ok(());
        }
        let verdict = last
            .statements
            .iter()
            .try_for_each(|s| self.check_at(s, class, now));
        last.allowed_in = if verdict.is_ok() { hour } else { None };
        verdict
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

    fn rule(name: &str, effect: RuleEffect, condition: Option<&str>) -> AuthorizationRule {
        AuthorizationRule {
            name: name.into(),
            effect,
            condition: condition.map(str::to_owned),
            match_any: condition.is_none(),
        }
    }

    /// A policy hook that allows a session's first statement and refuses the rest: a
    /// hook's answer may change between checks of one text.
    #[derive(Debug, Default)]
    struct RefuseSecondCall {
        calls: std::sync::atomic::AtomicUsize,
    }

    impl SessionHook for RefuseSecondCall {
        fn check_connect(&self) -> Result<(), Denial> {
            Ok(())
        }

        fn check_statement(&self, statement: &HookStatement<'_>) -> Result<(), Denial> {
            match self
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            {
                0 => Ok(()),
                _ => Err(Denial {
                    rule: "second-call".into(),
                    kind: statement.kind.into(),
                    reason: None,
                }),
            }
        }
    }

    /// One denying rule, then one allowing the rest, bound to a session of `app`.
    fn deny_then_allow(name: &str, condition: &str) -> BoundRules {
        bind(
            vec![
                rule(name, RuleEffect::Deny, Some(condition)),
                rule("the-rest", RuleEffect::Allow, None),
            ],
            "app",
        )
    }

    /// `rules` compiled and bound to a session of `identity`.
    fn bind(rules: Vec<AuthorizationRule>, identity: &str) -> BoundRules {
        let compiled = Arc::new(
            compile_rules(&AuthorizationSpec {
                rules,
                plugins: Vec::new(),
            })
            .unwrap(),
        );
        BoundRules::new(
            compiled,
            Arc::new(StatementCache::default()),
            &facts(identity),
        )
    }

    fn bound(identity: &str) -> BoundRules {
        bind(
            vec![
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
            identity,
        )
    }

    fn facts(identity: &str) -> SessionFacts {
        SessionFacts {
            identity: QualifiedName::parse(identity, "default"),
            service: QualifiedName::parse("orders", "default"),
            identity_type: "workload".into(),
            groups: Vec::new(),
            attributes: Default::default(),
            client: ClientFacts::default(),
            user: "app".into(),
            database: "app".into(),
        }
    }

    fn verdict(rules: &BoundRules, sql: &str) -> String {
        match rules.check_statement(sql) {
            Ok(()) => "allowed".into(),
            Err(denial) => denial.rule,
        }
    }

    #[test]
    fn a_text_checked_again_is_not_classified_again_and_decides_the_same() {
        let rules = bound("app");
        let looked_up = |rules: &BoundRules| {
            let stats = rules.statements.stats();
            stats.hits + stats.misses
        };
        assert_eq!(verdict(&rules, "SELECT pg_sleep(1)"), "no-sleep");
        assert_eq!(verdict(&rules, "SELECT pg_sleep(1)"), "no-sleep");
        assert_eq!(looked_up(&rules), 1);
        assert_eq!(verdict(&rules, "SELECT 1"), "allowed");
        assert_eq!(verdict(&rules, "SELECT 1"), "allowed");
        assert_eq!(verdict(&rules, "DELETE FROM t"), "no-deletes");
        assert_eq!(verdict(&rules, "DELETE FROM t"), "no-deletes");
        assert_eq!(verdict(&rules, "SELECT 1"), "allowed");
        assert_eq!(looked_up(&rules), 4);
        // A text that does not parse is checked as kind `other` each time.
        assert_eq!(verdict(&rules, "SELEC pg_sleep"), "no-sleep");
        assert_eq!(verdict(&rules, "SELEC pg_sleep"), "no-sleep");
        assert_eq!(verdict(&rules, "SELECT 1"), "allowed");
        // Longer than kept: classified every time.
        let long = format!("SELECT '{}'", "x".repeat(LAST_TEXT_KEPT));
        let before = looked_up(&rules);
        assert_eq!(verdict(&rules, &long), "allowed");
        assert_eq!(verdict(&rules, &long), "allowed");
        assert_eq!(looked_up(&rules), before + 2);
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
        assert_eq!(rules.evaluation.lock().unwrap().classes.len(), 2);
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
    fn the_clock_is_read_only_for_rules_that_read_the_time() {
        // Past 2001: true by the clock, false at the epoch a check without time uses.
        let timed = deny_then_allow(
            "after-2001",
            "ctx.time.now > timestamp('2001-01-01T00:00:00Z')",
        );
        assert!(timed.reads_time);
        assert_eq!(
            timed.check_statement("SELECT 1").map_err(|d| d.rule),
            Err("after-2001".to_owned())
        );
        let hourly = deny_then_allow("evenings", "ctx.time.hour >= 18");
        assert!(hourly.reads_time);
        let untimed = bind(
            vec![
                rule(
                    "no-ddl",
                    RuleEffect::Deny,
                    Some("ctx.request.postgres.statement.kind == 'ddl'"),
                ),
                rule(
                    "no-sleep",
                    RuleEffect::Deny,
                    Some("ctx.request.postgres.statement.text.contains('pg_sleep')"),
                ),
                rule("the-rest", RuleEffect::Allow, None),
            ],
            "app",
        );
        assert!(!untimed.reads_time);
        assert_eq!(
            untimed.check_statement("SELECT 1").map_err(|d| d.rule),
            Ok(())
        );
        assert_eq!(
            untimed
                .check_statement("SELECT pg_sleep(1)")
                .map_err(|d| d.rule),
            Err("no-sleep".to_owned())
        );
    }

    #[test]
    fn a_text_allowed_again_keeps_its_verdict_only_where_nothing_else_can_change_it() {
        let kept = |rules: &BoundRules| rules.last_classified.lock().unwrap().allowed_in;
        let untimed = deny_then_allow(
            "no-sleep",
            "ctx.request.postgres.statement.text.contains('pg_sleep')",
        );
        assert!(untimed.verdict_per_text);
        assert_eq!(
            untimed.check_statement("SELECT 1").map_err(|d| d.rule),
            Ok(())
        );
        assert_eq!(kept(&untimed), Some(0));
        // Another text is decided afresh; a refusal is never kept.
        for _ in 0..2 {
            assert_eq!(
                untimed
                    .check_statement("SELECT pg_sleep(1)")
                    .map_err(|d| d.rule),
                Err("no-sleep".to_owned())
            );
            assert_eq!(kept(&untimed), None);
        }
        // What is kept is used: a refused text marked allowed passes (white-box: only the
        // verdict kept could let it).
        untimed.last_classified.lock().unwrap().allowed_in = Some(0);
        assert_eq!(
            untimed
                .check_statement("SELECT pg_sleep(1)")
                .map_err(|d| d.rule),
            Ok(())
        );
        // Kept for the hour it was decided in, where a rule reads the hour, and only then.
        let every_hour = deny_then_allow("any-hour", "ctx.time.hour >= 0");
        assert_eq!(
            every_hour.check_statement("SELECT 1").map_err(|d| d.rule),
            Err("any-hour".to_owned())
        );
        every_hour.last_classified.lock().unwrap().allowed_in = Some(hour_of(Utc::now()) - 1);
        assert_eq!(
            every_hour.check_statement("SELECT 1").map_err(|d| d.rule),
            Err("any-hour".to_owned())
        );
        let hourly = deny_then_allow("evenings", "ctx.time.hour >= 24");
        let before = hour_of(Utc::now());
        assert_eq!(
            hourly.check_statement("SELECT 1").map_err(|d| d.rule),
            Ok(())
        );
        let after = hour_of(Utc::now());
        assert!(kept(&hourly).is_some_and(|hour| hour == before || hour == after));
        // Not kept where a rule reads the exact time, nor where hooks are asked.
        let timed = deny_then_allow(
            "before-2001",
            "ctx.time.now < timestamp('2001-01-01T00:00:00Z')",
        );
        assert!(!timed.verdict_per_text);
        assert_eq!(
            timed.check_statement("SELECT 1").map_err(|d| d.rule),
            Ok(())
        );
        assert_eq!(kept(&timed), None);
        let hooked = bound("app").with_hooks(vec![Box::new(RefuseSecondCall::default())]);
        assert!(hooked.verdict_per_text);
        assert_eq!(
            hooked.check_statement("SELECT 1").map_err(|d| d.rule),
            Ok(())
        );
        assert_eq!(
            hooked.check_statement("SELECT 1").map_err(|d| d.rule),
            Err("second-call".to_owned())
        );
    }

    #[test]
    fn hour_rules_are_kept_for_their_hour_and_time_rules_see_each_check_s_time() {
        let rules = bind(
            vec![
                rule(
                    "evening-deletes",
                    RuleEffect::Deny,
                    Some("ctx.time.hour >= 18 && ctx.request.postgres.statement.kind == 'delete'"),
                ),
                rule(
                    "after-2030",
                    RuleEffect::Deny,
                    Some("ctx.time.now > timestamp('2030-01-01T00:00:00Z')"),
                ),
                rule("the-rest", RuleEffect::Allow, None),
            ],
            "app",
        );
        assert_eq!(rules.rules[0].dependence, Dependence::Hour);
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let verdict = |sql: &str, now| {
            let (statements, class) = rules.statements.classify_with_class(sql).unwrap();
            assert!(class.is_some(), "{sql} is kept by class");
            match rules.check_at(&statements[0], class, now) {
                Ok(()) => "allowed".to_owned(),
                Err(denial) => denial.rule,
            }
        };
        let delete = |id: u32| format!("DELETE FROM t WHERE id = {id}");
        assert_eq!(verdict(&delete(1), at("2029-05-04T17:00:00Z")), "allowed");
        // Kept for the hour: the same class's outcome is not worked out again.
        let kept = |rules: &BoundRules| {
            let evaluation = rules.evaluation.lock().unwrap();
            let class = evaluation
                .classes
                .values()
                .next()
                .map(|c| (c.outcomes[0], c.hour));
            class
        };
        assert_eq!(
            kept(&rules),
            Some((Some(Outcome::False), hour_of(at("2029-05-04T17:00:00Z"))))
        );
        assert_eq!(verdict(&delete(2), at("2029-05-04T17:59:59Z")), "allowed");
        // A new hour: worked out again.
        assert_eq!(
            verdict(&delete(3), at("2029-05-04T18:00:00Z")),
            "evening-deletes"
        );
        assert_eq!(
            kept(&rules),
            Some((Some(Outcome::True), hour_of(at("2029-05-04T18:00:00Z"))))
        );
        assert_eq!(verdict(&delete(4), at("2029-05-05T09:00:00Z")), "allowed");
        // A rule on the exact time sees each check's time, in the same class.
        assert_eq!(
            verdict(&delete(5), at("2030-01-01T09:00:00Z")),
            "after-2030"
        );
        assert_eq!(verdict(&delete(6), at("2029-12-31T09:00:00Z")), "allowed");
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
