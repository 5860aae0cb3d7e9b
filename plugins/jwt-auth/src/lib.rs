//! An auth provider for OIDC/JWT bearer tokens sent as the password, on the SDK's
//! [`postern_plugin_sdk::jwt`]: the signature (ES256 or RS256) is checked against the
//! issuer's JWKS, fetched through `http-client` and kept in the plugin cache, then `iss`,
//! `aud`, `exp` and `nbf`. The `identity_claim` names the identity (in `namespace`),
//! `groups_claim` gives its groups. A password that is no JWT is not this provider's:
//! the next one in the chain decides.

use std::sync::OnceLock;

use serde::Deserialize;

use postern_plugin_sdk::auth_provider::{Credential, Guest, Outcome};
use postern_plugin_sdk::jwt::{looks_like_jwt, Validator};
use postern_plugin_sdk::{host, ClientInfo, Identity, Level};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    jwks_url: String,
    issuer: String,
    audience: String,
    namespace: String,
    #[serde(default = "default_identity_claim")]
    identity_claim: String,
    #[serde(default = "default_groups_claim")]
    groups_claim: String,
    #[serde(default = "default_jwks_cache_seconds")]
    jwks_cache_seconds: u32,
    #[serde(default = "default_leeway_seconds")]
    leeway_seconds: i64,
}

fn default_identity_claim() -> String {
    "sub".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_jwks_cache_seconds() -> u32 {
    300
}
fn default_leeway_seconds() -> i64 {
    30
}

static PROVIDER: OnceLock<(Settings, Validator)> = OnceLock::new();

/// The identity `token` proves.
fn authenticate(
    settings: &Settings,
    validator: &Validator,
    token: &str,
) -> Result<Identity, String> {
    let claims = validator.validate(token).map_err(|e| e.to_string())?;
    let name = claims
        .string(&settings.identity_claim)
        .ok_or_else(|| format!("no {} claim", settings.identity_claim))?;
    Ok(Identity {
        name: name.to_owned(),
        namespace: settings.namespace.clone(),
        groups: claims.strings(&settings.groups_claim),
        attributes: Vec::new(),
        expires_at: claims.expires_at(),
    })
}

struct JwtAuth;

impl Guest for JwtAuth {
    fn init(config: String) -> Result<(), String> {
        let settings: Settings = postern_plugin_sdk::config(&config)?;
        let validator = Validator {
            jwks_url: settings.jwks_url.clone(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_seconds: settings.leeway_seconds,
            jwks_cache_seconds: settings.jwks_cache_seconds,
        };
        PROVIDER
            .set((settings, validator))
            .map_err(|_| "init called twice".to_string())
    }

    fn authenticate(_client: ClientInfo, credential: Credential) -> Outcome {
        let Credential::Password(token) = credential else {
            return Outcome::NotApplicable;
        };
        let Some((settings, validator)) = PROVIDER.get() else {
            return Outcome::Rejected("not initialised".into());
        };
        if !looks_like_jwt(&token) {
            return Outcome::NotApplicable;
        }
        match authenticate(settings, validator, &token) {
            Ok(identity) => Outcome::Authenticated(identity),
            Err(reason) => {
                host::log(Level::Debug, &format!("token refused: {reason}"));
                Outcome::Rejected(reason)
            }
        }
    }
}

postern_plugin_sdk::auth_provider::export_auth_provider!(JwtAuth);
