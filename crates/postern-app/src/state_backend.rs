//! The `[state]` section made into the store's PostgreSQL settings: the password from a
//! file or a systemd credential, and libpq's `sslmode`/`sslrootcert` (which tokio-postgres
//! does not know past `require`) taken out of the connection string and turned into the
//! rustls verification the proxy's upstream leg uses.

use std::path::PathBuf;

use anyhow::Context;
use postern_config::Config;
use postern_model::{SecretValue, SslMode};
use postern_state::PostgresSettings;

/// The name of the systemd credential holding the state database's password.
pub const STATE_PASSWORD_CREDENTIAL: &str = "state-password";

/// The store's PostgreSQL settings for `config` (whose backend is `postgres`).
pub fn postgres_settings(config: &Config) -> anyhow::Result<PostgresSettings> {
    let url = config
        .state
        .url
        .as_deref()
        .context("state.backend = \"postgres\" needs state.url")?;
    let (url, mode, root_cert) = split_tls_options(url)?;
    let password_file = config.state.password_file.clone().or_else(|| {
        config
            .credentials_directory
            .as_ref()
            .map(|dir| dir.join(STATE_PASSWORD_CREDENTIAL))
            .filter(|path| path.exists())
    });
    let password = match password_file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the state database's password from {}",
                    path.display()
                )
            })?;
            Some(SecretValue::new(text.trim_end_matches(['\n', '\r'])))
        }
        None => None,
    };
    let tls = match mode {
        SslMode::Disable => None,
        mode => Some(
            postern_proxy::upstream_client_config(mode, root_cert.as_deref())
                .context("state database TLS")?,
        ),
    };
    Ok(PostgresSettings { url, password, tls })
}

/// `url` without its `sslmode` and `sslrootcert` (added back as the `sslmode`
/// tokio-postgres understands), the mode it asked for (libpq's default `prefer` when
/// none), and the CA file.
fn split_tls_options(url: &str) -> anyhow::Result<(String, SslMode, Option<PathBuf>)> {
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> anyhow::Result<bool> {
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" => SslMode::Disable,
                    "prefer" | "allow" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => anyhow::bail!("state.url: unknown sslmode {other:?}"),
                };
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if let Some((base, query)) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .and_then(|_| url.split_once('?'))
    {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            if !take(key, &value)? {
                kept.push(pair);
            }
        }
        (base.to_owned(), Some(kept.join("&")))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        (url.to_owned(), Some(String::new()))
    } else {
        let mut kept = Vec::new();
        for token in conninfo_tokens(url) {
            let (key, value) = token.split_once('=').unwrap_or((&token, ""));
            if !take(key, value.trim_matches('\''))? {
                kept.push(token);
            }
        }
        (kept.join(" "), None)
    };
    let pg_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
    };
    let url = match rest {
        (base, Some(query)) if query.is_empty() => format!("{base}?sslmode={pg_mode}"),
        (base, Some(query)) => format!("{base}?{query}&sslmode={pg_mode}"),
        (conninfo, None) => format!("{conninfo} sslmode={pg_mode}"),
    };
    Ok((url, mode, root_cert))
}

/// The `key=value` pairs of a libpq connection string: spaces around `=` dropped (libpq
/// allows them), single-quoted values may hold spaces.
fn conninfo_tokens(conninfo: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    let mut quoted = false;
    let mut chars = conninfo.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                token.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                // A space before `=`, or after one, belongs to no value.
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                if chars.peek() == Some(&'=') || token.ends_with('=') {
                    continue;
                }
                if !token.is_empty() {
                    tokens.push(std::mem::take(&mut token));
                }
            }
            c => token.push(c),
        }
    }
    if !token.is_empty() {
        tokens.push(token);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_taken_out_of_both_forms() {
        let (url, mode, root) = split_tls_options(
            "host=db port=5433 dbname='my db' sslmode=verify-full sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(url, "host=db port=5433 dbname='my db' sslmode=require");
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(root, Some(PathBuf::from("/ca.pem")));

        let (url, mode, root) =
            split_tls_options("postgres://u@db:5433/st?application_name=x&sslmode=verify-ca")
                .unwrap();
        assert_eq!(
            url,
            "postgres://u@db:5433/st?application_name=x&sslmode=require"
        );
        assert_eq!((mode, root), (SslMode::VerifyCa, None));

        let (url, mode, _) = split_tls_options("postgresql://db/st").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("postgresql://db/st?sslmode=prefer", SslMode::Prefer)
        );
        let (url, mode, _) = split_tls_options("host=db sslmode=disable").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("host=db sslmode=disable", SslMode::Disable)
        );

        let (url, mode, _) =
            split_tls_options("host = db  sslmode = verify-full dbname= 'a b'").unwrap();
        assert_eq!(
            (url.as_str(), mode),
            ("host=db dbname='a b' sslmode=require", SslMode::VerifyFull)
        );

        let err = split_tls_options("host=db sslmode=sometimes").unwrap_err();
        assert!(err.to_string().contains("unknown sslmode"), "{err}");
    }
}
