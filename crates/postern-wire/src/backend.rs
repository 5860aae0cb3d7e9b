//! Encoders for the backend messages the gateway writes itself (authentication, errors,
//! key data, protocol negotiation). Everything else is relayed from the upstream as is.
//! See <https://www.postgresql.org/docs/15/protocol-message-formats.html>.

use bytes::{BufMut, BytesMut};

use crate::frame::{take_cstr, take_i32};
use crate::WireError;

/// Appends one tagged message to `out`; `body` writes the payload and the length is
/// filled in afterwards.
pub fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_i32(0);
    body(out);
    // A message we build is always far below 2 GiB; saturate rather than wrap if not.
    let len = i32::try_from(out.len() - len_at).unwrap_or(i32::MAX);
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT_PASSWORD: i32 = 3;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

pub fn authentication_ok(out: &mut BytesMut) {
    put_message(out, b'R', |b| b.put_i32(AUTH_OK));
}

/// AuthenticationCleartextPassword: the client answers with a PasswordMessage.
pub fn authentication_cleartext_password(out: &mut BytesMut) {
    put_message(out, b'R', |b| b.put_i32(AUTH_CLEARTEXT_PASSWORD));
}

/// AuthenticationSASL offering the given mechanisms, most preferred first.
pub fn authentication_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    put_message(out, b'R', |b| {
        b.put_i32(AUTH_SASL);
        for m in mechanisms {
            put_cstr(b, m);
        }
        b.put_u8(0);
    });
}

pub fn authentication_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    put_message(out, b'R', |b| {
        b.put_i32(AUTH_SASL_CONTINUE);
        b.put_slice(data);
    });
}

pub fn authentication_sasl_final(out: &mut BytesMut, data: &[u8]) {
    put_message(out, b'R', |b| {
        b.put_i32(AUTH_SASL_FINAL);
        b.put_slice(data);
    });
}

pub fn backend_key_data(out: &mut BytesMut, process_id: i32, secret_key: i32) {
    put_message(out, b'K', |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// NegotiateProtocolVersion: the newest protocol version we speak for the client's major
/// version, and the `_pq_.` options we do not recognise. The docs call the first field
/// "newest minor version", but on the wire it is the whole version number,
/// `major << 16 | minor`, as PostgreSQL sends it and libpq reads it.
pub fn negotiate_protocol_version<'a>(
    out: &mut BytesMut,
    major: u16,
    minor: u16,
    unrecognised: impl ExactSizeIterator<Item = &'a str>,
) {
    put_message(out, b'v', |b| {
        b.put_i32(i32::from(major) << 16 | i32::from(minor));
        b.put_i32(i32::try_from(unrecognised.len()).unwrap_or(i32::MAX));
        for option in unrecognised {
            put_cstr(b, option);
        }
    });
}

/// Severity of an ErrorResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// ErrorResponse with severity, SQLSTATE, message and an optional detail.
pub fn error_response(
    out: &mut BytesMut,
    severity: Severity,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
) {
    put_message(out, b'E', |b| {
        for field in [b'S', b'V'] {
            b.put_u8(field);
            put_cstr(b, severity.as_str());
        }
        b.put_u8(b'C');
        put_cstr(b, sqlstate);
        b.put_u8(b'M');
        put_cstr(b, message);
        if let Some(detail) = detail {
            b.put_u8(b'D');
            put_cstr(b, detail);
        }
        b.put_u8(0);
    });
}

/// The single byte that declines an SSLRequest or GSSENCRequest.
pub const ENCRYPTION_DECLINED: u8 = b'N';

/// An authentication request from an upstream server ('R' message body).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<&'a str>,
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSSAPI, SSPI and anything newer.
    Other(i32),
}

pub fn parse_auth_request(body: &[u8]) -> Result<AuthRequest<'_>, WireError> {
    let mut rest = body;
    let code = take_i32(&mut rest)?;
    Ok(match code {
        AUTH_OK => AuthRequest::Ok,
        3 => AuthRequest::CleartextPassword,
        5 => AuthRequest::Md5Password {
            salt: *rest
                .first_chunk::<4>()
                .ok_or(WireError::Malformed { what: "MD5 salt" })?,
        },
        AUTH_SASL => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = take_cstr(&mut rest)?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism);
            }
            AuthRequest::Sasl { mechanisms }
        }
        AUTH_SASL_CONTINUE => AuthRequest::SaslContinue(rest),
        AUTH_SASL_FINAL => AuthRequest::SaslFinal(rest),
        other => AuthRequest::Other(other),
    })
}

/// A ParameterStatus message (`S`): a run-time parameter's current value.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    put_message(out, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// The name and value of a ParameterStatus body.
pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut rest = body;
    let name = take_cstr(&mut rest)?;
    let value = take_cstr(&mut rest)?;
    Ok((name, value))
}

/// The columns of a DataRow body as text (`None` for SQL NULL); every column must be
/// valid UTF-8, as text-format results are.
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&str>>, WireError> {
    let mut rest = body;
    let (count, tail) = rest
        .split_first_chunk::<2>()
        .ok_or(WireError::malformed("data row"))?;
    rest = tail;
    let count = u16::from_be_bytes(*count);
    let mut columns = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = take_i32(&mut rest)?;
        if len < 0 {
            columns.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| WireError::malformed("data row"))?;
        if rest.len() < len {
            return Err(WireError::malformed("data row"));
        }
        let (value, tail) = rest.split_at(len);
        rest = tail;
        columns.push(Some(
            std::str::from_utf8(value).map_err(|_| WireError::malformed("UTF-8 column"))?,
        ));
    }
    Ok(columns)
}

/// The fields of an ErrorResponse or NoticeResponse that the gateway acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields, WireError> {
    let mut fields = ErrorFields::default();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        rest = tail;
        let value = take_cstr(&mut rest)?;
        match field {
            b'V' => fields.severity = value.to_owned(),
            b'S' if fields.severity.is_empty() => fields.severity = value.to_owned(),
            b'C' => fields.code = value.to_owned(),
            b'M' => fields.message = value.to_owned(),
            _ => {}
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fallible_iterator::FallibleIterator;
    use postgres_protocol::message::backend::Message as ClientView;

    #[test]
    fn parameter_status_and_data_row_parse_what_postgres_sends() {
        let mut out = BytesMut::new();
        parameter_status(&mut out, "application_name", "job-7");
        let Some(ClientView::ParameterStatus(body)) = ClientView::parse(&mut out).unwrap() else {
            panic!("not a parameter status")
        };
        assert_eq!(body.name().unwrap(), "application_name");
        let mut encoded = BytesMut::new();
        parameter_status(&mut encoded, "TimeZone", "UTC");
        assert_eq!(
            parse_parameter_status(&encoded[5..]).unwrap(),
            ("TimeZone", "UTC")
        );
        assert!(parse_parameter_status(b"TimeZone\0UTC").is_err());

        // Two columns: "27" and NULL.
        let row = [0u8, 2, 0, 0, 0, 2, b'2', b'7', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse_data_row(&row).unwrap(), [Some("27"), None]);
        assert!(parse_data_row(&row[..7]).is_err(), "truncated column");
        assert!(parse_data_row(&[0u8]).is_err(), "no column count");
    }

    #[test]
    fn error_response_round_trips_through_the_client_parser() {
        let mut out = BytesMut::new();
        error_response(&mut out, Severity::Fatal, "28P01", "bad", Some("d"));
        let Some(ClientView::ErrorResponse(body)) = ClientView::parse(&mut out).unwrap() else {
            panic!("not an error response")
        };
        let fields: Vec<(u8, String)> = body
            .fields()
            .map(|f| {
                Ok((
                    f.type_(),
                    String::from_utf8_lossy(f.value_bytes()).into_owned(),
                ))
            })
            .collect()
            .unwrap();
        assert!(fields.contains(&(b'S', "FATAL".to_owned())));
        assert!(fields.contains(&(b'C', "28P01".to_owned())));
        assert!(fields.contains(&(b'M', "bad".to_owned())));
        assert!(fields.contains(&(b'D', "d".to_owned())));
        assert!(out.is_empty());
    }

    #[test]
    fn decodes_what_upstreams_send_during_authentication() {
        let mut out = BytesMut::new();
        authentication_sasl(&mut out, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
        assert_eq!(
            parse_auth_request(&out[5..]).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
            }
        );
        assert_eq!(
            parse_auth_request(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(),
            AuthRequest::Md5Password { salt: [1, 2, 3, 4] }
        );
        assert!(parse_auth_request(&[0, 0, 0, 5, 1]).is_err());
        let mut err = BytesMut::new();
        error_response(&mut err, Severity::Fatal, "28P01", "no", None);
        let fields = parse_error_fields(&err[5..]).unwrap();
        assert_eq!(
            (fields.severity.as_str(), fields.code.as_str()),
            ("FATAL", "28P01")
        );
    }

    #[test]
    fn sasl_offer_lists_mechanisms_then_terminator() {
        let mut out = BytesMut::new();
        authentication_sasl(&mut out, &["SCRAM-SHA-256"]);
        let Some(ClientView::AuthenticationSasl(body)) = ClientView::parse(&mut out).unwrap()
        else {
            panic!("not a SASL offer")
        };
        let mechanisms: Vec<String> = body
            .mechanisms()
            .map(|m| Ok(m.to_owned()))
            .collect()
            .unwrap();
        assert_eq!(mechanisms, ["SCRAM-SHA-256"]);
    }
}
