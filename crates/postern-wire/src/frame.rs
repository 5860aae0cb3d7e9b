//! Framing of tagged messages (type byte + big-endian i32 length that counts itself).
//! See <https://www.postgresql.org/docs/15/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS>.

use bytes::{Buf, Bytes, BytesMut};

use crate::WireError;

/// Backend messages that can come at any time, not in answer to a request:
/// NotificationResponse, NoticeResponse, ParameterStatus.
const ASYNCHRONOUS: &[u8] = b"ANS";

/// Size of a message header: one type byte and the four-byte length.
pub const HEADER_LEN: usize = 5;

/// One whole message; the body excludes the type byte and the length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    pub body: Bytes,
}

/// Reads the header at the start of `buf`, if all five bytes are there, and checks the
/// length against `limit` (which bounds the body) before anyone allocates for it.
/// Returns the tag and the body length.
pub fn peek_header(buf: &[u8], limit: usize) -> Result<Option<(u8, usize)>, WireError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return Err(WireError::LengthTooSmall {
            len: i64::from(len),
            min: 4,
        });
    }
    // Non-negative i32 always fits in usize on the platforms we build for; the subtraction
    // cannot underflow after the check above.
    let body_len = usize::try_from(len).map_err(|_| WireError::malformed("length"))? - 4;
    if body_len > limit {
        return Err(WireError::TooLong {
            tag: char::from(tag),
            len: body_len,
            limit,
        });
    }
    Ok(Some((tag, body_len)))
}

/// Takes one whole message off the front of `buf`, or returns `None` when more bytes are
/// needed. The body shares `buf`'s allocation (no copy).
pub fn try_take_message(buf: &mut BytesMut, limit: usize) -> Result<Option<Message>, WireError> {
    let Some((tag, body_len)) = peek_header(buf, limit)? else {
        return Ok(None);
    };
    if buf.len() < HEADER_LEN + body_len {
        buf.reserve(HEADER_LEN + body_len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let body = buf.split_to(body_len).freeze();
    Ok(Some(Message { tag, body }))
}

/// A set of message type bytes, asked in one step for every message relayed (a call
/// through a function pointer per message was ~15 instructions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagSet([u64; 4]);

impl TagSet {
    pub const EMPTY: TagSet = TagSet([0; 4]);
    pub const ALL: TagSet = TagSet([u64::MAX; 4]);

    pub const fn of(tags: &[u8]) -> TagSet {
        let mut bits = [0u64; 4];
        let mut at = 0;
        while at < tags.len() {
            let tag = tags[at];
            bits[(tag >> 6) as usize] |= 1 << (tag & 63);
            at += 1;
        }
        TagSet(bits)
    }

    pub const fn contains(&self, tag: u8) -> bool {
        self.0[(tag >> 6) as usize] >> (tag & 63) & 1 == 1
    }
}

/// Validates a stream of messages as it is relayed, without buffering whole messages: it
/// tells the caller how many bytes at the front of the buffer belong to headers it has
/// checked and to the bodies behind them, so those bytes can be forwarded untouched while
/// a large message is still arriving.
///
/// It can also count messages whose type is in a set (to know how many ReadyForQuery
/// replies are owed), stop in front of a message of one type (to keep a Terminate), and
/// hold back messages of chosen types until they are whole, showing each message to a
/// visitor as its header (or, for those types, its whole body) is reached: the one walk
/// over relayed bytes, for the plain relay and the watched one alike.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    limit: usize,
    body_remaining: usize,
    messages_started: u64,
    counting: Counting,
    counted: u64,
    stop_tag: Option<u8>,
    stopped: bool,
    current_tag: u8,
    /// The body length of the message whose header was seen last.
    current_len: usize,
    ready_status: Option<u8>,
    whole: TagSet,
}

/// One message as a scanner's visitor sees it.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Where its header starts in the scanned buffer.
    pub start: usize,
    pub tag: u8,
    /// The whole body for types the scanner holds whole; `None` for the others, which
    /// are seen by header only.
    pub body: Option<&'a [u8]>,
}

impl Frame<'_> {
    /// Where the message ends in the scanned buffer (for a whole message).
    pub fn end(&self) -> usize {
        self.start + HEADER_LEN + self.body.map_or(0, <[u8]>::len)
    }
}

impl FrameScanner {
    pub fn new(limit: usize) -> Self {
        FrameScanner {
            limit,
            body_remaining: 0,
            messages_started: 0,
            counting: Counting::Nothing,
            counted: 0,
            stop_tag: None,
            stopped: false,
            current_tag: 0,
            current_len: 0,
            ready_status: None,
            whole: TagSet::EMPTY,
        }
    }

    /// Also counts messages whose type byte is in `tags`.
    pub fn counting(mut self, tags: TagSet) -> Self {
        self.counting = Counting::Tags(tags);
        self
    }

    /// For a client's messages: counts the ReadyForQuery replies they oblige the server
    /// to send (see [`RequestState`]) and tracks whether an extended-protocol batch is
    /// open ([`FrameScanner::batch_open`]).
    pub fn counting_requests(mut self) -> Self {
        self.counting = Counting::Requests(RequestState::default());
        self
    }

    /// Stops in front of the first message of type `tag`: [`FrameScanner::scan`] releases
    /// nothing from its header on, and [`FrameScanner::stopped`] turns true.
    pub fn stopping_at(mut self, tag: u8) -> Self {
        self.stop_tag = Some(tag);
        self
    }

    /// From now on, messages whose type is in `whole` are released only once they have
    /// arrived whole, and are shown to the visitor with their body. Their length is
    /// checked against the limit before any of it is waited for, so the caller's buffer
    /// never grows past one message of the limit.
    pub fn hold_whole(&mut self, whole: TagSet) {
        self.whole = whole;
    }

    /// Scans `buf` (bytes not yet forwarded) and returns how many of them may be forwarded
    /// now. Bytes of a header that is not complete yet stay behind.
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, WireError> {
        self.scan_visiting(buf, |_| Ok::<(), WireError>(()))
    }

    /// [`FrameScanner::scan`], showing `visit` each message whose header (or, for types
    /// held whole, whole body) lies in `buf`, once, in order. A message held whole that
    /// has not fully arrived stays behind with its header, to be shown by a later scan.
    /// An error from `visit` ends the scan; the messages shown before it were accepted.
    pub fn scan_visiting<E: From<WireError>>(
        &mut self,
        buf: &[u8],
        mut visit: impl FnMut(Frame<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut pos = 0;
        while pos < buf.len() && !self.stopped {
            if self.body_remaining > 0 {
                let take = self.body_remaining.min(buf.len() - pos);
                if self.current_tag == b'Z' && self.body_remaining == self.current_len && take > 0 {
                    // ReadyForQuery's body: the transaction status is its first byte
                    // (however the body was split between reads).
                    self.ready_status = Some(buf[pos]);
                }
                pos += take;
                self.body_remaining -= take;
                continue;
            }
            let Some((tag, body_len)) = peek_header(&buf[pos..], self.limit)? else {
                break;
            };
            if Some(tag) == self.stop_tag {
                self.stopped = true;
                break;
            }
            let body_start = pos + HEADER_LEN;
            let body = if self.whole.contains(tag) {
                match buf.get(body_start..body_start + body_len) {
                    Some(body) => Some(body),
                    None => break,
                }
            } else {
                None
            };
            visit(Frame {
                start: pos,
                tag,
                body,
            })?;
            self.current_tag = tag;
            self.current_len = body_len;
            // Notifications, notices and parameter changes arrive on their own while a
            // session is idle; they do not end "ready for query".
            if !ASYNCHRONOUS.contains(&tag) {
                self.ready_status = None;
            }
            self.messages_started += 1;
            match &mut self.counting {
                Counting::Nothing => {}
                Counting::Tags(tags) => self.counted += u64::from(tags.contains(tag)),
                Counting::Requests(state) => state.accept(tag, &mut self.counted),
            }
            // The body of a message held whole is walked like any other: scanned
            // just now, released with the rest.
            pos = body_start;
            self.body_remaining = body_len;
        }
        Ok(pos)
    }

    /// True when the scanner stands between two messages.
    pub fn at_boundary(&self) -> bool {
        self.body_remaining == 0
    }

    /// Bytes of the current message's body not seen yet.
    pub fn body_remaining(&self) -> usize {
        self.body_remaining
    }

    /// How many message headers this scanner has accepted.
    pub fn messages_started(&self) -> u64 {
        self.messages_started
    }

    /// How many accepted messages had a type from [`FrameScanner::counting`].
    pub fn counted(&self) -> u64 {
        self.counted
    }

    /// The transaction status (`I`, `T` or `E`) when the last complete message was a
    /// ReadyForQuery, asynchronous messages after it aside; `None` otherwise.
    pub fn ready_status(&self) -> Option<u8> {
        self.ready_status.filter(|_| self.body_remaining == 0)
    }

    /// True once the stop type was reached.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// With [`FrameScanner::counting_requests`]: the client has sent extended-protocol
    /// messages since its last Sync, so the server holds them in an implicit transaction
    /// that only a Sync ends (or, if the connection closes, rolls back).
    pub fn batch_open(&self) -> bool {
        matches!(self.counting, Counting::Requests(state) if state.open_batch)
    }
}

/// What a scanner counts.
#[derive(Debug, Clone, Copy)]
enum Counting {
    Nothing,
    Tags(TagSet),
    Requests(RequestState),
}

/// The ReadyForQuery replies a client's messages oblige the server to send: one per
/// Query, FunctionCall and Sync, except for a Sync the server reads in COPY IN mode,
/// which it ignores. A client of the extended protocol often sends Execute and Sync
/// together before it learns that the Execute started a COPY FROM STDIN; that Sync is
/// read during the COPY and ignored, and another Sync follows CopyDone. So the Syncs
/// between the statement that started a COPY (the last Query or Execute) and the
/// CopyDone or CopyFail that ends it are taken back. (The server also ignores stray
/// CopyDone and CopyFail outside COPY: a client that sends them only makes its own count
/// short, which keeps its connection out of reuse.)
#[derive(Debug, Clone, Copy, Default)]
struct RequestState {
    open_batch: bool,
    syncs_since_statement: u64,
}

impl RequestState {
    fn accept(&mut self, tag: u8, counted: &mut u64) {
        use crate::tags::frontend as fe;
        match tag {
            fe::QUERY | fe::FUNCTION_CALL => {
                *counted += 1;
                self.open_batch = false;
                self.syncs_since_statement = 0;
            }
            fe::SYNC => {
                *counted += 1;
                self.open_batch = false;
                self.syncs_since_statement += 1;
            }
            fe::EXECUTE => {
                self.open_batch = true;
                self.syncs_since_statement = 0;
            }
            fe::PARSE | fe::BIND | fe::DESCRIBE | fe::CLOSE => self.open_batch = true,
            fe::COPY_DONE | fe::COPY_FAIL => {
                *counted = counted.saturating_sub(self.syncs_since_statement);
                self.syncs_since_statement = 0;
            }
            _ => {}
        }
    }
}

/// Reads a NUL-terminated string from the front of `buf`.
pub fn take_cstr<'a>(buf: &mut &'a [u8]) -> Result<&'a str, WireError> {
    utf8(take_cstr_bytes(buf)?)
}

/// Reads a NUL-terminated string's bytes from the front of `buf`, not checked as UTF-8.
pub fn take_cstr_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    // Most names are empty, and a call to memchr costs more than looking at one byte;
    // statement texts are long, and a loop over them cost four instructions a byte.
    let end = match buf.first() {
        Some(0) => 0,
        _ => memchr::memchr(0, buf).ok_or(WireError::malformed("string without terminator"))?,
    };
    let bytes = &buf[..end];
    *buf = &buf[end + 1..];
    Ok(bytes)
}

/// `bytes` as text, or the protocol error a client gets for a string that is not UTF-8.
pub fn utf8(bytes: &[u8]) -> Result<&str, WireError> {
    if bytes.is_empty() {
        // The unnamed statement and portal: not worth a call.
        return Ok("");
    }
    std::str::from_utf8(bytes).map_err(|_| WireError::malformed("UTF-8 string"))
}

/// Reads a big-endian i32 from the front of `buf`.
pub fn take_i32(buf: &mut &[u8]) -> Result<i32, WireError> {
    let (head, rest) = buf
        .split_first_chunk::<4>()
        .ok_or(WireError::malformed("integer"))?;
    *buf = rest;
    Ok(i32::from_be_bytes(*head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn tag_sets_hold_exactly_their_tags() {
        let set = TagSet::of(&[0, b'C', b'E', 63, 64, 255]);
        for tag in 0..=255u8 {
            assert_eq!(
                set.contains(tag),
                [0, b'C', b'E', 63, 64, 255].contains(&tag),
                "{tag}"
            );
            assert!(TagSet::ALL.contains(tag));
            assert!(!TagSet::EMPTY.contains(tag));
        }
    }

    #[test]
    fn c_strings_of_every_length_end_at_their_terminator() {
        for len in [0, 1, 15, 16, 17, 31, 100, 5000] {
            let text = "a".repeat(len);
            let mut bytes = format!("{text}\0rest").into_bytes();
            bytes.push(0);
            let mut buf = &bytes[..];
            assert_eq!(take_cstr(&mut buf).unwrap(), text, "length {len}");
            assert_eq!(take_cstr(&mut buf).unwrap(), "rest", "after length {len}");
            assert!(buf.is_empty());
            // Without a terminator it is an error, however long.
            let mut unterminated = text.as_bytes();
            assert!(take_cstr(&mut unterminated).is_err(), "length {len}");
        }
        let mut not_utf8: &[u8] = b"\xff\xfe\0";
        assert!(take_cstr(&mut not_utf8).is_err());
    }

    #[test]
    fn takes_whole_messages_and_waits_for_partial_ones() {
        let mut bytes = msg(b'Q', b"select 1\0");
        bytes.extend_from_slice(&msg(b'S', b"")[..3]);
        let mut buf = BytesMut::from(&bytes[..]);
        let first = try_take_message(&mut buf, 100).unwrap().unwrap();
        assert_eq!(first.tag, b'Q');
        assert_eq!(&first.body[..], b"select 1\0");
        assert_eq!(try_take_message(&mut buf, 100).unwrap(), None);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn rejects_short_negative_and_oversized_lengths() {
        for len in [0i32, 3, -1, i32::MIN] {
            let mut bytes = vec![b'Q'];
            bytes.extend_from_slice(&len.to_be_bytes());
            let err = peek_header(&bytes, 100).unwrap_err();
            assert!(
                matches!(err, WireError::LengthTooSmall { .. }),
                "{len}: {err}"
            );
        }
        let big = msg(b'd', &[0u8; 101]);
        assert_eq!(
            peek_header(&big, 100).unwrap_err(),
            WireError::TooLong {
                tag: 'd',
                len: 101,
                limit: 100
            }
        );
    }

    #[test]
    fn scanner_streams_large_bodies_in_pieces() {
        let mut stream = msg(b'd', &[7u8; 50]);
        stream.extend_from_slice(&msg(b'c', b""));
        let mut scanner = FrameScanner::new(64);
        // Header plus part of the body can go at once.
        assert_eq!(scanner.scan(&stream[..20]).unwrap(), 20);
        assert!(!scanner.at_boundary());
        // The rest of the body, then a header split in two.
        assert_eq!(scanner.scan(&stream[20..57]).unwrap(), 35);
        assert!(scanner.at_boundary());
        assert_eq!(scanner.scan(&stream[55..]).unwrap(), 5);
        assert_eq!(scanner.messages_started(), 2);
    }

    /// Empty-bodied messages of the given types, as a client would send them.
    fn messages(tags: &[u8]) -> Vec<u8> {
        tags.iter().flat_map(|t| [*t, 0, 0, 0, 4]).collect()
    }

    #[test]
    fn requests_are_counted_as_the_server_answers_them() {
        // (client messages, ReadyForQuery replies owed, batch open afterwards)
        for (tags, owed, open) in [
            (&b"Q"[..], 1, false),
            (b"PBES", 1, false),
            (b"PBEPBES", 1, false),
            (b"PBEH", 0, true),
            (b"PD", 0, true),
            (b"PBESS", 2, false),
            // Simple-query COPY FROM STDIN: the Query's one reply comes after CopyDone.
            (b"Qddc", 1, false),
            // Extended COPY FROM STDIN: the Sync sent with the Execute is ignored in
            // COPY mode; the one after CopyDone is answered.
            (b"PBESddcS", 1, false),
            (b"BESfS", 1, false),
            (b"PBESddcSPBES", 2, false),
            // A stray CopyDone makes the count short (never long).
            (b"PBESc", 0, false),
        ] {
            let mut scanner = FrameScanner::new(64).counting_requests();
            let bytes = messages(tags);
            assert_eq!(scanner.scan(&bytes).unwrap(), bytes.len());
            let shown = String::from_utf8_lossy(tags);
            assert_eq!(scanner.counted(), owed, "{shown}");
            assert_eq!(scanner.batch_open(), open, "{shown}");
        }
    }

    #[test]
    fn scanner_counts_tags_and_stops_in_front_of_terminate() {
        let mut stream = msg(b'P', b"x");
        stream.extend_from_slice(&msg(b'S', b""));
        stream.extend_from_slice(&msg(b'Q', b"select 1\0"));
        let forwardable = stream.len();
        stream.extend_from_slice(&msg(b'X', b""));
        let mut scanner = FrameScanner::new(64)
            .counting(TagSet::of(b"QSF"))
            .stopping_at(b'X');
        assert_eq!(scanner.scan(&stream).unwrap(), forwardable);
        assert!(scanner.stopped());
        assert_eq!(scanner.counted(), 2);
        assert_eq!(
            scanner.scan(&stream[forwardable..]).unwrap(),
            0,
            "stays stopped"
        );
    }

    #[test]
    fn scanner_reports_the_status_of_a_trailing_ready_for_query() {
        let mut stream = msg(b'C', b"SELECT 1\0");
        stream.extend_from_slice(&msg(b'Z', b"T"));
        let mut scanner = FrameScanner::new(64);
        assert_eq!(
            scanner.scan(&stream[..stream.len() - 1]).unwrap(),
            stream.len() - 1
        );
        assert_eq!(scanner.ready_status(), None, "status byte not seen yet");
        assert_eq!(scanner.scan(&stream[stream.len() - 1..]).unwrap(), 1);
        assert_eq!(scanner.ready_status(), Some(b'T'));
        scanner.scan(&msg(b'A', b"notify")).unwrap();
        assert_eq!(
            scanner.ready_status(),
            Some(b'T'),
            "a notification keeps it idle"
        );
        scanner.scan(&msg(b'C', b"x")).unwrap();
        assert_eq!(scanner.ready_status(), None, "a reply came after it");
    }

    /// Found by the `backend` fuzz target: the status was the first byte of the body's
    /// last piece, so a malformed (longer) ReadyForQuery split between reads reported
    /// another status than the same bytes read at once.
    #[test]
    fn the_status_is_a_ready_for_querys_first_byte_however_it_arrives() {
        let stream = msg(b'Z', b"Ecccc");
        let mut whole = FrameScanner::new(64);
        whole.scan(&stream).unwrap();
        let mut split = FrameScanner::new(64);
        assert_eq!(split.scan(&stream[..7]).unwrap(), 7);
        assert_eq!(split.scan(&stream[7..]).unwrap(), stream.len() - 7);
        assert_eq!(whole.ready_status(), Some(b'E'));
        assert_eq!(split.ready_status(), Some(b'E'));
    }

    #[test]
    fn scanner_holds_chosen_types_whole_and_shows_each_message_once() {
        let mut stream = msg(b'B', b"portal\0stmt\0");
        stream.extend_from_slice(&msg(b'd', &[9u8; 40]));
        stream.extend_from_slice(&msg(b'E', b"\0\0\0\0\0"));
        stream.extend_from_slice(&msg(b'S', b""));
        let mut scanner = FrameScanner::new(64).counting(TagSet::of(b"S"));
        scanner.hold_whole(TagSet::of(b"BE"));
        let mut seen = Vec::new();
        let mut starts = Vec::new();
        let mut released = 0;
        // Bytes arrive three at a time; released bytes leave the buffer.
        for arrived in 1..=stream.len().div_ceil(3) {
            let upto = (arrived * 3).min(stream.len());
            let mut whole_end = 0;
            let ready = scanner
                .scan_visiting(&stream[released..upto], |frame| {
                    if frame.body.is_some() {
                        whole_end = frame.end();
                    }
                    seen.push((frame.tag, frame.body.map(<[u8]>::to_vec)));
                    starts.push(released + frame.start);
                    Ok::<(), WireError>(())
                })
                .unwrap();
            // A whole message is released with all of its body.
            assert!(ready >= whole_end);
            released += ready;
        }
        assert_eq!(released, stream.len());
        assert_eq!(
            seen,
            vec![
                (b'B', Some(b"portal\0stmt\0".to_vec())),
                (b'd', None),
                (b'E', Some(b"\0\0\0\0\0".to_vec())),
                (b'S', None),
            ]
        );
        assert_eq!(starts, vec![0, 17, 62, 72]);
        assert_eq!(scanner.counted(), 1);
        assert!(scanner.at_boundary());
    }

    #[test]
    fn a_message_held_whole_is_checked_against_the_limit_before_it_is_waited_for() {
        let stream = msg(b'Q', &[b'x'; 65]);
        let mut scanner = FrameScanner::new(64);
        scanner.hold_whole(TagSet::ALL);
        assert!(matches!(
            scanner.scan(&stream[..HEADER_LEN]),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn scanner_rejects_oversized_message_before_forwarding_it() {
        let stream = msg(b'd', &[0u8; 65]);
        let mut scanner = FrameScanner::new(64);
        assert!(matches!(
            scanner.scan(&stream),
            Err(WireError::TooLong { .. })
        ));
    }
}
