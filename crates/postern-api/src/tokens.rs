//! Access tokens: Ed25519-signed JWTs (RFC 7519, `EdDSA` per RFC 8037) whose keys live
//! sealed in the state store and rotate with overlap; issuing, verifying, and the JWKS
//! document (RFC 7517) that publishes the public halves.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use postern_model::{QualifiedName, SecretValue, Spec, TokenRejected, TokenVerifier};
use postern_state::{SigningKey, StateError, Store, TokenRecord};
use rand::Rng;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// The `iss` of every token this gateway signs.
pub const ISSUER: &str = "postern";

#[derive(Debug, Clone, Copy)]
pub struct TokenSettings {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// A signing key older than this is replaced.
    pub rotation: Duration,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The identity's name.
    pub sub: String,
    /// The identity's namespace.
    pub ns: String,
    /// The identity's groups when the token was issued (informational: access is decided
    /// from the current role bindings).
    #[serde(default)]
    pub groups: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

impl Claims {
    pub fn identity(&self) -> QualifiedName {
        QualifiedName::new(&self.ns, &self.sub)
    }
}

/// A token just signed: the only moment its text exists on the server.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: SecretValue,
    pub claims: Claims,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not acceptable; the text is for logs (clients get a bare 401/28P01).
    #[error("{0}")]
    Invalid(String),
    #[error("a token may live at most {max}s; {asked}s was asked for")]
    TtlTooLong { asked: u64, max: u64 },
    #[error("Identity {0} not found")]
    UnknownIdentity(QualifiedName),
    #[error("signing key: {0}")]
    Key(String),
    #[error(transparent)]
    State(#[from] StateError),
}

fn unix_now() -> i64 {
    postern_model::unix_millis(std::time::SystemTime::now()) / 1000
}

/// Unknown key ids reload the keys at most this often, so made-up ids cannot keep the
/// store busy.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Signs and checks tokens with the store's keys (cached; reloaded when a token names a
/// key this process has not seen, e.g. one `token rotate-key` made in another process).
pub struct TokenAuthority {
    store: Arc<Store>,
    settings: TokenSettings,
    keys: RwLock<Vec<SigningKey>>,
    last_reload: std::sync::Mutex<std::time::Instant>,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    pub fn new(store: Arc<Store>, settings: TokenSettings) -> Result<TokenAuthority, TokenError> {
        let keys = store.signing_keys()?;
        Ok(TokenAuthority {
            store,
            settings,
            keys: RwLock::new(keys),
            last_reload: std::sync::Mutex::new(std::time::Instant::now()),
        })
    }

    pub fn settings(&self) -> TokenSettings {
        self.settings
    }

    fn reload(&self) -> Result<(), TokenError> {
        let keys = self.store.signing_keys()?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        Ok(())
    }

    /// Reloads unless that happened within [`RELOAD_INTERVAL`].
    fn reload_if_stale(&self) -> Result<(), TokenError> {
        let last = *self.last_reload.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= RELOAD_INTERVAL {
            self.reload()?;
        }
        Ok(())
    }

    fn cached<T>(&self, f: impl FnOnce(&[SigningKey]) -> T) -> T {
        f(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes a new signing key; the previous one keeps verifying what it signed.
    pub fn rotate(&self) -> Result<String, TokenError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| TokenError::Key(e.to_string()))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let mut id = [0u8; 9];
        rand::rng().fill_bytes(&mut id);
        let kid = B64URL.encode(id);
        self.store
            .add_signing_key(&kid, pkcs8.as_ref(), pair.public_key().as_ref())?;
        self.reload()?;
        Ok(kid)
    }

    /// Rotates when there is no signing key or it is past its age, and forgets retired
    /// keys no token they signed can still be valid under. Returns the new key's id.
    pub fn maintain_keys(&self) -> Result<Option<String>, TokenError> {
        let now = unix_now();
        self.store
            .prune_signing_keys(now - secs(self.settings.max_ttl))?;
        // Read afresh: the prune, or another process, may have changed the keys.
        self.reload()?;
        let current_age = self.cached(|keys| {
            keys.iter()
                .find(|k| k.retired_at.is_none())
                .map(|k| now - k.created_at)
        });
        match current_age {
            Some(age) if age < secs(self.settings.rotation) => Ok(None),
            _ => self.rotate().map(Some),
        }
    }

    /// Signs `claims` with the current key (read afresh: another process may have
    /// rotated it).
    pub fn sign(&self, claims: &Claims) -> Result<SecretValue, TokenError> {
        self.reload()?;
        let current = self.cached(|keys| keys.iter().find(|k| k.retired_at.is_none()).cloned());
        let key = match current {
            Some(key) => key,
            None => {
                self.rotate()?;
                self.cached(|keys| keys.iter().find(|k| k.retired_at.is_none()).cloned())
                    .ok_or_else(|| TokenError::Key("no signing key after rotation".into()))?
            }
        };
        let header = Header {
            kid: Some(key.kid.clone()),
            ..Header::new(Algorithm::EdDSA)
        };
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&key.pkcs8))
            .map(SecretValue::new)
            .map_err(|e| TokenError::Key(e.to_string()))
    }

    /// Issues a token for an existing identity, recorded by `jti` so it can be revoked.
    pub fn issue(
        &self,
        identity: &QualifiedName,
        ttl: Option<Duration>,
    ) -> Result<IssuedToken, TokenError> {
        let ttl = ttl.unwrap_or(self.settings.default_ttl);
        if ttl > self.settings.max_ttl || ttl.is_zero() {
            return Err(TokenError::TtlTooLong {
                asked: ttl.as_secs(),
                max: self.settings.max_ttl.as_secs(),
            });
        }
        let stored = self
            .store
            .get_resource(
                postern_model::Kind::Identity,
                &identity.namespace,
                &identity.name,
            )?
            .ok_or_else(|| TokenError::UnknownIdentity(identity.clone()))?;
        let groups = match stored.resource.spec {
            Spec::Identity(spec) => spec.groups,
            _ => Vec::new(),
        };
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: identity.name.clone(),
            ns: identity.namespace.clone(),
            groups,
            iat: now,
            exp: now.saturating_add(secs(ttl)),
            jti: B64URL.encode(jti),
        };
        let token = self.sign(&claims)?;
        self.store.record_access_token(&TokenRecord {
            jti: claims.jti.clone(),
            identity: identity.clone(),
            issued_at: claims.iat,
            expires_at: claims.exp,
            revoked_at: None,
        })?;
        Ok(IssuedToken { token, claims })
    }

    /// The claims of a valid token: signed by one of our keys, unexpired, issued here
    /// (known `jti`), not revoked, and naming an identity that still exists.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid("unexpected algorithm"));
        }
        let kid = header.kid.ok_or_else(|| invalid("no key id"))?;
        let find = |keys: &[SigningKey]| {
            keys.iter()
                .find(|k| k.kid == kid)
                .map(|k| k.public_key.clone())
        };
        let public_key = match self.cached(find) {
            Some(key) => key,
            None => {
                self.reload_if_stale()?;
                self.cached(find)
                    .ok_or_else(|| invalid("unknown signing key"))?
            }
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_ed_der(&public_key),
            &validation,
        )
        .map_err(|e| TokenError::Invalid(format!("rejected: {e}")))?
        .claims;
        let record = self
            .store
            .access_token(&claims.jti)?
            .ok_or_else(|| invalid("unknown token id"))?;
        if record.revoked_at.is_some() {
            return Err(invalid("revoked"));
        }
        if record.identity != claims.identity() {
            return Err(invalid("claims do not match the issued token"));
        }
        let exists = self
            .store
            .get_resource(postern_model::Kind::Identity, &claims.ns, &claims.sub)?
            .is_some();
        if !exists {
            return Err(invalid("identity no longer exists"));
        }
        Ok(claims)
    }

    /// The public keys that verify tokens, as a JWK Set.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self.cached(|keys| {
            keys.iter()
                .map(|k| {
                    serde_json::json!({
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "alg": "EdDSA",
                        "use": "sig",
                        "kid": k.kid,
                        "x": B64URL.encode(&k.public_key),
                    })
                })
                .collect()
        });
        serde_json::json!({ "keys": keys })
    }
}

impl TokenVerifier for TokenAuthority {
    fn verify(&self, token: &str, identity: &QualifiedName) -> Result<(), TokenRejected> {
        let claims =
            TokenAuthority::verify(self, token).map_err(|e| TokenRejected(e.to_string()))?;
        if claims.identity() != *identity {
            return Err(TokenRejected(format!(
                "token of {} offered for {identity}",
                claims.identity()
            )));
        }
        Ok(())
    }

    fn issued_here(&self, token: &str) -> bool {
        let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) else {
            return false;
        };
        self.cached(|keys| keys.iter().any(|k| k.kid == kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_state::KeySettings;

    fn authority(dir: &std::path::Path, max_ttl: Duration) -> TokenAuthority {
        let keys = KeySettings {
            inline: None,
            credentials_directory: None,
            key_file: dir.join("master.key"),
        };
        let store = Store::open(dir, &keys).unwrap();
        let docs = postern_model::parse_documents(
            "t.yaml",
            "kind: Namespace\nmetadata: {name: a}\n---\nkind: Identity\nmetadata: {name: w, namespace: a}\nspec: {groups: [g]}\n",
            postern_model::Format::Yaml,
        )
        .unwrap();
        store.apply_resources(&docs, false, false).unwrap();
        let settings = TokenSettings {
            default_ttl: Duration::from_secs(60),
            max_ttl,
            rotation: Duration::from_secs(3600),
        };
        TokenAuthority::new(Arc::new(store), settings).unwrap()
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_their_keys_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = authority(dir.path(), Duration::from_secs(3600));
        let who = QualifiedName::new("a", "w");
        let old = tokens.issue(&who, None).unwrap();
        assert_eq!(old.claims.groups, ["g"]);
        assert_eq!(tokens.verify(old.token.expose()).unwrap().sub, "w");
        // Fresh key: not rotated again.
        assert_eq!(tokens.maintain_keys().unwrap(), None);
        tokens.rotate().unwrap();
        let new = tokens.issue(&who, None).unwrap();
        assert!(tokens.verify(old.token.expose()).is_ok());
        assert!(tokens.verify(new.token.expose()).is_ok());
        assert_eq!(tokens.jwks()["keys"].as_array().unwrap().len(), 2);

        // Pruned (past every token's lifetime), the retired key's tokens go with it.
        tokens.store.prune_signing_keys(i64::MAX).unwrap();
        tokens.reload().unwrap();
        assert!(matches!(
            tokens.verify(old.token.expose()),
            Err(TokenError::Invalid(_))
        ));
        assert!(tokens.verify(new.token.expose()).is_ok());
    }

    #[test]
    fn ttl_above_the_maximum_and_unknown_identities_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = authority(dir.path(), Duration::from_secs(600));
        let who = QualifiedName::new("a", "w");
        assert!(matches!(
            tokens.issue(&who, Some(Duration::from_secs(601))),
            Err(TokenError::TtlTooLong {
                asked: 601,
                max: 600
            })
        ));
        assert!(matches!(
            tokens.issue(&QualifiedName::new("a", "nobody"), None),
            Err(TokenError::UnknownIdentity(_))
        ));
        let issued = tokens.issue(&who, None).unwrap();
        tokens
            .store
            .revoke_access_token(&issued.claims.jti)
            .unwrap();
        assert!(matches!(
            tokens.verify(issued.token.expose()),
            Err(TokenError::Invalid(why)) if why == "revoked"
        ));
    }
}
