//! Takes literal secrets out of statement text before it is logged: the string after
//! `PASSWORD` (CREATE/ALTER ROLE, user mappings) and every string literal inside calls of
//! configured functions (`pgp_sym_encrypt(data, 'key')`). Uses PostgreSQL's own scanner,
//! so quoting tricks (`E'…'`, `''`, dollar quotes, comments) cannot hide a literal.

use std::borrow::Cow;

use pg_query::protobuf::Token;

/// What a redacted literal is replaced with.
pub const REDACTED: &str = "'[redacted]'";

/// Functions whose string arguments are redacted unless configured otherwise.
pub const DEFAULT_SECRET_FUNCTIONS: &[&str] = &[
    "pgp_sym_encrypt",
    "pgp_sym_encrypt_bytea",
    "pgp_sym_decrypt",
    "pgp_sym_decrypt_bytea",
    "pgp_pub_decrypt",
    "pgp_pub_decrypt_bytea",
    "encrypt",
    "decrypt",
    "encrypt_iv",
    "decrypt_iv",
    "hmac",
    "crypt",
    "dblink_connect",
    "dblink_connect_u",
];

fn is_string(token: i32) -> bool {
    matches!(Token::try_from(token), Ok(Token::Sconst | Token::Usconst))
}

/// Redaction with its word list prepared once: most statements name neither `PASSWORD`
/// nor a secret function anywhere in their text, and for those the scanner never runs.
/// (Every word the scan acts on is a piece of the text, so a text without any of them,
/// in any letter case, has nothing to redact.)
pub struct Redactor {
    functions: Vec<String>,
    /// The words in lower case, for a SIMD search of a short text's lower-cased copy:
    /// the access log asks about every text it records that it has not met before, and
    /// the automaton below, case-folding byte by byte, costs ~16 instructions a byte.
    /// `None` where the CPU has no SIMD search or the words are too many for it.
    lower_words: Option<aho_corasick::packed::Searcher>,
    /// `None` only if the automaton could not be built: then every statement is scanned.
    words: Option<aho_corasick::AhoCorasick>,
}

/// Longest text whose lower-cased copy is made on the stack for the SIMD search.
const SHORT_TEXT: usize = 512;

impl Redactor {
    pub fn new(secret_functions: &[String]) -> Redactor {
        let words =
            || std::iter::once("password").chain(secret_functions.iter().map(String::as_str));
        Redactor {
            functions: secret_functions.to_vec(),
            lower_words: aho_corasick::packed::Searcher::new(
                words().map(|word| word.to_ascii_lowercase()),
            ),
            words: aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(words())
                .ok(),
        }
    }

    /// `sql` with secret literals replaced by [`REDACTED`], as [`redact`] does.
    pub fn redact<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        if !self.names_a_word(sql) {
            return Cow::Borrowed(sql);
        }
        redact(sql, &self.functions)
    }

    /// Whether `sql` holds `PASSWORD` or a secret function's name in any letter case
    /// (ASCII case, as PostgreSQL folds keywords and unquoted names); true when unsure.
    fn names_a_word(&self, sql: &str) -> bool {
        if let (Some(lower_words), true) = (&self.lower_words, sql.len() <= SHORT_TEXT) {
            let mut lower = [0u8; SHORT_TEXT];
            let lower = &mut lower[..sql.len()];
            lower.copy_from_slice(sql.as_bytes());
            lower.make_ascii_lowercase();
            return lower_words.find(&*lower).is_some();
        }
        self.words.as_ref().is_none_or(|words| words.is_match(sql))
    }
}

/// `sql` with secret literals replaced by [`REDACTED`]; text the scanner cannot read is
/// replaced whole, since nothing in it can be trusted to be harmless.
pub fn redact<'a>(sql: &'a str, secret_functions: &[String]) -> Cow<'a, str> {
    let Ok(tokens) = pg_query::scan_tokens(sql) else {
        return Cow::Owned(format!("[unscannable statement of {} bytes]", sql.len()));
    };
    let span = |i: usize| -> Option<(usize, usize)> {
        let t = tokens.get(i)?;
        Some((usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?))
    };
    let word = |i: usize| span(i).and_then(|(s, e)| sql.get(s..e)).unwrap_or("");
    let mut secret = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let next_is_string = tokens.get(i + 1).is_some_and(|t| is_string(t.token));
        let opens_call = tokens
            .get(i + 1)
            .is_some_and(|t| Token::try_from(t.token) == Ok(Token::Ascii40));
        let name = word(i).trim_matches('"');
        if name.eq_ignore_ascii_case("password") && next_is_string {
            secret.push(i + 1);
            i += 2;
            continue;
        }
        if opens_call
            && secret_functions
                .iter()
                .any(|f| f.eq_ignore_ascii_case(name))
        {
            let mut depth = 0;
            let mut j = i + 1;
            while let Some(token) = tokens.get(j) {
                match Token::try_from(token.token) {
                    Ok(Token::Ascii40) => depth += 1,
                    Ok(Token::Ascii41) => depth -= 1,
                    _ if is_string(token.token) => secret.push(j),
                    _ => {}
                }
                j += 1;
                if depth == 0 {
                    break;
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    if secret.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for index in secret {
        let Some((start, end)) = span(index) else {
            continue;
        };
        if start < at || end > sql.len() {
            continue;
        }
        out.push_str(&sql[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&sql[at..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn functions() -> Vec<String> {
        DEFAULT_SECRET_FUNCTIONS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn passwords_and_keys_are_redacted() {
        let cases = [
            (
                "ALTER ROLE app PASSWORD 'hunter2'",
                "ALTER ROLE app PASSWORD '[redacted]'",
            ),
            (
                "create user x with encrypted password E'it''s\\'secret'",
                "create user x with encrypted password '[redacted]'",
            ),
            (
                "SELECT pgp_sym_encrypt(data, 'k3y') FROM t",
                "SELECT pgp_sym_encrypt(data, '[redacted]') FROM t",
            ),
            (
                "select PGP_SYM_DECRYPT(x::bytea, $$k3y$$, 'cipher-algo=aes256')",
                "select PGP_SYM_DECRYPT(x::bytea, '[redacted]', '[redacted]')",
            ),
            (
                "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password 'pw')",
                "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password '[redacted]')",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input, &functions()), expected, "{input}");
        }
    }

    #[test]
    fn ordinary_text_is_kept_without_copying() {
        let sql = "select 'password' as word, encrypt_me('x')";
        assert!(matches!(redact(sql, &functions()), Cow::Borrowed(_)));
    }

    #[test]
    fn the_redactor_skips_only_texts_without_any_word_it_acts_on() {
        let redactor = Redactor::new(&functions());
        let plain = "SELECT abalance FROM pgbench_accounts WHERE aid = 1";
        assert!(matches!(redactor.redact(plain), Cow::Borrowed(_)));
        assert_eq!(
            redactor.redact("alter role x PassWord 'p'"),
            "alter role x PassWord '[redacted]'"
        );
        assert_eq!(
            redactor.redact("SELECT Crypt('pw', gen_salt('bf'))"),
            "SELECT Crypt('[redacted]', gen_salt('[redacted]'))"
        );
        assert!(!redactor
            .redact("select 'unterminated password")
            .contains("unterminated"));
    }

    #[test]
    fn short_and_long_texts_find_the_words_in_any_case_and_only_them() {
        let redactor = Redactor::new(&["My_Secret_Fn".to_owned()]);
        // Short texts take the lower-cased copy, long ones the case-folding automaton.
        for padding in [0, SHORT_TEXT] {
            let pad = format!("/* {} */ ", "é".repeat(padding / 2));
            let secret = format!("{pad}SELECT MY_SECRET_FN('k3y')");
            assert_eq!(
                redactor.redact(&secret),
                format!("{pad}SELECT MY_SECRET_FN('[redacted]')"),
                "{} bytes",
                secret.len()
            );
            let role = format!("{pad}alter role x PASSWORD 'p'");
            assert!(redactor.redact(&role).ends_with("PASSWORD '[redacted]'"));
            // Near misses stay as they are, uncopied.
            let near = format!("{pad}SELECT my_secret('x'), passwor, 'pass' || 'word'");
            assert!(matches!(redactor.redact(&near), Cow::Borrowed(_)), "{near}");
            assert!(matches!(
                redactor.redact(&format!("{pad}SELECT 1")),
                Cow::Borrowed(_)
            ));
        }
        // Exactly as long as the stack copy, and one byte longer.
        for len in [SHORT_TEXT, SHORT_TEXT + 1] {
            let text = format!("{}password 'p'", " ".repeat(len - "password 'p'".len()));
            assert_eq!(text.len(), len);
            assert!(redactor.redact(&text).ends_with("password '[redacted]'"));
        }
    }

    #[test]
    fn unscannable_text_is_dropped() {
        let out = redact("select 'unterminated password", &functions());
        assert!(!out.contains("unterminated"), "{out}");
    }
}
