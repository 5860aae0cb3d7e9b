//! An event's details in a compact binary form, for stores that keep many of them (the
//! state sink's segments): each present field as its number and its value, lengths and
//! integers as LEB128. Writing it costs a fraction of the JSON members it stands for, and
//! the JSON is made only when an event is read.

use super::{Closes, EventDetails, SessionTotals};

/// Field numbers. Stored data holds them: never reuse or renumber one.
mod field {
    pub const STATEMENT_NAME: u8 = 1;
    pub const PORTAL: u8 = 2;
    pub const CLOSES: u8 = 3;
    pub const PARAMETER_COUNT: u8 = 4;
    /// The parameters as their JSON array (rare: only with `audit.log_parameters`).
    pub const PARAMETERS: u8 = 5;
    pub const FUNCTION_OID: u8 = 6;
    /// An f64's bits, little-endian.
    pub const DURATION_MS: u8 = 7;
    pub const COMMAND_TAG: u8 = 8;
    pub const ROWS: u8 = 9;
    pub const SQLSTATE: u8 = 10;
    pub const ERROR_MESSAGE: u8 = 11;
    pub const RULE: u8 = 12;
    pub const STATEMENT_KIND: u8 = 13;
    pub const REASON: u8 = 14;
    /// The session's totals as their JSON object (one event per session).
    pub const TOTALS: u8 = 15;
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_text(out: &mut Vec<u8>, number: u8, text: Option<&str>) {
    if let Some(text) = text {
        out.push(number);
        put_varint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
}

fn put_number(out: &mut Vec<u8>, number: u8, value: Option<u64>) {
    if let Some(value) = value {
        out.push(number);
        put_varint(out, value);
    }
}

fn put_json<T: serde::Serialize>(out: &mut Vec<u8>, number: u8, value: Option<&T>) {
    if let Some(value) = value {
        put_text(
            out,
            number,
            Some(&serde_json::to_string(value).unwrap_or_default()),
        );
    }
}

impl EventDetails {
    /// Appends these details to `out` in the binary form [`EventDetails::decode`] reads.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_text(out, field::STATEMENT_NAME, self.statement_name.as_deref());
        put_text(out, field::PORTAL, self.portal.as_deref());
        if let Some(closes) = self.closes {
            out.push(field::CLOSES);
            out.push(match closes {
                Closes::Statement => 0,
                Closes::Portal => 1,
            });
        }
        put_number(
            out,
            field::PARAMETER_COUNT,
            self.parameter_count.map(u64::from),
        );
        put_json(out, field::PARAMETERS, self.parameters.as_ref());
        put_number(out, field::FUNCTION_OID, self.function_oid.map(u64::from));
        if let Some(duration) = self.duration_ms {
            out.push(field::DURATION_MS);
            out.extend_from_slice(&duration.to_bits().to_le_bytes());
        }
        put_text(out, field::COMMAND_TAG, self.command_tag.as_deref());
        put_number(out, field::ROWS, self.rows);
        put_text(out, field::SQLSTATE, self.sqlstate.as_deref());
        put_text(out, field::ERROR_MESSAGE, self.error_message.as_deref());
        put_text(out, field::RULE, self.rule.as_deref());
        put_text(out, field::STATEMENT_KIND, self.statement_kind.as_deref());
        put_text(out, field::REASON, self.reason.as_deref());
        put_json(out, field::TOTALS, self.totals.as_ref());
    }

    /// Details written by [`EventDetails::encode`]; a cut-short or unknown field is an
    /// error naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<EventDetails, String> {
        let mut reader = Reader { rest: bytes };
        let mut details = EventDetails::default();
        while let Some(&number) = reader.rest.first() {
            reader.rest = &reader.rest[1..];
            match number {
                field::STATEMENT_NAME => details.statement_name = Some(reader.text()?.into()),
                field::PORTAL => details.portal = Some(reader.text()?.into()),
                field::CLOSES => {
                    details.closes = Some(match reader.take(1)?[0] {
                        0 => Closes::Statement,
                        1 => Closes::Portal,
                        other => return Err(format!("event details: closes {other}")),
                    })
                }
                field::PARAMETER_COUNT => {
                    details.parameter_count = Some(reader.bounded("parameter count")?)
                }
                field::PARAMETERS => details.parameters = Some(reader.json("parameters")?),
                field::FUNCTION_OID => details.function_oid = Some(reader.bounded("function oid")?),
                field::DURATION_MS => {
                    let bits: [u8; 8] = reader
                        .take(8)?
                        .try_into()
                        .map_err(|_| "event details: duration".to_owned())?;
                    details.duration_ms = Some(f64::from_bits(u64::from_le_bytes(bits)));
                }
                field::COMMAND_TAG => details.command_tag = Some(reader.text()?.into()),
                field::ROWS => details.rows = Some(reader.varint()?),
                field::SQLSTATE => details.sqlstate = Some(reader.text()?.into()),
                field::ERROR_MESSAGE => details.error_message = Some(reader.text()?.into()),
                field::RULE => details.rule = Some(reader.text()?.into()),
                field::STATEMENT_KIND => details.statement_kind = Some(reader.text()?.into()),
                field::REASON => details.reason = Some(reader.text()?.into()),
                field::TOTALS => {
                    details.totals = Some(Box::new(reader.json::<SessionTotals>("totals")?))
                }
                other => return Err(format!("event details: unknown field {other}")),
            }
        }
        Ok(details)
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("event details: cut short".into());
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("event details: a number too long".into())
    }

    fn bounded<T: TryFrom<u64>>(&mut self, what: &str) -> Result<T, String> {
        T::try_from(self.varint()?).map_err(|_| format!("event details: {what} out of range"))
    }

    fn text(&mut self) -> Result<&'a str, String> {
        let len = self.bounded::<usize>("a length")?;
        std::str::from_utf8(self.take(len)?).map_err(|_| "event details: text is not UTF-8".into())
    }

    fn json<T: serde::de::DeserializeOwned>(&mut self, what: &str) -> Result<T, String> {
        serde_json::from_str(self.text()?).map_err(|e| format!("event details: {what}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_read_back_as_the_same_json_members() {
        for details in crate::audit::tests::sample_details() {
            let mut encoded = Vec::new();
            details.encode(&mut encoded);
            let decoded = EventDetails::decode(&encoded).unwrap();
            assert_eq!(decoded.members(), details.members());
        }
    }

    #[test]
    fn damaged_details_are_errors_not_panics() {
        let details = EventDetails {
            command_tag: Some("SELECT 1".into()),
            rows: Some(300),
            duration_ms: Some(1.0),
            ..EventDetails::default()
        };
        let mut encoded = Vec::new();
        details.encode(&mut encoded);
        // Duration (1 + 8 bytes), command tag (1 + 1 + 8), rows (1 + 2): cut anywhere
        // but between two fields, the rest is an error.
        assert_eq!(encoded.len(), 22);
        for cut in 1..encoded.len() {
            let decoded = EventDetails::decode(&encoded[..cut]);
            assert_eq!(decoded.is_ok(), cut == 9 || cut == 19, "cut at {cut}");
        }
        assert!(EventDetails::decode(&[99]).is_err());
        assert!(EventDetails::decode(&[field::CLOSES, 7]).is_err());
        assert!(EventDetails::decode(&[field::RULE, 2, 0xff, 0xfe]).is_err());
        assert!(EventDetails::decode(&[
            field::ROWS,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x01
        ])
        .is_err());
        assert!(
            EventDetails::decode(&[field::FUNCTION_OID, 0x80, 0x80, 0x80, 0x80, 0x10]).is_err()
        );
    }
}
