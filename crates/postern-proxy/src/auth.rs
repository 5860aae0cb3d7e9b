//! The authentication phase: an identity proves itself by client certificate, by an
//! access token as a cleartext password (only over TLS, or loopback when configured), or
//! by SCRAM-SHA-256(-PLUS) against its API keys' verifiers
//! (<https://datatracker.ietf.org/doc/html/rfc7677>, channel binding per RFC 5929).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::BytesMut;
use postern_model::{
    AuthProviders, IdentityCredentials, ProviderCredential, ProviderVerdict, QualifiedName,
};
use postern_wire::backend;
use postern_wire::scram::{
    mock_salt, parse_initial_response, ScramKeys, ScramOutcome, ScramServer, Verifier,
    DEFAULT_ITERATIONS,
};
use postern_wire::{WireError, MAX_AUTH_MESSAGE};
use rand::Rng;
use tracing::{debug, warn};

use crate::error::SessionError;
use crate::handshake::TlsFacts;
use crate::io::{read_message, send, ReadError};
use crate::session::Peer;
use crate::stream::ClientStream;
use crate::{Gateway, TokenPassword};

/// How the identity may log in; `None` when it does not exist.
async fn identity_credentials(
    gateway: &Gateway,
    identity: &QualifiedName,
) -> Result<Option<IdentityCredentials>, SessionError> {
    let directory = gateway.directory.clone();
    let who = identity.clone();
    tokio::task::spawn_blocking(move || directory.identity_credentials(&who))
        .await
        .map_err(|e| SessionError::Internal(e.to_string()))?
        .map_err(SessionError::from)
}

/// The identity's SCRAM parameters: its keys' shared salt, or a stable fake one when it
/// has no usable key, so the exchange looks the same either way.
fn scram_material(
    gateway: &Gateway,
    identity: &QualifiedName,
    verifiers: &[String],
) -> (Vec<u8>, u32, Vec<ScramKeys>) {
    let parsed: Vec<Verifier> = verifiers
        .iter()
        .filter_map(|text| match Verifier::parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(identity = %identity, error = %e, "skipping unreadable API key verifier");
                None
            }
        })
        .collect();
    match parsed.first() {
        Some(first) => {
            let (salt, iterations) = (first.salt.clone(), first.iterations);
            let keys = parsed
                .into_iter()
                .filter(|v| v.salt == salt && v.iterations == iterations)
                .map(|v| v.keys)
                .collect();
            (salt, iterations, keys)
        }
        None => (
            mock_salt(&gateway.mock_secret, &identity.to_string()),
            DEFAULT_ITERATIONS,
            Vec::new(),
        ),
    }
}

/// A login that succeeded.
#[derive(Default)]
pub(crate) struct Authenticated {
    /// The server-final-message for AuthenticationSASLFinal, when SCRAM was used.
    pub server_final: Option<Vec<u8>>,
    /// Groups an auth-provider plugin read from the credential.
    pub credential_groups: Vec<String>,
}

/// Authenticates the identity: by its client certificate when the TLS handshake
/// presented a verified one with the identity's common name; by a cleartext password
/// when the identity has no API keys and the connection may carry one (an access token
/// of the gateway, or a credential the service's auth-provider plugins accept); else by
/// SCRAM against its API keys. `out` holds messages to send first.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn authenticate(
    gateway: &Gateway,
    client: &mut ClientStream,
    pending: &mut BytesMut,
    out: &mut BytesMut,
    identity: &QualifiedName,
    service: &QualifiedName,
    user: &str,
    tls: TlsFacts,
    peer: &Peer,
) -> Result<Authenticated, SessionError> {
    let credentials = identity_credentials(gateway, identity)
        .await?
        .unwrap_or_default();
    if let (Some(presented), Some(expected)) = (
        tls.client_common_name.as_deref(),
        credentials.certificate_common_name.as_deref(),
    ) {
        if presented == expected {
            debug!(identity = %identity, "authenticated by client certificate");
            return Ok(Authenticated::default());
        }
    }
    let providers = gateway.auth_providers.get();
    // A verified certificate the identity does not name is offered to the service's
    // auth providers; one that is none of theirs leaves the other ways to log in.
    if let (Some(certificate), Some(providers)) = (&tls.client_certificate, providers) {
        let credential = ProviderCredential::Certificate(certificate);
        let asked = ProvidersAsked {
            providers: providers.as_ref(),
            service,
            identity,
            peer,
            tls: true,
        };
        if let Some(answer) = asked.decide(credential, user).await {
            return answer;
        }
    }
    let token_channel = match gateway.settings().token_password {
        TokenPassword::Off => false,
        TokenPassword::Tls => client.is_tls(),
        TokenPassword::TlsOrLoopback => client.is_tls() || peer.address.ip().is_loopback(),
    };
    // Unknown identities are asked for a token as well, so the method asked for does
    // not tell who exists (it does tell that an identity has API keys).
    if token_channel
        && credentials.verifiers.is_empty()
        && (gateway.tokens.is_some() || providers.is_some())
    {
        let password = read_cleartext_password(client, pending, out).await?;
        let mut ours = false;
        if let Some(tokens) = &gateway.tokens {
            let (tokens, who, token) = (tokens.clone(), identity.clone(), password.clone());
            match tokio::task::spawn_blocking(move || {
                tokens
                    .verify(&token, &who)
                    .map_err(|rejected| (rejected, tokens.issued_here(&token)))
            })
            .await
            .map_err(|e| SessionError::Internal(e.to_string()))?
            {
                Ok(()) => {
                    debug!(identity = %identity, "authenticated by access token");
                    return Ok(Authenticated::default());
                }
                Err((rejected, issued_here)) => {
                    debug!(identity = %identity, reason = %rejected, "access token refused");
                    ours = issued_here;
                }
            }
        }
        // The gateway's own tokens (expired, revoked, another identity's) are never
        // shown to a plugin.
        if let Some(providers) = providers.filter(|_| !ours) {
            let asked = ProvidersAsked {
                providers: providers.as_ref(),
                service,
                identity,
                peer,
                tls: client.is_tls(),
            };
            if let Some(answer) = asked
                .decide(ProviderCredential::Password(&password), user)
                .await
            {
                return answer;
            }
        }
        return Err(SessionError::AuthFailed {
            user: user.to_owned(),
        });
    }
    let (salt, iterations, keys) = scram_material(gateway, identity, &credentials.verifiers);
    let mut nonce = [0u8; 18];
    rand::rng().fill_bytes(&mut nonce);
    let mut scram = ScramServer::new(salt, iterations, keys, B64.encode(nonce));
    if let Some(data) = tls.channel_binding {
        scram = scram.with_channel_binding(data);
    }

    backend::authentication_sasl(out, scram.mechanisms());
    send(client, out).await?;

    let initial = read_password_message(client, pending).await?;
    let (mechanism, client_first) = parse_initial_response(&initial)?;
    let server_first = scram
        .client_first(mechanism, client_first)
        .map_err(scram_protocol_error)?;
    backend::authentication_sasl_continue(out, &server_first);
    send(client, out).await?;

    let client_final = read_password_message(client, pending).await?;
    match scram
        .client_final(&client_final)
        .map_err(scram_protocol_error)?
    {
        ScramOutcome::Authenticated { server_final, .. } => Ok(Authenticated {
            server_final: Some(server_final),
            credential_groups: Vec::new(),
        }),
        ScramOutcome::Rejected => Err(SessionError::AuthFailed {
            user: user.to_owned(),
        }),
    }
}

/// A service's auth providers, about to be asked about one client's credential.
struct ProvidersAsked<'a> {
    providers: &'a dyn AuthProviders,
    service: &'a QualifiedName,
    identity: &'a QualifiedName,
    peer: &'a Peer,
    tls: bool,
}

impl ProvidersAsked<'_> {
    /// The login's outcome when a provider decided: in (with the credential's groups)
    /// or refused; `None` when the credential is none of theirs.
    async fn decide(
        &self,
        credential: ProviderCredential<'_>,
        user: &str,
    ) -> Option<Result<Authenticated, SessionError>> {
        let facts = postern_model::ClientFacts {
            address: self.peer.address.to_string(),
            tls: self.tls,
            ..Default::default()
        };
        let identity = self.identity;
        match self
            .providers
            .authenticate(self.service, identity, &facts, credential)
            .await
        {
            ProviderVerdict::Authenticated { groups } => {
                debug!(identity = %identity, "authenticated by an auth-provider plugin");
                Some(Ok(Authenticated {
                    server_final: None,
                    credential_groups: groups,
                }))
            }
            ProviderVerdict::Rejected(reason) => {
                debug!(identity = %identity, %reason, "an auth-provider plugin refused the login");
                Some(Err(SessionError::AuthFailed {
                    user: user.to_owned(),
                }))
            }
            ProviderVerdict::NotApplicable => None,
        }
    }
}

/// Asks for a cleartext password and reads it.
async fn read_cleartext_password(
    client: &mut ClientStream,
    pending: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<String, SessionError> {
    backend::authentication_cleartext_password(out);
    send(client, out).await?;
    let message = read_password_message(client, pending).await?;
    // PasswordMessage: the password as a C string.
    let password = message
        .strip_suffix(b"\0")
        .and_then(|text| std::str::from_utf8(text).ok())
        .ok_or(WireError::Malformed {
            what: "password message",
        })?;
    Ok(password.to_owned())
}

fn scram_protocol_error(e: postern_wire::scram::ScramError) -> SessionError {
    debug!(error = %e, "SCRAM exchange rejected");
    WireError::Malformed {
        what: "SCRAM message",
    }
    .into()
}

/// Reads one 'p' message (SASLInitialResponse / SASLResponse) during authentication.
async fn read_password_message(
    client: &mut ClientStream,
    pending: &mut BytesMut,
) -> Result<bytes::Bytes, SessionError> {
    match read_message(client, pending, MAX_AUTH_MESSAGE).await {
        Ok(m) if m.tag == postern_wire::tags::frontend::PASSWORD => Ok(m.body),
        Ok(m) => Err(WireError::Unexpected {
            tag: char::from(m.tag),
            phase: "authentication",
        }
        .into()),
        Err(ReadError::Eof) => Err(SessionError::ClientGone),
        Err(ReadError::Io(e)) => Err(SessionError::ClientIo(e)),
        Err(ReadError::Wire(e)) => Err(e.into()),
    }
}
