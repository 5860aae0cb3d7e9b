//! One SQL surface over the state's two backends, SQLite and PostgreSQL: the store's code
//! writes each statement once (placeholders `?N`, types the two share: integers, text,
//! bytes) and runs it on either; where the dialects differ it asks `Db::dialect`.
//!
//! PostgreSQL is reached through tokio-postgres. Its connection tasks run on a runtime
//! of the store's own (`pg::Backend`), and the store's synchronous callers wait on the
//! client's futures with `futures_executor::block_on`: those futures only talk to the
//! connection task over channels, so waiting on them needs no runtime, and a caller on a
//! tokio worker blocks as it does on SQLite's disk, without starting a runtime in one.

use std::ops::ControlFlow;

use crate::StateError;

/// Which SQL a statement must be written in, where the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement's parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// What may be bound as a parameter (see `args!`).
pub(crate) trait ToValue {
    fn to_value(&self) -> Value<'_>;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}
impl ToValue for i32 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for u32 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for usize {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

/// The parameters of a statement: `args![a, b]` binds `a` as `?1` and `b` as `?2`.
macro_rules! args {
    () => {
        &[] as &[$crate::db::Value<'_>]
    };
    ($($value:expr),+ $(,)?) => {
        &[$($crate::db::ToValue::to_value(&$value)),+] as &[$crate::db::Value<'_>]
    };
}
pub(crate) use args;

/// One column of a result row, as either backend hands it out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// What a column may be read as.
pub(crate) trait FromCell: Sized {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String>;
}

impl FromCell for i64 {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Int(v) => Ok(v),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromCell for u32 {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        let v = i64::from_cell(cell)?;
        u32::try_from(v).map_err(|_| format!("{v} is out of range"))
    }
}
impl FromCell for bool {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        Ok(i64::from_cell(cell)? != 0)
    }
}
impl FromCell for f64 {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Real(v) => Ok(v),
            #[allow(clippy::cast_precision_loss)]
            Cell::Int(v) => Ok(v as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}
impl FromCell for String {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Text(v) => Ok(v.to_owned()),
            // SQLite's untyped columns and PostgreSQL's bytea hand text stored as bytes.
            Cell::Blob(v) => String::from_utf8(v.to_vec()).map_err(|e| e.to_string()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromCell for Vec<u8> {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Blob(v) => Ok(v.to_vec()),
            Cell::Text(v) => Ok(v.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}
impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// A result row of either backend.
pub(crate) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    pub(crate) fn get<T: FromCell>(&self, index: usize) -> Result<T, StateError> {
        T::from_cell(self.cell(index)?)
            .map_err(|e| StateError::Corrupt(format!("column {index}: {e}")))
    }

    /// A bytes column, borrowed from the row.
    pub(crate) fn blob(&self, index: usize) -> Result<&[u8], StateError> {
        match self.cell(index)? {
            Cell::Blob(v) => Ok(v),
            Cell::Text(v) => Ok(v.as_bytes()),
            other => Err(StateError::Corrupt(format!(
                "column {index}: expected bytes, found {other:?}"
            ))),
        }
    }

    /// A column as a parameter of another statement (copying rows).
    pub(crate) fn value(&self, index: usize) -> Result<Value<'_>, StateError> {
        Ok(match self.cell(index)? {
            Cell::Null => Value::Null,
            Cell::Int(v) => Value::Int(v),
            Cell::Text(v) => Value::Text(v),
            Cell::Blob(v) => Value::Blob(v),
            Cell::Real(v) => {
                return Err(StateError::Corrupt(format!(
                    "column {index}: the state keeps no real numbers, found {v}"
                )))
            }
        })
    }

    fn cell(&self, index: usize) -> Result<Cell<'_>, StateError> {
        match self {
            Row::Sqlite(row) => {
                use rusqlite::types::ValueRef;
                Ok(match row.get_ref(index)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(v) => Cell::Text(
                        std::str::from_utf8(v)
                            .map_err(|e| StateError::Corrupt(format!("column {index}: {e}")))?,
                    ),
                    ValueRef::Blob(v) => Cell::Blob(v),
                })
            }
            Row::Postgres(row) => crate::pg::cell(row, index),
        }
    }
}

/// A connection (or an open transaction on one) of either backend.
pub(crate) enum Db<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a crate::pg::Conn),
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

impl Db<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The elements of a JSON array as a table `alias` with one column, `value` (text):
    /// `json` is an SQL expression holding JSON text, `path` the members leading to the
    /// array (`["auth", "providers"]`), empty for the whole value.
    pub(crate) fn json_elements(&self, json: &str, path: &[&str], alias: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite if path.is_empty() => format!("json_each({json}) AS {alias}"),
            Dialect::Sqlite => format!("json_each({json}, '$.{}') AS {alias}", path.join(".")),
            Dialect::Postgres => {
                let steps: String = path.iter().map(|step| format!(" -> '{step}'")).collect();
                format!("jsonb_array_elements_text(CAST({json} AS jsonb){steps}) AS {alias}(value)")
            }
        }
    }

    /// The text at `path` of the JSON text in the SQL expression `json` (NULL when absent).
    pub(crate) fn json_text(&self, json: &str, path: &[&str]) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("json_extract({json}, '$.{}')", path.join(".")),
            Dialect::Postgres => format!("(CAST({json} AS jsonb) #>> '{{{}}}')", path.join(",")),
        }
    }

    /// The function giving the larger of two values.
    pub(crate) fn greatest(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "max",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StateError> {
        match self {
            Db::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?),
            Db::Postgres(conn) => conn.execute(sql, params),
        }
    }

    /// Runs statements without parameters, separated by `;`.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<(), StateError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(conn) => conn.execute_batch(sql),
        }
    }

    /// Calls `each` on the rows in order until it breaks; for reads that may stop early
    /// (PostgreSQL streams them, so the rows not looked at are never fetched whole). On
    /// PostgreSQL `each` runs while the connection streams: it must not use a PostgreSQL
    /// connection itself.
    pub(crate) fn query_each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut each: impl FnMut(&Row<'_>) -> Result<ControlFlow<()>, StateError>,
    ) -> Result<(), StateError> {
        match self {
            Db::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                while let Some(row) = rows.next()? {
                    if each(&Row::Sqlite(row))?.is_break() {
                        break;
                    }
                }
                Ok(())
            }
            Db::Postgres(conn) => conn.query_each(sql, params, |row| each(&Row::Postgres(row))),
        }
    }

    /// Every row, each made into a `T`.
    pub(crate) fn query_map<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut map: impl FnMut(&Row<'_>) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        let mut found = Vec::new();
        self.query_each(sql, params, |row| {
            found.push(map(row)?);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(found)
    }

    /// The first row made into a `T`, if there is one.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        let mut map = Some(map);
        let mut found = None;
        self.query_each(sql, params, |row| {
            if let Some(map) = map.take() {
                found = Some(map(row)?);
            }
            Ok(ControlFlow::Break(()))
        })?;
        Ok(found)
    }

    /// The first row made into a `T`; a statement that returns none is an error (for
    /// reads that always answer, such as aggregates).
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.query_opt(sql, params, map)?
            .ok_or_else(|| StateError::Corrupt(format!("no row from: {sql}")))
    }

    /// The first column of the first row.
    pub(crate) fn query_value<T: FromCell>(
        &self,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<T, StateError> {
        self.query_row(sql, params, |row| row.get(0))
    }
}

/// `?N` placeholders (and bare `?`, numbered in order) as PostgreSQL's `$N`; string
/// literals and quoted names are left alone.
pub(crate) fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next_bare = 1usize;
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    out.push_str(&next_bare.to_string());
                    next_bare += 1;
                }
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::postgres_placeholders;

    #[test]
    fn placeholders_become_dollar_numbers_outside_quotes() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?2 AND c = ?1 AND d = '?3'"),
            "SELECT a FROM t WHERE b = $2 AND c = $1 AND d = '?3'"
        );
        assert_eq!(
            postgres_placeholders("INSERT INTO \"t?\" VALUES (?, ?)"),
            "INSERT INTO \"t?\" VALUES ($1, $2)"
        );
    }
}
