//! `postern plugin test FILE --cases CASES`: runs a component in the real runtime, without
//! a gateway or PostgreSQL, against cases written in YAML: the plugin's spec (as in its
//! resource), a fixed clock, fake secret values and canned HTTP responses, then each case's
//! input and the answer expected. One line per case; the command fails if any case does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use postern_model::{Kind, Metadata, PluginType, Resource, Spec};
use postern_plugins::types::{ClientInfo, Decision, Identity, Statement};
use postern_plugins::{
    AuthCredential, AuthOutcome, AuthProviderPlugin, CannedResponse, LogSinkPlugin, PluginSpec,
    PolicyHook, SinkFailure,
};
use serde::Deserialize;
use serde_yaml_ng::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    /// The Plugin resource's `spec`, without `source` (the component is the command's
    /// argument).
    plugin: Value,
    /// What the plugin sees as now (RFC 3339); the real clock when absent.
    #[serde(default)]
    clock: Option<String>,
    /// Values of the Secrets `plugin.secrets` names.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// Answers to `http-client` requests; nothing else is reached.
    #[serde(default)]
    http: Vec<CannedHttp>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CannedHttp {
    #[serde(default = "CannedHttp::get")]
    method: String,
    url: String,
    #[serde(default = "CannedHttp::ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

impl CannedHttp {
    fn get() -> String {
        "GET".into()
    }
    fn ok() -> u16 {
        200
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    /// Policy hooks: who asks.
    #[serde(default)]
    identity: Option<CaseIdentity>,
    /// Policy hooks: a statement (`on-statement`).
    #[serde(default)]
    statement: Option<CaseStatement>,
    /// Policy hooks: a new session (`on-connect`); auth providers: who logs in.
    #[serde(default)]
    client: Option<CaseClient>,
    /// Auth providers: the password the client sends.
    #[serde(default)]
    password: Option<String>,
    /// Log sinks: one batch of events.
    #[serde(default)]
    events: Option<Vec<CaseEvent>>,
    expect: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseIdentity {
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    postern_model::DEFAULT_NAMESPACE.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseStatement {
    kind: String,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    fingerprint: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaseClient {
    #[serde(default)]
    peer_address: Option<String>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    application_name: Option<String>,
    #[serde(default)]
    tls: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaseEvent {
    event_type: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    session_id: String,
    #[serde(default)]
    statement: Option<String>,
}

/// What a case expects, from `expect:`: a word (`allow`), or a word with a detail
/// (`{deny: "payroll"}`: the reason contains it; `{authenticated: {name: carol}}`).
#[derive(Debug)]
enum Expected {
    /// Whatever the plugin answers (a case kept for `--bench`).
    Any,
    Allow,
    Deny(Option<String>),
    Authenticated(Option<CaseIdentityMatch>),
    Rejected(Option<String>),
    NotApplicable,
    Ok,
    Retryable(Option<String>),
    Permanent(Option<String>),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with = |f: &mut std::fmt::Formatter<'_>, word: &str, part: &Option<String>| match part {
            Some(part) => write!(f, "{word} containing {part:?}"),
            None => f.write_str(word),
        };
        match self {
            Expected::Any => f.write_str("any answer"),
            Expected::Allow => f.write_str("allow"),
            Expected::Deny(part) => with(f, "deny", part),
            Expected::Authenticated(None) => f.write_str("authenticated"),
            Expected::Authenticated(Some(who)) => {
                f.write_str("authenticated")?;
                if let Some(name) = &who.name {
                    write!(f, " name {name}")?;
                }
                if let Some(namespace) = &who.namespace {
                    write!(f, " namespace {namespace}")?;
                }
                if let Some(groups) = &who.groups {
                    write!(f, " groups {groups:?}")?;
                }
                Ok(())
            }
            Expected::Rejected(part) => with(f, "rejected", part),
            Expected::NotApplicable => f.write_str("notApplicable"),
            Expected::Ok => f.write_str("ok"),
            Expected::Retryable(part) => with(f, "retryable", part),
            Expected::Permanent(part) => with(f, "permanent", part),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseIdentityMatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

const EXPECTATIONS: &str =
    "allow, deny, authenticated, rejected, notApplicable, ok, retryable, permanent or any";

fn expected(value: &Value) -> anyhow::Result<Expected> {
    let (word, detail) = match value {
        Value::String(word) => (word.as_str(), None),
        Value::Mapping(map) if map.len() == 1 => match map.iter().next() {
            Some((Value::String(word), detail)) => (word.as_str(), Some(detail)),
            _ => bail!("expect: one of {EXPECTATIONS}"),
        },
        _ => bail!("expect: one of {EXPECTATIONS}"),
    };
    let text = |detail: Option<&Value>| -> anyhow::Result<Option<String>> {
        match detail {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => bail!("expect.{word}: a text the reason contains"),
        }
    };
    if detail.is_some() && matches!(word, "allow" | "notApplicable" | "ok" | "any") {
        bail!("expect: {word} takes no detail (write `expect: {word}`)");
    }
    Ok(match word {
        "allow" => Expected::Allow,
        "deny" => Expected::Deny(text(detail)?),
        "authenticated" => Expected::Authenticated(match detail {
            None | Some(Value::Null) => None,
            Some(detail) => Some(
                serde_yaml_ng::from_value(detail.clone())
                    .map_err(|e| anyhow!("expect.authenticated: {e}"))?,
            ),
        }),
        "rejected" => Expected::Rejected(text(detail)?),
        "notApplicable" => Expected::NotApplicable,
        "ok" => Expected::Ok,
        "retryable" => Expected::Retryable(text(detail)?),
        "permanent" => Expected::Permanent(text(detail)?),
        "any" => Expected::Any,
        other => bail!("expect: {other:?} is not one of {EXPECTATIONS}"),
    })
}

/// The plugin under test, loaded as its spec's type says.
enum Loaded {
    Policy(PolicyHook),
    Auth(AuthProviderPlugin),
    Sink(LogSinkPlugin),
}

/// Calls timed per case by `--bench`, and new instances timed.
const BENCH_CALLS: usize = 2000;
const BENCH_INSTANCES: usize = 20;

/// Runs the cases; prints one line per case. Fails when the file is malformed, the plugin
/// does not load, or a case fails. With `bench`, then times each case's call and (policy
/// hooks) a new instance.
pub fn run(file: &Path, cases_file: &Path, bench: bool) -> anyhow::Result<()> {
    let where_ = cases_file.display().to_string();
    let text = std::fs::read_to_string(cases_file).with_context(|| where_.clone())?;
    let cases: CasesFile = serde_yaml_ng::from_str(&text).map_err(|e| anyhow!("{where_}: {e}"))?;
    let mode = if bench {
        Mode::CheckAndBench
    } else {
        Mode::Check
    };
    run_cases(file, &where_, cases, mode)
}

/// Times the calls of `cases` (a cases document as JSON) without checking answers.
pub fn bench_only(file: &Path, cases: serde_json::Value) -> anyhow::Result<()> {
    let cases: CasesFile = serde_json::from_value(cases).map_err(|e| anyhow!("sample: {e}"))?;
    run_cases(file, "sample", cases, Mode::Bench)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Check,
    CheckAndBench,
    Bench,
}

fn run_cases(file: &Path, where_: &str, cases: CasesFile, mode: Mode) -> anyhow::Result<()> {
    let spec = plugin_spec(file, &cases.plugin).map_err(|e| anyhow!("{where_}: {e}"))?;
    let expectations = cases
        .cases
        .iter()
        .enumerate()
        .map(|(i, case)| expected(&case.expect).map_err(|e| anyhow!("{where_}: cases[{i}].{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let clock: Option<postern_plugins::WallClock> = match &cases.clock {
        Some(clock) => {
            let millis = chrono::DateTime::parse_from_rfc3339(clock)
                .ok()
                .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
                .ok_or_else(|| anyhow!("{where_}: clock: {clock:?} is not an RFC 3339 time"))?;
            let fixed = UNIX_EPOCH + Duration::from_millis(millis);
            Some(Arc::new(move || fixed))
        }
        None => None,
    };
    let now = || {
        clock
            .as_ref()
            .map_or_else(std::time::SystemTime::now, |c| c())
    };
    let mut runtime_spec = PluginSpec::from_resource("under-test", &spec);
    runtime_spec.http.canned = Some(Arc::new(
        cases
            .http
            .iter()
            .enumerate()
            .map(|(i, c)| canned(c).map_err(|e| anyhow!("{where_}: http[{i}].{e}")))
            .collect::<anyhow::Result<Vec<_>>>()?,
    ));
    let secrets = Arc::new(cases.secrets.clone());
    let reader: postern_plugins::SecretReader = Arc::new(move |name| secrets.get(name).cloned());
    let (tokio, plugins) = super::plugin_runtime(clock.clone())?;
    let component = super::read_component(file)?;
    let name = file.display().to_string();
    let loaded = tokio
        .block_on(async {
            Ok::<_, postern_plugins::PluginError>(match spec.plugin_type {
                PluginType::Policy => {
                    Loaded::Policy(PolicyHook::load(&plugins, runtime_spec, component).await?)
                }
                PluginType::AuthProvider => Loaded::Auth(
                    AuthProviderPlugin::load(&plugins, runtime_spec, component, Some(reader))
                        .await?,
                ),
                PluginType::LogSink => Loaded::Sink(
                    LogSinkPlugin::load(&plugins, runtime_spec, component, Some(reader)).await?,
                ),
            })
        })
        .with_context(|| name.clone())?;
    let mut failed = 0;
    let checked = if mode == Mode::Bench {
        &[][..]
    } else {
        &cases.cases[..]
    };
    for (index, (case, expected)) in checked.iter().zip(&expectations).enumerate() {
        let outcome = tokio
            .block_on(run_case(&loaded, &spec, case, expected, now()))
            .map_err(|e| anyhow!("{where_}: cases[{index}]: {e}"))?;
        match outcome {
            Ok(()) => println!("ok    {}", case.name),
            Err(why) => {
                failed += 1;
                println!("FAIL  {}: {why}", case.name);
            }
        }
    }
    if mode != Mode::Bench {
        let total = cases.cases.len();
        println!("{} of {total} cases passed", total - failed);
        if failed > 0 {
            bail!("{where_}: {failed} of {total} cases failed");
        }
    }
    if mode != Mode::Check {
        tokio.block_on(print_bench(
            &loaded,
            &spec,
            &cases.cases,
            &expectations,
            now(),
        ))?;
    }
    Ok(())
}

/// The p50 and p99 of `times`, in microseconds.
fn quantiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort_unstable();
    let at = |q: f64| {
        let index = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(index).map_or(0.0, |t| t.as_secs_f64() * 1e6)
    };
    (at(0.5), at(0.99))
}

/// Times each case's call (the whole call as the gateway makes it: an idle instance
/// checked out, the guest run, the answer lifted) and, for a policy hook, new instances.
async fn print_bench(
    loaded: &Loaded,
    spec: &postern_model::PluginSpec,
    cases: &[Case],
    expectations: &[Expected],
    clock_now: std::time::SystemTime,
) -> anyhow::Result<()> {
    if let Loaded::Policy(hook) = loaded {
        let mut times = Vec::with_capacity(BENCH_INSTANCES);
        for _ in 0..BENCH_INSTANCES {
            times.push(hook.time_new_instance().await?);
        }
        let (p50, p99) = quantiles(times);
        println!("bench: new instance (init included): p50 {p50:.1} µs, p99 {p99:.1} µs ({BENCH_INSTANCES} instances)");
    }
    for (case, expected) in cases.iter().zip(expectations) {
        let mut times = Vec::with_capacity(BENCH_CALLS);
        for _ in 0..BENCH_CALLS {
            let started = std::time::Instant::now();
            let _ = run_case(loaded, spec, case, expected, clock_now).await?;
            times.push(started.elapsed());
        }
        let (p50, p99) = quantiles(times);
        println!(
            "bench: {}: p50 {p50:.2} µs, p99 {p99:.2} µs ({BENCH_CALLS} calls)",
            case.name
        );
    }
    Ok(())
}

/// The `plugin:` section as a Plugin resource's spec, checked as `apply` checks it.
fn plugin_spec(file: &Path, plugin: &Value) -> anyhow::Result<postern_model::PluginSpec> {
    let mut spec = serde_json::to_value(plugin).map_err(|e| anyhow!("plugin: {e}"))?;
    let Some(fields) = spec.as_object_mut() else {
        bail!("plugin: the Plugin resource's spec (type, config, capabilities, …)");
    };
    if fields.contains_key("source") {
        bail!("plugin.source: the component is the command's argument, not named here");
    }
    fields.insert(
        "source".into(),
        serde_json::json!({"path": file.display().to_string()}),
    );
    let metadata = Metadata {
        name: "under-test".into(),
        namespace: None,
        labels: BTreeMap::new(),
        generation: None,
    };
    let resource = Resource::from_parts(Kind::Plugin, metadata, spec)
        .map_err(|e| anyhow!("plugin{}: {}", e.path.trim_start_matches("spec"), e.message))?;
    match resource.spec {
        Spec::Plugin(spec) => Ok(spec),
        _ => bail!("plugin: not a Plugin's spec"),
    }
}

fn canned(http: &CannedHttp) -> anyhow::Result<CannedResponse> {
    Ok(CannedResponse {
        method: http.method.to_ascii_uppercase(),
        url: url::Url::parse(&http.url).map_err(|e| anyhow!("url: {e}"))?,
        status: http.status,
        headers: http
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        body: http.body.clone().into_bytes(),
    })
}

fn identity(case: &Case) -> anyhow::Result<Identity> {
    let Some(who) = &case.identity else {
        bail!("identity: a policy hook's case says who asks");
    };
    Ok(Identity {
        name: who.name.clone(),
        namespace: who.namespace.clone(),
        groups: who.groups.clone(),
        attributes: who
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        expires_at: None,
    })
}

fn client(case: &Case) -> ClientInfo {
    let given = case.client.as_ref();
    let or = |field: Option<&String>, default: String| field.cloned().unwrap_or(default);
    let user = case.identity.as_ref().map_or_else(
        || "alice.default".to_owned(),
        |who| format!("{}.{}", who.name, who.namespace),
    );
    ClientInfo {
        peer_address: or(
            given.and_then(|c| c.peer_address.as_ref()),
            "127.0.0.1:50000".into(),
        ),
        database: or(
            given.and_then(|c| c.database.as_ref()),
            "app.default".into(),
        ),
        user: or(given.and_then(|c| c.user.as_ref()), user),
        application_name: or(
            given.and_then(|c| c.application_name.as_ref()),
            String::new(),
        ),
        tls: given.and_then(|c| c.tls).unwrap_or(true),
    }
}

/// An access-log record of a case's event, at `time`.
fn access_record(
    index: usize,
    event: &CaseEvent,
    time: std::time::SystemTime,
) -> anyhow::Result<postern_model::AuditRecord> {
    use postern_model::{AuditEvent, AuditRecord, EventType, IdentityInfo, SessionInfo};
    let event_type = EventType::parse(&event.event_type).ok_or_else(|| {
        anyhow!(
            "events[{index}].eventType: {:?} is not one of {}",
            event.event_type,
            EventType::ALL.map(|t| t.as_str()).join(", ")
        )
    })?;
    let (name, namespace) = event
        .identity
        .split_once('.')
        .unwrap_or((event.identity.as_str(), postern_model::DEFAULT_NAMESPACE));
    let service_namespace = event
        .service
        .split_once('.')
        .map_or(postern_model::DEFAULT_NAMESPACE, |(_, ns)| ns);
    let session = SessionInfo {
        connection_id: 1,
        session_id: event.session_id.clone(),
        identity: IdentityInfo {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            groups: Vec::new(),
        },
        service: event.service.clone(),
        namespace: service_namespace.to_owned(),
        upstream: None,
        client_address: "127.0.0.1:50000".into(),
        application_name: String::new(),
        dropped: Default::default(),
        json_members: Default::default(),
    };
    let mut record = AuditEvent::new(event_type, std::sync::Arc::new(session));
    record.time = time;
    record.statement = event.statement.as_deref().map(std::sync::Arc::from);
    Ok(AuditRecord::new((index + 1).to_string(), record))
}

/// Calls of a plugin that trapped, ran out of time, or were refused while it rested.
fn failures(stats: &postern_plugins::PluginStats) -> [u64; 3] {
    use std::sync::atomic::Ordering::Relaxed;
    [
        stats.traps.load(Relaxed),
        stats.timeouts.load(Relaxed),
        stats.skipped.load(Relaxed),
    ]
}

/// `Ok(Err(why))`: the case ran and failed; `Err`: the case cannot run as written.
async fn run_case(
    loaded: &Loaded,
    spec: &postern_model::PluginSpec,
    case: &Case,
    expected: &Expected,
    clock_now: std::time::SystemTime,
) -> anyhow::Result<Result<(), String>> {
    let contains =
        |text: &str, part: &Option<String>| part.as_ref().is_none_or(|p| text.contains(p.as_str()));
    Ok(match loaded {
        Loaded::Policy(hook) => {
            let identity = identity(case)?;
            let failures_before = failures(hook.stats());
            let verdict = match (&case.statement, &case.client) {
                (Some(statement), None) => {
                    if statement.text.is_some() && !spec.statement_text {
                        bail!("statement.text: the plugin's spec does not set statementText: true, so the gateway never hands it the text");
                    }
                    if spec
                        .statements
                        .as_ref()
                        .is_some_and(|filter| !filter.matches(&statement.kind, &statement.tables))
                    {
                        return Ok(match expected {
                            Expected::Allow => Ok(()),
                            other => Err(format!(
                                "expected {other}, but spec.statements keeps the plugin from being asked (the statement is allowed)"
                            )),
                        });
                    }
                    let statement = Statement {
                        kind: statement.kind.clone(),
                        tables: statement.tables.clone(),
                        functions: statement.functions.clone(),
                        fingerprint: statement.fingerprint,
                        text: statement.text.clone(),
                    };
                    hook.on_statement(&identity, &statement).await
                }
                (None, Some(_)) => hook.on_connect(&identity, &client(case)).await,
                _ => bail!(
                    "a policy hook's case has a statement or a client (on-connect), one of them"
                ),
            };
            // The hook answers for a plugin that failed (denied, or allowed with
            // `failure: open`); a failure is a bug whatever the case expected.
            if failures(hook.stats()) != failures_before {
                return Ok(Err(format!(
                    "expected {expected}, the plugin failed (it trapped, ran out of time or rests after failures); the gateway answers {}",
                    match &verdict.decision {
                        Decision::Allow => "allow (failure: open)".to_owned(),
                        Decision::Deny(reason) => format!("deny {reason:?}"),
                    }
                )));
            }
            match (&verdict.decision, expected) {
                (_, Expected::Any) | (Decision::Allow, Expected::Allow) => Ok(()),
                (Decision::Deny(reason), Expected::Deny(part)) if contains(reason, part) => Ok(()),
                (Decision::Allow, other) => Err(format!("expected {other}, got allow")),
                (Decision::Deny(reason), other) => {
                    Err(format!("expected {other}, got deny {reason:?}"))
                }
            }
        }
        Loaded::Auth(provider) => {
            let Some(password) = &case.password else {
                bail!("password: an auth provider's case gives the password the client sends");
            };
            let outcome = provider
                .authenticate(&client(case), &AuthCredential::Password(password.clone()))
                .await;
            match (outcome, expected) {
                (_, Expected::Any) => Ok(()),
                (Ok(AuthOutcome::Authenticated(who)), Expected::Authenticated(matching)) => {
                    let wanted = matching.as_ref();
                    let differs = wanted.is_some_and(|w| {
                        w.name.as_ref().is_some_and(|n| *n != who.name)
                            || w.namespace.as_ref().is_some_and(|n| *n != who.namespace)
                            || w.groups.as_ref().is_some_and(|g| *g != who.groups)
                    });
                    if differs {
                        Err(format!(
                            "expected {expected}, got authenticated {}.{} groups {:?}",
                            who.name, who.namespace, who.groups
                        ))
                    } else {
                        Ok(())
                    }
                }
                (Ok(AuthOutcome::Rejected(reason)), Expected::Rejected(part))
                    if contains(&reason, part) =>
                {
                    Ok(())
                }
                (Ok(AuthOutcome::NotApplicable), Expected::NotApplicable) => Ok(()),
                (Ok(AuthOutcome::Authenticated(who)), other) => Err(format!(
                    "expected {other}, got authenticated {}.{}",
                    who.name, who.namespace
                )),
                (Ok(AuthOutcome::Rejected(reason)), other) => {
                    Err(format!("expected {other}, got rejected {reason:?}"))
                }
                (Ok(AuthOutcome::NotApplicable), other) => {
                    Err(format!("expected {other}, got notApplicable"))
                }
                // A login the gateway would refuse, but a failing plugin never passes.
                (Err(e), other) => Err(format!("expected {other}, the plugin failed: {e}")),
            }
        }
        Loaded::Sink(sink) => {
            let Some(events) = &case.events else {
                bail!("events: a log sink's case gives one batch of events");
            };
            // Records as the access log makes them, so the events' `json` is the line
            // `postern logs -o json` prints.
            let records = events
                .iter()
                .enumerate()
                .map(|(i, e)| access_record(i, e, clock_now))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let batch: Vec<&postern_model::AuditRecord> = records.iter().collect();
            match (sink.write_batch(&batch).await, expected) {
                (_, Expected::Any) | (Ok(()), Expected::Ok) => Ok(()),
                (Err(SinkFailure::Retryable(why)), Expected::Retryable(part))
                    if contains(&why, part) =>
                {
                    Ok(())
                }
                (Err(SinkFailure::Permanent(why)), Expected::Permanent(part))
                    if contains(&why, part) =>
                {
                    Ok(())
                }
                (Ok(()), other) => Err(format!("expected {other}, got ok")),
                (Err(SinkFailure::Retryable(why)), other) => {
                    Err(format!("expected {other}, got retryable {why:?}"))
                }
                (Err(SinkFailure::Permanent(why)), other) => {
                    Err(format!("expected {other}, got permanent {why:?}"))
                }
            }
        }
    })
}
