//! `postern plugin …`: the plugin author's tools. `new` and `build` make a project and its
//! component, `inspect` says what a component is and whether this gateway loads it,
//! `test` runs it against cases — none of them needs a gateway or PostgreSQL — and `logs`
//! prints what a plugin logged in the gateway whose state directory it reads.

mod cases;
mod new;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use postern_model::PluginType;
use postern_plugins::{ImportNeed, Inspection, Runtime, RuntimeSettings};
use serde_json::{json, Value};

use crate::cli::{PluginCommand, ReportOutput};

pub fn run(command: PluginCommand, config: &postern_config::Config) -> anyhow::Result<()> {
    match command {
        PluginCommand::New {
            name,
            kind,
            lang,
            dir,
        } => new::new_project(&name, kind, lang, dir),
        PluginCommand::Build { dir } => new::build(&dir),
        PluginCommand::Inspect {
            file,
            output,
            bench,
            plugin_config,
        } => {
            let report = inspect(&file, output)?;
            if bench {
                bench_sample(&file, &report, &plugin_config)?;
            }
            Ok(())
        }
        PluginCommand::Logs {
            name,
            namespace,
            tail,
            follow,
        } => logs(
            &postern_app::open_store(config)?,
            &namespace,
            &name,
            tail,
            follow,
        ),
        PluginCommand::Test { file, cases, bench } => cases::run(&file, &cases, bench),
    }
}

/// Where authoring commands keep compiled components between runs (an interpreter inside
/// a component makes it tens of MiB: seconds to compile): `$XDG_CACHE_HOME/postern` or
/// `~/.cache/postern`; nowhere when neither is known.
pub(crate) fn compile_cache() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("postern/components"))
}

/// A plugin runtime for one command (the time its plugins see: `clock`, or the real one),
/// and the tokio runtime its async calls run on.
fn plugin_runtime(
    clock: Option<postern_plugins::WallClock>,
) -> anyhow::Result<(tokio::runtime::Runtime, Arc<Runtime>)> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plugins = Runtime::new(RuntimeSettings {
        cache_dir: compile_cache(),
        clock,
        log_lines: None,
    })?;
    Ok((tokio, plugins))
}

fn read_component(file: &Path) -> anyhow::Result<Arc<[u8]>> {
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    Ok(bytes.into())
}

fn kind_name(kind: PluginType) -> &'static str {
    match kind {
        PluginType::Policy => "policy",
        PluginType::AuthProvider => "authProvider",
        PluginType::LogSink => "logSink",
    }
}

fn need_text(need: &Result<ImportNeed, &'static str>) -> String {
    match need {
        Ok(ImportNeed::Wasi) => {
            "WASI (clocks, randomness, output to the plugin log; no files, environment or network)"
                .into()
        }
        Ok(ImportNeed::Types) => "types only".into(),
        Ok(ImportNeed::Capability(c)) => format!("capability {}", c.interface()),
        Err(why) => format!("refused: {why}"),
    }
}

fn inspect(file: &Path, output: ReportOutput) -> anyhow::Result<Inspection> {
    let bytes = read_component(file)?;
    let (tokio, plugins) = plugin_runtime(None)?;
    let report = tokio.block_on(plugins.inspect(&file.display().to_string(), bytes))?;
    match output {
        ReportOutput::Json => println!("{:#}", inspection_json(file, &report)),
        ReportOutput::Text => print!("{}", inspection_text(file, &report)),
    }
    if let Err(why) = &report.loadable {
        bail!("{}: this gateway cannot load it: {why}", file.display());
    }
    Ok(report)
}

/// `inspect --bench`: times the component's main function on a sample input, with the
/// capabilities it imports granted (no HTTP origin allowed, no secret given) and
/// `config` handed to `init`.
fn bench_sample(file: &Path, report: &Inspection, config: &str) -> anyhow::Result<()> {
    let (Some(kind), Ok(capabilities)) = (report.kind, &report.loadable) else {
        bail!("{}: not a plugin this gateway loads", file.display());
    };
    let config: Value = serde_json::from_str(config)
        .map_err(|e| anyhow::anyhow!("--plugin-config: not JSON: {e}"))?;
    let case = match kind {
        PluginType::Policy => json!({
            "name": "on-statement: select on public.items",
            "identity": {"name": "alice"},
            "statement": {"kind": "select", "tables": ["public.items"], "fingerprint": 1},
        }),
        PluginType::AuthProvider => json!({
            "name": "authenticate: a password",
            "password": "sample-password",
        }),
        PluginType::LogSink => json!({
            "name": "write-batch: one QUERY event",
            "events": [{"eventType": "QUERY", "identity": "alice.default",
                        "service": "app.default", "sessionId": "1", "statement": "select 1"}],
        }),
    };
    let mut case = case;
    case["expect"] = json!("any");
    let cases = json!({
        "plugin": {
            "type": kind_name(kind),
            "capabilities": capabilities.iter().map(|c| c.interface()).collect::<Vec<_>>(),
            "config": config,
        },
        "cases": [case],
    });
    cases::bench_only(file, cases).context("inspect --bench (init's config is --plugin-config)")
}

fn inspection_json(file: &Path, report: &Inspection) -> Value {
    json!({
        "file": file.display().to_string(),
        "size": report.size,
        "kind": report.kind.map(kind_name),
        "builtAgainst": report.built_against.iter().map(|v| format!("{}@{v}", postern_plugins::PACKAGE)).collect::<Vec<_>>(),
        "gatewayLoads": postern_plugins::supported_versions(),
        "initialMemoryBytes": report.initial_memory_bytes,
        "loadable": report.loadable.is_ok(),
        "capabilitiesNeeded": report.loadable.as_ref().ok().map(|caps| caps.iter().map(|c| c.interface()).collect::<Vec<_>>()),
        "refusal": report.loadable.as_ref().err(),
        "imports": report.imports.iter().map(|i| json!({"name": i.name, "needs": need_text(&i.need)})).collect::<Vec<_>>(),
        "exports": report.exports,
    })
}

fn inspection_text(file: &Path, report: &Inspection) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "file:           {} ({} bytes)",
        file.display(),
        report.size
    );
    let _ = writeln!(
        text,
        "kind:           {}",
        report.kind.map_or("none (not a plugin)", kind_name)
    );
    let built = match report.built_against.as_slice() {
        [] => "no version of postern:plugin".to_owned(),
        versions => versions
            .iter()
            .map(|v| format!("{}@{v}", postern_plugins::PACKAGE))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let _ = writeln!(
        text,
        "built against:  {built} (this gateway loads {})",
        postern_plugins::supported_versions()
    );
    if let Some(bytes) = report.initial_memory_bytes {
        let _ = writeln!(text, "initial memory: {} KiB", bytes / 1024);
    }
    let loadable = match &report.loadable {
        Ok(caps) if caps.is_empty() => "yes, with no capabilities granted".to_owned(),
        Ok(caps) => format!(
            "yes, when its resource grants spec.capabilities: [{}]",
            caps.iter()
                .map(|c| c.interface())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(why) => format!("no: {why}"),
    };
    let _ = writeln!(text, "loadable:       {loadable}");
    let _ = writeln!(text, "imports:");
    let width = report
        .imports
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0);
    for import in &report.imports {
        let _ = writeln!(
            text,
            "  {:width$}  {}",
            import.name,
            need_text(&import.need)
        );
    }
    let _ = writeln!(text, "exports:");
    for export in &report.exports {
        let _ = writeln!(text, "  {export}");
    }
    text
}

/// How often `plugin logs --follow` looks for new lines.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Prints the last `tail` lines a Plugin logged, then (`follow`) new ones as they come.
fn logs(
    store: &postern_state::Store,
    namespace: &str,
    name: &str,
    tail: usize,
    follow: bool,
) -> anyhow::Result<()> {
    use postern_model::{Kind, QualifiedName};
    if store.get_resource(Kind::Plugin, namespace, name)?.is_none() {
        bail!("Plugin {namespace}/{name} not found");
    }
    let plugin = QualifiedName::new(namespace, name);
    let print = |lines: &[(i64, postern_state::PluginLogLine)]| {
        for (_, line) in lines {
            println!(
                "{} {:5} {}",
                postern_model::rfc3339_millis(line.at),
                line.level,
                line.message
            );
        }
    };
    let mut last = store.plugin_logs_tail(&plugin, tail)?;
    print(&last);
    if !follow {
        return Ok(());
    }
    let mut after = last.last().map_or(0, |(id, _)| *id);
    loop {
        std::thread::sleep(FOLLOW_INTERVAL);
        last = store.plugin_logs(&plugin, after, 1000)?;
        print(&last);
        after = last.last().map_or(after, |(id, _)| *id);
    }
}
