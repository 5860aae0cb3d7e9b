//! `postern plugin new` scaffolds a plugin project that builds as it is — Rust (a crate
//! for wasm32-wasip2), Python (componentize-py) or JavaScript (componentize-js) — with
//! `wit/plugin.wit` vendored at this gateway's version, a README, the `kind: Plugin`
//! resource and `postern plugin test` cases that pass; `postern plugin build` runs the
//! project's build and names the component it made.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use crate::cli::{PluginKindArg, PluginLang};

/// The interface every scaffold vendors: the one this gateway implements.
const WIT: &str = include_str!("../../../../wit/plugin.wit");
/// The dependency versions the example plugins are built and tested with; a new Rust
/// project starts from them (cargo drops what it does not use at its first build).
const CARGO_LOCK: &str = include_str!("../../../../plugins/Cargo.lock");
/// The example plugins' workspace, whose shared package fields and dependency versions a
/// new Rust project's workspace gets, so that the SDK's manifest is vendored as it is.
const PLUGINS_WORKSPACE: &str = include_str!("../../../../plugins/Cargo.toml");
/// The guest SDK, vendored into every new Rust project as `postern-plugin-sdk/`.
const SDK: [(&str, &str); 5] = [
    (
        "Cargo.toml",
        include_str!("../../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/host.rs",
        include_str!("../../../../plugins/sdk/src/host.rs"),
    ),
    (
        "src/testing.rs",
        include_str!("../../../../plugins/sdk/src/testing.rs"),
    ),
    (
        "src/jwt.rs",
        include_str!("../../../../plugins/sdk/src/jwt.rs"),
    ),
];
/// How `plugin build` builds a project that is not a cargo crate.
const BUILD_FILE: &str = "postern-plugin.toml";
/// The toolchains the Python and JavaScript scaffolds pin.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
const COMPONENTIZE_JS: &str = "0.23.0";

mod template {
    pub const POLICY_SPEC: &str = include_str!("templates/policy.yaml.in");
    pub const AUTH_PROVIDER_SPEC: &str = include_str!("templates/auth-provider.yaml.in");
    pub const LOG_SINK_SPEC: &str = include_str!("templates/log-sink.yaml.in");
    pub const POLICY_CASES: &str = include_str!("templates/policy.cases.in");
    pub const AUTH_PROVIDER_CASES: &str = include_str!("templates/auth-provider.cases.in");
    pub const LOG_SINK_CASES: &str = include_str!("templates/log-sink.cases.in");
    pub const RUST_CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml.in");
    pub const RUST_README: &str = include_str!("templates/rust/README.md.in");
    pub const RUST_POLICY: &str = include_str!("templates/rust/policy.rs.in");
    pub const RUST_AUTH_PROVIDER: &str = include_str!("templates/rust/auth-provider.rs.in");
    pub const RUST_LOG_SINK: &str = include_str!("templates/rust/log-sink.rs.in");
    pub const PYTHON_POLICY: &str = include_str!("templates/python/app.py.in");
    pub const PYTHON_README: &str = include_str!("templates/python/README.md.in");
    pub const JS_POLICY: &str = include_str!("templates/js/app.js.in");
    pub const JS_README: &str = include_str!("templates/js/README.md.in");
}

/// What differs between the kinds: the spec, the cases, the Rust code, and how a gateway
/// is told to use the plugin.
struct Kind {
    resource_type: &'static str,
    world: &'static str,
    spec: &'static str,
    cases: &'static str,
    rust: &'static str,
    attach: &'static str,
}

fn kind(arg: PluginKindArg) -> Kind {
    match arg {
        PluginKindArg::Policy => Kind {
            resource_type: "policy",
            world: "policy",
            spec: template::POLICY_SPEC,
            cases: template::POLICY_CASES,
            rust: template::RUST_POLICY,
            attach: "- A Service asks it about every statement with `authorization: {plugins: [{{name}}]}`\n  in its spec; a denied statement gets `42501 permission denied by plugin {{name}} …`.",
        },
        PluginKindArg::AuthProvider => Kind {
            resource_type: "authProvider",
            world: "auth-provider",
            spec: template::AUTH_PROVIDER_SPEC,
            cases: template::AUTH_PROVIDER_CASES,
            rust: template::RUST_AUTH_PROVIDER,
            attach: "- A Service lets it log identities in with `auth: {providers: [{{name}}]}` in its\n  spec; the tokens are Secrets: `postern secret set token-alice --file alice.token`.",
        },
        PluginKindArg::LogSink => Kind {
            resource_type: "logSink",
            world: "log-sink",
            spec: template::LOG_SINK_SPEC,
            cases: template::LOG_SINK_CASES,
            rust: template::RUST_LOG_SINK,
            attach: "- The gateway hands it every access-log event with `[audit] plugin_sinks =\n  [\"default/{{name}}\"]` in postern.toml.",
        },
    }
}

/// The `[workspace.package]` and `[workspace.dependencies]` of the example plugins'
/// workspace, which the vendored SDK's manifest inherits from.
fn shared_workspace_fields() -> anyhow::Result<String> {
    let plugins: toml::Table = toml::from_str(PLUGINS_WORKSPACE)?;
    let shared = ["package", "dependencies"].map(|section| {
        plugins
            .get("workspace")
            .and_then(|workspace| workspace.get(section))
            .cloned()
            .map(|table| (section.to_owned(), table))
    });
    let workspace: toml::Table = shared.into_iter().flatten().collect();
    let document = toml::Table::from_iter([("workspace".to_owned(), workspace.into())]);
    Ok(toml::to_string(&document)?)
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// `postern-plugin.toml`: the build command of a Python or JavaScript project and the
/// component it writes, both relative to the project.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildFile {
    build: Vec<String>,
    component: String,
}

fn build_file(command: &[&str], component: &str) -> String {
    let quoted: Vec<String> = command.iter().map(|part| format!("{part:?}")).collect();
    format!(
        "# How `postern plugin build` builds this project, and the component it makes.\nbuild = [{}]\ncomponent = {component:?}\n",
        quoted.join(", ")
    )
}

/// Writes a new project `name` into `dir` (default: `./name`), which must not exist or
/// be empty.
pub fn new_project(
    name: &str,
    arg: PluginKindArg,
    lang: PluginLang,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    postern_model::validate_name(name).map_err(|e| anyhow!("{e} (it is the Plugin's name too)"))?;
    let lang_name = match lang {
        PluginLang::Rust => "Rust",
        PluginLang::Python => "Python",
        PluginLang::Js => "JavaScript",
    };
    if lang != PluginLang::Rust && arg != PluginKindArg::Policy {
        bail!("{lang_name} scaffolds are policy hooks for now; auth providers and log sinks: --lang rust");
    }
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
    let crate_name = name.replace('-', "_");
    let wasm = match lang {
        PluginLang::Rust => format!("target/wasm32-wasip2/release/{crate_name}.wasm"),
        PluginLang::Python | PluginLang::Js => format!("{crate_name}.wasm"),
    };
    let values = [
        ("name", name),
        ("crate", crate_name.as_str()),
        ("type", kind.resource_type),
        ("version", postern_plugins::PACKAGE_VERSION),
        ("wasm", wasm.as_str()),
    ];
    let attach = fill(kind.attach, &values);
    let readme_values = [values.as_slice(), &[("attach", attach.as_str())]].concat();
    let spec = spec_fields(kind.spec, lang)?;
    let (gitignore, language_files): (String, Vec<(&str, String)>) = match lang {
        PluginLang::Rust => (
            "/target\n".to_owned(),
            vec![
                (
                    "Cargo.toml",
                    fill(template::RUST_CARGO_TOML, &values) + &shared_workspace_fields()?,
                ),
                ("Cargo.lock", CARGO_LOCK.to_owned()),
                ("src/lib.rs", fill(kind.rust, &values)),
                ("README.md", fill(template::RUST_README, &readme_values)),
            ],
        ),
        PluginLang::Python => {
            let build = [
                "componentize-py",
                "-d",
                "wit",
                "-w",
                kind.world,
                "componentize",
                "app",
                "-o",
                wasm.as_str(),
            ];
            (
                format!("/.venv\n/{wasm}\n__pycache__/\n"),
                vec![
                    ("app.py", fill(template::PYTHON_POLICY, &values)),
                    ("requirements.txt", format!("{COMPONENTIZE_PY}\n")),
                    (BUILD_FILE, build_file(&build, &wasm)),
                    ("README.md", fill(template::PYTHON_README, &readme_values)),
                ],
            )
        }
        PluginLang::Js => {
            // `jco componentize` wraps the same tool; called directly it needs nothing
            // else from npm.
            let build = [
                "componentize-js",
                "app.js",
                "--wit",
                "wit",
                "--world-name",
                kind.world,
                "--disable",
                "http",
                "fetch-event",
                "-o",
                wasm.as_str(),
            ];
            let package = serde_json::json!({
                "name": name,
                "private": true,
                "type": "module",
                "devDependencies": {
                    "@bytecodealliance/componentize-js": COMPONENTIZE_JS,
                },
            });
            (
                format!("/node_modules\n/{wasm}\n"),
                vec![
                    ("app.js", fill(template::JS_POLICY, &values)),
                    ("package.json", format!("{package:#}\n")),
                    (BUILD_FILE, build_file(&build, &wasm)),
                    ("README.md", fill(template::JS_README, &readme_values)),
                ],
            )
        }
    };
    let cases = format!(
        "# postern plugin test {wasm} --cases cases.yaml\n{}{}",
        serde_yaml_ng::to_string(&Mapping::from_iter([(
            Value::from("plugin"),
            Value::Mapping(spec.clone())
        )]))?,
        kind.cases
    );
    let mut files = vec![
        ("cases.yaml".to_owned(), cases),
        ("plugin.yaml".to_owned(), resource(name, spec, &wasm)?),
        (".gitignore".to_owned(), gitignore),
    ];
    files.extend(
        language_files
            .into_iter()
            .map(|(path, text)| (path.to_owned(), text)),
    );
    match lang {
        PluginLang::Rust => {
            let sdk = SDK.iter().map(|(path, text)| (*path, (*text).to_owned()));
            files.extend(
                sdk.chain([("wit/plugin.wit", WIT.to_owned())])
                    .map(|(path, text)| (format!("postern-plugin-sdk/{path}"), text)),
            );
        }
        PluginLang::Python | PluginLang::Js => {
            files.push(("wit/plugin.wit".to_owned(), WIT.to_owned()));
        }
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
        std::fs::write(&path, text).with_context(|| path.display().to_string())?;
    }
    println!(
        "created {} ({} plugin, {lang_name}); next: cd {} && postern plugin build",
        dir.display(),
        kind.resource_type,
        dir.display()
    );
    Ok(())
}

/// The `plugin:` spec of a template, for a project in `lang`.
fn spec_fields(template: &str, lang: PluginLang) -> anyhow::Result<Mapping> {
    let fragment: Mapping = serde_yaml_ng::from_str(template)?;
    let Some(Value::Mapping(fields)) = fragment.get("plugin") else {
        bail!("template: no plugin spec");
    };
    let mut fields = fields.clone();
    if lang != PluginLang::Rust {
        // An interpreter inside needs more memory than the default 16 MiB, and its
        // generated bindings import every interface the world offers, used or not.
        let mut limits = Mapping::new();
        limits.insert("memoryMib".into(), 128.into());
        fields.insert("limits".into(), Value::Mapping(limits));
        fields.insert(
            "capabilities".into(),
            Value::Sequence(vec!["log".into(), "cache".into()]),
        );
    }
    Ok(fields)
}

/// The `kind: Plugin` resource, from the same spec the cases use.
fn resource(name: &str, fields: Mapping, wasm: &str) -> anyhow::Result<String> {
    let mut source = Mapping::new();
    source.insert("path".into(), wasm.into());
    let mut spec = Mapping::new();
    spec.insert("source".into(), Value::Mapping(source));
    spec.extend(fields);
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), name.into());
    metadata.insert("namespace".into(), "default".into());
    let mut resource = Mapping::new();
    resource.insert("kind".into(), "Plugin".into());
    resource.insert("metadata".into(), Value::Mapping(metadata));
    resource.insert("spec".into(), Value::Mapping(spec));
    Ok(serde_yaml_ng::to_string(&resource)?)
}

/// Finds a build tool: the project's own (`.venv/bin`, `node_modules/.bin`) first, then
/// `PATH`.
fn tool(dir: &Path, name: &str) -> PathBuf {
    [".venv/bin", "node_modules/.bin"]
        .iter()
        .map(|local| dir.join(local).join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn run(dir: &Path, program: &Path, args: &[String]) -> anyhow::Result<()> {
    let shown = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| {
            format!("{shown}: cannot run it (is it installed? see the project's README)")
        })?;
    if !status.success() {
        bail!("{shown} failed in {} ({status})", dir.display());
    }
    Ok(())
}

/// A TOML error in one line (the crate's own text quotes the file over several):
/// `FILE:LINE: message`.
fn toml_error(file: &Path, text: &str, error: &toml::de::Error) -> anyhow::Error {
    let line = error.span().map_or(0, |span| {
        text[..span.start.min(text.len())].lines().count().max(1)
    });
    anyhow!("{}:{line}: {}", file.display(), error.message().trim())
}

/// Builds the project in `dir` and prints the component's path and sha256.
pub fn build(dir: &Path) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let build_file = dir.join(BUILD_FILE);
    let manifest = dir.join("Cargo.toml");
    let wasm = if build_file.is_file() {
        let text = std::fs::read_to_string(&build_file)
            .with_context(|| build_file.display().to_string())?;
        let parsed: BuildFile =
            toml::from_str(&text).map_err(|e| toml_error(&build_file, &text, &e))?;
        let Some((program, args)) = parsed.build.split_first() else {
            bail!("{}: build: the command is empty", build_file.display());
        };
        run(dir, &tool(dir, program), args)?;
        dir.join(parsed.component)
    } else if manifest.is_file() {
        let text =
            std::fs::read_to_string(&manifest).with_context(|| manifest.display().to_string())?;
        let parsed: toml::Table =
            toml::from_str(&text).map_err(|e| toml_error(&manifest, &text, &e))?;
        let Some(name) = parsed
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            bail!("{}: no [package] name", manifest.display());
        };
        let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        let args = ["build", "--release", "--target", "wasm32-wasip2"].map(String::from);
        run(dir, &cargo, &args)?;
        // Cargo reads a relative CARGO_TARGET_DIR from the directory it runs in.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|target| dir.join(target))
            .unwrap_or_else(|| dir.join("target"));
        target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")))
    } else {
        bail!(
            "{}: not a plugin project (no Cargo.toml or {BUILD_FILE}; postern plugin new makes one)",
            dir.display()
        );
    };
    let bytes = std::fs::read(&wasm).with_context(|| wasm.display().to_string())?;
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("component: {}", wasm.display());
    println!("sha256:    {sha}");
    Ok(())
}
