//! Pure pieces of issuing: usernames from their template, passwords from their policy,
//! statements from their templates with every value quoted, and timestamps as SQL text.

use postern_model::{PasswordPolicy, Piece, Template};
use postern_reconciler::sql::{ident, literal};
use rand::seq::SliceRandom;
use rand::RngExt;

/// PostgreSQL's limit on identifiers (NAMEDATALEN - 1).
pub const MAX_ROLE_NAME: usize = 63;

const RANDOM_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Values of a username template.
#[derive(Debug, Clone)]
pub struct UsernameInput<'a> {
    pub identity: &'a str,
    pub role: &'a str,
    pub namespace: &'a str,
    pub unix_time: i64,
}

/// Letters, digits, `-` and `_` stay; anything else becomes `-`, so names never need
/// more than plain quoting and sort predictably.
fn tidy(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn random_text(length: u32) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| char::from(RANDOM_CHARS[rng.random_range(0..RANDOM_CHARS.len())]))
        .collect()
}

/// A username from `template`, cut to 63 bytes (the template puts the random part before
/// the time, so a cut loses the time first).
pub fn username(template: &Template, input: &UsernameInput<'_>) -> String {
    let mut name = String::new();
    for piece in &template.pieces {
        match piece {
            Piece::Text(text) => name.push_str(&tidy(text)),
            Piece::Placeholder { name: p, argument } => match p.as_str() {
                "identity" => name.push_str(&tidy(input.identity)),
                "role" => name.push_str(&tidy(input.role)),
                "namespace" => name.push_str(&tidy(input.namespace)),
                "random" => name.push_str(&random_text(argument.unwrap_or(8))),
                "unix_time" => name.push_str(&input.unix_time.to_string()),
                _ => {}
            },
        }
    }
    name.truncate(MAX_ROLE_NAME);
    name
}

/// Whether `name` could have come from `template`: its text parts in order, anything in
/// between; a name of the maximum length may have been cut anywhere.
pub fn matches_template(template: &Template, name: &str) -> bool {
    let mut parts: Vec<Option<String>> = Vec::new();
    for piece in &template.pieces {
        match piece {
            Piece::Text(text) => parts.push(Some(tidy(text))),
            Piece::Placeholder { .. } => parts.push(None),
        }
    }
    if name.len() >= MAX_ROLE_NAME {
        parts.push(None);
    }
    glob(&parts, name, name.len() >= MAX_ROLE_NAME)
}

/// `None` matches any run of characters, at least one; `Some` matches its text, or any
/// prefix of it at the very end when `cut` (the name was truncated there).
fn glob(parts: &[Option<String>], name: &str, cut: bool) -> bool {
    match parts.split_first() {
        None => name.is_empty(),
        Some((Some(text), rest)) => {
            if let Some(tail) = name.strip_prefix(text.as_str()) {
                glob(rest, tail, cut)
            } else {
                cut && text.starts_with(name)
            }
        }
        Some((None, rest)) => (1..=name.len())
            .filter(|i| name.is_char_boundary(*i))
            .any(|i| glob(rest, &name[i..], cut) || (cut && i == name.len())),
    }
}

/// A password drawing at least one character from each class the policy enables.
pub fn password(policy: &PasswordPolicy) -> String {
    let classes = policy.classes();
    let all: Vec<u8> = classes.iter().flat_map(|c| c.bytes()).collect();
    let mut rng = rand::rng();
    let mut chars: Vec<u8> = classes
        .iter()
        .map(|class| class.as_bytes()[rng.random_range(0..class.len())])
        .collect();
    while chars.len() < usize::try_from(policy.length).unwrap_or(32) {
        chars.push(all[rng.random_range(0..all.len())]);
    }
    chars.shuffle(&mut rng);
    String::from_utf8_lossy(&chars).into_owned()
}

/// Values of statement placeholders, already quoted for SQL.
#[derive(Debug, Clone)]
pub struct StatementValues {
    /// `"name"`
    pub name: String,
    /// `'SCRAM-SHA-256$…'`: the verifier, so the password itself never reaches the server.
    pub password: String,
    /// `'2026-11-24 10:00:00+00'`
    pub expiration: String,
}

impl StatementValues {
    pub fn new(username: &str, verifier: &str, expires_at: i64) -> StatementValues {
        StatementValues {
            name: ident(username),
            password: literal(verifier),
            expiration: literal(&timestamp(expires_at)),
        }
    }
}

/// The statement with every placeholder replaced by its quoted value.
pub fn statement(template: &Template, values: &StatementValues) -> String {
    let mut sql = String::new();
    for piece in &template.pieces {
        match piece {
            Piece::Text(text) => sql.push_str(text),
            Piece::Placeholder { name, .. } => sql.push_str(match name.as_str() {
                "name" => &values.name,
                "password" => &values.password,
                _ => &values.expiration,
            }),
        }
    }
    sql
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS+00`, which PostgreSQL reads as a timestamptz.
pub fn timestamp(unix: i64) -> String {
    let (year, month, day, hour, minute, second) = postern_model::civil_from_unix(unix);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}+00")
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_model::{DEFAULT_USERNAME_TEMPLATE, STATEMENT_PLACEHOLDERS, USERNAME_PLACEHOLDERS};

    fn default_template() -> Template {
        Template::parse(DEFAULT_USERNAME_TEMPLATE, USERNAME_PLACEHOLDERS).unwrap()
    }

    #[test]
    fn usernames_follow_the_template_and_fit() {
        let input = UsernameInput {
            identity: "Alice O'Neil",
            role: "readonly",
            namespace: "team-a",
            unix_time: 1_700_000_000,
        };
        let name = username(&default_template(), &input);
        assert!(name.starts_with("v-alice-o-neil-readonly-"), "{name}");
        assert!(name.ends_with("-1700000000"), "{name}");
        assert!(matches_template(&default_template(), &name));
        assert!(!matches_template(&default_template(), "app_rw"));
        assert!(!matches_template(&default_template(), "v-x"));

        let long = UsernameInput {
            identity: &"x".repeat(80),
            ..input
        };
        let name = username(&default_template(), &long);
        assert_eq!(name.len(), MAX_ROLE_NAME);
        assert!(matches_template(&default_template(), &name));
    }

    #[test]
    fn passwords_have_every_class_and_the_length() {
        let policy = PasswordPolicy {
            length: 20,
            symbols: true,
            ..PasswordPolicy::default()
        };
        for _ in 0..50 {
            let p = password(&policy);
            assert_eq!(p.len(), 20);
            for class in policy.classes() {
                assert!(p.chars().any(|c| class.contains(c)), "{p} lacks {class}");
            }
        }
    }

    #[test]
    fn values_cannot_escape_their_quotes() {
        let t = Template::parse(
            "CREATE ROLE \"{{name}}\" PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
            STATEMENT_PLACEHOLDERS,
        )
        .unwrap();
        let values = StatementValues::new("a\"; DROP TABLE x; --", "it's", 0);
        assert_eq!(
            statement(&t, &values),
            r#"CREATE ROLE "a""; DROP TABLE x; --" PASSWORD 'it''s' VALID UNTIL '1970-01-01 00:00:00+00'"#
        );
    }

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00+00");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00:00+00");
        assert_eq!(timestamp(1_795_000_000), "2026-11-18 11:06:40+00");
    }
}
