//! Resource commands: `apply`, `get`, `delete`, `secret set`, `identity key …` and
//! `check-config`. They act on the state store directly; a running gateway sees the
//! changes on its next connection (`remote.rs` does the same through the admin API).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use postern_config::Config;
use postern_model::{
    parse_documents, Change, Format, Kind, LoadedResource, QualifiedName, SecretValue,
};
use postern_state::{unguarded, IntentsStatus, Store, StoredResource};

use crate::cli::{IdentityCommand, KeyCommand, Output, Scope, SecretCommand};

/// Every resource file named, directories expanded (sorted, not recursive into hidden
/// entries), in a stable order.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && Format::from_path(p).is_some()
                        && !p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                })
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            if Format::from_path(path).is_none() {
                bail!(
                    "{}: not a resource file (expected .yaml, .yml or .toml)",
                    path.display()
                );
            }
            files.push(path.clone());
        }
    }
    Ok(files)
}

pub(crate) fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<LoadedResource>> {
    let mut loaded = Vec::new();
    for file in collect_files(paths)? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
        let format = Format::from_path(&file).unwrap_or(Format::Yaml);
        let mut documents = parse_documents(&file.display().to_string(), &text, format)?;
        anchor_plugin_sources(&file, &mut documents);
        loaded.extend(documents);
    }
    Ok(loaded)
}

/// A Plugin's `source.path` is relative to its file; made absolute here, so `apply` from
/// any directory reads the same component.
fn anchor_plugin_sources(file: &Path, documents: &mut [LoadedResource]) {
    let dir = file.parent().unwrap_or(Path::new("."));
    for item in documents {
        if let postern_model::Spec::Plugin(spec) = &mut item.resource.spec {
            if let Some(path) = &mut spec.source.path {
                if Path::new(path.as_str()).is_relative() {
                    let absolute =
                        std::path::absolute(dir.join(&*path)).unwrap_or(dir.join(&*path));
                    *path = absolute.display().to_string();
                }
            }
        }
    }
}

/// A Plugin's component read from its `source.path`, to store (or upload) before the
/// Plugin that names it.
pub(crate) struct PluginComponent {
    /// The Plugin's namespace (where an upload is authorised).
    pub namespace: String,
    pub sha256: String,
    pub bytes: Vec<u8>,
}

/// Reads each Plugin's component from `source.path`, records its sha256 in the spec (a
/// given sha256 must match), and checks that it loads: compiled, its imports within its
/// world and grants, its `init` accepting the config. Returns the components to store.
/// `cache_dir` keeps what was compiled for the next load of the same bytes (the gateway's
/// own cache, when applying to a local state directory).
pub(crate) fn read_plugin_components(
    loaded: &mut [LoadedResource],
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Vec<PluginComponent>> {
    use sha2::{Digest, Sha256};
    let mut components = Vec::new();
    let mut runtime = None;
    for item in loaded.iter_mut() {
        let name = item.resource.name().to_owned();
        let postern_model::Spec::Plugin(spec) = &mut item.resource.spec else {
            continue;
        };
        let Some(path) = &spec.source.path else {
            continue;
        };
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: spec.source.path: {path}", item.origin))?;
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(expected) = &spec.source.sha256 {
            if *expected != sha {
                bail!(
                    "{}: spec.source.sha256: {path} has sha256 {sha}, not {expected}",
                    item.origin
                );
            }
        }
        spec.source.sha256 = Some(sha.clone());
        let runtime = match &runtime {
            Some(runtime) => runtime,
            None => runtime.insert((
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
                postern_plugins::Runtime::new(postern_plugins::RuntimeSettings {
                    cache_dir: cache_dir.clone(),
                    clock: None,
                    log_lines: None,
                })?,
            )),
        };
        let plugin = postern_plugins::PluginSpec::from_resource(&name, spec);
        let component: std::sync::Arc<[u8]> = bytes.clone().into();
        let (tokio, plugins) = runtime;
        match spec.plugin_type {
            postern_model::PluginType::LogSink => tokio
                .block_on(postern_plugins::LogSinkPlugin::load(
                    plugins, plugin, component, None,
                ))
                .map(drop),
            postern_model::PluginType::AuthProvider => tokio
                .block_on(postern_plugins::AuthProviderPlugin::load(
                    plugins, plugin, component, None,
                ))
                .map(drop),
            _ => tokio
                .block_on(postern_plugins::PolicyHook::load(
                    plugins, plugin, component,
                ))
                .map(drop),
        }
        .with_context(|| item.origin.clone())?;
        components.push(PluginComponent {
            namespace: item.resource.namespace().to_owned(),
            sha256: sha,
            bytes,
        });
    }
    Ok(components)
}

/// Compiles every CEL expression of every Service, so a bad rule fails here and not at
/// the first connection.
fn to_yaml(value: &serde_json::Value) -> String {
    serde_yaml_ng::to_string(value).unwrap_or_else(|e| format!("<unprintable: {e}>\n"))
}

/// Prints the plan: `+` create, `~` update (with a line diff of the spec), `-` delete.
fn print_plan(changes: &[Change], dry_run: bool) {
    let (mut created, mut updated, mut deleted, mut unchanged) = (0, 0, 0, 0);
    for change in changes {
        match change {
            Change::Create(r) => {
                created += 1;
                println!("+ {} (create)", r.describe());
            }
            Change::Update { before, after } => {
                updated += 1;
                println!("~ {} (update)", after.describe());
                let (old, new) = (
                    to_yaml(&before.to_document()),
                    to_yaml(&after.to_document()),
                );
                let diff = similar::TextDiff::from_lines(&old, &new);
                for line in diff.iter_all_changes() {
                    let sign = match line.tag() {
                        similar::ChangeTag::Delete => '-',
                        similar::ChangeTag::Insert => '+',
                        similar::ChangeTag::Equal => continue,
                    };
                    print!("    {sign} {line}");
                }
            }
            Change::Delete(r) => {
                deleted += 1;
                println!("- {} (delete: no longer declared)", r.describe());
            }
            Change::Unchanged(_) => unchanged += 1,
        }
    }
    let suffix = if dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    println!(
        "{created} created, {updated} updated, {deleted} deleted, {unchanged} unchanged{suffix}"
    );
}

/// Applies the files (or, dry, prints the plan); returns the changes made.
pub fn apply(
    store: &Store,
    files: &[PathBuf],
    dry_run: bool,
    prune: bool,
    plugin_cache: PathBuf,
) -> anyhow::Result<Vec<Change>> {
    let mut loaded = load(files)?;
    let components = read_plugin_components(&mut loaded, Some(plugin_cache))?;
    if !dry_run {
        for component in &components {
            store.store_plugin_component(&component.bytes)?;
        }
    }
    let changes = store.apply_resources(&loaded, prune, dry_run)?;
    print_plan(&changes, dry_run);
    Ok(changes)
}

pub fn check_config(config: &Config, files: &[PathBuf]) -> anyhow::Result<()> {
    println!("settings: ok (state dir {})", config.state_dir.display());
    if !files.is_empty() {
        // Syntax, schema and rules: references depend on the state, which this command
        // does not open (`apply --dry-run` checks them).
        let loaded = load(files)?;
        postern_model::check_rules(&loaded, &postern_policy::CelEngine::new())?;
        println!("resources: ok ({} documents)", loaded.len());
    }
    Ok(())
}

/// What `get` and `delete` name: a resource kind, or secrets.
pub(crate) enum Named {
    Resource(Kind),
    Secret,
}

pub(crate) fn parse_kind(text: &str) -> anyhow::Result<Named> {
    if matches!(text.to_ascii_lowercase().as_str(), "secret" | "secrets") {
        return Ok(Named::Secret);
    }
    text.parse::<Kind>()
        .map(Named::Resource)
        .map_err(anyhow::Error::msg)
}

fn age(timestamp: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let secs = now.saturating_sub(timestamp).max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|col| rows.iter().map(|r| r[col].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn detail(stored: &StoredResource, status: Option<&IntentsStatus>) -> String {
    use postern_model::{Spec, UpstreamSpec};
    match &stored.resource.spec {
        Spec::Namespace(_) => String::new(),
        Spec::Target(t) => format!("{} sslMode={:?}", t.address, t.ssl_mode).to_lowercase(),
        Spec::Service(s) => match &s.upstream {
            UpstreamSpec::Static(up) => match (&up.user, &up.static_role) {
                (Some(user), _) => format!(
                    "target={} database={} user={user} (static)",
                    s.target, s.database
                ),
                (None, role) => format!(
                    "target={} database={} staticRole={} (static, rotated)",
                    s.target,
                    s.database,
                    role.as_deref().unwrap_or_default()
                ),
            },
            UpstreamSpec::Dynamic(up) => format!(
                "target={} database={} credentialRole={} (dynamic: a role per session)",
                s.target, s.database, up.credential_role
            ),
            UpstreamSpec::Intents(_) => format!(
                "target={} database={} (intents: a role per identity)",
                s.target, s.database
            ),
            UpstreamSpec::DynamicConfig(up) => format!(
                "target={} database={} configs=[{}] (dynamicConfig: chosen by rules)",
                s.target,
                s.database,
                up.configs
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        },
        Spec::Identity(i) => {
            format!("{:?} groups=[{}]", i.identity_type, i.groups.join(",")).to_lowercase()
        }
        Spec::CredentialRole(c) => format!(
            "target={} database={} defaultTtl={} maxTtl={}",
            c.target, c.database, c.default_ttl, c.max_ttl
        ),
        Spec::StaticRole(r) => format!(
            "target={} username={} rotationPeriod={}",
            r.target, r.username, r.rotation_period
        ),
        Spec::RoleBinding(b) => {
            let subject = match (&b.subject.identity, &b.subject.group) {
                (Some(identity), _) => format!("identity={identity}"),
                (None, group) => format!("group={}", group.as_deref().unwrap_or_default()),
            };
            format!("role={} {subject}", b.role)
        }
        Spec::Plugin(p) => format!(
            "type={} sha256={} capabilities=[{}] {}",
            serde_json::to_value(p.plugin_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            p.source
                .sha256
                .as_deref()
                .map_or("-", |s| &s[..s.len().min(12)]),
            p.capabilities.join(","),
            match status {
                Some(status) if status.message.is_empty() => status.state.clone(),
                Some(status) => format!("{}: {}", status.state, status.message),
                None => "pending: no gateway has loaded it yet".to_owned(),
            }
        ),
        Spec::Intents(i) => {
            let state = match status {
                Some(status) if status.state == "applied" => "applied".to_owned(),
                Some(status) => format!("{}: {}", status.state, status.message),
                None => "pending: not reconciled yet".to_owned(),
            };
            format!("identity={} entries={} {state}", i.identity, i.access.len())
        }
    }
}

/// The `status` block of an Intents resource in `get -o yaml|json` (ignored by `apply`).
pub fn get(
    store: &Store,
    kind: &str,
    name: Option<&str>,
    scope: &Scope,
    output: Output,
) -> anyhow::Result<()> {
    let namespace = match (&scope.namespace, scope.all_namespaces) {
        (_, true) => None,
        (Some(ns), false) => Some(ns.as_str()),
        (None, false) => Some(postern_model::DEFAULT_NAMESPACE),
    };
    match parse_kind(kind)? {
        Named::Secret => {
            let secrets: Vec<_> = store
                .list_secrets(namespace)?
                .into_iter()
                .filter(|s| name.is_none_or(|n| n == s.name))
                .collect();
            if let Some(n) = name {
                if secrets.is_empty() {
                    bail!("Secret {}/{n} not found", namespace.unwrap_or("*"));
                }
            }
            let docs: Vec<serde_json::Value> =
                secrets.iter().map(postern_state::secret_document).collect();
            let mut rows = vec![vec!["NAMESPACE".into(), "NAME".into(), "UPDATED".into()]];
            rows.extend(
                secrets
                    .iter()
                    .map(|s| vec![s.namespace.clone(), s.name.clone(), age(s.updated_at)]),
            );
            emit(output, &docs, &rows)
        }
        Named::Resource(kind) => {
            let namespace = if kind.is_namespaced() {
                namespace
            } else {
                None
            };
            let found: Vec<StoredResource> = store
                .list_resources(Some(kind), namespace)?
                .into_iter()
                .filter(|s| name.is_none_or(|n| n == s.resource.name()))
                .collect();
            if let (Some(n), true) = (name, found.is_empty()) {
                match namespace {
                    Some(ns) => bail!("{kind} {ns}/{n} not found"),
                    None => bail!("{kind} {n} not found"),
                }
            }
            let statuses = found
                .iter()
                .map(|s| match kind {
                    Kind::Intents => store.intents_status(&s.resource.qualified_name()),
                    Kind::Plugin => store.plugin_status(&s.resource.qualified_name()),
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let docs = found
                .iter()
                .map(|s| store.resource_document(s))
                .collect::<Result<Vec<_>, _>>()?;
            let mut rows = vec![if kind.is_namespaced() {
                vec![
                    "NAMESPACE".into(),
                    "NAME".into(),
                    "GENERATION".into(),
                    "UPDATED".into(),
                    "DETAIL".into(),
                ]
            } else {
                vec![
                    "NAME".into(),
                    "GENERATION".into(),
                    "UPDATED".into(),
                    "DETAIL".into(),
                ]
            }];
            for (s, status) in found.iter().zip(&statuses) {
                let mut row = vec![
                    s.resource.name().to_owned(),
                    s.generation.to_string(),
                    age(s.updated_at),
                    detail(s, status.as_ref()),
                ];
                if kind.is_namespaced() {
                    row.insert(0, s.resource.namespace().to_owned());
                }
                rows.push(row);
            }
            emit(output, &docs, &rows)
        }
    }
}

pub(crate) fn emit(
    output: Output,
    docs: &[serde_json::Value],
    rows: &[Vec<String>],
) -> anyhow::Result<()> {
    match output {
        Output::Table => print_table(rows),
        Output::Json => {
            let value = if docs.len() == 1 {
                docs[0].clone()
            } else {
                serde_json::Value::Array(docs.to_vec())
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Output::Yaml => {
            let text: Vec<String> = docs.iter().map(to_yaml).collect();
            print!("{}", text.join("---\n"));
        }
    }
    Ok(())
}

/// Deletes a resource or secret; returns the resource kind deleted, if it was one.
pub fn delete(
    store: &Store,
    kind: &str,
    name: &str,
    namespace: &str,
) -> anyhow::Result<Option<Kind>> {
    match parse_kind(kind)? {
        Named::Secret => {
            store.delete_secret(namespace, name)?;
            println!("Secret {namespace}/{name} deleted");
            Ok(None)
        }
        Named::Resource(kind) => {
            let ns = if kind.is_namespaced() { namespace } else { "" };
            store.delete_resource(kind, ns, name)?;
            println!("{} deleted", kind.describe(namespace, name));
            Ok(Some(kind))
        }
    }
}

pub(crate) fn read_secret_input(
    value: Option<String>,
    file: Option<&Path>,
) -> anyhow::Result<String> {
    let mut text = match (value, file) {
        (Some(v), _) => return Ok(v),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?
        }
        (None, None) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the secret from standard input")?;
            text
        }
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

pub fn secret(store: &Store, command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Set {
            name,
            namespace,
            value,
            file,
        } => {
            let value = read_secret_input(value, file.as_deref())?;
            if value.is_empty() {
                bail!("the secret value is empty");
            }
            let created = store.set_secret(&namespace, &name, &SecretValue::new(value))?;
            println!(
                "Secret {namespace}/{name} {}",
                if created { "created" } else { "updated" }
            );
        }
    }
    Ok(())
}

pub fn identity(store: &Store, command: IdentityCommand) -> anyhow::Result<()> {
    let command = match command {
        IdentityCommand::Key(command) => command,
        IdentityCommand::Client(command) => return crate::tenancy::client(store, command),
        IdentityCommand::RotatePassword {
            identity,
            namespace,
        } => return crate::reconcile::rotate(store, &QualifiedName::new(namespace, identity)),
    };
    match command {
        KeyCommand::Create {
            identity,
            namespace,
        } => {
            let created =
                store.create_api_key(&QualifiedName::new(namespace, identity), unguarded)?;
            eprintln!(
                "API key {} created for Identity {}; it is shown only this once:",
                created.info.id, created.info.identity
            );
            println!("{}", created.key.expose());
        }
        KeyCommand::List {
            identity,
            namespace,
        } => {
            let keys = store.list_api_keys(&QualifiedName::new(namespace, identity))?;
            let mut rows = vec![vec!["ID".to_owned(), "CREATED".to_owned()]];
            rows.extend(keys.iter().map(|k| vec![k.id.clone(), age(k.created_at)]));
            print_table(&rows);
        }
        KeyCommand::Revoke {
            identity,
            id,
            namespace,
        } => {
            let who = QualifiedName::new(namespace, identity);
            store.revoke_api_key(&who, &id, unguarded)?;
            println!("API key {id} of Identity {who} revoked");
        }
    }
    Ok(())
}
