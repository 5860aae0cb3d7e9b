//! An auth provider for OIDC/JWT bearer tokens sent as the password. The signature
//! (ES256 or RS256) is checked against the issuer's JWKS, fetched through `http-client`
//! and kept in the plugin cache; a token signed by a key the cached JWKS lacks fetches it
//! once more (at most once a minute). Then `iss`, `aud`, `exp` and `nbf` (with some leeway) are checked; the
//! `identity_claim` names the identity (in `namespace`), `groups_claim` gives its groups.
//! A password that is no JWT is not this provider's: the next one in the chain decides.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use postern_plugin_sdk::auth_provider::exports::postern::plugin::authn::{
    Credential, Guest, Outcome,
};
use postern_plugin_sdk::auth_provider::postern::plugin::http_client::{send, HttpError, Request};
use postern_plugin_sdk::auth_provider::postern::plugin::types::{ClientInfo, Identity};
use postern_plugin_sdk::auth_provider::postern::plugin::{cache, log};

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

static SETTINGS: OnceLock<Settings> = OnceLock::new();
const JWKS_KEY: &str = "jwks";
const REFETCHED_KEY: &str = "jwks-refetched";

fn decode_json(part: &str) -> Result<Value, String> {
    let bytes = B64URL
        .decode(part)
        .map_err(|_| "not base64url".to_string())?;
    serde_json::from_slice(&bytes).map_err(|_| "not JSON".to_string())
}

/// The JWKS: from the cache unless `fresh`, else fetched (and cached).
fn jwks(settings: &Settings, fresh: bool) -> Result<(Value, bool), String> {
    if !fresh {
        if let Some(bytes) = cache::get(JWKS_KEY) {
            if let Ok(value) = serde_json::from_slice(&bytes) {
                return Ok((value, true));
            }
        }
    }
    let response = send(&Request {
        method: "GET".into(),
        url: settings.jwks_url.clone(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
        timeout_ms: 0,
    })
    .map_err(|e| match e {
        HttpError::Denied => "the JWKS URL is not in the plugin's http.allow".to_string(),
        other => format!("cannot fetch the JWKS: {other:?}"),
    })?;
    if response.status != 200 {
        return Err(format!("the JWKS URL answered {}", response.status));
    }
    let value: Value =
        serde_json::from_slice(&response.body).map_err(|_| "the JWKS is not JSON".to_string())?;
    cache::set(
        JWKS_KEY,
        &response.body,
        settings.jwks_cache_seconds.saturating_mul(1000),
    );
    Ok((value, false))
}

fn find_key<'a>(jwks: &'a Value, kid: Option<&str>) -> Option<&'a Value> {
    jwks["keys"]
        .as_array()?
        .iter()
        .find(|key| kid.is_none_or(|kid| key["kid"].as_str() == Some(kid)))
}

fn field(key: &Value, name: &str) -> Result<Vec<u8>, String> {
    key[name]
        .as_str()
        .and_then(|text| B64URL.decode(text).ok())
        .ok_or_else(|| format!("JWK member {name} missing"))
}

fn verify(alg: &str, key: &Value, signed: &[u8], signature: &[u8]) -> Result<(), String> {
    match alg {
        "ES256" => {
            use p256::ecdsa::signature::Verifier;
            let (x, y) = (field(key, "x")?, field(key, "y")?);
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map_err(|_| "bad EC key".to_string())?;
            let signature = p256::ecdsa::Signature::from_slice(signature)
                .map_err(|_| "bad signature".to_string())?;
            verifying
                .verify(signed, &signature)
                .map_err(|_| "signature does not verify".to_string())
        }
        "RS256" => {
            use rsa::signature::Verifier;
            let (n, e) = (field(key, "n")?, field(key, "e")?);
            let public = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
            )
            .map_err(|_| "bad RSA key".to_string())?;
            let verifying = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
            let signature = rsa::pkcs1v15::Signature::try_from(signature)
                .map_err(|_| "bad signature".to_string())?;
            verifying
                .verify(signed, &signature)
                .map_err(|_| "signature does not verify".to_string())
        }
        other => Err(format!("algorithm {other} is not accepted")),
    }
}

fn check(settings: &Settings, token: &str) -> Result<Identity, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT".into());
    };
    let header = decode_json(header)?;
    let alg = header["alg"].as_str().unwrap_or_default().to_owned();
    let kid = header["kid"].as_str();
    let signature = B64URL
        .decode(signature)
        .map_err(|_| "signature not base64url".to_string())?;
    let signed = &token.as_bytes()[..header_and_payload_len(token)];
    let (keys, cached) = jwks(settings, false)?;
    let key = match find_key(&keys, kid) {
        Some(key) => key.clone(),
        // Once per minute at most: unknown keys must not make every login a fetch.
        None if cached && cache::get(REFETCHED_KEY).is_none() => {
            cache::set(REFETCHED_KEY, b"1", 60_000);
            let (keys, _) = jwks(settings, true)?;
            find_key(&keys, kid)
                .cloned()
                .ok_or_else(|| "signed by a key the JWKS does not hold".to_string())?
        }
        None => return Err("signed by a key the JWKS does not hold".into()),
    };
    verify(&alg, &key, signed, &signature)?;
    let claims = decode_json(payload)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if claims["iss"].as_str() != Some(settings.issuer.as_str()) {
        return Err("wrong issuer".into());
    }
    let audience_ok = match &claims["aud"] {
        Value::String(aud) => *aud == settings.audience,
        Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(&settings.audience)),
        _ => false,
    };
    if !audience_ok {
        return Err("wrong audience".into());
    }
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    if exp + settings.leeway_seconds <= now {
        return Err("expired".into());
    }
    if claims["nbf"]
        .as_i64()
        .is_some_and(|nbf| nbf - settings.leeway_seconds > now)
    {
        return Err("not valid yet".into());
    }
    let name = claims[settings.identity_claim.as_str()]
        .as_str()
        .ok_or_else(|| format!("no {} claim", settings.identity_claim))?
        .to_owned();
    let groups = claims[settings.groups_claim.as_str()]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity {
        name,
        namespace: settings.namespace.clone(),
        groups,
        attributes: Vec::new(),
        expires_at: Some(exp),
    })
}

/// Bytes of `header.payload`, the signed part.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

struct JwtAuth;

impl Guest for JwtAuth {
    fn init(config: String) -> Result<(), String> {
        let settings: Settings = postern_plugin_sdk::config(&config)?;
        SETTINGS
            .set(settings)
            .map_err(|_| "init called twice".to_string())
    }

    fn authenticate(_client: ClientInfo, credential: Credential) -> Outcome {
        let Credential::Password(token) = credential else {
            return Outcome::NotApplicable;
        };
        let Some(settings) = SETTINGS.get() else {
            return Outcome::Rejected("not initialised".into());
        };
        if token.split('.').count() != 3 {
            return Outcome::NotApplicable;
        }
        match check(settings, &token) {
            Ok(identity) => Outcome::Authenticated(identity),
            Err(reason) => {
                log::write(log::Level::Debug, &format!("token refused: {reason}"));
                Outcome::Rejected(reason)
            }
        }
    }
}

postern_plugin_sdk::auth_provider::export_auth_provider!(JwtAuth);
