//! Postern's native policy engine: CEL rules (`cel-interpreter`) over sessions and
//! statements that PostgreSQL's own parser classified (`pg_query`), `dynamicConfig` route
//! choice, and redaction of secret literals for the access log. Pure functions over a
//! context; the store calls it through [`postern_model::PolicyEngine`].

mod classify;
mod dependence;
mod redact;
mod rules;
mod shape;
mod statement_cache;
mod text_test;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cel_interpreter::{Context, Program};
use postern_model::{
    AuthorizationSpec, ConnectDecision, Denial, HookStatement, PolicyEngine, PolicyPlugins,
    RouteRule, RuleError, SessionFacts, SessionHook,
};

pub use classify::{classify, Statement, Unparsable};
pub use redact::{redact, Redactor, DEFAULT_SECRET_FUNCTIONS, REDACTED};
pub use rules::DEFAULT_DENY;
pub use shape::shape;
pub use statement_cache::{CacheStats, StatementCache};

use rules::{compile, compile_rules, evaluate, BoundRules, CompiledRule, Outcome, SessionValues};

/// Compiled versions kept before the cache starts over (old generations pile up as
/// services change).
const CACHE_LIMIT: usize = 1024;

/// The CEL engine, with every version of every service's rules compiled once, and every
/// shape of statement classified once.
#[derive(Default)]
pub struct CelEngine {
    rules: Mutex<HashMap<String, Arc<Vec<CompiledRule>>>>,
    routes: Mutex<HashMap<String, Arc<Vec<Option<Program>>>>>,
    statements: Arc<StatementCache>,
    plugins: Option<Arc<dyn PolicyPlugins>>,
}

impl CelEngine {
    pub fn new() -> CelEngine {
        CelEngine::default()
    }

    /// Services' `authorization.plugins` are looked up in `plugins`.
    pub fn with_plugins(plugins: Arc<dyn PolicyPlugins>) -> CelEngine {
        CelEngine {
            plugins: Some(plugins),
            ..CelEngine::default()
        }
    }

    /// The session's hooks, in the service's order. A plugin that is not loaded denies
    /// every statement: a control that is missing lets nothing through.
    fn hooks(&self, names: &[String], facts: &SessionFacts) -> Vec<Box<dyn SessionHook>> {
        names
            .iter()
            .map(|name| {
                self.plugins
                    .as_ref()
                    .and_then(|p| p.bind(&facts.service.namespace, name, facts))
                    .unwrap_or_else(|| Box::new(MissingPlugin(name.clone())))
            })
            .collect()
    }
}

/// Stands for a plugin a service names that this gateway has not loaded.
#[derive(Debug)]
struct MissingPlugin(String);

impl MissingPlugin {
    fn refuse(&self, kind: &str) -> Denial {
        Denial {
            rule: format!("plugin:{}", self.0),
            kind: kind.to_owned(),
            reason: Some(format!("policy plugin {} is not loaded", self.0)),
        }
    }
}

impl SessionHook for MissingPlugin {
    fn check_connect(&self) -> Result<(), Denial> {
        Err(self.refuse("connect"))
    }

    fn check_statement(&self, statement: &HookStatement<'_>) -> Result<(), Denial> {
        Err(self.refuse(statement.kind))
    }
}

/// The cached value under `key`, or `build`'s, remembered.
fn cached<T>(
    cache: &Mutex<HashMap<String, Arc<T>>>,
    key: &str,
    build: impl FnOnce() -> Result<T, RuleError>,
) -> Result<Arc<T>, RuleError> {
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(key).cloned()) {
        return Ok(hit);
    }
    let built = Arc::new(build()?);
    if let Ok(mut cache) = cache.lock() {
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key.to_owned(), built.clone());
    }
    Ok(built)
}

fn compile_routes(routes: &[RouteRule]) -> Result<Vec<Option<Program>>, RuleError> {
    routes
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            compile(
                &format!("spec.upstream.rules[{index}].condition"),
                rule.condition.as_deref(),
            )
        })
        .collect()
}

impl PolicyEngine for CelEngine {
    fn validate(
        &self,
        authorization: &AuthorizationSpec,
        routes: &[RouteRule],
    ) -> Result<(), RuleError> {
        compile_rules(authorization)?;
        compile_routes(routes)?;
        Ok(())
    }

    fn connect(
        &self,
        cache_key: &str,
        authorization: &AuthorizationSpec,
        facts: &SessionFacts,
    ) -> Result<ConnectDecision, RuleError> {
        if authorization.is_empty() {
            return Ok(ConnectDecision::Allow(None));
        }
        let rules = cached(&self.rules, cache_key, || compile_rules(authorization))?;
        let bound = BoundRules::new(rules, self.statements.clone(), facts)
            .with_hooks(self.hooks(&authorization.plugins, facts));
        Ok(bound.connect())
    }

    fn statement_cache(&self) -> CacheStats {
        self.statements.stats()
    }

    fn choose_route(
        &self,
        cache_key: &str,
        routes: &[RouteRule],
        facts: &SessionFacts,
    ) -> Result<Option<String>, RuleError> {
        let programs = cached(&self.routes, cache_key, || compile_routes(routes))?;
        let mut context = Context::default();
        context.add_variable_from_value("ctx", SessionValues::new(facts).connect_context());
        Ok(routes
            .iter()
            .zip(programs.iter())
            .find(|(_, program)| evaluate(program.as_ref(), &context) == Outcome::True)
            .map(|(rule, _)| rule.config.clone()))
    }
}
