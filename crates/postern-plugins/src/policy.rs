//! Policy hooks: a plugin asked about each session and statement. Instances are kept warm
//! and reused; one that traps or runs past its time is dropped (wasmtime will not enter
//! it again) and the call fails closed. After [`UNHEALTHY_AFTER`] failures in a row the
//! plugin is not called at all until a backoff ends, and then from fresh instances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use crate::bindings::policy::{Policy, PolicyPre};
use crate::bindings::types::{ClientInfo, Decision, Identity, Statement, Verdict};
use crate::error::PluginError;
use crate::host::{new_store, Capability, HostState, HttpGrant, PluginShared};
use crate::runtime::{wrong_kind, Runtime, EPOCH_TICK, MAX_MEMORY_BYTES};

/// The longest a policy-hook call may run (it holds the session's worker thread).
pub const MAX_POLICY_CALL: Duration = Duration::from_secs(1);
/// Failures in a row that make a plugin unhealthy.
pub const UNHEALTHY_AFTER: u32 = 5;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_LAST: Duration = Duration::from_secs(60);
/// The interfaces a policy hook may be granted: no network, no secrets.
pub(crate) const POLICY_OFFERS: [Capability; 2] = [Capability::Log, Capability::Cache];

/// What a failing plugin's calls answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Deny (the default: a security control that fails lets nothing through).
    #[default]
    Closed,
    /// Allow, logged as a warning each time: only as an explicit choice.
    Open,
}

/// A plugin as its resource describes it.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    /// The namespace of its resource (`default` outside the gateway).
    pub namespace: String,
    /// `spec.config` as JSON text, handed to `init`.
    pub config: String,
    pub capabilities: Vec<Capability>,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// How long one call may run.
    pub call_timeout: Duration,
    /// Idle instances kept for the next calls.
    pub warm_instances: usize,
    pub failure: FailureMode,
    /// Whether `statement.text` is handed to the plugin (it may hold secrets).
    pub pass_text: bool,
    /// A policy hook is asked only about statements this matches.
    pub statements: Option<postern_model::StatementFilter>,
    /// The resource's generation this was loaded from (0 outside the gateway).
    pub generation: i64,
    /// Where `http-client` may go.
    pub http: HttpGrant,
    /// Secrets `secrets.get` may read.
    pub secrets: Vec<String>,
}

impl PluginSpec {
    /// The runtime's view of a `kind: Plugin` resource named `name`.
    pub fn from_resource(name: &str, spec: &postern_model::PluginSpec) -> PluginSpec {
        let capabilities = spec
            .capabilities
            .iter()
            .filter_map(|c| Capability::from_interface(c))
            .collect();
        PluginSpec {
            name: name.to_owned(),
            namespace: postern_model::DEFAULT_NAMESPACE.to_owned(),
            config: spec.config.to_string(),
            capabilities,
            memory_bytes: usize::try_from(spec.limits.memory_mib).unwrap_or(usize::MAX) << 20,
            call_timeout: Duration::from_millis(u64::from(spec.limits.call_timeout_ms)),
            warm_instances: 4,
            failure: match spec.failure {
                postern_model::PluginFailure::Closed => FailureMode::Closed,
                postern_model::PluginFailure::Open => FailureMode::Open,
            },
            pass_text: spec.statement_text,
            statements: spec.statements.clone(),
            generation: 0,
            http: HttpGrant {
                allow: spec
                    .http
                    .allow
                    .iter()
                    .filter_map(|origin| postern_model::parse_origin(origin))
                    .collect(),
                timeout: Duration::from_millis(u64::from(spec.http.timeout_ms)),
                max_response_bytes: spec.http.max_response_bytes,
                canned: None,
            },
            secrets: spec.secrets.clone(),
        }
    }

    pub fn new(name: &str, config: &str) -> PluginSpec {
        PluginSpec {
            name: name.to_owned(),
            namespace: postern_model::DEFAULT_NAMESPACE.to_owned(),
            config: config.to_owned(),
            capabilities: vec![Capability::Log],
            memory_bytes: 16 << 20,
            call_timeout: Duration::from_millis(100),
            warm_instances: 4,
            failure: FailureMode::Closed,
            pass_text: false,
            statements: None,
            generation: 0,
            http: HttpGrant::default(),
            secrets: Vec::new(),
        }
    }
}

/// Call times are counted in power-of-two buckets of nanoseconds: bucket `i` holds calls
/// that took less than `2^i` ns (the last, from about 2 s, holds the rest).
const TIME_BUCKETS: usize = 32;

/// Counts per plugin, for `/metrics`.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub denies: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    /// Calls refused without running because the plugin was unhealthy.
    pub skipped: AtomicU64,
    pub instances_created: AtomicU64,
    pub call_nanos: AtomicU64,
    /// Statements answered from a kept verdict without calling the plugin.
    pub cache_hits: AtomicU64,
    call_times: [AtomicU64; TIME_BUCKETS],
}

impl PluginStats {
    pub(crate) fn count_call_time(&self, nanos: u64) {
        self.call_nanos.fetch_add(nanos, Ordering::Relaxed);
        let bucket = (u64::BITS - nanos.leading_zeros()) as usize;
        self.call_times[bucket.min(TIME_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The call time under which a share `q` (0 to 1) of calls finished, as the upper
    /// bound of its power-of-two bucket (so within a factor of two); `None` before any.
    pub fn call_time_quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .call_times
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        let bucket = counts
            .iter()
            .position(|count| {
                seen += count;
                seen >= wanted
            })
            .unwrap_or(TIME_BUCKETS - 1);
        Some(Duration::from_nanos(1u64 << bucket))
    }
}

/// What a policy hook is asked.
enum Question<'a> {
    Connect(&'a ClientInfo),
    Statement(&'a Statement),
}

struct Warm {
    store: Store<HostState>,
    bindings: Policy,
}

/// Failures in a row, and the rest they earn a plugin.
#[derive(Default)]
pub(crate) struct Health {
    failures_in_a_row: u32,
    /// Set while the plugin is unhealthy: calls fail at once until then.
    resting_until: Option<Instant>,
    backoff: Option<Duration>,
}

impl Health {
    /// Whether the plugin is resting now (its calls are not made).
    pub fn resting(&self) -> bool {
        self.resting_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Notes a call's outcome; returns the rest that starts now when this failure made
    /// the plugin unhealthy ([`UNHEALTHY_AFTER`] in a row: 1 s, doubling to 60 s).
    pub fn note(&mut self, ok: bool) -> Option<Duration> {
        if ok {
            *self = Health::default();
            return None;
        }
        self.failures_in_a_row += 1;
        if self.failures_in_a_row < UNHEALTHY_AFTER {
            return None;
        }
        let backoff = self
            .backoff
            .map_or(BACKOFF_FIRST, |b| (b * 2).min(BACKOFF_LAST));
        self.backoff = Some(backoff);
        self.resting_until = Some(Instant::now() + backoff);
        self.failures_in_a_row = 0;
        Some(backoff)
    }
}

/// A loaded policy hook.
pub struct PolicyHook {
    /// Unique per load in this process: verdicts kept from one load are not reused
    /// after another.
    load_id: u64,
    runtime: Arc<Runtime>,
    spec: PluginSpec,
    pre: PolicyPre<HostState>,
    shared: Arc<PluginShared>,
    timeout_ticks: u64,
    idle: Mutex<Vec<Warm>>,
    health: Mutex<Health>,
    stats: PluginStats,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its state whole.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Classifies a failed call, counts and logs it (never to the client).
pub(crate) fn call_failure(
    spec: &PluginSpec,
    stats: &PluginStats,
    error: &wasmtime::Error,
) -> PluginError {
    let plugin = spec.name.clone();
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        stats.timeouts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin, timeout = ?spec.call_timeout, "plugin call timed out");
        PluginError::Timeout { plugin }
    } else {
        stats.traps.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin, error = format!("{error:#}"), "plugin trapped");
        PluginError::Trap { plugin }
    }
}

/// The epoch ticks in a call's time limit, checked against what the gateway allows.
pub(crate) fn timeout_ticks(spec: &PluginSpec) -> Result<u64, PluginError> {
    if spec.memory_bytes > MAX_MEMORY_BYTES {
        return Err(PluginError::Limits {
            plugin: spec.name.clone(),
            what: format!(
                "memory limit {} MiB is over the gateway's {} MiB",
                spec.memory_bytes >> 20,
                MAX_MEMORY_BYTES >> 20
            ),
        });
    }
    // One tick more: the first may come at once.
    let ticks = spec
        .call_timeout
        .as_millis()
        .div_ceil(EPOCH_TICK.as_millis())
        + 1;
    if spec.call_timeout.is_zero() || spec.call_timeout > Duration::from_secs(10) {
        return Err(PluginError::Limits {
            plugin: spec.name.clone(),
            what: "time per call must be from 1 ms to 10 s".into(),
        });
    }
    Ok(u64::try_from(ticks).unwrap_or(u64::MAX))
}

impl PolicyHook {
    /// Compiles the component, checks its imports against the policy world and the
    /// grants, and runs `init` on a first instance (kept warm): a plugin that does not
    /// start is never swapped in.
    pub async fn load(
        runtime: &Arc<Runtime>,
        spec: PluginSpec,
        component: Arc<[u8]>,
    ) -> Result<PolicyHook, PluginError> {
        let plugin = spec.name.clone();
        let timeout_ticks = timeout_ticks(&spec)?;
        if spec.call_timeout > MAX_POLICY_CALL {
            // A hook runs on the session's own task: it must not hold a worker long.
            return Err(PluginError::Limits {
                plugin,
                what: format!(
                    "a policy hook's time per call is at most {} ms",
                    MAX_POLICY_CALL.as_millis()
                ),
            });
        }
        const KIND: &str = "policy";
        let (instance_pre, _) = runtime
            .prepare(
                &spec,
                component,
                &POLICY_OFFERS,
                &runtime.policy_linker,
                KIND,
            )
            .await?;
        let pre = PolicyPre::new(instance_pre).map_err(wrong_kind(&plugin, KIND))?;
        let hook = PolicyHook {
            load_id: runtime.next_load_id(),
            runtime: runtime.clone(),
            shared: Arc::new(PluginShared::new(
                &spec,
                None,
                runtime.settings.log_lines.clone(),
            )),
            spec,
            pre,
            timeout_ticks,
            idle: Mutex::new(Vec::new()),
            health: Mutex::new(Health::default()),
            stats: PluginStats::default(),
        };
        let canary = hook.instantiate().await?;
        lock(&hook.idle).push(canary);
        Ok(hook)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    pub fn load_id(&self) -> u64 {
        self.load_id
    }

    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// The answer when a call would have waited, which a policy hook's imports never do:
    /// counted as a failure and answered as one.
    pub(crate) fn would_wait(&self) -> Verdict {
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            plugin = self.spec.name,
            "plugin call would have waited; its instance is dropped"
        );
        let failed = self.settle(
            None,
            Err::<Verdict, _>(PluginError::Trap {
                plugin: self.spec.name.clone(),
            }),
        );
        self.answer(failed, Instant::now())
    }

    /// False while the plugin rests after failures in a row (its calls fail closed).
    pub fn healthy(&self) -> bool {
        !lock(&self.health).resting()
    }

    /// Idle instances right now.
    pub fn idle_instances(&self) -> usize {
        lock(&self.idle).len()
    }

    fn new_store(&self) -> Store<HostState> {
        new_store(&self.runtime, &self.spec, &self.shared, self.timeout_ticks)
    }

    /// A new instance with `init` run on it.
    async fn instantiate(&self) -> Result<Warm, PluginError> {
        let mut store = self.new_store();
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| self.failure(&e))?;
        let init = bindings
            .postern_plugin_policy_hook()
            .call_init(&mut store, &self.spec.config)
            .await
            .map_err(|e| self.failure(&e))?;
        init.map_err(|reason| PluginError::Init {
            plugin: self.spec.name.clone(),
            reason,
        })?;
        Ok(Warm { store, bindings })
    }

    fn failure(&self, error: &wasmtime::Error) -> PluginError {
        call_failure(&self.spec, &self.stats, error)
    }

    /// How long a new instance takes, `init` included (`postern plugin test --bench`);
    /// the instance is dropped, not pooled.
    pub async fn time_new_instance(&self) -> Result<Duration, PluginError> {
        let started = Instant::now();
        self.instantiate().await?;
        Ok(started.elapsed())
    }

    /// An idle instance, or a new one; refused at once while the plugin is unhealthy.
    async fn checkout(&self) -> Result<Warm, PluginError> {
        if lock(&self.health).resting() {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(PluginError::Unhealthy {
                plugin: self.spec.name.clone(),
            });
        }
        let idle = lock(&self.idle).pop();
        match idle {
            Some(warm) => Ok(warm),
            None => self.instantiate().await,
        }
    }

    /// Keeps a healthy instance for the next call (up to `warm_instances`), or notes a
    /// failure: the instance is already gone, and enough failures in a row rest the
    /// plugin and drop every idle instance, so it comes back from fresh ones.
    fn settle<R>(
        &self,
        warm: Option<Warm>,
        outcome: Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        match &outcome {
            Ok(_) => {
                lock(&self.health).note(true);
                if let Some(warm) = warm {
                    let mut idle = lock(&self.idle);
                    if idle.len() < self.spec.warm_instances {
                        idle.push(warm);
                    }
                }
            }
            Err(PluginError::Unhealthy { .. }) => {}
            Err(_) => {
                let rest = lock(&self.health).note(false);
                if let Some(backoff) = rest {
                    lock(&self.idle).clear();
                    tracing::error!(
                        plugin = self.spec.name,
                        ?backoff,
                        failure = ?self.spec.failure,
                        "plugin unhealthy: not called until the backoff ends (its calls fail as its failure mode says)"
                    );
                }
            }
        }
        outcome
    }

    /// Asks the plugin about a statement. Never fails: a failing plugin denies (or, with
    /// `failure: open`, allows), naming itself in the reason.
    pub async fn on_statement(&self, identity: &Identity, statement: &Statement) -> Verdict {
        self.ask(identity, Question::Statement(statement)).await
    }

    /// Asks the plugin about a new session, as [`PolicyHook::on_statement`] does.
    pub async fn on_connect(&self, identity: &Identity, client: &ClientInfo) -> Verdict {
        self.ask(identity, Question::Connect(client)).await
    }

    async fn ask(&self, identity: &Identity, question: Question<'_>) -> Verdict {
        let started = Instant::now();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.checkout().await {
            Ok(mut warm) => {
                // The deadline counts from now: the epoch ticks while an instance idles.
                warm.store.set_epoch_deadline(self.timeout_ticks);
                let hook = warm.bindings.postern_plugin_policy_hook();
                let called = match question {
                    Question::Statement(statement) => {
                        hook.call_on_statement(&mut warm.store, identity, statement)
                            .await
                    }
                    Question::Connect(client) => {
                        hook.call_on_connect(&mut warm.store, identity, client)
                            .await
                    }
                }
                .map_err(|e| self.failure(&e));
                let kept = called.is_ok().then_some(warm);
                self.settle(kept, called)
            }
            Err(e) => self.settle(None, Err(e)),
        };
        self.answer(outcome, started)
    }

    fn answer(&self, outcome: Result<Verdict, PluginError>, started: Instant) -> Verdict {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.count_call_time(nanos);
        let verdict = match outcome {
            Ok(verdict) => verdict,
            Err(e) if self.spec.failure == FailureMode::Open => {
                tracing::warn!(plugin = self.spec.name, error = %e, "plugin failed; allowing (failure: open)");
                Verdict {
                    decision: Decision::Allow,
                    cache_ttl_ms: 0,
                }
            }
            Err(e) => Verdict {
                decision: Decision::Deny(format!("denied: {e}")),
                cache_ttl_ms: 0,
            },
        };
        if matches!(verdict.decision, Decision::Deny(_)) {
            self.stats.denies.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }
}
