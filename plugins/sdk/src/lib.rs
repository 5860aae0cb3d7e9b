//! Writing Postern plugins in Rust. Each world of `wit/plugin.wit` has its module here —
//! [`policy`], [`auth_provider`], [`log_sink`] — with the generated bindings and the
//! macro that exports a plugin (`postern_plugin_sdk::policy::export_policy!(MyHook)`); a
//! component only imports what its code calls. Beside them, what every plugin writes
//! again: parsing `config` ([`config`]), matching tables ([`covers`]), verdicts
//! ([`policy::allow`], [`policy::deny`]), the host's functions in a form a test can fake
//! ([`host`], [`testing`]) and, with the `jwt` feature, checking JWTs against a JWKS
//! fetched through the host's HTTP client ([`jwt`]).

pub mod host;
#[cfg(feature = "jwt")]
pub mod jwt;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// The interfaces the worlds share, generated once so that every world's bindings (and
/// [`host`]) use the same types.
mod shared {
    wit_bindgen::generate!({
        path: "wit",
        inline: "
            package postern:sdk;
            world shared {
                import postern:plugin/types@0.1.0;
                import postern:plugin/log@0.1.0;
                import postern:plugin/cache@0.1.0;
                import postern:plugin/http-client@0.1.0;
                import postern:plugin/secrets@0.1.0;
            }
        ",
        world: "postern:sdk/shared",
        generate_all,
        additional_derives: [PartialEq, Eq],
    });
}

pub use shared::postern::plugin::http_client::{HttpError, Request, Response};
pub use shared::postern::plugin::log::Level;
pub use shared::postern::plugin::secrets::SecretError;
pub use shared::postern::plugin::types::{ClientInfo, Decision, Identity, Statement, Verdict};

/// The `policy` world: export `policy::exports::postern::plugin::policy_hook::Guest`
/// with `policy::export_policy!`.
pub mod policy {
    wit_bindgen::generate!({
        path: "wit",
        world: "postern:plugin/policy@0.1.0",
        pub_export_macro: true,
        additional_derives: [PartialEq, Eq],
        export_macro_name: "export_policy",
        default_bindings_module: "postern_plugin_sdk::policy",
        with: {
            "postern:plugin/types@0.1.0": crate::shared::postern::plugin::types,
            "postern:plugin/log@0.1.0": crate::shared::postern::plugin::log,
            "postern:plugin/cache@0.1.0": crate::shared::postern::plugin::cache,
        },
    });

    pub use self::exports::postern::plugin::policy_hook::Guest;
    use crate::{Decision, Verdict};

    /// Allows; the gateway may reuse the answer for `cache_ttl_ms` for the same identity
    /// and statement shape (0: ask every time).
    pub fn allow(cache_ttl_ms: u32) -> Verdict {
        Verdict {
            decision: Decision::Allow,
            cache_ttl_ms,
        }
    }

    /// Denies with `reason` (the client sees it, with SQLSTATE 42501), reusable as
    /// [`allow`]'s answer is.
    pub fn deny(reason: impl Into<String>, cache_ttl_ms: u32) -> Verdict {
        Verdict {
            decision: Decision::Deny(reason.into()),
            cache_ttl_ms,
        }
    }
}

/// The `auth-provider` world: export `auth_provider::Guest` with
/// `auth_provider::export_auth_provider!`.
pub mod auth_provider {
    wit_bindgen::generate!({
        path: "wit",
        world: "postern:plugin/auth-provider@0.1.0",
        pub_export_macro: true,
        additional_derives: [PartialEq, Eq],
        export_macro_name: "export_auth_provider",
        default_bindings_module: "postern_plugin_sdk::auth_provider",
        with: {
            "postern:plugin/types@0.1.0": crate::shared::postern::plugin::types,
            "postern:plugin/log@0.1.0": crate::shared::postern::plugin::log,
            "postern:plugin/cache@0.1.0": crate::shared::postern::plugin::cache,
            "postern:plugin/http-client@0.1.0": crate::shared::postern::plugin::http_client,
            "postern:plugin/secrets@0.1.0": crate::shared::postern::plugin::secrets,
        },
    });

    pub use self::exports::postern::plugin::authn::{Credential, Guest, Outcome};
}

/// The `log-sink` world: export `log_sink::Guest` with `log_sink::export_log_sink!`.
pub mod log_sink {
    wit_bindgen::generate!({
        path: "wit",
        world: "postern:plugin/log-sink@0.1.0",
        pub_export_macro: true,
        additional_derives: [PartialEq, Eq],
        export_macro_name: "export_log_sink",
        default_bindings_module: "postern_plugin_sdk::log_sink",
        with: {
            "postern:plugin/types@0.1.0": crate::shared::postern::plugin::types,
            "postern:plugin/log@0.1.0": crate::shared::postern::plugin::log,
            "postern:plugin/http-client@0.1.0": crate::shared::postern::plugin::http_client,
            "postern:plugin/secrets@0.1.0": crate::shared::postern::plugin::secrets,
        },
    });

    pub use self::exports::postern::plugin::sink::{Event, Guest, SinkError};
}

/// Parses the plugin's `config` (the resource's `spec.config`, JSON) into `T`; the error
/// is what `init` returns, and `apply` shows it.
pub fn config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("config: {e}"))
}

/// Whether `pattern` covers `table` (`schema.table` as the gateway reports it):
/// `schema.*` covers every table of the schema, anything else names one table.
pub fn covers(pattern: &str, table: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(schema) => table
            .strip_prefix(schema)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == table,
    }
}

/// The first of `tables` that one of `patterns` covers.
pub fn first_covered<'a>(patterns: &[String], tables: &'a [String]) -> Option<&'a String> {
    tables
        .iter()
        .find(|table| patterns.iter().any(|pattern| covers(pattern, table)))
}

#[cfg(test)]
mod tests {
    use super::{config, covers, first_covered};

    #[test]
    fn a_schema_pattern_covers_its_tables_only() {
        assert!(covers("payroll.*", "payroll.salaries"));
        assert!(!covers("payroll.*", "payroll_archive.salaries"));
        assert!(covers("public.users", "public.users"));
        assert!(!covers("public.users", "public.users_old"));
        let patterns = vec!["payroll.*".to_owned()];
        let tables = vec!["public.items".to_owned(), "payroll.bonus".to_owned()];
        assert_eq!(first_covered(&patterns, &tables), Some(&tables[1]));
    }

    #[test]
    fn a_bad_config_says_so() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Settings {
            hours: u8,
        }
        let error = config::<Settings>("{}").unwrap_err();
        assert!(
            error.starts_with("config: missing field `hours`"),
            "{error}"
        );
    }
}
