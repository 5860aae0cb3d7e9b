//! SQL text the gateway writes itself (session parameters, refusals): string literals that
//! stay literals whatever the server's `standard_conforming_strings` says.
//! See <https://www.postgresql.org/docs/15/sql-syntax-lexical.html#SQL-SYNTAX-STRINGS-ESCAPE>.

/// `value` as an escape string literal (`E'…'`), its backslashes and quotes doubled.
pub(crate) fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
        assert_eq!(literal(""), "E''");
    }
}
