//! Checking a JWT bearer token against an issuer's JWKS (feature `jwt`): the signature
//! (ES256 or RS256), then `iss`, `aud`, `exp` and `nbf` with some leeway. The JWKS is
//! fetched through the host's HTTP client and kept in the plugin cache, which the
//! plugin's instances share; a token signed by a key the kept JWKS lacks fetches it once
//! more, at most once a minute, so unknown keys cannot make every login a fetch.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::{host, HttpError, Request};

const JWKS_KEY: &str = "postern-sdk:jwks";
const REFETCHED_KEY: &str = "postern-sdk:jwks-refetched";
const REFETCH_GAP_MS: u32 = 60_000;

/// Why a token was not accepted; its `Display` is a short reason for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of JSON: probably not meant as a JWT at all.
    NotAJwt,
    /// The JWKS could not be fetched or read.
    Jwks(String),
    /// No key of the JWKS has the token's `kid`.
    UnknownKey,
    /// The algorithm is not ES256 or RS256, the key does not fit it, or the signature
    /// does not verify.
    Signature(String),
    /// Signed correctly, but a claim refuses it (issuer, audience, expired, not valid yet).
    Claims(String),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAJwt => f.write_str("not a JWT"),
            Self::Jwks(reason) => write!(f, "JWKS: {reason}"),
            Self::UnknownKey => f.write_str("signed by a key the JWKS does not hold"),
            Self::Signature(reason) | Self::Claims(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for JwtError {}

/// What a token must satisfy, and where its keys are.
#[derive(Debug, Clone)]
pub struct Validator {
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// Seconds `exp` and `nbf` may be off by.
    pub leeway_seconds: i64,
    /// How long a fetched JWKS is kept.
    pub jwks_cache_seconds: u32,
}

/// The claims of a token that passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    /// A string claim.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// The strings of an array claim (`groups`), empty when it is absent.
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.0
            .get(name)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `exp`, seconds since the Unix epoch (always present once checked).
    pub fn expires_at(&self) -> Option<i64> {
        self.0.get("exp").and_then(Value::as_i64)
    }
}

/// Whether `text` has the shape of a JWT (three dot-separated parts): a provider that
/// sees anything else answers `not-applicable`.
pub fn looks_like_jwt(text: &str) -> bool {
    text.split('.').count() == 3
}

impl Validator {
    /// Checks `token` against the JWKS (kept or fetched) at the host's time.
    pub fn validate(&self, token: &str) -> Result<Claims, JwtError> {
        let parsed = Token::parse(token)?;
        let (keys, kept) = self.jwks(false)?;
        let key = match find_key(&keys, parsed.kid.as_deref()) {
            Some(key) => key.clone(),
            None if kept && host::cache_get(REFETCHED_KEY).is_none() => {
                host::cache_set(REFETCHED_KEY, b"1", REFETCH_GAP_MS);
                let (keys, _) = self.jwks(true)?;
                find_key(&keys, parsed.kid.as_deref())
                    .cloned()
                    .ok_or(JwtError::UnknownKey)?
            }
            None => return Err(JwtError::UnknownKey),
        };
        self.check(&parsed, &key, host::unix_seconds())
    }

    /// Checks `token` against `jwks` (a JWK Set, as JSON) at `now` (seconds since the
    /// Unix epoch), without the host: what [`Validator::validate`] does after fetching.
    pub fn validate_with(&self, token: &str, jwks: &Value, now: i64) -> Result<Claims, JwtError> {
        let parsed = Token::parse(token)?;
        let key = find_key(jwks, parsed.kid.as_deref()).ok_or(JwtError::UnknownKey)?;
        self.check(&parsed, key, now)
    }

    fn check(&self, token: &Token<'_>, key: &Value, now: i64) -> Result<Claims, JwtError> {
        verify(&token.alg, key, token.signed.as_bytes(), &token.signature)?;
        let claims = token.claims.clone();
        if claims.string("iss") != Some(self.issuer.as_str()) {
            return Err(JwtError::Claims("wrong issuer".into()));
        }
        let audience_ok = match claims.0.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(JwtError::Claims("wrong audience".into()));
        }
        let exp = claims
            .expires_at()
            .ok_or_else(|| JwtError::Claims("no exp".into()))?;
        if exp.saturating_add(self.leeway_seconds) <= now {
            return Err(JwtError::Claims("expired".into()));
        }
        let nbf = claims.0.get("nbf").and_then(Value::as_i64);
        if nbf.is_some_and(|nbf| nbf.saturating_sub(self.leeway_seconds) > now) {
            return Err(JwtError::Claims("not valid yet".into()));
        }
        Ok(claims)
    }

    /// The JWKS and whether it came from the cache: kept unless `fresh`, else fetched.
    fn jwks(&self, fresh: bool) -> Result<(Value, bool), JwtError> {
        if !fresh {
            let kept = host::cache_get(JWKS_KEY).and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(value) = kept {
                return Ok((value, true));
            }
        }
        let response = host::http_send(&Request {
            method: "GET".into(),
            url: self.jwks_url.clone(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
            timeout_ms: 0,
        })
        .map_err(|e| {
            JwtError::Jwks(match e {
                HttpError::Denied => "the JWKS URL is not in the plugin's http.allow".into(),
                other => format!("cannot fetch it: {other:?}"),
            })
        })?;
        if response.status != 200 {
            return Err(JwtError::Jwks(format!(
                "the URL answered {}",
                response.status
            )));
        }
        let value: Value = serde_json::from_slice(&response.body)
            .map_err(|_| JwtError::Jwks("not JSON".into()))?;
        let ttl_ms = self.jwks_cache_seconds.saturating_mul(1000);
        host::cache_set(JWKS_KEY, &response.body, ttl_ms);
        Ok((value, false))
    }
}

/// A token split and decoded, not yet checked.
struct Token<'a> {
    alg: String,
    kid: Option<String>,
    claims: Claims,
    /// `header.payload`, what the signature covers.
    signed: &'a str,
    signature: Vec<u8>,
}

impl<'a> Token<'a> {
    fn parse(token: &'a str) -> Result<Self, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::NotAJwt);
        };
        let header = decode_json(header)?;
        let Value::Object(claims) = decode_json(payload)? else {
            return Err(JwtError::NotAJwt);
        };
        let signature = B64URL.decode(signature).map_err(|_| JwtError::NotAJwt)?;
        Ok(Self {
            alg: header["alg"].as_str().unwrap_or_default().to_owned(),
            kid: header["kid"].as_str().map(str::to_owned),
            claims: Claims(claims),
            signed: &token[..header_and_payload_len(token)],
            signature,
        })
    }
}

/// Bytes of `header.payload` in a token of three parts.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn decode_json(part: &str) -> Result<Value, JwtError> {
    let bytes = B64URL.decode(part).map_err(|_| JwtError::NotAJwt)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::NotAJwt)
}

/// The key with `kid`, or the first key when the token names none.
fn find_key<'a>(jwks: &'a Value, kid: Option<&str>) -> Option<&'a Value> {
    jwks["keys"]
        .as_array()?
        .iter()
        .find(|key| kid.is_none_or(|kid| key["kid"].as_str() == Some(kid)))
}

fn member(key: &Value, name: &str) -> Result<Vec<u8>, JwtError> {
    key[name]
        .as_str()
        .and_then(|text| B64URL.decode(text).ok())
        .ok_or_else(|| JwtError::Signature(format!("JWK member {name} missing")))
}

fn verify(alg: &str, key: &Value, signed: &[u8], signature: &[u8]) -> Result<(), JwtError> {
    let bad = |what: &str| JwtError::Signature(what.to_owned());
    match alg {
        "ES256" => {
            use p256::ecdsa::signature::Verifier;
            let mut point = vec![4u8];
            point.extend_from_slice(&member(key, "x")?);
            point.extend_from_slice(&member(key, "y")?);
            let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map_err(|_| bad("bad EC key"))?;
            let signature =
                p256::ecdsa::Signature::from_slice(signature).map_err(|_| bad("bad signature"))?;
            verifying
                .verify(signed, &signature)
                .map_err(|_| bad("signature does not verify"))
        }
        "RS256" => {
            use rsa::signature::Verifier;
            let public = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&member(key, "n")?),
                rsa::BigUint::from_bytes_be(&member(key, "e")?),
            )
            .map_err(|_| bad("bad RSA key"))?;
            let verifying = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
            let signature =
                rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| bad("bad signature"))?;
            verifying
                .verify(signed, &signature)
                .map_err(|_| bad("signature does not verify"))
        }
        other => Err(JwtError::Signature(format!(
            "algorithm {other} is not accepted"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use p256::ecdsa::signature::Signer;
    use serde_json::{json, Value};

    use super::{JwtError, Validator, B64URL};
    use crate::testing::{advance, requests, FakeHost};

    const JWKS_URL: &str = "https://idp.test/jwks";
    const NOW: i64 = 1_800_000_000;

    fn signing_key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap()
    }

    fn jwks(kid: &str) -> Value {
        let point = signing_key().verifying_key().to_encoded_point(false);
        json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": B64URL.encode(point.x().unwrap()),
            "y": B64URL.encode(point.y().unwrap()),
        }]})
    }

    fn token(kid: &str, claims: Value) -> String {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
        let signed = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature: p256::ecdsa::Signature = signing_key().sign(signed.as_bytes());
        format!("{signed}.{}", B64URL.encode(signature.to_bytes()))
    }

    fn claims(exp: i64) -> Value {
        json!({ "iss": "https://idp.test", "aud": "postern", "sub": "alice",
                "groups": ["analysts"], "exp": exp })
    }

    fn validator() -> Validator {
        Validator {
            jwks_url: JWKS_URL.into(),
            issuer: "https://idp.test".into(),
            audience: "postern".into(),
            leeway_seconds: 30,
            jwks_cache_seconds: 300,
        }
    }

    #[test]
    fn a_token_is_checked_against_a_jwks_without_the_host() {
        let validator = validator();
        let keys = jwks("k1");
        let good = validator
            .validate_with(&token("k1", claims(NOW + 60)), &keys, NOW)
            .unwrap();
        assert_eq!(good.string("sub"), Some("alice"));
        assert_eq!(good.strings("groups"), vec!["analysts".to_owned()]);
        let expired = validator.validate_with(&token("k1", claims(NOW - 31)), &keys, NOW);
        assert_eq!(expired, Err(JwtError::Claims("expired".into())));
        let within_leeway = validator.validate_with(&token("k1", claims(NOW - 29)), &keys, NOW);
        assert!(within_leeway.is_ok());
        let mut other_audience = claims(NOW + 60);
        other_audience["aud"] = json!(["someone-else"]);
        assert_eq!(
            validator.validate_with(&token("k1", other_audience), &keys, NOW),
            Err(JwtError::Claims("wrong audience".into()))
        );
        let mut tampered = token("k1", claims(NOW + 60));
        tampered.insert(tampered.rfind('.').unwrap() - 1, 'x');
        assert!(matches!(
            validator.validate_with(&tampered, &keys, NOW),
            Err(JwtError::NotAJwt | JwtError::Signature(_))
        ));
        assert_eq!(
            validator.validate_with("a.b", &keys, NOW),
            Err(JwtError::NotAJwt)
        );
        assert_eq!(
            validator.validate_with(&token("k2", claims(NOW + 60)), &keys, NOW),
            Err(JwtError::UnknownKey)
        );
    }

    #[test]
    fn the_jwks_is_fetched_once_and_refetched_for_an_unknown_key_at_most_once_a_minute() {
        let body = jwks("k1").to_string();
        FakeHost::new()
            .at_unix_seconds(NOW as u64)
            .http_response("GET", JWKS_URL, 200, body.as_bytes())
            .install();
        let validator = validator();
        for _ in 0..3 {
            validator.validate(&token("k1", claims(NOW + 600))).unwrap();
        }
        assert_eq!(requests().len(), 1, "the JWKS is kept");
        let unknown = token("k2", claims(NOW + 600));
        assert_eq!(validator.validate(&unknown), Err(JwtError::UnknownKey));
        assert_eq!(validator.validate(&unknown), Err(JwtError::UnknownKey));
        assert_eq!(requests().len(), 2, "one refetch for unknown keys");
        advance(Duration::from_secs(301));
        validator.validate(&token("k1", claims(NOW + 600))).unwrap();
        assert_eq!(requests().len(), 3, "a kept JWKS expires");
    }

    #[test]
    fn a_jwks_that_cannot_be_fetched_refuses_with_the_reason() {
        FakeHost::new()
            .at_unix_seconds(NOW as u64)
            .http_response("GET", JWKS_URL, 503, b"")
            .install();
        let refused = validator().validate(&token("k1", claims(NOW + 600)));
        assert_eq!(refused, Err(JwtError::Jwks("the URL answered 503".into())));
        FakeHost::new().install();
        let refused = validator().validate(&token("k1", claims(NOW + 600)));
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("JWKS: the JWKS URL is not in the plugin's http.allow".into())
        );
    }
}
