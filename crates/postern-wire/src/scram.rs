//! Server side of SCRAM-SHA-256 as a pure state machine ([RFC 5802], [RFC 7677]) and the
//! verifier format PostgreSQL stores (`SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`).
//!
//! One identity may hold several API keys. They share one salt and iteration count, so the
//! server can send its first message before it knows which key the client holds, and then
//! check the proof against each key's StoredKey.
//!
//! [RFC 5802]: https://www.rfc-editor.org/rfc/rfc5802
//! [RFC 7677]: https://www.rfc-editor.org/rfc/rfc7677

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The one channel-binding type PostgreSQL defines for SCRAM ([RFC 5929] §4).
const TLS_SERVER_END_POINT: &str = "tls-server-end-point";
pub const DEFAULT_ITERATIONS: u32 = 4096;
const KEY_LEN: usize = 32;

/// A protocol violation in a SCRAM exchange (SQLSTATE 08P01), never a wrong password.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid SCRAM exchange: {0}")]
pub struct ScramError(&'static str);

/// StoredKey and ServerKey derived from one secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

/// What PostgreSQL calls a SCRAM secret: salt, iterations and the two derived keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub keys: ScramKeys,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramKeys(***)")
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    // HMAC takes keys of any length, so this cannot fail; fall back to an empty MAC key
    // path never taken rather than panic.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; KEY_LEN],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    /// Derives a verifier. `secret` must need no SASLprep (our API keys are ASCII
    /// alphanumerics), so clients that normalise it arrive at the same bytes.
    pub fn generate(secret: &[u8], salt: &[u8], iterations: u32) -> Verifier {
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(secret, salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            keys: ScramKeys {
                stored_key: sha256(&client_key),
                server_key: hmac(&salted, b"Server Key"),
            },
        }
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Verifier, ScramError> {
        let bad = ScramError("malformed verifier");
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError("not a SCRAM-SHA-256 verifier"))?;
        let (params, keys) = rest.split_once('$').ok_or(bad.clone())?;
        let (iterations, salt) = params.split_once(':').ok_or(bad.clone())?;
        let (stored, server) = keys.split_once(':').ok_or(bad.clone())?;
        let iterations: u32 = iterations.parse().map_err(|_| bad.clone())?;
        let decode_key = |s: &str| -> Result<[u8; KEY_LEN], ScramError> {
            let bytes = B64.decode(s).map_err(|_| bad.clone())?;
            bytes.try_into().map_err(|_| bad.clone())
        };
        Ok(Verifier {
            iterations,
            salt: B64.decode(salt).map_err(|_| bad.clone())?,
            keys: ScramKeys {
                stored_key: decode_key(stored)?,
                server_key: decode_key(server)?,
            },
        })
    }

    pub fn encode(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.keys.stored_key),
            B64.encode(self.keys.server_key)
        )
    }
}

/// Result of the final client message.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramOutcome {
    /// The proof matched the key at `key_index`; send `server_final` in SASLFinal.
    Authenticated {
        key_index: usize,
        server_final: Vec<u8>,
    },
    /// No key matched: answer 28P01.
    Rejected,
}

enum State {
    AwaitClientFirst,
    AwaitClientFinal {
        client_first_bare: String,
        server_first: String,
        /// What `c=` must decode to: the GS2 header, plus the binding data if bound.
        expected_binding: Vec<u8>,
        nonce: String,
    },
    Finished,
}

/// Server side of one SCRAM-SHA-256(-PLUS) exchange.
pub struct ScramServer {
    salt: Vec<u8>,
    iterations: u32,
    candidates: Vec<ScramKeys>,
    server_nonce: String,
    /// `tls-server-end-point` data when the connection is TLS (and PLUS is offered).
    channel_binding: Option<Vec<u8>>,
    state: State,
}

impl ScramServer {
    /// `candidates` are the identity's keys, all derived with `salt` and `iterations`.
    /// For an unknown identity pass no candidates and a salt that is stable per user
    /// name, so the exchange looks the same as for a real one.
    pub fn new(
        salt: Vec<u8>,
        iterations: u32,
        candidates: Vec<ScramKeys>,
        server_nonce: String,
    ) -> Self {
        ScramServer {
            salt,
            iterations,
            candidates,
            server_nonce,
            channel_binding: None,
            state: State::AwaitClientFirst,
        }
    }

    /// Offers SCRAM-SHA-256-PLUS bound to this `tls-server-end-point` data.
    pub fn with_channel_binding(mut self, data: Vec<u8>) -> Self {
        self.channel_binding = Some(data);
        self
    }

    /// The mechanisms to offer, most preferred first (PostgreSQL's order).
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.channel_binding.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Handles the client-first-message sent with the chosen `mechanism` and returns
    /// server-first-message.
    pub fn client_first(&mut self, mechanism: &str, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !self.mechanisms().contains(&mechanism) {
            return Err(ScramError("mechanism not offered"));
        }
        let plus = mechanism == SCRAM_SHA_256_PLUS;
        if !matches!(self.state, State::AwaitClientFirst) {
            return Err(ScramError("client-first-message out of order"));
        }
        let text = std::str::from_utf8(message).map_err(|_| ScramError("not UTF-8"))?;
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError("missing GS2 header"))?;
        let binding_data: &[u8] = match (flag, plus) {
            ("n", false) => &[],
            // 'y' says "I could bind, but think you cannot": a downgrade when we can.
            ("y", false) if self.channel_binding.is_none() => &[],
            ("y", false) => return Err(ScramError("channel binding was offered but not used")),
            (f, true) if f.strip_prefix("p=") == Some(TLS_SERVER_END_POINT) => {
                self.channel_binding.as_deref().unwrap_or_default()
            }
            (f, _) if f.starts_with("p=") && !plus => {
                return Err(ScramError(
                    "channel binding requested without the PLUS mechanism",
                ))
            }
            (f, true) if f.starts_with("p=") => {
                return Err(ScramError("unsupported channel-binding type"))
            }
            (_, true) => return Err(ScramError("the PLUS mechanism requires channel binding")),
            _ => return Err(ScramError("bad channel-binding flag")),
        };
        let (authzid, client_first_bare) = rest
            .split_once(',')
            .ok_or(ScramError("missing GS2 header"))?;
        // PostgreSQL does not support an authorization identity either.
        if !authzid.is_empty() {
            return Err(ScramError("authorization identities are not supported"));
        }
        let mut attributes = client_first_bare.split(',');
        let user = attributes.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(ScramError("mandatory extensions are not supported"));
        }
        if !user.starts_with("n=") {
            return Err(ScramError("missing user name attribute"));
        }
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError("missing client nonce"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError("bad client nonce"));
        }
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.salt),
            self.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitClientFinal {
            client_first_bare: client_first_bare.to_owned(),
            server_first,
            expected_binding: [format!("{flag},{authzid},").as_bytes(), binding_data].concat(),
            nonce,
        };
        Ok(reply)
    }

    /// Handles client-final-message: checks channel-binding data, nonce and proof.
    pub fn client_final(&mut self, message: &[u8]) -> Result<ScramOutcome, ScramError> {
        let State::AwaitClientFinal {
            client_first_bare,
            server_first,
            expected_binding,
            nonce,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError("client-final-message out of order"));
        };
        let text = std::str::from_utf8(message).map_err(|_| ScramError("not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError("missing proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError("missing channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(expected_binding.as_slice()) {
            return Err(ScramError("channel binding does not match"));
        }
        let final_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError("missing nonce"))?;
        if final_nonce != nonce {
            return Err(ScramError("nonce does not match"));
        }
        let proof: [u8; KEY_LEN] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError("malformed proof"))?;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        // Without candidates, check against a key no proof can match, so an unknown
        // identity costs the same work as a wrong key.
        let unmatchable = [ScramKeys {
            stored_key: [0; KEY_LEN],
            server_key: [0; KEY_LEN],
        }];
        let (candidates, real) = if self.candidates.is_empty() {
            (&unmatchable[..], false)
        } else {
            (&self.candidates[..], true)
        };
        for (key_index, keys) in candidates.iter().enumerate() {
            let signature = hmac(&keys.stored_key, auth_message.as_bytes());
            let mut client_key = proof;
            client_key
                .iter_mut()
                .zip(signature)
                .for_each(|(k, s)| *k ^= s);
            if constant_time_eq(&sha256(&client_key), &keys.stored_key) && real {
                let server_signature = hmac(&keys.server_key, auth_message.as_bytes());
                return Ok(ScramOutcome::Authenticated {
                    key_index,
                    server_final: format!("v={}", B64.encode(server_signature)).into_bytes(),
                });
            }
        }
        Ok(ScramOutcome::Rejected)
    }
}

/// Salt to show for a user with no keys: derived from a per-process secret and the user
/// name, so repeated attempts see the same salt and cannot tell "unknown" from "wrong key"
/// (PostgreSQL does the same with its mock authentication).
pub fn mock_salt(server_secret: &[u8], user: &str) -> Vec<u8> {
    hmac(server_secret, user.as_bytes())[..16].to_vec()
}

/// Splits a SASLInitialResponse body into mechanism and client-first-message.
pub fn parse_initial_response(body: &[u8]) -> Result<(&str, &[u8]), crate::WireError> {
    let mut rest = body;
    let mechanism = crate::frame::take_cstr(&mut rest)?;
    let len = crate::frame::take_i32(&mut rest)?;
    let data = usize::try_from(len)
        .ok()
        .and_then(|len| rest.get(..len))
        .filter(|data| data.len() == rest.len())
        .ok_or(crate::WireError::Malformed {
            what: "SASLInitialResponse",
        })?;
    Ok((mechanism, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    #[test]
    fn verifier_matches_postgres_protocol_for_the_same_salt() {
        let reference = postgres_protocol::password::scram_sha_256(b"s3cret-Key");
        let parsed = Verifier::parse(&reference).unwrap();
        let ours = Verifier::generate(b"s3cret-Key", &parsed.salt, parsed.iterations);
        assert_eq!(ours.encode(), reference);
    }

    fn run_exchange(server_secrets: &[&[u8]], client_secret: &[u8]) -> (ScramOutcome, ScramSha256) {
        let salt = b"0123456789abcdef".to_vec();
        let keys = server_secrets
            .iter()
            .map(|s| Verifier::generate(s, &salt, 4096).keys)
            .collect();
        let mut server = ScramServer::new(salt, 4096, keys, "servernonce".to_owned());
        let mut client = ScramSha256::new(client_secret, ChannelBinding::unsupported());
        let server_first = server
            .client_first(SCRAM_SHA_256, client.message())
            .unwrap();
        client.update(&server_first).unwrap();
        let outcome = server.client_final(client.message()).unwrap();
        (outcome, client)
    }

    #[test]
    fn real_client_authenticates_against_any_of_several_keys() {
        let (outcome, mut client) = run_exchange(&[b"first-key", b"second-key"], b"second-key");
        let ScramOutcome::Authenticated {
            key_index,
            server_final,
        } = outcome
        else {
            panic!("rejected a correct key")
        };
        assert_eq!(key_index, 1);
        // The client checks our server signature.
        client.finish(&server_final).unwrap();
    }

    #[test]
    fn channel_bound_exchange_with_the_real_client() {
        let salt = b"0123456789abcdef".to_vec();
        let keys = vec![Verifier::generate(b"k", &salt, 4096).keys];
        let binding = vec![7u8; 32];
        let new_server = || {
            ScramServer::new(salt.clone(), 4096, keys.clone(), "sn".into())
                .with_channel_binding(binding.clone())
        };
        let mut server = new_server();
        assert_eq!(server.mechanisms(), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
        let mut client =
            ScramSha256::new(b"k", ChannelBinding::tls_server_end_point(binding.clone()));
        let first = server
            .client_first(SCRAM_SHA_256_PLUS, client.message())
            .unwrap();
        client.update(&first).unwrap();
        let outcome = server.client_final(client.message()).unwrap();
        assert!(matches!(outcome, ScramOutcome::Authenticated { .. }));

        // Bound to other data (a man in the middle with its own certificate): refused.
        let mut server = new_server();
        let mut client = ScramSha256::new(b"k", ChannelBinding::tls_server_end_point(vec![8; 32]));
        let first = server
            .client_first(SCRAM_SHA_256_PLUS, client.message())
            .unwrap();
        client.update(&first).unwrap();
        assert!(server.client_final(client.message()).is_err());

        // 'y' (client could bind, thinks we cannot) while we offer PLUS: a downgrade.
        let mut server = new_server();
        let client = ScramSha256::new(b"k", ChannelBinding::unrequested());
        assert!(server
            .client_first(SCRAM_SHA_256, client.message())
            .is_err());
        // Plain SCRAM without binding ('n') stays allowed over TLS.
        let mut server = new_server();
        let client = ScramSha256::new(b"k", ChannelBinding::unsupported());
        assert!(server.client_first(SCRAM_SHA_256, client.message()).is_ok());
        // PLUS never offered on a plain connection.
        let mut plain = ScramServer::new(salt.clone(), 4096, keys.clone(), "sn".into());
        let client = ScramSha256::new(b"k", ChannelBinding::tls_server_end_point(binding));
        assert!(plain
            .client_first(SCRAM_SHA_256_PLUS, client.message())
            .is_err());
    }

    #[test]
    fn wrong_key_and_unknown_identity_are_rejected() {
        assert_eq!(
            run_exchange(&[b"right"], b"wrong").0,
            ScramOutcome::Rejected
        );
        assert_eq!(run_exchange(&[], b"anything").0, ScramOutcome::Rejected);
    }

    #[test]
    fn initial_response_and_mock_salt() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(b"n,,n=");
        assert_eq!(
            parse_initial_response(&body).unwrap(),
            ("SCRAM-SHA-256", &b"n,,n="[..])
        );
        body.push(b'x');
        assert!(parse_initial_response(&body).is_err());
        assert_eq!(mock_salt(b"k", "alice"), mock_salt(b"k", "alice"));
        assert_ne!(mock_salt(b"k", "alice"), mock_salt(b"k", "bob"));
    }

    #[test]
    fn malformed_messages_are_protocol_errors() {
        let mut server = ScramServer::new(vec![1; 16], 4096, vec![], "n".into());
        assert!(server
            .client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc")
            .is_err());
        let mut server = ScramServer::new(vec![1; 16], 4096, vec![], "n".into());
        assert!(server.client_first(SCRAM_SHA_256, b"garbage").is_err());
        let mut server = ScramServer::new(vec![1; 16], 4096, vec![], "n".into());
        assert!(server
            .client_first(SCRAM_SHA_256, b"n,a=admin,n=,r=abc")
            .is_err());
        let mut server = ScramServer::new(vec![1; 16], 4096, vec![], "n".into());
        server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
        assert!(server.client_final(b"c=biws,r=WRONG,p=AAAA").is_err());
        // Out of order after failure.
        assert!(server.client_final(b"c=biws,r=abcn,p=AAAA").is_err());
        assert!(Verifier::parse("md5abc").is_err());
        assert!(Verifier::parse("SCRAM-SHA-256$x:y$z").is_err());
    }
}
