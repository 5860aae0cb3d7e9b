//! Reading what the upstream holds: managed roles from `pg_roles`, and per database the
//! schemas, relations and the privileges managed roles hold (`aclexplode` over
//! `pg_class.relacl`, `pg_namespace.nspacl`, `pg_database.datacl`, `pg_default_acl`).
//! One round trip per query, whatever the number of roles and tables.

use std::collections::BTreeMap;

use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Row};

use crate::privileges::{Catalog, Grant, Object, ObjectKind, Relation};
use crate::roles::ActualRole;
use crate::ReconcileError;

/// Schemas users make: not `pg_catalog`, `information_schema`, TOAST or temp schemas.
const USER_SCHEMA: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'";

/// Column `index` of `row`; a value that does not decode is reported as `what` failing.
fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize, what: &str) -> Result<T, ReconcileError> {
    row.try_get(index).map_err(ReconcileError::query(what))
}

/// Roles named in `names`, plus every role carrying `marker_prefix` in its comment.
pub async fn read_roles(
    client: &Client,
    names: &[String],
    marker_prefix: &str,
) -> Result<BTreeMap<String, ActualRole>, ReconcileError> {
    let pattern = format!(
        "{} %",
        marker_prefix.replace('%', "\\%").replace('_', "\\_")
    );
    let rows = client
        .query(
            "SELECT r.rolname::text,
                    NOT r.rolsuper AND NOT r.rolcreatedb AND NOT r.rolcreaterole
                      AND NOT r.rolreplication AND NOT r.rolbypassrls AND r.rolcanlogin
                      AND r.rolinherit,
                    shobj_description(r.oid, 'pg_authid'),
                    ARRAY(SELECT g.rolname::text FROM pg_auth_members m
                          JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid
                          ORDER BY 1),
                    ARRAY(SELECT u.rolname::text FROM pg_auth_members m
                          JOIN pg_roles u ON u.oid = m.member
                          WHERE m.roleid = r.oid AND u.rolname <> current_user ORDER BY 1)
             FROM pg_roles r
             WHERE r.rolname::text = ANY($1::text[])
                OR shobj_description(r.oid, 'pg_authid') LIKE $2",
            &[&names, &pattern],
        )
        .await
        .map_err(ReconcileError::query("reading roles"))?;
    let mut roles = BTreeMap::new();
    for row in rows {
        let role = ActualRole {
            name: column(&row, 0, "reading roles")?,
            attributes_as_managed: column(&row, 1, "reading roles")?,
            comment: column(&row, 2, "reading roles")?,
            member_of: column(&row, 3, "reading roles")?,
            members: column(&row, 4, "reading roles")?,
        };
        roles.insert(role.name.clone(), role);
    }
    Ok(roles)
}

/// The snapshot of the connected database that `expand` and `diff` need.
pub async fn read_catalog(
    client: &Client,
    database: &str,
    managed: &[String],
) -> Result<Catalog, ReconcileError> {
    let what = "reading the catalog";
    let mut catalog = Catalog {
        database: database.to_owned(),
        ..Catalog::default()
    };
    for row in client
        .query(
            &format!(
                "SELECT n.nspname::text, n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
                 FROM pg_namespace n WHERE {USER_SCHEMA}"
            ),
            &[],
        )
        .await
        .map_err(ReconcileError::query(what))?
    {
        catalog.schemas.insert(
            column(&row, 0, what)?,
            column(&row, 1, what)?,
        );
    }
    for row in client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relkind = 'S'
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMA}"
            ),
            &[],
        )
        .await
        .map_err(ReconcileError::query(what))?
    {
        catalog.relations.push(Relation {
            schema: column(&row, 0, what)?,
            name: column(&row, 1, what)?,
            is_sequence: column(&row, 2, what)?,
        });
    }
    for row in client
        .query(
            "SELECT tn.nspname::text, t.relname::text, sn.nspname::text, s.relname::text
             FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_namespace sn ON sn.oid = s.relnamespace
             JOIN pg_class t ON t.oid = d.refobjid
             JOIN pg_namespace tn ON tn.oid = t.relnamespace
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.deptype IN ('a', 'i')",
            &[],
        )
        .await
        .map_err(ReconcileError::query(what))?
    {
        catalog.owned_sequences.push((
            column(&row, 0, what)?,
            column(&row, 1, what)?,
            column(&row, 2, what)?,
            column(&row, 3, what)?,
        ));
    }
    if managed.is_empty() {
        return Ok(catalog);
    }
    let rows = client
        .query(
            "WITH managed AS (
                     SELECT oid, rolname::text AS name FROM pg_roles WHERE rolname::text = ANY($1::text[])
                 )
                 SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END,
                        n.nspname::text, c.relname::text, m.name, a.privilege_type, a.is_grantable
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                      aclexplode(c.relacl) a JOIN managed m ON m.oid = a.grantee
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND a.grantee <> c.relowner
                 UNION ALL
                 SELECT 'schema', '', n.nspname::text, m.name, a.privilege_type, a.is_grantable
                 FROM pg_namespace n, aclexplode(n.nspacl) a JOIN managed m ON m.oid = a.grantee
                 WHERE a.grantee <> n.nspowner
                 UNION ALL
                 SELECT 'database', '', d.datname::text, m.name, a.privilege_type, a.is_grantable
                 FROM pg_database d, aclexplode(d.datacl) a JOIN managed m ON m.oid = a.grantee
                 WHERE d.datname = current_database() AND a.grantee <> d.datdba
                 UNION ALL
                 SELECT CASE WHEN d.defaclobjtype = 'S' THEN 'default_sequences' ELSE 'default_tables' END,
                        n.nspname::text, '', m.name, a.privilege_type, a.is_grantable
                 FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace,
                      aclexplode(d.defaclacl) a JOIN managed m ON m.oid = a.grantee
                 WHERE d.defaclobjtype IN ('r', 'S')
                   AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
            &[&managed],
        )
        .await
        .map_err(ReconcileError::query(what))?;
    for row in rows {
        let kind: String = column(&row, 0, what)?;
        let schema: String = column(&row, 1, what)?;
        let name: String = column(&row, 2, what)?;
        let object = match kind.as_str() {
            "table" => Object::relation(ObjectKind::Table, &schema, &name),
            "sequence" => Object::relation(ObjectKind::Sequence, &schema, &name),
            "schema" => Object::schema(&name),
            "database" => Object::database(&name),
            "default_sequences" => Object::defaults(ObjectKind::DefaultSequences, &schema),
            _ => Object::defaults(ObjectKind::DefaultTables, &schema),
        };
        let grant = Grant {
            object,
            grantee: column(&row, 3, what)?,
            privilege: column(&row, 4, what)?,
        };
        let grantable: bool = column(&row, 5, what)?;
        *catalog.granted.entry(grant).or_insert(false) |= grantable;
    }
    Ok(catalog)
}

/// Databases to visit: every one that accepts connections, so privileges granted by hand
/// anywhere in the cluster are found.
pub async fn databases(client: &Client) -> Result<Vec<String>, ReconcileError> {
    let rows = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(ReconcileError::query("listing databases"))?;
    rows.iter()
        .map(|row| column(row, 0, "listing databases"))
        .collect()
}
