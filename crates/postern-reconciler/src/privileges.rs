//! The pure heart of the reconciler: a database's catalog snapshot and the Intents that
//! apply to it expand into the exact privilege set wanted; `diff` against what the
//! catalog holds gives the fewest GRANT/REVOKE statements that close the gap.
//! See <https://www.postgresql.org/docs/15/ddl-priv.html> for the privilege model.

use std::collections::{BTreeMap, BTreeSet};

use postern_model::{AccessScope, ObjectPattern, Privilege, QualifiedName};

use crate::sql::{ident, qualified};

/// What a privilege is on. Table covers every table-like relation (tables, partitioned
/// tables, views, materialized views, foreign tables); the `Default*` kinds are
/// `ALTER DEFAULT PRIVILEGES` entries of the admin role in a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Database,
    Schema,
    Table,
    Sequence,
    DefaultTables,
    DefaultSequences,
}

/// One object; `schema` is empty for databases and schemas, `name` is empty for the
/// schema-wide default privileges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Object {
    pub kind: ObjectKind,
    pub schema: String,
    pub name: String,
}

impl Object {
    pub fn database(name: &str) -> Object {
        Object {
            kind: ObjectKind::Database,
            schema: String::new(),
            name: name.to_owned(),
        }
    }
    pub fn schema(name: &str) -> Object {
        Object {
            kind: ObjectKind::Schema,
            schema: String::new(),
            name: name.to_owned(),
        }
    }
    pub fn relation(kind: ObjectKind, schema: &str, name: &str) -> Object {
        Object {
            kind,
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
    }
    pub fn defaults(kind: ObjectKind, schema: &str) -> Object {
        Object {
            kind,
            schema: schema.to_owned(),
            name: String::new(),
        }
    }

    fn sql_name(&self) -> String {
        match self.kind {
            ObjectKind::Database | ObjectKind::Schema => ident(&self.name),
            ObjectKind::Table | ObjectKind::Sequence => qualified(&self.schema, &self.name),
            ObjectKind::DefaultTables | ObjectKind::DefaultSequences => ident(&self.schema),
        }
    }
}

/// One privilege of one role on one object. Privileges are kept as PostgreSQL spells
/// them in `aclexplode`, so ones intents never grant (CREATE, TEMPORARY, ...) show up
/// as drift to revoke.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    pub object: Object,
    pub privilege: String,
    pub grantee: String,
}

/// A relation as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub is_sequence: bool,
}

/// A database as one reconcile run sees it.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub database: String,
    /// Non-system schemas, with whether the admin role owns each (then default
    /// privileges can cover objects it creates there later).
    pub schemas: BTreeMap<String, bool>,
    pub relations: Vec<Relation>,
    /// `(table schema, table, sequence schema, sequence)` for sequences a column owns.
    pub owned_sequences: Vec<(String, String, String, String)>,
    /// Privileges the managed roles hold now, with whether each is grantable.
    pub granted: BTreeMap<Grant, bool>,
}

/// One Intents entry that applies to this database.
#[derive(Debug, Clone)]
pub struct Entry {
    pub role: String,
    pub scope: AccessScope,
    pub source: QualifiedName,
}

/// A problem with one Intents resource that does not stop the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub source: QualifiedName,
    pub message: String,
}

/// The wanted privileges, each with the Intents resources that asked for it.
pub type Desired = BTreeMap<Grant, BTreeSet<QualifiedName>>;

/// Expands entries over the catalog into the privileges wanted. Missing schemas and
/// tables are reported per entry and skipped; everything else still applies.
pub fn expand(entries: &[Entry], catalog: &Catalog) -> (Desired, Vec<Problem>) {
    let mut desired = Desired::new();
    let mut problems = Vec::new();
    let mut want = |object: Object, privilege: Privilege, entry: &Entry| {
        desired
            .entry(Grant {
                object,
                privilege: privilege.as_sql().to_owned(),
                grantee: entry.role.clone(),
            })
            .or_default()
            .insert(entry.source.clone());
    };
    for entry in entries {
        want(
            Object::database(&catalog.database),
            Privilege::Connect,
            entry,
        );
        let scope = &entry.scope;
        let writes = !scope.sequences
            && scope
                .privileges
                .iter()
                .any(|p| matches!(p, Privilege::Insert | Privilege::Update));
        let schemas: Vec<&str> = match &scope.pattern {
            ObjectPattern::All => catalog.schemas.keys().map(String::as_str).collect(),
            ObjectPattern::Schema(schema) | ObjectPattern::One { schema, .. } => {
                if !catalog.schemas.contains_key(schema) {
                    problems.push(Problem {
                        source: entry.source.clone(),
                        message: format!(
                            "schema {schema} does not exist in database {}",
                            catalog.database
                        ),
                    });
                    continue;
                }
                vec![schema.as_str()]
            }
        };
        let kind = if scope.sequences {
            ObjectKind::Sequence
        } else {
            ObjectKind::Table
        };
        for schema in &schemas {
            want(Object::schema(schema), Privilege::Usage, entry);
        }
        if let ObjectPattern::One { schema, name } = &scope.pattern {
            let found = catalog.relations.iter().any(|r| {
                &r.schema == schema && &r.name == name && r.is_sequence == scope.sequences
            });
            if !found {
                let what = if scope.sequences { "sequence" } else { "table" };
                problems.push(Problem {
                    source: entry.source.clone(),
                    message: format!(
                        "{what} {schema}.{name} does not exist in database {}",
                        catalog.database
                    ),
                });
                continue;
            }
            for privilege in &scope.privileges {
                want(Object::relation(kind, schema, name), *privilege, entry);
            }
            // Inserting into a serial column calls nextval() on the sequence it owns.
            if writes {
                for (_, _, seq_schema, seq) in catalog
                    .owned_sequences
                    .iter()
                    .filter(|(ts, t, _, _)| ts == schema && t == name)
                {
                    want(Object::schema(seq_schema), Privilege::Usage, entry);
                    want(
                        Object::relation(ObjectKind::Sequence, seq_schema, seq),
                        Privilege::Usage,
                        entry,
                    );
                }
            }
            continue;
        }
        for relation in catalog
            .relations
            .iter()
            .filter(|r| schemas.contains(&r.schema.as_str()))
        {
            if relation.is_sequence == scope.sequences {
                for privilege in &scope.privileges {
                    want(
                        Object::relation(kind, &relation.schema, &relation.name),
                        *privilege,
                        entry,
                    );
                }
            } else if writes && relation.is_sequence {
                want(
                    Object::relation(ObjectKind::Sequence, &relation.schema, &relation.name),
                    Privilege::Usage,
                    entry,
                );
            }
        }
        // Objects the admin creates later in its own schemas get the same privileges at
        // once; the next reconcile covers everyone else's.
        for schema in schemas
            .iter()
            .filter(|s| catalog.schemas.get(**s).copied().unwrap_or(false))
        {
            let defaults = if scope.sequences {
                ObjectKind::DefaultSequences
            } else {
                ObjectKind::DefaultTables
            };
            for privilege in &scope.privileges {
                want(Object::defaults(defaults, schema), *privilege, entry);
            }
            if writes {
                want(
                    Object::defaults(ObjectKind::DefaultSequences, schema),
                    Privilege::Usage,
                    entry,
                );
            }
        }
    }
    (desired, problems)
}

/// A statement to run, with the Intents resources it serves (empty for revokes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub sources: BTreeSet<QualifiedName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    RevokeGrantOption,
    Revoke,
    Grant,
}

/// Most objects named in one statement, to keep statements a sane size.
const MAX_OBJECTS_PER_STATEMENT: usize = 500;

/// The statements that turn `actual` into `desired`: revokes first, then grants, each
/// grouping every object and role that share the same privilege list.
pub fn diff(desired: &Desired, actual: &BTreeMap<Grant, bool>) -> Vec<Statement> {
    let mut per_role: BTreeMap<(Action, ObjectKind, String), BTreeMap<Object, BTreeSet<String>>> =
        BTreeMap::new();
    let mut sources: BTreeMap<(Object, String), BTreeSet<QualifiedName>> = BTreeMap::new();
    let mut add = |action: Action, grant: &Grant| {
        per_role
            .entry((action, grant.object.kind, grant.grantee.clone()))
            .or_default()
            .entry(grant.object.clone())
            .or_default()
            .insert(grant.privilege.clone());
    };
    for (grant, asked_by) in desired {
        match actual.get(grant) {
            None => {
                add(Action::Grant, grant);
                sources
                    .entry((grant.object.clone(), grant.grantee.clone()))
                    .or_default()
                    .extend(asked_by.iter().cloned());
            }
            Some(true) => add(Action::RevokeGrantOption, grant),
            Some(false) => {}
        }
    }
    for grant in actual.keys().filter(|g| !desired.contains_key(*g)) {
        add(Action::Revoke, grant);
    }

    // Objects sharing a privilege list go in one statement per role; roles sharing the
    // same objects and privileges then share the statement.
    type Shape = (Action, ObjectKind, Vec<String>, Vec<Object>);
    let mut grouped: BTreeMap<Shape, BTreeSet<String>> = BTreeMap::new();
    for ((action, kind, grantee), objects) in per_role {
        let mut by_privileges: BTreeMap<Vec<String>, Vec<Object>> = BTreeMap::new();
        for (object, privileges) in objects {
            by_privileges
                .entry(privileges.into_iter().collect())
                .or_default()
                .push(object);
        }
        for (privileges, objects) in by_privileges {
            for chunk in objects.chunks(MAX_OBJECTS_PER_STATEMENT) {
                grouped
                    .entry((action, kind, privileges.clone(), chunk.to_vec()))
                    .or_default()
                    .insert(grantee.clone());
            }
        }
    }
    grouped
        .into_iter()
        .map(|((action, kind, privileges, objects), grantees)| {
            let statement_sources = if action == Action::Grant {
                objects
                    .iter()
                    .flat_map(|o| grantees.iter().map(move |g| (o.clone(), g.clone())))
                    .filter_map(|key| sources.get(&key))
                    .flatten()
                    .cloned()
                    .collect()
            } else {
                BTreeSet::new()
            };
            Statement {
                sql: render(action, kind, &privileges, &objects, &grantees),
                sources: statement_sources,
            }
        })
        .collect()
}

fn render(
    action: Action,
    kind: ObjectKind,
    privileges: &[String],
    objects: &[Object],
    grantees: &BTreeSet<String>,
) -> String {
    let privileges = privileges.join(", ");
    let objects: Vec<String> = objects.iter().map(Object::sql_name).collect();
    let objects = objects.join(", ");
    let grantees: Vec<String> = grantees.iter().map(|g| ident(g)).collect();
    let grantees = grantees.join(", ");
    // CASCADE: grants a managed role passed on with a grant option go with its own.
    let (verb, to, cascade) = match action {
        Action::Grant => ("GRANT", "TO", ""),
        Action::Revoke => ("REVOKE", "FROM", " CASCADE"),
        Action::RevokeGrantOption => ("REVOKE GRANT OPTION FOR", "FROM", " CASCADE"),
    };
    let grantees = format!("{grantees}{cascade}");
    match kind {
        ObjectKind::Database => format!("{verb} {privileges} ON DATABASE {objects} {to} {grantees}"),
        ObjectKind::Schema => format!("{verb} {privileges} ON SCHEMA {objects} {to} {grantees}"),
        ObjectKind::Table => format!("{verb} {privileges} ON TABLE {objects} {to} {grantees}"),
        ObjectKind::Sequence => {
            format!("{verb} {privileges} ON SEQUENCE {objects} {to} {grantees}")
        }
        ObjectKind::DefaultTables => format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {objects} {verb} {privileges} ON TABLES {to} {grantees}"
        ),
        ObjectKind::DefaultSequences => format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {objects} {verb} {privileges} ON SEQUENCES {to} {grantees}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let relation = |schema: &str, name: &str, is_sequence| Relation {
            schema: schema.into(),
            name: name.into(),
            is_sequence,
        };
        Catalog {
            database: "orders".into(),
            schemas: [("public".to_owned(), true), ("audit".to_owned(), false)].into(),
            relations: vec![
                relation("public", "example", false),
                relation("public", "example_id_seq", true),
                relation("public", "other", false),
                relation("audit", "log", false),
            ],
            owned_sequences: vec![(
                "public".into(),
                "example".into(),
                "public".into(),
                "example_id_seq".into(),
            )],
            granted: BTreeMap::new(),
        }
    }

    fn entry(role: &str, pattern: ObjectPattern, privileges: &[Privilege]) -> Entry {
        Entry {
            role: role.into(),
            scope: AccessScope {
                sequences: false,
                pattern,
                privileges: privileges.to_vec(),
            },
            source: QualifiedName::new("team-a", "intents"),
        }
    }

    fn one(schema: &str, name: &str) -> ObjectPattern {
        ObjectPattern::One {
            schema: schema.into(),
            name: name.into(),
        }
    }

    fn sql(statements: &[Statement]) -> Vec<&str> {
        statements.iter().map(|s| s.sql.as_str()).collect()
    }

    #[test]
    fn one_table_gets_connect_usage_and_its_serial_sequence() {
        let (desired, problems) = expand(
            &[entry(
                "pn_a_server",
                one("public", "example"),
                &[Privilege::Select, Privilege::Insert],
            )],
            &catalog(),
        );
        assert!(problems.is_empty());
        let statements = diff(&desired, &BTreeMap::new());
        assert_eq!(
            sql(&statements),
            [
                r#"GRANT CONNECT ON DATABASE "orders" TO "pn_a_server""#,
                r#"GRANT USAGE ON SCHEMA "public" TO "pn_a_server""#,
                r#"GRANT INSERT, SELECT ON TABLE "public"."example" TO "pn_a_server""#,
                r#"GRANT USAGE ON SEQUENCE "public"."example_id_seq" TO "pn_a_server""#,
            ]
        );
        assert!(statements.iter().all(|s| s.sources.len() == 1));
        // Once granted, nothing is left to do.
        let actual = desired.keys().map(|g| (g.clone(), false)).collect();
        assert!(diff(&desired, &actual).is_empty());
    }

    #[test]
    fn drift_is_revoked_and_grant_options_are_taken_back() {
        let (desired, _) = expand(
            &[entry("r", one("public", "example"), &[Privilege::Select])],
            &catalog(),
        );
        let mut actual: BTreeMap<Grant, bool> =
            desired.keys().map(|g| (g.clone(), false)).collect();
        let table = Object::relation(ObjectKind::Table, "public", "example");
        actual.insert(
            Grant {
                object: table.clone(),
                privilege: "SELECT".into(),
                grantee: "r".into(),
            },
            true,
        );
        for privilege in ["DELETE", "UPDATE"] {
            actual.insert(
                Grant {
                    object: table.clone(),
                    privilege: privilege.into(),
                    grantee: "r".into(),
                },
                false,
            );
        }
        actual.insert(
            Grant {
                object: Object::schema("public"),
                privilege: "CREATE".into(),
                grantee: "r".into(),
            },
            false,
        );
        assert_eq!(
            sql(&diff(&desired, &actual)),
            [
                r#"REVOKE GRANT OPTION FOR SELECT ON TABLE "public"."example" FROM "r" CASCADE"#,
                r#"REVOKE CREATE ON SCHEMA "public" FROM "r" CASCADE"#,
                r#"REVOKE DELETE, UPDATE ON TABLE "public"."example" FROM "r" CASCADE"#,
            ]
        );
    }

    #[test]
    fn wildcards_cover_every_table_and_set_defaults_only_where_the_admin_owns_the_schema() {
        let (desired, problems) = expand(
            &[
                entry("a", ObjectPattern::All, &[Privilege::Select]),
                entry("b", ObjectPattern::All, &[Privilege::Select]),
            ],
            &catalog(),
        );
        assert!(problems.is_empty());
        let statements = diff(&desired, &BTreeMap::new());
        assert_eq!(
            sql(&statements),
            [
                r#"GRANT CONNECT ON DATABASE "orders" TO "a", "b""#,
                r#"GRANT USAGE ON SCHEMA "audit", "public" TO "a", "b""#,
                r#"GRANT SELECT ON TABLE "audit"."log", "public"."example", "public"."other" TO "a", "b""#,
                r#"ALTER DEFAULT PRIVILEGES IN SCHEMA "public" GRANT SELECT ON TABLES TO "a", "b""#,
            ]
        );
    }

    #[test]
    fn missing_objects_are_problems_of_their_entry_only() {
        let (desired, problems) = expand(
            &[
                entry("r", one("public", "missing"), &[Privilege::Select]),
                entry(
                    "r",
                    ObjectPattern::Schema("nope".into()),
                    &[Privilege::Select],
                ),
                entry("r", one("public", "other"), &[Privilege::Select]),
            ],
            &catalog(),
        );
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "table public.missing does not exist in database orders",
                "schema nope does not exist in database orders"
            ]
        );
        assert!(desired.keys().any(|g| g.object.name == "other"));
    }

    #[test]
    fn names_are_quoted_so_they_cannot_break_out() {
        let mut catalog = catalog();
        catalog.relations.push(Relation {
            schema: "public".into(),
            name: r#"we"ird; DROP TABLE x"#.into(),
            is_sequence: false,
        });
        let (desired, _) = expand(
            &[entry(
                "r",
                one("public", r#"we"ird; DROP TABLE x"#),
                &[Privilege::Select],
            )],
            &catalog,
        );
        let statements = diff(&desired, &BTreeMap::new());
        assert!(sql(&statements)
            .contains(&r#"GRANT SELECT ON TABLE "public"."we""ird; DROP TABLE x" TO "r""#));
    }
}
