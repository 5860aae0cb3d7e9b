//! The untagged first packet of a connection: StartupMessage, SSLRequest, GSSENCRequest and
//! CancelRequest. See <https://www.postgresql.org/docs/15/protocol-message-formats.html>.

use bytes::{Buf, BytesMut};

use crate::frame::{take_cstr, take_i32};
use crate::WireError;

const SSL_REQUEST_CODE: i32 = 80_877_103;
const GSSENC_REQUEST_CODE: i32 = 80_877_104;
const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// What a client asks for in its first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    SslRequest,
    GssEncRequest,
    Cancel {
        process_id: i32,
        secret_key: Vec<u8>,
    },
    /// Protocol 3.`minor_version` with its parameters.
    Startup {
        minor_version: u16,
        params: StartupParams,
    },
}

/// Startup parameters in the order the client sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParams(Vec<(String, String)>);

impl StartupParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Protocol options (`_pq_.*`) this gateway does not implement; they are named in a
    /// NegotiateProtocolVersion reply, as PostgreSQL does.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

impl FromIterator<(String, String)> for StartupParams {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        StartupParams(iter.into_iter().collect())
    }
}

/// Takes one startup-phase packet off the front of `buf`, or `None` if more bytes are
/// needed. `limit` bounds the whole packet, length word included.
pub fn try_take_startup(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<StartupRequest>, WireError> {
    let Some(len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(*len_bytes);
    if len < 8 {
        return Err(WireError::LengthTooSmall {
            len: i64::from(len),
            min: 8,
        });
    }
    let len = usize::try_from(len).map_err(|_| WireError::malformed("startup length"))?;
    if len > limit {
        return Err(WireError::StartupTooLong { len, limit });
    }
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let packet = buf.split_to(len);
    let mut body = &packet[4..];
    let code = take_i32(&mut body)?;
    let request = match code {
        SSL_REQUEST_CODE if body.is_empty() => StartupRequest::SslRequest,
        GSSENC_REQUEST_CODE if body.is_empty() => StartupRequest::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            let process_id = take_i32(&mut body)?;
            // Protocol 3.2 allows keys of up to 256 bytes; 3.0 uses four.
            if body.len() < 4 || body.len() > 256 {
                return Err(WireError::malformed("cancel request key"));
            }
            StartupRequest::Cancel {
                process_id,
                secret_key: body.to_vec(),
            }
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            return Err(WireError::malformed("encryption request"))
        }
        _ => {
            let major = u16::try_from(code >> 16).unwrap_or(0);
            let minor = u16::try_from(code & 0xffff).unwrap_or(0);
            if major != 3 {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            StartupRequest::Startup {
                minor_version: minor,
                params: parse_params(body)?,
            }
        }
    };
    Ok(Some(request))
}

fn parse_params(mut body: &[u8]) -> Result<StartupParams, WireError> {
    let mut params = Vec::new();
    loop {
        let key = take_cstr(&mut body)?;
        if key.is_empty() {
            break;
        }
        let value = take_cstr(&mut body)?;
        params.push((key.to_owned(), value.to_owned()));
    }
    if body.has_remaining() {
        return Err(WireError::malformed(
            "startup packet (bytes after the terminator)",
        ));
    }
    Ok(StartupParams(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, rest: &[u8]) -> BytesMut {
        let mut v = Vec::new();
        v.extend_from_slice(&(rest.len() as i32 + 8).to_be_bytes());
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        BytesMut::from(&v[..])
    }

    #[test]
    fn parses_startup_parameters_in_order() {
        let mut buf = packet(
            196_608,
            b"user\0alice.team-a\0database\0orders\0options\0-c x=1\0\0",
        );
        let Some(StartupRequest::Startup {
            minor_version,
            params,
        }) = try_take_startup(&mut buf, 10_240).unwrap()
        else {
            panic!("not a startup message")
        };
        assert_eq!(minor_version, 0);
        assert_eq!(params.get("user"), Some("alice.team-a"));
        assert_eq!(params.get("options"), Some("-c x=1"));
        assert_eq!(params.iter().count(), 3);
        assert!(buf.is_empty());
    }

    #[test]
    fn recognises_ssl_gss_and_cancel() {
        let mut ssl = packet(SSL_REQUEST_CODE, b"");
        assert_eq!(
            try_take_startup(&mut ssl, 100).unwrap(),
            Some(StartupRequest::SslRequest)
        );
        let mut gss = packet(GSSENC_REQUEST_CODE, b"");
        assert_eq!(
            try_take_startup(&mut gss, 100).unwrap(),
            Some(StartupRequest::GssEncRequest)
        );
        let mut cancel = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 1, 2, 3, 4]);
        assert_eq!(
            try_take_startup(&mut cancel, 100).unwrap(),
            Some(StartupRequest::Cancel {
                process_id: 7,
                secret_key: vec![1, 2, 3, 4]
            })
        );
    }

    #[test]
    fn rejects_oversized_truncated_and_foreign_packets() {
        let mut big = packet(196_608, &[b'a'; 20_000]);
        assert!(matches!(
            try_take_startup(&mut big, 10_240),
            Err(WireError::StartupTooLong { .. })
        ));
        let mut unterminated = packet(196_608, b"user\0alice");
        assert!(try_take_startup(&mut unterminated, 100).is_err());
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(try_take_startup(&mut http, 10_240).is_err());
        let mut v2 = packet(2 << 16, b"\0");
        assert_eq!(
            try_take_startup(&mut v2, 100),
            Err(WireError::UnsupportedProtocol { major: 2, minor: 0 })
        );
    }

    #[test]
    fn waits_for_the_rest_of_a_packet() {
        let full = packet(196_608, b"user\0bob\0\0");
        let mut buf = BytesMut::from(&full[..6]);
        assert_eq!(try_take_startup(&mut buf, 100).unwrap(), None);
    }
}
