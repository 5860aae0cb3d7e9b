//! Quoting names and literals into SQL text, so no name or value can end its quotes.
//! See <https://www.postgresql.org/docs/15/sql-syntax-lexical.html>.

/// A quoted identifier: `"name"`, inner quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// A quoted string literal, inner quotes doubled; the `E''` form is never used, so
/// backslashes stay literal under `standard_conforming_strings` (on since 9.1).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(qualified("s", "t"), r#""s"."t""#);
        assert_eq!(literal("it's"), "'it''s'");
    }
}
