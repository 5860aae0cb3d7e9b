//! The shape of a statement: its text with numeric literals and quoted string literals each
//! folded to one NUL byte (which no statement text can hold), so `… WHERE aid = 1` and
//! `… WHERE aid = 2` share one classification. What a statement is (its kind, tables and
//! functions) never depends on its literals' values.
//!
//! The lexing follows PostgreSQL's scanner with `standard_conforming_strings` on, as
//! libpg_query parses (<https://www.postgresql.org/docs/15/sql-syntax-lexical.html>).
//! It is conservative: a text with a backslash anywhere (whose meaning inside `E''`
//! strings differs), or a number run into letters (`0x1F`, `1_000`, `12abc`), has no
//! shape, and is classified on its own, never through the cache.

/// Bytes of identifiers and keywords, which a literal never starts inside of.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Where the quoted run that starts at `open` (a `quote` byte) ends, past its closing
/// quote; a doubled quote stays inside. `None` when it does not end.
fn quoted_end(text: &[u8], open: usize, quote: u8) -> Option<usize> {
    let mut at = open + 1;
    loop {
        let close = at + text.get(at..)?.iter().position(|&b| b == quote)?;
        if text.get(close + 1) == Some(&quote) {
            at = close + 2;
        } else {
            return Some(close + 1);
        }
    }
}

/// The delimiter of a dollar-quoted string starting at `open` (`$$` or `$tag$`), if any.
fn dollar_tag(text: &[u8], open: usize) -> Option<&[u8]> {
    let rest = text.get(open + 1..)?;
    let len = rest.iter().position(|&b| b == b'$')?;
    let tag = &rest[..len];
    let valid = tag.first().is_none_or(|b| !b.is_ascii_digit())
        && tag
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80);
    valid.then(|| &text[open..open + len + 2])
}

/// Where a number starting at `start` ends: digits, an optional fraction, an optional
/// exponent. `None` when letters, digits or an underscore follow directly.
fn number_end(text: &[u8], start: usize) -> Option<usize> {
    let digits = |mut at: usize| {
        while text.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        at
    };
    let mut at = digits(start);
    if text.get(at) == Some(&b'.') && text.get(at + 1) != Some(&b'.') {
        at = digits(at + 1);
    }
    if matches!(text.get(at), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(text.get(at + 1), Some(b'+' | b'-')));
        if text.get(at + 1 + sign).is_some_and(u8::is_ascii_digit) {
            at = digits(at + 1 + sign);
        }
    }
    match text.get(at) {
        Some(&b) if is_word_byte(b) => None,
        _ => Some(at),
    }
}

/// Whether a comment, quoted run or literal may start at byte `b` (the bytes the scan
/// below treats other than by copying).
fn may_start_something(b: u8) -> bool {
    matches!(b, b'-' | b'/' | b'"' | b'\'' | b'$' | b'.' | b'0'..=b'9')
}

/// The shape of `sql`, or `None` when it is not certain (see the module header).
pub fn shape(sql: &str) -> Option<Vec<u8>> {
    let text = sql.as_bytes();
    if text.contains(&b'\\') {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let b = text[at];
        let after_word = at > 0 && is_word_byte(text[at - 1]);
        let next = text.get(at + 1).copied();
        let end = match b {
            // Comments and quoted identifiers are kept as they are.
            b'-' if next == Some(b'-') => {
                let end = text[at..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(text.len(), |n| at + n);
                out.extend_from_slice(&text[at..end]);
                end
            }
            b'/' if next == Some(b'*') => {
                let end = block_comment_end(text, at)?;
                out.extend_from_slice(&text[at..end]);
                end
            }
            b'"' => {
                let end = quoted_end(text, at, b'"')?;
                out.extend_from_slice(&text[at..end]);
                end
            }
            // A string literal, prefixed (E'', B'', X'', N'', U&'') or not: the prefix
            // stays, the contents fold.
            b'\'' => {
                let end = quoted_end(text, at, b'\'')?;
                out.push(0);
                end
            }
            b'$' if !after_word => match dollar_tag(text, at) {
                Some(tag) => {
                    let body = at + tag.len();
                    let close = text[body..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map(|n| body + n + tag.len())?;
                    out.push(0);
                    close
                }
                // `$1`: a parameter, kept.
                None => {
                    out.push(b);
                    at + 1
                }
            },
            b'0'..=b'9' if !after_word => {
                let end = number_end(text, at)?;
                out.push(0);
                end
            }
            b'.' if !after_word && next.is_some_and(|n| n.is_ascii_digit()) => {
                let end = number_end(text, at + 1)?;
                out.push(0);
                end
            }
            // Up to the next byte where a comment, quote or literal may start, copied
            // in one go.
            _ => {
                let run = text[at + 1..]
                    .iter()
                    .position(|&c| may_start_something(c))
                    .map_or(text.len(), |n| at + 1 + n);
                out.extend_from_slice(&text[at..run]);
                run
            }
        };
        at = end;
    }
    Some(out)
}

/// Where the (nestable) block comment starting at `open` ends; `None` when it does not.
fn block_comment_end(text: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = open;
    while at + 1 < text.len() {
        match (text[at], text[at + 1]) {
            (b'/', b'*') => {
                depth += 1;
                at += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                at += 2;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => at += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(sql: &str) -> Option<String> {
        shape(sql).map(|s| String::from_utf8_lossy(&s).replace('\0', "?"))
    }

    #[test]
    fn literals_fold_and_code_stays() {
        assert_eq!(
            shown("SELECT abalance FROM pgbench_accounts WHERE aid = 1234;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = ?;")
        );
        assert_eq!(
            shown("SELECT 'it''s', 1.5e-3, .5, 7 FROM t2 WHERE c = $1").as_deref(),
            Some("SELECT ?, ?, ?, ? FROM t2 WHERE c = $1")
        );
        assert_eq!(
            shown("SELECT E'x', $$a;b$$, $q$ DROP $q$").as_deref(),
            Some("SELECT E?, ?, ?")
        );
        // Quoted identifiers and comments are code.
        assert_eq!(
            shown("SELECT \"a 1\" /* 2 /* 3 */ */ -- 'x'\n, 4").as_deref(),
            Some("SELECT \"a 1\" /* 2 /* 3 */ */ -- 'x'\n, ?")
        );
    }

    #[test]
    fn shapes_tell_apart_what_differs_in_code() {
        let a = shape("SELECT 1; DELETE FROM t").unwrap();
        let b = shape("SELECT 1").unwrap();
        assert_ne!(a, b);
        assert_ne!(
            shape("SELECT 'a' || 'b'").unwrap(),
            shape("SELECT 'a'").unwrap()
        );
        // A string that hides a statement is a literal all the same.
        assert_eq!(
            shape("SELECT '; DELETE FROM t; '").unwrap(),
            shape("SELECT 'x'").unwrap()
        );
    }

    #[test]
    fn anything_uncertain_has_no_shape() {
        for sql in [
            r"SELECT E'\'; DELETE FROM t; --'",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 'unterminated",
            "SELECT /* unterminated",
            "SELECT $x$ unterminated",
            "SELECT \"unterminated",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }
}
