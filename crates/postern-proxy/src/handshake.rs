//! The first phase of a session: the startup packet, with SSL and GSS encryption
//! requests answered (TLS when the gateway has a certificate) and cancel requests passed
//! on, and the identity and service names the client wrote, resolved.
//! See <https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-FLOW-START-UP>.

use bytes::BytesMut;
use postern_model::{QualifiedName, DEFAULT_NAMESPACE};
use postern_wire::backend::ENCRYPTION_DECLINED;
use postern_wire::certificate::subject_common_name;
use postern_wire::startup::try_take_startup;
use postern_wire::{StartupParams, StartupRequest, WireError};

use crate::cancel;
use crate::error::SessionError;
use crate::io::{read_more, send};
use crate::stream::ClientStream;
use crate::Gateway;

/// What the first packets settle: protocol version, parameters, and the channel-binding
/// data when the client switched to TLS.
pub(crate) struct Startup {
    pub minor_version: u16,
    pub params: StartupParams,
    pub tls: TlsFacts,
}

/// What the TLS handshake established, if there was one.
#[derive(Default)]
pub(crate) struct TlsFacts {
    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS.
    pub channel_binding: Option<Vec<u8>>,
    /// Common name of a client certificate that the client CA verified.
    pub client_common_name: Option<String>,
    /// That certificate (DER), for auth-provider plugins.
    pub client_certificate: Option<Vec<u8>>,
}

/// Reads the startup packet. An SSLRequest is answered 'S' and the connection switches to
/// TLS when a certificate is configured, 'N' otherwise; a GSSENCRequest gets 'N'. `None`
/// after a CancelRequest, which is forwarded and ends the connection.
pub(crate) async fn read_startup(
    gateway: &Gateway,
    client: &mut ClientStream,
    pending: &mut BytesMut,
) -> Result<Option<Startup>, SessionError> {
    // One SSLRequest and one GSSENCRequest each (libpq may try GSS, then SSL), as
    // PostgreSQL allows; asking again for the same one is a protocol violation.
    let (mut ssl_answered, mut gss_declined) = (false, false);
    let mut facts = TlsFacts::default();
    loop {
        match try_take_startup(pending, gateway.settings().max_startup_packet)? {
            Some(request @ (StartupRequest::SslRequest | StartupRequest::GssEncRequest)) => {
                let answered = if request == StartupRequest::SslRequest {
                    &mut ssl_answered
                } else {
                    &mut gss_declined
                };
                // Nor may the client send more before it has our answer: bytes sent
                // ahead of a TLS handshake must never be taken as if they were inside it.
                if *answered || !pending.is_empty() {
                    return Err(WireError::Unexpected {
                        tag: '?',
                        phase: "encryption negotiation",
                    }
                    .into());
                }
                *answered = true;
                let tls = match (&request, &gateway.tls) {
                    (StartupRequest::SslRequest, Some(tls)) => Some(tls.current()),
                    _ => None,
                };
                let answer = if tls.is_some() {
                    b'S'
                } else {
                    ENCRYPTION_DECLINED
                };
                send(client, &mut BytesMut::from(&[answer][..])).await?;
                if let Some(tls) = tls {
                    let ClientStream::Plain(tcp) =
                        std::mem::replace(client, ClientStream::Upgrading)
                    else {
                        return Err(SessionError::ClientGone);
                    };
                    let stream = tls
                        .acceptor
                        .accept(tcp)
                        .await
                        .map_err(SessionError::TlsHandshake)?;
                    let leaf = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first());
                    facts = TlsFacts {
                        channel_binding: tls.end_point.clone(),
                        client_common_name: leaf.and_then(|leaf| subject_common_name(leaf)),
                        client_certificate: leaf.map(|leaf| leaf.as_ref().to_vec()),
                    };
                    *client = ClientStream::Tls(Box::new(stream));
                }
            }
            Some(StartupRequest::Cancel {
                process_id,
                secret_key,
            }) => {
                cancel::forward(&gateway.cancels, process_id, &secret_key).await;
                return Ok(None);
            }
            Some(StartupRequest::Startup {
                minor_version,
                params,
            }) => {
                return Ok(Some(Startup {
                    minor_version,
                    params,
                    tls: facts,
                }))
            }
            None => match read_more(client, pending).await {
                Ok(0) => return Err(SessionError::ClientGone),
                Ok(_) => {}
                Err(e) => return Err(SessionError::ClientIo(e)),
            },
        }
    }
}

/// Names as the client wrote them resolve with the other name's namespace when only one
/// is qualified (`user=alice.team-a dbname=orders` means `orders.team-a`), else `default`.
pub(crate) fn resolve_names(user: &str, dbname: &str) -> (QualifiedName, QualifiedName) {
    let hint = [user, dbname]
        .into_iter()
        .find(|n| QualifiedName::is_qualified(n))
        .map(|n| QualifiedName::parse(n, DEFAULT_NAMESPACE).namespace)
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    (
        QualifiedName::parse(user, &hint),
        QualifiedName::parse(dbname, &hint),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unqualified_names_borrow_the_other_namespace() {
        let (i, s) = resolve_names("alice.team-a", "orders");
        assert_eq!(
            (i.namespace.as_str(), s.namespace.as_str()),
            ("team-a", "team-a")
        );
        let (i, s) = resolve_names("alice", "orders.team-b");
        assert_eq!(
            (i.namespace.as_str(), s.namespace.as_str()),
            ("team-b", "team-b")
        );
        let (i, s) = resolve_names("alice", "orders");
        assert_eq!(
            (i.namespace.as_str(), s.namespace.as_str()),
            ("default", "default")
        );
    }
}
