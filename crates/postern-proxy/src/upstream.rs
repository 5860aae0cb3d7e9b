//! The upstream leg's login: connect to the target (in TLS as its `sslMode` says), start
//! up as the service's user and database with the client's other parameters, and answer
//! whatever authentication the server asks for (SCRAM-SHA-256(-PLUS), MD5, a password
//! inside TLS, or none) with the injected password.

use bytes::{Bytes, BytesMut};
use postern_model::{SslMode, UpstreamRoute};
use postern_wire::backend::{
    parse_auth_request, parse_error_fields, parse_parameter_status, AuthRequest,
};
use postern_wire::certificate::tls_server_end_point;
use postern_wire::scram::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use postern_wire::tags::backend as be;
use postern_wire::StartupParams;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::UpstreamError;
use crate::io::{read_message, ReadError};
use crate::pool::OpenSlot;
use crate::stream::UpstreamStream;
use crate::upstream_tls::{client_config, server_name};

/// A logged-in upstream connection and what it said before its first ReadyForQuery,
/// which is replayed to every client that gets the connection.
pub(crate) struct UpstreamConnection {
    pub stream: UpstreamStream,
    /// ParameterStatus and NoticeResponse messages, raw, to pass to the client.
    pub greeting: Bytes,
    /// The ParameterStatus values among them, read once at login.
    pub reported: Vec<(String, String)>,
    /// The upstream's BackendKeyData body, for cancel requests; never sent to the client.
    pub key_data: Option<Bytes>,
    /// The ReadyForQuery message, raw.
    pub ready: Bytes,
    pub logged_in_at: Instant,
    /// Counts this connection against its target's bounds while it is open.
    _slot: OpenSlot,
}

/// Cap on any message during upstream login (ParameterStatus, notices, auth requests are
/// all small); a target that is not PostgreSQL cannot make us allocate more.
const LOGIN_MESSAGE_LIMIT: usize = 64 * 1024;

/// Startup parameters the gateway decides itself rather than forwarding.
const NOT_FORWARDED: &[&str] = &["user", "database", "replication"];

/// Parameters a session may change itself with SET, as pgbouncer tracks them (plus the
/// timeouts drivers such as pgx send at startup). They are applied after login or
/// checkout instead of in the startup packet, so a pool is never split by them.
const SESSION_SETTABLE: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "extra_float_digits",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

fn put_raw(out: &mut BytesMut, tag: u8, body: &[u8]) {
    postern_wire::backend::put_message(out, tag, |b| b.extend_from_slice(body));
}

/// The client's parameters the upstream gets, in the client's order: those for the
/// startup packet (besides user and database; part of the pool key), and those applied
/// with SET once the session is the client's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ForwardedParams {
    pub startup: Vec<(String, String)>,
    pub settable: Vec<(String, String)>,
}

impl ForwardedParams {
    pub fn of(client_params: &StartupParams) -> ForwardedParams {
        let (settable, startup) = client_params
            .iter()
            .filter(|(k, _)| !NOT_FORWARDED.contains(k) && !k.starts_with("_pq_."))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            // GUC names are case-insensitive.
            .partition(|(k, _)| SESSION_SETTABLE.iter().any(|s| s.eq_ignore_ascii_case(k)));
        ForwardedParams { startup, settable }
    }
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Asks the upstream for TLS as the target's `sslMode` says. Returns the stream and, for
/// TLS, the `tls-server-end-point` data of the server's certificate.
async fn negotiate_tls(
    mut tcp: TcpStream,
    route: &UpstreamRoute,
) -> Result<(UpstreamStream, Option<Vec<u8>>), UpstreamError> {
    if route.ssl_mode == SslMode::Disable {
        return Ok((UpstreamStream::Plain(tcp), None));
    }
    tcp.write_all(&SSL_REQUEST)
        .await
        .map_err(UpstreamError::Lost)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(UpstreamError::Lost)?;
    match (answer[0], route.ssl_mode) {
        (b'S', mode) => {
            let config = client_config(mode, route.ca_file.as_deref().map(std::path::Path::new))?;
            let name = server_name(&route.address)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(UpstreamError::Tls)?;
            let end_point = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| tls_server_end_point(leaf));
            Ok((UpstreamStream::Tls(Box::new(tls)), end_point))
        }
        (b'N', SslMode::Prefer) => Ok((UpstreamStream::Plain(tcp), None)),
        (b'N', _) => Err(UpstreamError::TlsRefused),
        _ => Err(UpstreamError::Protocol(
            postern_wire::WireError::Unexpected {
                tag: char::from(answer[0]),
                phase: "upstream TLS negotiation",
            },
        )),
    }
}

/// The SASL mechanism and channel binding to use: bound to the certificate when the
/// server offers PLUS over TLS, else plain SCRAM telling the server truthfully whether we
/// could have bound ('y') or not ('n').
fn choose_sasl(
    mechanisms: &[&str],
    tls: bool,
    end_point: Option<&Vec<u8>>,
) -> Result<(&'static str, ChannelBinding), UpstreamError> {
    let plus = mechanisms.contains(&SCRAM_SHA_256_PLUS);
    match end_point {
        Some(data) if plus => Ok((
            SCRAM_SHA_256_PLUS,
            ChannelBinding::tls_server_end_point(data.clone()),
        )),
        _ if !mechanisms.contains(&SCRAM_SHA_256) => Err(UpstreamError::UnsupportedAuth(format!(
            "SASL mechanisms {mechanisms:?}"
        ))),
        Some(_) if tls => Ok((SCRAM_SHA_256, ChannelBinding::unrequested())),
        _ => Ok((SCRAM_SHA_256, ChannelBinding::unsupported())),
    }
}

/// Logs in upstream; also returns bytes the upstream sent after its ReadyForQuery. Not
/// cancel-safe (a half-done login is abandoned, which is fine: the caller drops the
/// connection).
pub(crate) async fn login(
    route: &UpstreamRoute,
    startup_params: &[(String, String)],
    slot: OpenSlot,
    keepalive: Option<std::time::Duration>,
) -> Result<(UpstreamConnection, BytesMut), UpstreamError> {
    let tcp =
        TcpStream::connect(&route.address)
            .await
            .map_err(|source| UpstreamError::Connect {
                address: route.address.clone(),
                source,
            })?;
    crate::io::tune_socket(&tcp, keepalive);
    let (mut stream, end_point) = negotiate_tls(tcp, route).await?;
    let tls = matches!(stream, UpstreamStream::Tls(_));

    let params = [
        ("user", route.user.as_str()),
        ("database", route.database.as_str()),
    ]
    .into_iter()
    .chain(startup_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut out = BytesMut::new();
    frontend::startup_message(params, &mut out).map_err(UpstreamError::Lost)?;
    send(&mut stream, &out).await?;

    let password = || {
        route
            .password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or(UpstreamError::MissingPassword)
    };
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut greeting = BytesMut::new();
    let mut reported = Vec::new();
    let mut key_data = None;
    let mut scram: Option<ScramSha256> = None;
    let mut scram_finished = false;
    let verified = matches!(route.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull);
    loop {
        let message = match read_message(&mut stream, &mut buf, LOGIN_MESSAGE_LIMIT).await {
            Ok(m) => m,
            Err(ReadError::Eof) => return Err(UpstreamError::Closed),
            Err(ReadError::Io(e)) => return Err(UpstreamError::Lost(e)),
            Err(ReadError::Wire(e)) => return Err(UpstreamError::Protocol(e)),
        };
        out.clear();
        match message.tag {
            be::AUTHENTICATION => match parse_auth_request(&message.body).map_err(UpstreamError::Protocol)? {
                // A server that started SCRAM must finish it (proving it knows the
                // password); an early "ok" is what an impostor would send.
                AuthRequest::Ok if scram.is_some() && !scram_finished => {
                    return Err(UpstreamError::UnsupportedAuth(
                        "AuthenticationOk before the SCRAM exchange finished".into(),
                    ))
                }
                AuthRequest::Ok => {}
                AuthRequest::Md5Password { salt } => {
                    let hash = md5_hash(route.user.as_bytes(), password()?, salt);
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(UpstreamError::Lost)?;
                }
                AuthRequest::Sasl { mechanisms } => {
                    let (mechanism, binding) = choose_sasl(&mechanisms, tls, end_point.as_ref())?;
                    let client = ScramSha256::new(password()?, binding);
                    frontend::sasl_initial_response(mechanism, client.message(), &mut out)
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
                    scram_finished = true;
                }
                // Only inside TLS that authenticated the server: otherwise the password
                // could go to whoever sits in the middle.
                AuthRequest::CleartextPassword if tls && verified => {
                    frontend::password_message(password()?, &mut out)
                        .map_err(UpstreamError::Lost)?;
                }
                AuthRequest::CleartextPassword => {
                    return Err(UpstreamError::UnsupportedAuth(
                        "a cleartext password without verified TLS (use sslMode verify-ca or verify-full)".into(),
                    ))
                }
                AuthRequest::Other(code) => {
                    return Err(UpstreamError::UnsupportedAuth(format!(
                        "authentication method {code}"
                    )))
                }
            },
            be::ERROR_RESPONSE => {
                let fields = parse_error_fields(&message.body).map_err(UpstreamError::Protocol)?;
                return Err(UpstreamError::Refused {
                    sqlstate: fields.code,
                    message: fields.message,
                });
            }
            be::BACKEND_KEY_DATA => key_data = Some(message.body),
            be::PARAMETER_STATUS => {
                if let Ok((name, value)) = parse_parameter_status(&message.body) {
                    reported.push((name.to_owned(), value.to_owned()));
                }
                put_raw(&mut greeting, message.tag, &message.body);
            }
            be::NOTICE_RESPONSE => put_raw(&mut greeting, message.tag, &message.body),
            be::READY_FOR_QUERY => {
                let mut ready = BytesMut::new();
                put_raw(&mut ready, message.tag, &message.body);
                let connection = UpstreamConnection {
                    stream,
                    greeting: greeting.freeze(),
                    reported,
                    key_data,
                    ready: ready.freeze(),
                    logged_in_at: Instant::now(),
                    _slot: slot,
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
            send(&mut stream, &out).await?;
        }
    }
}

async fn send(stream: &mut UpstreamStream, bytes: &[u8]) -> Result<(), UpstreamError> {
    stream.write_all(bytes).await.map_err(UpstreamError::Lost)?;
    stream.flush().await.map_err(UpstreamError::Lost)
}
