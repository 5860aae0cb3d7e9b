//! `postern explain IDENTITY SERVICE [--statement SQL]`: the connection simulator of the
//! web UI on the command line, against the local state or (`--server`) the admin API.

use anyhow::{bail, Context};
use postern_model::{ClientFacts, Kind, QualifiedName, Spec};
use postern_state::Store;
use serde_json::{json, Value};

use crate::cli::ExplainOutput;

/// What `postern explain` was asked.
pub struct Question {
    pub identity: String,
    pub service: String,
    pub statement: Option<String>,
    pub client_address: String,
}

impl Question {
    /// The request body of `POST /api/v1/explain`.
    pub fn request(&self) -> Value {
        let mut body = json!({
            "identity": self.identity,
            "service": self.service,
            "clientAddress": self.client_address,
        });
        if let Some(statement) = &self.statement {
            body["statement"] = Value::String(statement.clone());
        }
        body
    }
}

fn qualified(text: &str, what: &str) -> anyhow::Result<QualifiedName> {
    QualifiedName::from_dotted(text).map_err(|e| anyhow::anyhow!("{what} {e}"))
}

pub fn local(store: &Store, question: &Question, output: ExplainOutput) -> anyhow::Result<()> {
    let identity = qualified(&question.identity, "identity")?;
    let service = qualified(&question.service, "service")?;
    let client = ClientFacts {
        address: question.client_address.clone(),
        ..ClientFacts::default()
    };
    let explanation = store
        .explain(&identity, &service, question.statement.as_deref(), &client)
        .context("cannot read the state")?;
    // The CLI loads no plugins: a service's policy hooks answer only in a gateway.
    let hooks = match store.get_resource(Kind::Service, &service.namespace, &service.name) {
        Ok(Some(stored)) => match stored.resource.spec {
            Spec::Service(spec) => spec.authorization.plugins,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    if !hooks.is_empty() {
        eprintln!(
            "note: Service {} asks policy-hook plugins ({}), which run only in a gateway: \
             for their verdict ask one with --server",
            question.service,
            hooks.join(", ")
        );
    }
    print(&explanation.to_json(), question, output)
}

/// Prints an explanation (the API's JSON form) as text or JSON; exits non-zero through the
/// caller when the connection or the statement would be refused, so scripts can test it.
pub fn print(answer: &Value, question: &Question, output: ExplainOutput) -> anyhow::Result<()> {
    let connect_allowed = answer.pointer("/connect/allowed") == Some(&Value::Bool(true));
    let statement_allowed = answer
        .pointer("/statement/allowed")
        .is_none_or(|v| v.as_bool() != Some(false));
    if output == ExplainOutput::Json {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        let text = |pointer: &str| answer.pointer(pointer).and_then(Value::as_str);
        println!(
            "connect:   {} — {}",
            if connect_allowed {
                "allowed"
            } else {
                "refused"
            },
            text("/connect/reason").unwrap_or("")
        );
        if let Some(route) = answer.get("route").filter(|r| !r.is_null()) {
            let field = |key: &str| route.get(key).and_then(Value::as_str).unwrap_or("");
            let config = match route.get("config").and_then(Value::as_str) {
                Some(config) => format!(", config {config}"),
                None => String::new(),
            };
            println!(
                "route:     target {}, database {}, user {} (mode {}{config})",
                field("target"),
                field("database"),
                field("user"),
                field("mode"),
            );
        }
        if answer.get("statement").is_some_and(|s| !s.is_null()) {
            if statement_allowed {
                println!(
                    "statement: allowed — {}",
                    text("/statement/reason").unwrap_or("")
                );
            } else {
                let reason = match text("/statement/reason") {
                    Some(reason) => format!(": {reason}"),
                    None => String::new(),
                };
                println!(
                    "statement: denied by rule {} ({}){reason}",
                    text("/statement/rule").unwrap_or("?"),
                    text("/statement/kind").unwrap_or("?"),
                );
            }
        }
    }
    if !connect_allowed {
        bail!(
            "{} may not connect to {}",
            question.identity,
            question.service
        );
    }
    if !statement_allowed {
        bail!("the statement would be denied");
    }
    Ok(())
}
