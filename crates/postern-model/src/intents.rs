//! The `Intents` kind: what an identity declares it needs on which tables and sequences,
//! which the reconciler turns into exactly those GRANTs on the identity's managed role.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::validate_name;
use crate::resource::{ServiceSpec, ValidationError};

/// A privilege an intent may ask for. Tables take the first seven, sequences take
/// `USAGE`, `SELECT` and `UPDATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
    Truncate,
    References,
    Trigger,
    Usage,
    Connect,
}

impl Privilege {
    pub const TABLE: [Privilege; 7] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
        Privilege::Truncate,
        Privilege::References,
        Privilege::Trigger,
    ];
    pub const SEQUENCE: [Privilege; 3] = [Privilege::Usage, Privilege::Select, Privilege::Update];

    /// The keyword in GRANT and in `aclexplode`'s `privilege_type`.
    pub fn as_sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Truncate => "TRUNCATE",
            Privilege::References => "REFERENCES",
            Privilege::Trigger => "TRIGGER",
            Privilege::Usage => "USAGE",
            Privilege::Connect => "CONNECT",
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

/// Which relations an intent covers within its database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectPattern {
    /// Every relation in every non-system schema, including ones created later.
    All,
    /// `schema.*`
    Schema(String),
    /// `schema.name`
    One { schema: String, name: String },
}

impl ObjectPattern {
    /// Parses `schema.name` or `schema.*`, names as PostgreSQL stores them (no quoting;
    /// the first `.` separates schema from name).
    pub fn parse(text: &str) -> Result<ObjectPattern, String> {
        let (schema, name) = text
            .split_once('.')
            .ok_or_else(|| format!("{text:?} must be schema.name or schema.*"))?;
        if schema.is_empty() || name.is_empty() {
            return Err(format!("{text:?} must be schema.name or schema.*"));
        }
        if text.contains('\0') {
            return Err("must not contain NUL".to_owned());
        }
        Ok(if name == "*" {
            ObjectPattern::Schema(schema.to_owned())
        } else {
            ObjectPattern::One {
                schema: schema.to_owned(),
                name: name.to_owned(),
            }
        })
    }
}

/// One declared need. Exactly one of `service` or `target` + `database` says where;
/// `table` or `sequence` says on what (neither = all tables); `operations` says which
/// privileges (empty = all that apply to the object type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessIntent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<Privilege>,
}

/// What an access entry covers once parsed: relation kind, pattern and privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessScope {
    pub sequences: bool,
    pub pattern: ObjectPattern,
    pub privileges: Vec<Privilege>,
}

impl AccessIntent {
    /// Whether a session to the service `name` falls under this entry: named directly,
    /// or by the service's target and database.
    pub fn covers_service(&self, name: &str, service: &ServiceSpec) -> bool {
        self.service.as_deref() == Some(name)
            || (self.target.as_deref() == Some(service.target.as_str())
                && self.database.as_deref() == Some(service.database.as_str()))
    }

    /// The parsed scope; valid after [`IntentsSpec::validate`] passed.
    pub fn scope(&self) -> Result<AccessScope, String> {
        let (sequences, pattern, allowed) = match (&self.table, &self.sequence) {
            (Some(_), Some(_)) => return Err("give table or sequence, not both".to_owned()),
            (Some(table), None) => (false, ObjectPattern::parse(table)?, &Privilege::TABLE[..]),
            (None, Some(seq)) => (true, ObjectPattern::parse(seq)?, &Privilege::SEQUENCE[..]),
            (None, None) => (false, ObjectPattern::All, &Privilege::TABLE[..]),
        };
        let mut privileges = if self.operations.is_empty() {
            allowed.to_vec()
        } else {
            self.operations.clone()
        };
        if let Some(bad) = privileges.iter().find(|p| !allowed.contains(p)) {
            let on = if sequences { "a sequence" } else { "a table" };
            return Err(format!("{bad} does not apply to {on}"));
        }
        privileges.sort();
        privileges.dedup();
        Ok(AccessScope {
            sequences,
            pattern,
            privileges,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntentsSpec {
    /// The identity in the same namespace whose managed role gets the privileges.
    pub identity: String,
    pub access: Vec<AccessIntent>,
}

impl IntentsSpec {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        let fail = |path: String, message: String| Err(ValidationError { path, message });
        if let Err(e) = validate_name(&self.identity) {
            return fail("spec.identity".into(), e.to_string());
        }
        for (index, entry) in self.access.iter().enumerate() {
            let path = format!("spec.access[{index}]");
            match (&entry.service, &entry.target, &entry.database) {
                (Some(service), None, None) => {
                    if let Err(e) = validate_name(service) {
                        return fail(format!("{path}.service"), e.to_string());
                    }
                }
                (None, Some(target), Some(database)) => {
                    if let Err(e) = validate_name(target) {
                        return fail(format!("{path}.target"), e.to_string());
                    }
                    if database.trim().is_empty() {
                        return fail(format!("{path}.database"), "must not be empty".into());
                    }
                }
                _ => {
                    return fail(
                        path,
                        "needs either service, or target and database".to_owned(),
                    )
                }
            }
            if let Err(message) = entry.scope() {
                let field = if entry.operations.is_empty() || message.contains("schema") {
                    if entry.sequence.is_some() {
                        "sequence"
                    } else {
                        "table"
                    }
                } else {
                    "operations"
                };
                return fail(format!("{path}.{field}"), message);
            }
        }
        Ok(())
    }
}

/// Prefix of the upstream role name the gateway manages for an identity.
pub const MANAGED_ROLE_PREFIX: &str = "pn_";

/// The upstream role managed for `namespace/identity`: `pn_<namespace>_<identity>`.
/// Names never contain `_`, so the separator keeps distinct pairs distinct; names past
/// PostgreSQL's 63 bytes are cut and end in a hash of the whole.
pub fn managed_role_name(namespace: &str, identity: &str) -> String {
    let full = format!("{MANAGED_ROLE_PREFIX}{namespace}_{identity}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a: stable across builds and platforms, which is all that is needed here.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{}_{hash:016x}", &full[..46])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(table: Option<&str>, sequence: Option<&str>, ops: &[Privilege]) -> AccessIntent {
        AccessIntent {
            service: Some("orders".into()),
            target: None,
            database: None,
            table: table.map(Into::into),
            sequence: sequence.map(Into::into),
            operations: ops.to_vec(),
        }
    }

    #[test]
    fn scopes_default_to_all_privileges_of_the_object_type() {
        let all = entry(None, None, &[]).scope().unwrap();
        assert_eq!(all.pattern, ObjectPattern::All);
        assert_eq!(all.privileges, Privilege::TABLE.to_vec());
        let seq = entry(None, Some("public.*"), &[]).scope().unwrap();
        assert!(seq.sequences);
        assert_eq!(seq.pattern, ObjectPattern::Schema("public".into()));
        let one = entry(
            Some("app.t"),
            None,
            &[Privilege::Insert, Privilege::Select, Privilege::Select],
        )
        .scope()
        .unwrap();
        assert_eq!(one.privileges, [Privilege::Select, Privilege::Insert]);
    }

    #[test]
    fn bad_entries_name_their_field() {
        let spec = |e: AccessIntent| IntentsSpec {
            identity: "server".into(),
            access: vec![e],
        };
        let err = spec(entry(Some("t"), None, &[])).validate().unwrap_err();
        assert_eq!(err.path, "spec.access[0].table");
        let err = spec(entry(Some("public.t"), None, &[Privilege::Usage]))
            .validate()
            .unwrap_err();
        assert_eq!(err.path, "spec.access[0].operations");
        let mut both = entry(None, None, &[]);
        both.target = Some("pg".into());
        let err = spec(both).validate().unwrap_err();
        assert_eq!(err.path, "spec.access[0]");
    }

    #[test]
    fn role_names_fit_postgres_and_stay_distinct() {
        assert_eq!(managed_role_name("team-a", "server"), "pn_team-a_server");
        assert_ne!(managed_role_name("a-b", "c"), managed_role_name("a", "b-c"));
        let long = "x".repeat(63);
        let name = managed_role_name(&long, "y");
        assert_eq!(name.len(), 63);
        assert_ne!(name, managed_role_name(&long, "z"));
    }
}
