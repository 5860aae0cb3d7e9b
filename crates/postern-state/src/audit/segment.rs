//! The access log's unit of storage: the events of one written batch, encoded one after
//! another and compressed together with LZ4. A batch costs one row however many events
//! it holds; a statement text is written once per segment and referenced by the events
//! after that ran it, and details are kept in their binary form
//! ([`EventDetails::encode`]) until an event is read.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::marker::PhantomData;

use postern_model::EventDetails;

use crate::StateError;

/// Most events in one segment. An event's id is its segment's id shifted left by
/// [`INDEX_BITS`], plus its index in the segment.
pub(crate) const SEGMENT_EVENTS: usize = 4096;
pub(crate) const INDEX_BITS: u32 = 16;

/// Largest decoded segment accepted: a bigger size prefix means a damaged row.
const MAX_DECODED: usize = 256 << 20;

/// An event kept as parts, its details as JSON members (older versions).
const PARTS: u8 = 0;
/// An event kept as the line an older version stored.
const LINE: u8 = 1;
/// An event kept as parts, its details encoded, its statement maybe a reference.
const ENCODED: u8 = 2;

/// How an [`ENCODED`] event's statement is given.
const NO_STATEMENT: u8 = 0;
/// Written out, and numbered in the segment's texts in order of appearance.
const NEW_STATEMENT: u8 = 1;
/// The number of a text written out earlier in the segment.
const SEEN_STATEMENT: u8 = 2;

/// An event read back. Its line is made from its parts and its session's members
/// ([`postern_model::log_line`]).
pub(crate) enum Body<'a> {
    Parts {
        statement: Option<&'a str>,
        /// JSON object members.
        details: Cow<'a, str>,
    },
    /// Stored whole by an older version.
    Line(&'a str),
}

/// What every event in a segment has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventHead<'a> {
    pub event_id: &'a str,
    pub time_ms: i64,
    pub event_type: &'a str,
    pub session_key: i64,
}

/// One event as a segment holds it.
pub(crate) struct SegmentEvent<'a> {
    pub head: EventHead<'a>,
    pub body: Body<'a>,
}

/// A segment being filled; its events' statements borrow from `'t` (the batch being
/// written).
#[derive(Default)]
pub(crate) struct SegmentWriter<'t> {
    encoded: Vec<u8>,
    pub events: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Keys of the sessions with events here (repeats removed by [`Self::sessions`]).
    session_keys: Vec<i64>,
    /// Statement texts written out in this segment, by where they lie (events of one
    /// prepared statement share its text), and their numbers. The texts outlive the
    /// writer, so an address stays its text's.
    texts: HashMap<(usize, usize), u32, foldhash::fast::RandomState>,
    _texts: PhantomData<&'t str>,
}

impl<'t> SegmentWriter<'t> {
    /// Adds an event as the state sink writes one: its statement written out the first
    /// time the segment meets it and referenced after, its details encoded.
    pub fn push_event(
        &mut self,
        head: &EventHead<'_>,
        statement: Option<&'t str>,
        details: &EventDetails,
    ) -> Result<(), StateError> {
        self.push_head(head, ENCODED)?;
        let out = &mut self.encoded;
        match statement {
            None => out.push(NO_STATEMENT),
            Some(text) => {
                let next = u32::try_from(self.texts.len()).unwrap_or(u32::MAX);
                match self.texts.entry((text.as_ptr() as usize, text.len())) {
                    Entry::Occupied(seen) => {
                        out.push(SEEN_STATEMENT);
                        out.extend_from_slice(&seen.get().to_le_bytes());
                    }
                    Entry::Vacant(new) => {
                        new.insert(next);
                        out.push(NEW_STATEMENT);
                        put_str(out, text)?;
                    }
                }
            }
        }
        // The details' length goes in front once they are written.
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        details.encode(out);
        let len = u32::try_from(out.len() - at - 4).map_err(|_| {
            StateError::Corrupt("an access-log event's details are too long".into())
        })?;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Adds an event kept as the line an older version stored.
    pub fn push_line(&mut self, head: &EventHead<'_>, line: &str) -> Result<(), StateError> {
        self.push_head(head, LINE)?;
        put_str(&mut self.encoded, line)
    }

    /// Counts the event in and writes its head and its body's form.
    fn push_head(&mut self, head: &EventHead<'_>, form: u8) -> Result<(), StateError> {
        if self.events == 0 {
            self.first_ms = head.time_ms;
            self.last_ms = head.time_ms;
        }
        self.first_ms = self.first_ms.min(head.time_ms);
        self.last_ms = self.last_ms.max(head.time_ms);
        if self.session_keys.last() != Some(&head.session_key) {
            self.session_keys.push(head.session_key);
        }
        self.events += 1;
        let out = &mut self.encoded;
        put_str(out, head.event_id)?;
        out.extend_from_slice(&head.time_ms.to_le_bytes());
        put_str(out, head.event_type)?;
        out.extend_from_slice(&head.session_key.to_le_bytes());
        out.push(form);
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
        self.texts.clear();
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
        // Statement texts written out so far, by number.
        let mut texts: Vec<&str> = Vec::new();
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
                        details: Cow::Borrowed(reader.str()?),
                    }
                }
                ENCODED => {
                    let statement = match reader.u8()? {
                        NO_STATEMENT => None,
                        NEW_STATEMENT => {
                            let text = reader.str()?;
                            texts.push(text);
                            Some(text)
                        }
                        SEEN_STATEMENT => {
                            let number = u32::from_le_bytes(reader.array()?);
                            let text = usize::try_from(number)
                                .ok()
                                .and_then(|number| texts.get(number))
                                .ok_or_else(|| {
                                    StateError::Corrupt(format!(
                                        "access-log segment: no statement {number}"
                                    ))
                                })?;
                            Some(*text)
                        }
                        other => {
                            return Err(StateError::Corrupt(format!(
                                "access-log segment: unknown statement form {other}"
                            )))
                        }
                    };
                    let len =
                        usize::try_from(u32::from_le_bytes(reader.array()?)).map_err(|_| {
                            StateError::Corrupt("access-log segment: bad length".into())
                        })?;
                    let details = EventDetails::decode(reader.take(len)?)
                        .map_err(|e| StateError::Corrupt(format!("access-log segment: {e}")))?;
                    Body::Parts {
                        statement,
                        details: Cow::Owned(details.members()),
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
                head: EventHead {
                    event_id,
                    time_ms,
                    event_type,
                    session_key,
                },
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

    fn head<'a>(event_id: &'a str, time_ms: i64, event_type: &'a str) -> EventHead<'a> {
        EventHead {
            event_id,
            time_ms,
            event_type,
            session_key: 7,
        }
    }

    /// Reads `encoded` (uncompressed) as a segment.
    fn read(
        encoded: &[u8],
    ) -> Result<Vec<(EventHead<'static>, Option<String>, String)>, StateError> {
        let decoded = DecodedSegment::decode(&lz4_flex::block::compress_prepend_size(encoded))?;
        let events = decoded.events()?;
        Ok(events
            .into_iter()
            .map(|event| {
                let head = EventHead {
                    event_id: event.head.event_id.to_owned().leak(),
                    event_type: event.head.event_type.to_owned().leak(),
                    ..event.head
                };
                match event.body {
                    Body::Parts { statement, details } => {
                        (head, statement.map(str::to_owned), details.into_owned())
                    }
                    Body::Line(line) => (head, None, format!("line {line}")),
                }
            })
            .collect())
    }

    #[test]
    fn events_come_back_as_written_and_damage_is_an_error() {
        let execute = EventDetails {
            statement_name: Some("".into()),
            duration_ms: Some(0.25),
            rows: Some(1),
            ..EventDetails::default()
        };
        let none = EventDetails::default();
        // Events of one prepared statement share its text; an equal text may lie
        // elsewhere, and a text may start where another does.
        let shared = String::from("SELECT 1");
        let elsewhere = shared.clone();
        let mut writer = SegmentWriter::default();
        writer
            .push_event(&head("a-1", 20, "EXECUTE"), Some(&shared), &execute)
            .unwrap();
        let end = EventHead {
            session_key: 3,
            ..head("a-2", 10, "SESSION_END")
        };
        writer.push_event(&end, None, &none).unwrap();
        writer
            .push_event(&head("a-3", 21, "EXECUTE"), Some(&shared), &none)
            .unwrap();
        writer
            .push_event(&head("a-4", 22, "EXECUTE"), Some(&elsewhere), &execute)
            .unwrap();
        writer
            .push_event(&head("a-5", 23, "EXECUTE"), Some(&shared[..6]), &execute)
            .unwrap();
        writer
            .push_line(&head("old", 30, "QUERY"), "{\"event_id\":\"old\"}")
            .unwrap();
        writer
            .push_event(&head("a-7", 31, "EXECUTE"), Some(&shared), &execute)
            .unwrap();
        assert_eq!(writer.texts.len(), 3, "one number per place a text lies");
        assert_eq!((writer.first_ms, writer.last_ms), (10, 31));
        assert_eq!(writer.sessions(), [3, 7]);
        let text = |t: &str| Some(t.to_owned());
        let expected = [
            (
                head("a-1", 20, "EXECUTE"),
                text("SELECT 1"),
                execute.members(),
            ),
            (end, None, String::new()),
            (head("a-3", 21, "EXECUTE"), text("SELECT 1"), String::new()),
            (
                head("a-4", 22, "EXECUTE"),
                text("SELECT 1"),
                execute.members(),
            ),
            (
                head("a-5", 23, "EXECUTE"),
                text("SELECT"),
                execute.members(),
            ),
            (
                head("old", 30, "QUERY"),
                None,
                "line {\"event_id\":\"old\"}".to_owned(),
            ),
            (
                head("a-7", 31, "EXECUTE"),
                text("SELECT 1"),
                execute.members(),
            ),
        ];
        assert_eq!(read(&writer.encoded).unwrap(), expected);

        // Events as older versions wrote them: details as JSON members.
        let mut old = Vec::new();
        put_str(&mut old, "o-1").unwrap();
        old.extend_from_slice(&5i64.to_le_bytes());
        put_str(&mut old, "QUERY").unwrap();
        old.extend_from_slice(&7i64.to_le_bytes());
        old.extend_from_slice(&[PARTS, 1]);
        put_str(&mut old, "SELECT 2").unwrap();
        put_str(&mut old, "\"rows\":1").unwrap();
        assert_eq!(
            read(&old).unwrap(),
            [(
                head("o-1", 5, "QUERY"),
                text("SELECT 2"),
                "\"rows\":1".to_owned()
            )]
        );

        // Cut short, a huge size prefix, garbage, a reference to a text the segment does
        // not hold: errors, not panics.
        let data = writer.compressed();
        assert!(DecodedSegment::decode(&data[..data.len() - 3])
            .and_then(|d| d.events().map(|e| e.len()))
            .is_err());
        assert!(DecodedSegment::decode(&[0xff, 0xff, 0xff, 0x7f, 0]).is_err());
        assert!(DecodedSegment::decode(b"ab").is_err());
        let mut dangling = old[..old.len() - 4 - 8 - 4 - 8 - 2].to_vec();
        dangling.extend_from_slice(&[ENCODED, SEEN_STATEMENT, 5, 0, 0, 0, 0, 0, 0, 0]);
        let error = read(&dangling).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("no statement 5")),
            "{error:?}"
        );
    }
}
