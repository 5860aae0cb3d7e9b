//! Decoders for the client messages the gateway inspects after login (Query, Parse, Bind,
//! Execute, Close, FunctionCall) and encoders for the few it writes upstream itself.
//! See <https://www.postgresql.org/docs/15/protocol-message-formats.html>.

use bytes::{BufMut, BytesMut};

use crate::backend::{put_cstr, put_message};
use crate::frame::{take_cstr, take_cstr_bytes, take_i32};
use crate::WireError;

/// Query ('Q'): the SQL text.
pub fn parse_query(body: &[u8]) -> Result<&str, WireError> {
    let mut rest = body;
    take_cstr(&mut rest)
}

/// Parse ('P'): statement name and the SQL text's bytes, not yet checked as UTF-8 (a
/// caller that holds the text the statement had before compares first: drivers parse
/// the same text again and again).
pub fn parse_parse_bytes(body: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let mut rest = body;
    let name = take_cstr(&mut rest)?;
    let query = take_cstr_bytes(&mut rest)?;
    Ok((name, query))
}

fn take_i16(buf: &mut &[u8]) -> Result<i16, WireError> {
    let (head, rest) = buf
        .split_first_chunk::<2>()
        .ok_or(WireError::malformed("int16"))?;
    *buf = rest;
    Ok(i16::from_be_bytes(*head))
}

fn count(value: i16) -> Result<usize, WireError> {
    usize::try_from(value).map_err(|_| WireError::malformed("negative count"))
}

/// One bind parameter: `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindParameter<'a> {
    pub binary: bool,
    pub value: Option<&'a [u8]>,
}

/// Bind ('B'): portal, statement and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    pub parameters: Vec<BindParameter<'a>>,
}

/// Bind's portal and statement names only: what watching a session needs of every Bind
/// (its parameters are read only for BIND events).
pub fn parse_bind_names(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut rest = body;
    let portal = take_cstr(&mut rest)?;
    Ok((portal, take_cstr(&mut rest)?))
}

pub fn parse_bind(body: &[u8]) -> Result<Bind<'_>, WireError> {
    let mut rest = body;
    let portal = take_cstr(&mut rest)?;
    let statement = take_cstr(&mut rest)?;
    let format_count = count(take_i16(&mut rest)?)?;
    let mut formats = Vec::with_capacity(format_count.min(rest.len() / 2));
    for _ in 0..format_count {
        formats.push(take_i16(&mut rest)? == 1);
    }
    let parameter_count = count(take_i16(&mut rest)?)?;
    let mut parameters = Vec::with_capacity(parameter_count.min(rest.len() / 4));
    for index in 0..parameter_count {
        // One format code applies to all parameters; none means text.
        let binary = match formats.len() {
            0 => false,
            1 => formats[0],
            _ => *formats
                .get(index)
                .ok_or(WireError::malformed("parameter format count"))?,
        };
        let len = take_i32(&mut rest)?;
        let value = if len < 0 {
            None
        } else {
            let len = usize::try_from(len).map_err(|_| WireError::malformed("length"))?;
            let value = rest
                .get(..len)
                .ok_or(WireError::malformed("parameter value"))?;
            rest = &rest[len..];
            Some(value)
        };
        parameters.push(BindParameter { binary, value });
    }
    Ok(Bind {
        portal,
        statement,
        parameters,
    })
}

/// Execute ('E'): the portal.
pub fn parse_execute(body: &[u8]) -> Result<&str, WireError> {
    let mut rest = body;
    take_cstr(&mut rest)
}

/// Close ('C'): `b'S'` (statement) or `b'P'` (portal), and its name.
pub fn parse_close(body: &[u8]) -> Result<(u8, &str), WireError> {
    let (&which, mut rest) = body.split_first().ok_or(WireError::malformed("Close"))?;
    Ok((which, take_cstr(&mut rest)?))
}

/// FunctionCall ('F'): the function's OID.
pub fn parse_function_call(body: &[u8]) -> Result<u32, WireError> {
    let mut rest = body;
    Ok(u32::from_be_bytes(take_i32(&mut rest)?.to_be_bytes()))
}

pub fn query(out: &mut BytesMut, sql: &str) {
    put_message(out, b'Q', |b| put_cstr(b, sql));
}

/// Parse, Bind and Execute of `sql` in the unnamed statement and portal: runs it within
/// an extended-protocol batch.
pub fn parse_bind_execute(out: &mut BytesMut, sql: &str) {
    put_message(out, b'P', |b| {
        put_cstr(b, "");
        put_cstr(b, sql);
        b.put_i16(0);
    });
    put_message(out, b'B', |b| {
        put_cstr(b, "");
        put_cstr(b, "");
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
    put_message(out, b'E', |b| {
        put_cstr(b, "");
        b.put_i32(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_with_nulls_and_mixed_formats() {
        let mut out = BytesMut::new();
        put_message(&mut out, b'B', |b| {
            put_cstr(b, "p1");
            put_cstr(b, "s1");
            b.put_i16(2);
            b.put_i16(0);
            b.put_i16(1);
            b.put_i16(2);
            b.put_i32(3);
            b.put_slice(b"abc");
            b.put_i32(-1);
            b.put_i16(0);
        });
        let bind = parse_bind(&out[5..]).unwrap();
        assert_eq!((bind.portal, bind.statement), ("p1", "s1"));
        assert_eq!(
            bind.parameters,
            [
                BindParameter {
                    binary: false,
                    value: Some(b"abc")
                },
                BindParameter {
                    binary: true,
                    value: None
                }
            ]
        );
    }

    #[test]
    fn truncated_bind_is_malformed() {
        let body = b"p\0s\0\0\0\0\x01\0\0\0\x09ab";
        assert!(parse_bind(body).is_err());
    }
}
