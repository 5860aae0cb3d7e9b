//! The upstream leg's login: connect to the target, start up as the service's user and
//! database with the client's other parameters, and answer whatever authentication the
//! server asks for (SCRAM-SHA-256, MD5 or none) with the injected password.

use bytes::{Bytes, BytesMut};
use postern_model::{SslMode, UpstreamRoute};
use postern_wire::backend::{parse_auth_request, parse_error_fields, AuthRequest};
use postern_wire::scram::SCRAM_SHA_256;
use postern_wire::StartupParams;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::UpstreamError;
use crate::io::{read_message, ReadError};

/// A logged-in upstream connection and what it said before its first ReadyForQuery,
/// which is replayed to every client that gets the connection.
pub(crate) struct UpstreamConnection {
    pub stream: TcpStream,
    /// ParameterStatus and NoticeResponse messages, raw, to pass to the client.
    pub greeting: Bytes,
    /// The upstream's BackendKeyData body, for cancel requests; never sent to the client.
    pub key_data: Option<Bytes>,
    /// The ReadyForQuery message, raw.
    pub ready: Bytes,
    pub logged_in_at: Instant,
}

/// Cap on any message during upstream login (ParameterStatus, notices, auth requests are
/// all small); a target that is not PostgreSQL cannot make us allocate more.
const LOGIN_MESSAGE_LIMIT: usize = 64 * 1024;

/// Startup parameters the gateway decides itself rather than forwarding.
const NOT_FORWARDED: &[&str] = &["user", "database", "replication"];

fn put_raw(out: &mut BytesMut, tag: u8, body: &[u8]) {
    postern_wire::backend::put_message(out, tag, |b| b.extend_from_slice(body));
}

/// The startup parameters sent upstream besides user and database, in the client's order.
pub(crate) fn forwarded_params(client_params: &StartupParams) -> Vec<(String, String)> {
    client_params
        .iter()
        .filter(|(k, _)| !NOT_FORWARDED.contains(k) && !k.starts_with("_pq_."))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Logs in upstream; also returns bytes the upstream sent after its ReadyForQuery. Not
/// cancel-safe (a half-done login is abandoned, which is fine: the caller drops the
/// connection).
pub(crate) async fn login(
    route: &UpstreamRoute,
    forwarded: &[(String, String)],
) -> Result<(UpstreamConnection, BytesMut), UpstreamError> {
    match route.ssl_mode {
        SslMode::Disable | SslMode::Prefer => {}
        SslMode::Require => return Err(UpstreamError::TlsUnsupported("require")),
        SslMode::VerifyCa => return Err(UpstreamError::TlsUnsupported("verify-ca")),
        SslMode::VerifyFull => return Err(UpstreamError::TlsUnsupported("verify-full")),
    }
    let mut stream =
        TcpStream::connect(&route.address)
            .await
            .map_err(|source| UpstreamError::Connect {
                address: route.address.clone(),
                source,
            })?;
    // Small protocol messages must not wait for Nagle.
    stream.set_nodelay(true).map_err(UpstreamError::Lost)?;

    let params = [
        ("user", route.user.as_str()),
        ("database", route.database.as_str()),
    ]
    .into_iter()
    .chain(forwarded.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut out = BytesMut::new();
    frontend::startup_message(params, &mut out).map_err(UpstreamError::Lost)?;
    stream.write_all(&out).await.map_err(UpstreamError::Lost)?;

    let password = || {
        route
            .password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or(UpstreamError::MissingPassword)
    };
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut greeting = BytesMut::new();
    let mut key_data = None;
    let mut scram: Option<ScramSha256> = None;
    loop {
        let message = match read_message(&mut stream, &mut buf, LOGIN_MESSAGE_LIMIT).await {
            Ok(m) => m,
            Err(ReadError::Eof) => return Err(UpstreamError::Closed),
            Err(ReadError::Io(e)) => return Err(UpstreamError::Lost(e)),
            Err(ReadError::Wire(e)) => return Err(UpstreamError::Protocol(e)),
        };
        out.clear();
        match message.tag {
            b'R' => match parse_auth_request(&message.body).map_err(UpstreamError::Protocol)? {
                AuthRequest::Ok => {}
                AuthRequest::Md5Password { salt } => {
                    let hash = md5_hash(route.user.as_bytes(), password()?, salt);
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(UpstreamError::Lost)?;
                }
                AuthRequest::Sasl { mechanisms } => {
                    if !mechanisms.contains(&SCRAM_SHA_256) {
                        return Err(UpstreamError::UnsupportedAuth(format!(
                            "SASL mechanisms {mechanisms:?}"
                        )));
                    }
                    let client = ScramSha256::new(password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), &mut out)
                        .map_err(UpstreamError::Lost)?;
                    scram = Some(client);
                }
                AuthRequest::SaslContinue(data) => {
                    let mut client = scram.take().ok_or(UpstreamError::UnsupportedAuth(
                        "SASL continuation without a SASL exchange".into(),
                    ))?;
                    // The key derivation (PBKDF2, with an iteration count the upstream
                    // picks) runs off the async executor.
                    let data = data.to_vec();
                    let client =
                        tokio::task::spawn_blocking(move || client.update(&data).map(|()| client))
                            .await
                            .map_err(|e| UpstreamError::Scram(std::io::Error::other(e)))?
                            .map_err(UpstreamError::Scram)?;
                    frontend::sasl_response(client.message(), &mut out)
                        .map_err(UpstreamError::Lost)?;
                    scram = Some(client);
                }
                AuthRequest::SaslFinal(data) => {
                    // Verifies the server's signature: the upstream proves it knows the
                    // password too.
                    let client = scram.as_mut().ok_or(UpstreamError::UnsupportedAuth(
                        "SASL final without a SASL exchange".into(),
                    ))?;
                    client.finish(data).map_err(UpstreamError::Scram)?;
                }
                // Sending a password in clear over an unencrypted connection would expose
                // it to the network; refuse rather than leak.
                AuthRequest::CleartextPassword => {
                    return Err(UpstreamError::UnsupportedAuth(
                        "a cleartext password over an unencrypted connection".into(),
                    ))
                }
                AuthRequest::Other(code) => {
                    return Err(UpstreamError::UnsupportedAuth(format!(
                        "authentication method {code}"
                    )))
                }
            },
            b'E' => {
                let fields = parse_error_fields(&message.body).map_err(UpstreamError::Protocol)?;
                return Err(UpstreamError::Refused {
                    sqlstate: fields.code,
                    message: fields.message,
                });
            }
            b'K' => key_data = Some(message.body),
            b'S' | b'N' => put_raw(&mut greeting, message.tag, &message.body),
            b'Z' => {
                let mut ready = BytesMut::new();
                put_raw(&mut ready, message.tag, &message.body);
                let connection = UpstreamConnection {
                    stream,
                    greeting: greeting.freeze(),
                    key_data,
                    ready: ready.freeze(),
                    logged_in_at: Instant::now(),
                };
                return Ok((connection, buf));
            }
            // NegotiateProtocolVersion cannot come (we ask for 3.0 without options);
            // anything else during login is a protocol violation.
            other => {
                return Err(UpstreamError::Protocol(
                    postern_wire::WireError::Unexpected {
                        tag: char::from(other),
                        phase: "upstream login",
                    },
                ))
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(UpstreamError::Lost)?;
        }
    }
}
