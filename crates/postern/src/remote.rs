//! `--server URL --token-file F`: `get`, `apply`, `delete` and `secret set` against a
//! remote gateway's admin API instead of the local state directory, with the same role
//! bindings as every other API caller.

use std::path::PathBuf;

use anyhow::{bail, Context};
use postern_api::{paths, Client};
use postern_model::{Kind, LoadedResource};
use serde_json::Value;

use crate::cli::{Command, Output, SecretCommand, SettingFlags};
use crate::resources::{
    emit, load, parse_kind, read_plugin_components, read_secret_input, Named, PluginComponent,
};

/// The API client for `--server`, with the token and CA files the flags name.
fn client(
    server: &str,
    token_file: Option<&PathBuf>,
    ca_file: Option<&PathBuf>,
) -> anyhow::Result<Client> {
    let Some(token_file) = token_file else {
        bail!("--server needs --token-file (a bearer token: an access token or the bootstrap admin token)");
    };
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("--token-file {}", token_file.display()))?;
    let ca = ca_file
        .map(|ca_file| {
            std::fs::read(ca_file).with_context(|| format!("--ca-file {}", ca_file.display()))
        })
        .transpose()?;
    Client::new(server, &token, ca.as_deref()).with_context(|| match ca_file {
        Some(ca_file) => format!("--ca-file {}", ca_file.display()),
        None => "--server".to_owned(),
    })
}

/// Uploads a Plugin's component to its content address.
fn upload_component(remote: &Client, component: &PluginComponent) -> anyhow::Result<()> {
    remote
        .put_bytes(
            &paths::plugin_component(&component.namespace, &component.sha256),
            &component.bytes,
        )
        .with_context(|| format!("uploading component {}", component.sha256))
}

/// The admin API's path of what `named` names in `namespace` (`name` or the collection).
fn api_path(named: &Named, namespace: &str, name: Option<&str>) -> String {
    match named {
        Named::Resource(Kind::Namespace) => paths::namespaces(name),
        Named::Resource(kind) => paths::in_namespace(namespace, kind.plural(), name),
        Named::Secret => paths::in_namespace(namespace, "secrets", name),
    }
}

/// Runs a command against the admin API at `server`.
pub fn run(server: &str, settings: &SettingFlags, command: Command) -> anyhow::Result<()> {
    let remote = client(
        server,
        settings.token_file.as_ref(),
        settings.ca_file.as_ref(),
    )?;
    match command {
        Command::Get {
            kind,
            name,
            scope,
            output,
        } => {
            if scope.all_namespaces {
                bail!("-A is not available with --server; name a namespace with -n");
            }
            let namespace = scope
                .namespace
                .unwrap_or_else(|| postern_model::DEFAULT_NAMESPACE.to_owned());
            let path = api_path(&parse_kind(&kind)?, &namespace, name.as_deref());
            if name.is_some() {
                return print_docs(output, &[remote.expect("GET", &path, None)?]);
            }
            // Every page: the API answers at most a page per request.
            let mut docs = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let page_path = match &next {
                    Some(token) => format!("{path}?continue={token}"),
                    None => path.clone(),
                };
                let mut answer = remote.expect("GET", &page_path, None)?;
                if let Value::Array(items) = answer["items"].take() {
                    docs.extend(items);
                }
                match answer["continue"].as_str() {
                    Some(token) => next = Some(token.to_owned()),
                    None => break,
                }
            }
            print_docs(output, &docs)
        }
        Command::Apply {
            files,
            dry_run,
            prune,
        } => {
            if prune {
                bail!("--prune is not available with --server (deletes go one by one: postern delete)");
            }
            let mut loaded = load(&files)?;
            // Checked here as a local apply checks them, before anything changes; then
            // uploaded, so the Plugins that name them can be stored.
            let components = read_plugin_components(&mut loaded, crate::authoring::compile_cache())?;
            if !dry_run {
                for component in &components {
                    upload_component(&remote, component)?;
                }
            }
            apply(&remote, &loaded, dry_run)
        }
        Command::Delete {
            kind,
            name,
            namespace,
        } => {
            let path = api_path(&parse_kind(&kind)?, &namespace, Some(&name));
            remote.expect("DELETE", &path, None)?;
            println!("{kind} {namespace}/{name} deleted");
            Ok(())
        }
        Command::Explain {
            identity,
            service,
            statement,
            client_address,
            output,
        } => {
            let question = crate::explain::Question {
                identity,
                service,
                statement,
                client_address,
            };
            let answer = remote.expect("POST", paths::EXPLAIN, Some(&question.request()))?;
            crate::explain::print(&answer, &question, output)
        }
        Command::Secret(SecretCommand::Set {
            name,
            namespace,
            value,
            file,
        }) => {
            let value = read_secret_input(value, file.as_deref())?;
            if value.is_empty() {
                bail!("the secret value is empty");
            }
            let (status, answer) = remote.call(
                "PUT",
                &paths::in_namespace(&namespace, "secrets", Some(&name)),
                Some(&serde_json::json!({ "value": value })),
            )?;
            match status {
                200 => println!("Secret {namespace}/{name} updated"),
                201 => println!("Secret {namespace}/{name} created"),
                _ => bail!("{}", postern_api::client::api_message(status, &answer)),
            }
            Ok(())
        }
        _ => bail!(
            "this command is not available with --server; run it on the gateway's host (get, apply, delete and secret set are)"
        ),
    }
}

fn print_docs(output: Output, docs: &[Value]) -> anyhow::Result<()> {
    let mut rows = vec![vec![
        "NAMESPACE".to_owned(),
        "NAME".to_owned(),
        "GENERATION".to_owned(),
    ]];
    for doc in docs {
        let field = |key: &str| match &doc["metadata"][key] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        rows.push(vec![field("namespace"), field("name"), field("generation")]);
    }
    emit(output, docs, &rows)
}

/// Creates what is missing and replaces what differs, one resource at a time in
/// dependency order (the API has no multi-resource transaction).
fn apply(remote: &Client, loaded: &[LoadedResource], dry_run: bool) -> anyhow::Result<()> {
    let mut ordered: Vec<&LoadedResource> = loaded.iter().collect();
    ordered.sort_by_key(|l| {
        Kind::ALL
            .iter()
            .position(|k| *k == l.resource.kind())
            .unwrap_or(usize::MAX)
    });
    for item in ordered {
        let r = &item.resource;
        let path = api_path(&Named::Resource(r.kind()), r.namespace(), Some(r.name()));
        let wanted = r.to_document();
        let (status, current) = remote.call("GET", &path, None)?;
        let fail = |status: u16, answer: &Value| {
            anyhow::anyhow!(
                "{}: ({}) {}",
                item.origin,
                r.describe(),
                postern_api::client::api_message(status, answer)
            )
        };
        match status {
            404 => {
                if !dry_run {
                    let collection_path = api_path(&Named::Resource(r.kind()), r.namespace(), None);
                    let (status, answer) = remote.call("POST", &collection_path, Some(&wanted))?;
                    if status != 201 {
                        return Err(fail(status, &answer));
                    }
                }
                println!("+ {} (create)", r.describe());
            }
            200 => {
                let unchanged = current["spec"] == wanted["spec"]
                    && current["metadata"]["labels"] == wanted["metadata"]["labels"];
                if unchanged {
                    println!("= {} (unchanged)", r.describe());
                    continue;
                }
                if !dry_run {
                    let mut body = wanted.clone();
                    body["metadata"]["generation"] = current["metadata"]["generation"].clone();
                    let (status, answer) = remote.call("PUT", &path, Some(&body))?;
                    if status != 200 {
                        return Err(fail(status, &answer));
                    }
                }
                println!("~ {} (update)", r.describe());
            }
            _ => return Err(fail(status, &current)),
        }
    }
    if dry_run {
        println!("dry run: nothing was changed");
    }
    Ok(())
}
