//! Reading resource files: YAML (several `---` documents) or TOML (one resource, or an
//! array of `[[resources]]`). Errors are one line naming file, document and field path.

use serde::Deserialize;

use crate::resource::{Kind, Metadata, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// Picks the format from a file name; `None` for files apply should skip.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// A resource and where it came from, for error messages.
#[derive(Debug, Clone)]
pub struct LoadedResource {
    /// `path/to/file.yaml, document 3`
    pub origin: String,
    pub resource: Resource,
}

/// A bad document: `file.yaml: document 3 (Service team-a/orders): spec.upstream: …`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}: document {document}: {message}")]
pub struct DocumentError {
    pub source_name: String,
    /// 1-based index of the document in its file.
    pub document: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: serde_json::Value,
    /// What `get -o yaml` reports (reconcile outcome, dates); read-only, so ignored here.
    #[serde(default, rename = "status")]
    _status: serde::de::IgnoredAny,
}

/// Parses every document in `text`. Empty YAML documents are skipped.
pub fn parse_documents(
    source_name: &str,
    text: &str,
    format: Format,
) -> Result<Vec<LoadedResource>, DocumentError> {
    let error = |document: usize, message: String| DocumentError {
        source_name: source_name.to_owned(),
        document,
        message,
    };
    let values: Vec<serde_json::Value> = match format {
        Format::Yaml => {
            let mut values = Vec::new();
            for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
                let value = serde_json::Value::deserialize(document).map_err(|e| {
                    error(
                        index + 1,
                        format!("invalid YAML: {}", one_line(&e.to_string())),
                    )
                })?;
                values.push(value);
            }
            values
        }
        Format::Toml => {
            let value: serde_json::Value = toml::from_str(text)
                .map_err(|e| error(1, format!("invalid TOML: {}", one_line(&e.to_string()))))?;
            match value.get("resources") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                _ => vec![value],
            }
        }
    };

    let mut loaded = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        let document = index + 1;
        if value.is_null() {
            continue;
        }
        let raw: RawDocument = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            error(document, format!("{path}: {}", e.into_inner()))
        })?;
        let kind =
            Kind::from_document(&raw.kind).map_err(|m| error(document, format!("kind: {m}")))?;
        let label = match &raw.metadata.namespace {
            Some(ns) => format!("{kind} {ns}/{}", raw.metadata.name),
            None => format!("{kind} {}", raw.metadata.name),
        };
        let resource = Resource::from_parts(kind, raw.metadata, raw.spec)
            .map_err(|e| error(document, format!("({label}) {e}")))?;
        loaded.push(LoadedResource {
            origin: format!("{source_name}, document {document}"),
            resource,
        });
    }
    Ok(loaded)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICKSTART: &str = r#"
kind: Namespace
metadata:
  name: team-a
---
kind: Target
metadata: {name: main-pg, namespace: team-a}
spec:
  address: 127.0.0.1:5432
  sslMode: prefer
  admin: {user: postern_admin, passwordSecret: pg-admin-password}
---
kind: Service
metadata: {name: orders, namespace: team-a}
spec:
  target: main-pg
  database: orders
  upstream: {mode: static, user: app_rw, passwordSecret: app-rw-password}
---
kind: Identity
metadata: {name: alice, namespace: team-a}
spec:
  type: human
  groups: [engineering]
  attributes: {team: payments}
"#;

    #[test]
    fn reads_the_quickstart_format() {
        let docs = parse_documents("q.yaml", QUICKSTART, Format::Yaml).unwrap();
        let kinds: Vec<Kind> = docs.iter().map(|d| d.resource.kind()).collect();
        assert_eq!(
            kinds,
            [Kind::Namespace, Kind::Target, Kind::Service, Kind::Identity]
        );
        assert_eq!(docs[2].origin, "q.yaml, document 3");
    }

    #[test]
    fn toml_single_and_array_forms() {
        let single = "kind = \"Namespace\"\n[metadata]\nname = \"team-b\"\n";
        assert_eq!(
            parse_documents("a.toml", single, Format::Toml)
                .unwrap()
                .len(),
            1
        );
        let many = "[[resources]]\nkind = \"Namespace\"\nmetadata = { name = \"x\" }\n\n[[resources]]\nkind = \"Identity\"\nmetadata = { name = \"bob\", namespace = \"x\" }\nspec = { groups = [\"ops\"] }\n";
        let docs = parse_documents("b.toml", many, Format::Toml).unwrap();
        assert_eq!(docs[1].resource.describe(), "Identity x/bob");
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let bad = QUICKSTART.replace("user: app_rw, ", "");
        let err = parse_documents("q.yaml", &bad, Format::Yaml).unwrap_err();
        assert_eq!(err.document, 3);
        let line = err.to_string();
        assert!(
            line.starts_with("q.yaml: document 3: (Service team-a/orders) spec.upstream"),
            "{line}"
        );
        assert!(line.contains("user"), "{line}");
        assert!(!line.contains('\n'));

        let err =
            parse_documents("q.yaml", "kind: Namespace\nmetadata: [", Format::Yaml).unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");

        let err = parse_documents(
            "q.yaml",
            "kind: Namespace\nmetadata: {name: x}\nspek: {}",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(err.to_string().contains("spek"), "{err}");
    }
}
