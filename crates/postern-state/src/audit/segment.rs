//! The access log's unit of storage: the events of one written batch, encoded one after
//! another and compressed together with LZ4. A batch costs one row however many events
//! it holds, and text that repeats within it (statements, details, ids) almost nothing.

use crate::StateError;

/// Most events in one segment. An event's id is its segment's id shifted left by
/// [`INDEX_BITS`], plus its index in the segment.
pub(crate) const SEGMENT_EVENTS: usize = 4096;
pub(crate) const INDEX_BITS: u32 = 16;

/// Largest decoded segment accepted: a bigger size prefix means a damaged row.
const MAX_DECODED: usize = 256 << 20;

/// An event kept as parts, its line made when read.
const PARTS: u8 = 0;
/// An event kept as the line an older version stored.
const LINE: u8 = 1;

/// How an event's line is made when it is read.
pub(crate) enum Body<'a> {
    /// From its parts and its session's members ([`postern_model::log_line`]).
    Parts {
        statement: Option<&'a str>,
        details: &'a str,
    },
    /// Stored whole by an older version.
    Line(&'a str),
}

/// One event as a segment holds it.
pub(crate) struct SegmentEvent<'a> {
    pub event_id: &'a str,
    pub time_ms: i64,
    pub event_type: &'a str,
    pub session_key: i64,
    pub body: Body<'a>,
}

/// A segment being filled.
#[derive(Default)]
pub(crate) struct SegmentWriter {
    encoded: Vec<u8>,
    pub events: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Keys of the sessions with events here (repeats removed by [`Self::sessions`]).
    session_keys: Vec<i64>,
}

impl SegmentWriter {
    pub fn push(&mut self, event: &SegmentEvent<'_>) -> Result<(), StateError> {
        if self.events == 0 {
            self.first_ms = event.time_ms;
            self.last_ms = event.time_ms;
        }
        self.first_ms = self.first_ms.min(event.time_ms);
        self.last_ms = self.last_ms.max(event.time_ms);
        if self.session_keys.last() != Some(&event.session_key) {
            self.session_keys.push(event.session_key);
        }
        let out = &mut self.encoded;
        put_str(out, event.event_id)?;
        out.extend_from_slice(&event.time_ms.to_le_bytes());
        put_str(out, event.event_type)?;
        out.extend_from_slice(&event.session_key.to_le_bytes());
        match event.body {
            Body::Parts { statement, details } => {
                out.push(PARTS);
                match statement {
                    Some(text) => {
                        out.push(1);
                        put_str(out, text)?;
                    }
                    None => out.push(0),
                }
                put_str(out, details)?;
            }
            Body::Line(line) => {
                out.push(LINE);
                put_str(out, line)?;
            }
        }
        self.events += 1;
        Ok(())
    }

    pub fn is_full(&self) -> bool {
        self.events >= SEGMENT_EVENTS
    }

    /// The encoded events, compressed, with their decoded size in front.
    pub fn compressed(&self) -> Vec<u8> {
        lz4_flex::block::compress_prepend_size(&self.encoded)
    }

    /// The sessions with events here, each once.
    pub fn sessions(&mut self) -> &[i64] {
        self.session_keys.sort_unstable();
        self.session_keys.dedup();
        &self.session_keys
    }

    pub fn clear(&mut self) {
        self.encoded.clear();
        self.session_keys.clear();
        self.events = 0;
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) -> Result<(), StateError> {
    let len = u32::try_from(text.len())
        .map_err(|_| StateError::Corrupt(format!("an access-log value of {} bytes", text.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// A stored segment, decompressed.
pub(crate) struct DecodedSegment {
    encoded: Vec<u8>,
}

impl DecodedSegment {
    pub fn decode(data: &[u8]) -> Result<DecodedSegment, StateError> {
        let damaged = |what: &str| StateError::Corrupt(format!("access-log segment: {what}"));
        let size = data
            .get(..4)
            .and_then(|prefix| <[u8; 4]>::try_from(prefix).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| damaged("no size"))?;
        if usize::try_from(size).map_or(true, |size| size > MAX_DECODED) {
            return Err(damaged("size out of range"));
        }
        let encoded = lz4_flex::block::decompress_size_prepended(data)
            .map_err(|e| damaged(&e.to_string()))?;
        Ok(DecodedSegment { encoded })
    }

    /// The events, in the order they were written.
    pub fn events(&self) -> Result<Vec<SegmentEvent<'_>>, StateError> {
        let mut reader = Reader {
            rest: &self.encoded,
        };
        let mut events = Vec::new();
        while !reader.rest.is_empty() {
            let event_id = reader.str()?;
            let time_ms = reader.i64()?;
            let event_type = reader.str()?;
            let session_key = reader.i64()?;
            let body = match reader.u8()? {
                PARTS => {
                    let statement = match reader.u8()? {
                        0 => None,
                        _ => Some(reader.str()?),
                    };
                    Body::Parts {
                        statement,
                        details: reader.str()?,
                    }
                }
                LINE => Body::Line(reader.str()?),
                other => {
                    return Err(StateError::Corrupt(format!(
                        "access-log segment: unknown event body {other}"
                    )))
                }
            };
            events.push(SegmentEvent {
                event_id,
                time_ms,
                event_type,
                session_key,
                body,
            });
        }
        Ok(events)
    }
}

/// Reads encoded events; anything cut short or not UTF-8 is a damaged segment.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.rest.len() < n {
            return Err(StateError::Corrupt(
                "access-log segment: an event is cut short".into(),
            ));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes)
            .map_err(|_| StateError::Corrupt("access-log segment: bad field".into()))
    }

    fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<&'a str, StateError> {
        let len = usize::try_from(u32::from_le_bytes(self.array()?))
            .map_err(|_| StateError::Corrupt("access-log segment: bad length".into()))?;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| StateError::Corrupt("access-log segment: text is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_back_as_written_and_damage_is_an_error() {
        let mut writer = SegmentWriter::default();
        let events = [
            SegmentEvent {
                event_id: "a-1",
                time_ms: 20,
                event_type: "EXECUTE",
                session_key: 7,
                body: Body::Parts {
                    statement: Some("SELECT 1"),
                    details: "\"rows\":1",
                },
            },
            SegmentEvent {
                event_id: "a-2",
                time_ms: 10,
                event_type: "SESSION_END",
                session_key: 3,
                body: Body::Parts {
                    statement: None,
                    details: "",
                },
            },
            SegmentEvent {
                event_id: "old",
                time_ms: 30,
                event_type: "QUERY",
                session_key: 7,
                body: Body::Line("{\"event_id\":\"old\"}"),
            },
        ];
        for event in &events {
            writer.push(event).unwrap();
        }
        assert_eq!((writer.first_ms, writer.last_ms), (10, 30));
        assert_eq!(writer.sessions(), [3, 7]);
        let data = writer.compressed();
        let decoded = DecodedSegment::decode(&data).unwrap();
        let read = decoded.events().unwrap();
        assert_eq!(read.len(), 3);
        for (read, written) in read.iter().zip(&events) {
            assert_eq!(read.event_id, written.event_id);
            assert_eq!(read.time_ms, written.time_ms);
            assert_eq!(read.event_type, written.event_type);
            assert_eq!(read.session_key, written.session_key);
            match (&read.body, &written.body) {
                (
                    Body::Parts {
                        statement: a,
                        details: b,
                    },
                    Body::Parts {
                        statement: c,
                        details: d,
                    },
                ) => assert_eq!((a, b), (c, d)),
                (Body::Line(a), Body::Line(b)) => assert_eq!(a, b),
                _ => panic!("body kind changed"),
            }
        }
        // Cut short, a huge size prefix, garbage: errors, not panics.
        assert!(DecodedSegment::decode(&data[..data.len() - 3])
            .and_then(|d| d.events().map(|e| e.len()))
            .is_err());
        assert!(DecodedSegment::decode(&[0xff, 0xff, 0xff, 0x7f, 0]).is_err());
        assert!(DecodedSegment::decode(b"ab").is_err());
    }
}
