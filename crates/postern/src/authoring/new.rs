//! `postern plugin new` scaffolds a plugin project that builds as it is (Rust for now:
//! a crate for wasm32-wasip2 with `wit/plugin.wit` vendored at this gateway's version, a
//! README, the `kind: Plugin` resource and `postern plugin test` cases that pass), and
//! `postern plugin build` runs the project's build and names the component it made.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};
use serde_yaml_ng::{Mapping, Value};

use crate::cli::PluginKindArg;

/// The interface every scaffold vendors: the one this gateway implements.
const WIT: &str = include_str!("../../../../wit/plugin.wit");
/// The dependency versions the example plugins are built and tested with; a new project
/// starts from them (cargo drops what it does not use at its first build).
const CARGO_LOCK: &str = include_str!("../../../../plugins/Cargo.lock");

mod rust {
    pub const CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml.in");
    pub const README: &str = include_str!("templates/rust/README.md.in");
    pub const POLICY: &str = include_str!("templates/rust/policy.rs.in");
    pub const AUTH_PROVIDER: &str = include_str!("templates/rust/auth-provider.rs.in");
    pub const LOG_SINK: &str = include_str!("templates/rust/log-sink.rs.in");
    pub const POLICY_SPEC: &str = include_str!("templates/rust/policy.yaml.in");
    pub const AUTH_PROVIDER_SPEC: &str = include_str!("templates/rust/auth-provider.yaml.in");
    pub const LOG_SINK_SPEC: &str = include_str!("templates/rust/log-sink.yaml.in");
    pub const POLICY_CASES: &str = include_str!("templates/rust/policy.cases.in");
    pub const AUTH_PROVIDER_CASES: &str = include_str!("templates/rust/auth-provider.cases.in");
    pub const LOG_SINK_CASES: &str = include_str!("templates/rust/log-sink.cases.in");
}

/// What differs between the kinds: the code, the spec, the cases, and how a gateway
/// is told to use the plugin.
struct Kind {
    resource_type: &'static str,
    code: &'static str,
    spec: &'static str,
    cases: &'static str,
    attach: &'static str,
}

fn kind(arg: PluginKindArg) -> Kind {
    match arg {
        PluginKindArg::Policy => Kind {
            resource_type: "policy",
            code: rust::POLICY,
            spec: rust::POLICY_SPEC,
            cases: rust::POLICY_CASES,
            attach: "- A Service asks it about every statement with `authorization: {plugins: [{{name}}]}`\n  in its spec; a denied statement gets `42501 permission denied by plugin {{name}} …`.",
        },
        PluginKindArg::AuthProvider => Kind {
            resource_type: "authProvider",
            code: rust::AUTH_PROVIDER,
            spec: rust::AUTH_PROVIDER_SPEC,
            cases: rust::AUTH_PROVIDER_CASES,
            attach: "- A Service lets it log identities in with `auth: {providers: [{{name}}]}` in its\n  spec; the tokens are Secrets: `postern secret set token-alice --file alice.token`.",
        },
        PluginKindArg::LogSink => Kind {
            resource_type: "logSink",
            code: rust::LOG_SINK,
            spec: rust::LOG_SINK_SPEC,
            cases: rust::LOG_SINK_CASES,
            attach: "- The gateway hands it every access-log event with `[audit] plugin_sinks =\n  [\"default/{{name}}\"]` in postern.toml.",
        },
    }
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// The component `cargo build --release --target wasm32-wasip2` makes for crate `name`,
/// relative to the project.
fn component_path(name: &str) -> String {
    format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    )
}

/// Writes a new project `name` into `dir` (default: `./name`), which must not exist or
/// be empty.
pub fn new_project(name: &str, arg: PluginKindArg, dir: Option<PathBuf>) -> anyhow::Result<()> {
    postern_model::validate_name(name).map_err(|e| anyhow!("{e} (it is the Plugin's name too)"))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| dir.display().to_string())?
            .next()
            .is_some()
    {
        bail!("{}: exists and is not empty", dir.display());
    }
    let kind = kind(arg);
    let wasm = component_path(name);
    let crate_name = name.replace('-', "_");
    let values = [
        ("name", name),
        ("crate", crate_name.as_str()),
        ("type", kind.resource_type),
        ("version", postern_plugins::PACKAGE_VERSION),
        ("wasm", wasm.as_str()),
    ];
    let attach = fill(kind.attach, &values);
    let readme_values = [values.as_slice(), &[("attach", attach.as_str())]].concat();
    let files = [
        ("Cargo.toml", fill(rust::CARGO_TOML, &values)),
        ("Cargo.lock", CARGO_LOCK.to_owned()),
        ("src/lib.rs", fill(kind.code, &values)),
        ("wit/plugin.wit", WIT.to_owned()),
        (
            "cases.yaml",
            format!(
                "# postern plugin test {wasm} --cases cases.yaml\n{}{}",
                kind.spec, kind.cases
            ),
        ),
        ("plugin.yaml", resource(name, kind.spec, &wasm)?),
        ("README.md", fill(rust::README, &readme_values)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
        std::fs::write(&path, text).with_context(|| path.display().to_string())?;
    }
    println!(
        "created {} ({} plugin, Rust); next: cd {} && postern plugin build",
        dir.display(),
        kind.resource_type,
        dir.display()
    );
    Ok(())
}

/// The `kind: Plugin` resource, from the same spec the cases use.
fn resource(name: &str, spec: &str, wasm: &str) -> anyhow::Result<String> {
    let fragment: Mapping = serde_yaml_ng::from_str(spec)?;
    let Some(Value::Mapping(fields)) = fragment.get("plugin") else {
        bail!("template: no plugin spec");
    };
    let mut source = Mapping::new();
    source.insert("path".into(), wasm.into());
    let mut spec = Mapping::new();
    spec.insert("source".into(), Value::Mapping(source));
    spec.extend(fields.clone());
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), name.into());
    metadata.insert("namespace".into(), "default".into());
    let mut resource = Mapping::new();
    resource.insert("kind".into(), "Plugin".into());
    resource.insert("metadata".into(), Value::Mapping(metadata));
    resource.insert("spec".into(), Value::Mapping(spec));
    Ok(serde_yaml_ng::to_string(&resource)?)
}

/// Builds the project in `dir` and prints the component's path and sha256.
pub fn build(dir: &Path) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "{}: not a plugin project (postern plugin new makes one)",
            manifest.display()
        )
    })?;
    let parsed: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", manifest.display()))?;
    let Some(name) = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
    else {
        bail!("{}: no [package] name", manifest.display());
    };
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!(
            "cargo build --release --target wasm32-wasip2 failed in {} ({status})",
            dir.display()
        );
    }
    // Cargo reads a relative CARGO_TARGET_DIR from the directory it runs in.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|target| dir.join(target))
        .unwrap_or_else(|| dir.join("target"));
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let bytes = std::fs::read(&wasm).with_context(|| wasm.display().to_string())?;
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("component: {}", wasm.display());
    println!("sha256:    {sha}");
    Ok(())
}
