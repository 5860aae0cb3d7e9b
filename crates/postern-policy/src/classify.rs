//! What a SQL message does, from PostgreSQL's own parser (libpg_query): one entry per
//! statement with its kind (`select`, `insert`, `update`, `delete`, `merge`, `ddl`,
//! `copy`, `call`, `set`, `transaction`, `other`), the tables it names as `schema.table`,
//! the functions it calls, and its text.

use std::sync::Arc;

use pg_query::protobuf::summary_result::Context as TableContext;
use pg_query::protobuf::Token;

/// One classified statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub kind: &'static str,
    /// `schema.table`; unqualified names are reported in `public`.
    pub tables: Arc<[String]>,
    pub functions: Arc<[String]>,
    /// Shared with the CEL value rules read it from.
    pub text: Arc<String>,
}

/// The SQL does not parse; PostgreSQL would refuse it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsable(pub String);

/// Classifies every statement of `sql`. An empty query yields no statements.
pub fn classify(sql: &str) -> Result<Vec<Statement>, Unparsable> {
    Ok(classify_located(sql)?
        .into_iter()
        .map(|(statement, _)| statement)
        .collect())
}

/// [`classify`], with where each statement's text starts in `sql`.
pub(crate) fn classify_located(sql: &str) -> Result<Vec<(Statement, usize)>, Unparsable> {
    let pieces = pg_query::split_with_parser(sql).map_err(|e| Unparsable(e.to_string()))?;
    pieces
        .into_iter()
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            // The parser hands back slices of `sql`: their addresses tell where they sit.
            let start = (piece.as_ptr() as usize).wrapping_sub(sql.as_ptr() as usize);
            if sql.get(start..start + piece.len()) != Some(piece) {
                return Err(Unparsable("statement outside its message".into()));
            }
            Ok((classify_one(piece)?, start))
        })
        .collect()
}

fn classify_one(text: &str) -> Result<Statement, Unparsable> {
    let summary = pg_query::summary(text, 0, -1).map_err(|e| Unparsable(e.to_string()))?;
    let statement_type = summary
        .statement_types
        .first()
        .map(String::as_str)
        .unwrap_or("");
    let writes = summary
        .tables
        .iter()
        .any(|t| t.context == TableContext::Dml);
    let kind = match statement_type {
        // EXPLAIN ANALYZE runs its statement; PREPARE and DECLARE hold one.
        "ExplainStmt" | "PrepareStmt" | "DeclareCursorStmt" => inner_kind(text)?,
        // A writable CTE makes a SELECT write.
        "SelectStmt" if writes => first_write_keyword(text).unwrap_or("update"),
        other => kind_of(other),
    };
    let mut tables: Vec<String> = summary
        .tables
        .iter()
        .map(|t| {
            let schema = if t.schema_name.is_empty() {
                "public"
            } else {
                &t.schema_name
            };
            format!("{schema}.{}", t.table_name)
        })
        .collect();
    tables.sort();
    tables.dedup();
    let mut functions: Vec<String> = summary.functions.iter().map(|f| f.name.clone()).collect();
    functions.sort();
    functions.dedup();
    Ok(Statement {
        kind,
        tables: tables.into(),
        functions: functions.into(),
        text: Arc::new(text.trim().to_owned()),
    })
}

fn kind_of(statement_type: &str) -> &'static str {
    match statement_type {
        "SelectStmt" => "select",
        "InsertStmt" => "insert",
        "UpdateStmt" => "update",
        "DeleteStmt" => "delete",
        "MergeStmt" => "merge",
        "CopyStmt" => "copy",
        "CallStmt" => "call",
        "VariableSetStmt" => "set",
        "TransactionStmt" => "transaction",
        "GrantStmt"
        | "GrantRoleStmt"
        | "RenameStmt"
        | "CommentStmt"
        | "TruncateStmt"
        | "IndexStmt"
        | "ViewStmt"
        | "DefineStmt"
        | "CompositeTypeStmt"
        | "ReassignOwnedStmt"
        | "SecLabelStmt"
        | "RuleStmt"
        | "RefreshMatViewStmt"
        | "ImportForeignSchemaStmt"
        | "ReindexStmt"
        | "ClusterStmt"
        | "VacuumStmt"
        | "LockStmt" => "ddl",
        other if other.starts_with("Create") || other.starts_with("Alter") => "ddl",
        other if other.starts_with("Drop") => "ddl",
        _ => "other",
    }
}

/// Keywords that open the statement inside EXPLAIN, PREPARE … AS and DECLARE … FOR.
const STATEMENT_STARTS: &[Token] = &[
    Token::Select,
    Token::Insert,
    Token::Update,
    Token::DeleteP,
    Token::Merge,
    Token::With,
    Token::Values,
    Token::Table,
    Token::Execute,
    Token::Create,
];

/// The kind of the statement nested in `text`, found as the first statement keyword
/// outside parentheses after the opening word.
fn inner_kind(text: &str) -> Result<&'static str, Unparsable> {
    let tokens = pg_query::scan_tokens(text).map_err(|e| Unparsable(e.to_string()))?;
    let mut depth = 0i32;
    for token in tokens.iter().skip(1) {
        match Token::try_from(token.token) {
            Ok(Token::Ascii40) => depth += 1,
            Ok(Token::Ascii41) => depth -= 1,
            Ok(t) if depth == 0 && STATEMENT_STARTS.contains(&t) => {
                let start = usize::try_from(token.start).unwrap_or(0);
                return Ok(text
                    .get(start..)
                    .map(classify_one)
                    .transpose()?
                    .map_or("other", |s| s.kind));
            }
            _ => {}
        }
    }
    Ok("other")
}

/// The first INSERT, UPDATE, DELETE or MERGE keyword of `text`.
fn first_write_keyword(text: &str) -> Option<&'static str> {
    let tokens = pg_query::scan_tokens(text).ok()?;
    tokens
        .iter()
        .find_map(|token| match Token::try_from(token.token) {
            Ok(Token::Insert) => Some("insert"),
            Ok(Token::Update) => Some("update"),
            Ok(Token::DeleteP) => Some("delete"),
            Ok(Token::Merge) => Some("merge"),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<&'static str> {
        classify(sql).unwrap().into_iter().map(|s| s.kind).collect()
    }

    #[test]
    fn kinds_come_from_the_parser() {
        assert_eq!(
            kinds("select 1; insert into t values (1); update t set a = 1; delete from t"),
            ["select", "insert", "update", "delete"]
        );
        assert_eq!(
            kinds("drop table t; create table u (a int); alter table u add b int; truncate u"),
            ["ddl", "ddl", "ddl", "ddl"]
        );
        assert_eq!(
            kinds("begin; set search_path = x; copy t to stdout; call p(); commit"),
            ["transaction", "set", "copy", "call", "transaction"]
        );
        // Text that merely mentions a keyword is not that statement.
        assert_eq!(kinds("select 'delete from t'"), ["select"]);
        assert!(kinds("   ").is_empty());
    }

    #[test]
    fn nested_statements_count_as_what_they_run() {
        assert_eq!(kinds("explain analyze delete from t"), ["delete"]);
        assert_eq!(kinds("explain (analyze, format json) select 1"), ["select"]);
        assert_eq!(kinds("prepare p as update t set a = 1"), ["update"]);
        assert_eq!(
            kinds("with d as (delete from t returning *) select * from d"),
            ["delete"]
        );
    }

    #[test]
    fn tables_are_schema_qualified() {
        let s = classify("select * from app.orders o join customers c on true")
            .unwrap()
            .remove(0);
        assert_eq!(*s.tables, ["app.orders", "public.customers"]);
        assert_eq!(
            s.text.as_str(),
            "select * from app.orders o join customers c on true"
        );
    }

    #[test]
    fn garbage_is_unparsable() {
        assert!(classify("selec 1").is_err());
    }
}
