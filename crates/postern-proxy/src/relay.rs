//! The hot path after login: one task per session moves framed messages both ways. Every
//! header is checked against the length limit, bodies are forwarded untouched as they
//! arrive (a 1 GiB message is never buffered whole), and each read is followed by one
//! write of everything that is ready.
//!
//! Each direction's buffer and scanner live outside the pump futures, so once the relay
//! stops, the session can tell exactly where each stream stands (to hand a clean upstream
//! connection back to the pool, or to know whether the client can still be told why the
//! session ended).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use postern_wire::tags::{backend as be, frontend as fe, status};
use postern_wire::{FrameScanner, TagSet, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::error::{SessionError, UpstreamError};
use crate::inspect::{ClientAction, Inspector, CLIENT_WHOLE, UPSTREAM_WHOLE};
use futures_util::future::Either;

const BUFFER_SIZE: usize = 32 * 1024;

/// Messages from PostgreSQL are bounded by its own 1 GiB allocation limit; the gateway
/// only checks that lengths are sane there.
const UPSTREAM_MESSAGE_LIMIT: usize = i32::MAX as usize;

/// One direction of the relay.
pub(crate) struct Direction {
    /// Bytes read and not yet written on; the first `released` of them were scanned and
    /// are being written.
    pub buf: BytesMut,
    pub released: usize,
    pub scanner: FrameScanner,
}

impl Direction {
    /// Client to upstream: stops in front of Terminate, counts the ReadyForQuery
    /// replies owed and whether an extended-protocol batch is open.
    pub fn from_client(pending: BytesMut, max_message: usize) -> Direction {
        Direction::new(
            pending,
            FrameScanner::new(max_message)
                .counting_requests()
                .stopping_at(fe::TERMINATE),
        )
    }

    /// Upstream to client: counts ReadyForQuery messages.
    pub fn from_upstream(pending: BytesMut) -> Direction {
        Direction::new(
            pending,
            FrameScanner::new(UPSTREAM_MESSAGE_LIMIT).counting(TagSet::of(&[be::READY_FOR_QUERY])),
        )
    }

    fn new(mut buf: BytesMut, scanner: FrameScanner) -> Direction {
        buf.reserve(BUFFER_SIZE);
        Direction {
            buf,
            released: 0,
            scanner,
        }
    }

    /// Everything this direction sent on ends on a message boundary.
    pub fn sent_whole_messages(&self) -> bool {
        self.released == 0 && self.scanner.at_boundary()
    }
}

/// Limits of a session; `None` is off.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionLimits {
    pub idle: Option<Duration>,
    pub in_transaction: Option<Duration>,
    /// When the session's credential lease runs out.
    pub deadline: Option<Instant>,
    /// How long one write to the client (at most what one read brought, tens of KiB)
    /// may take before the client counts as no longer reading.
    pub client_write: Option<Duration>,
}

/// What the idle timer needs to know, published by the pumps after each write.
struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last bytes relayed either way.
    last_ms: AtomicU64,
    /// Queries, Syncs and FunctionCalls forwarded upstream.
    requests: AtomicU64,
    /// ReadyForQuery messages forwarded to the client.
    replies: AtomicU64,
    /// The client has sent extended-protocol messages since its last Sync.
    batch_open: AtomicBool,
    /// Status byte of a ReadyForQuery that was the last message to the client, else 0.
    status: AtomicU8,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            batch_open: AtomicBool::new(false),
            // A session starts right after the login's (or reset's) ReadyForQuery, idle.
            status: AtomicU8::new(status::IDLE),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// The transaction status when the session is idle: every request answered and
    /// nothing since the last ReadyForQuery. A running query or COPY is not idle. An
    /// extended-protocol batch without its Sync holds an implicit transaction: once
    /// every request before it is answered, the session counts as in a transaction
    /// (the gateway cannot tell a statement still running without output from a client
    /// that stopped before its Sync).
    fn idle_status(&self) -> Option<u8> {
        let answered =
            self.requests.load(Ordering::Relaxed) == self.replies.load(Ordering::Relaxed);
        if !answered {
            return None;
        }
        if self.batch_open.load(Ordering::Relaxed) {
            return Some(status::IN_TRANSACTION);
        }
        let status = self.status.load(Ordering::Relaxed);
        (status != 0).then_some(status)
    }
}

/// Resolves with the timeout error once the session has been idle longer than its limit.
async fn idle_timer(activity: &Activity, limits: SessionLimits) -> SessionError {
    let Some(shortest) = [limits.idle, limits.in_transaction]
        .into_iter()
        .flatten()
        .min()
    else {
        return std::future::pending().await;
    };
    loop {
        let last = activity.last_ms.load(Ordering::Relaxed);
        let status = activity.idle_status();
        let limit = match status {
            Some(status::IDLE) => limits.idle,
            Some(_) => limits.in_transaction,
            None => None,
        };
        // When this state's limit runs out, if nothing happens meanwhile.
        let due = limit.and_then(|limit| {
            activity
                .epoch
                .checked_add(Duration::from_millis(last).saturating_add(limit))
        });
        // The state may change without waking this timer (an idle session begins a
        // transaction): look again after the shortest limit at the latest.
        // A time past the clock's range never comes.
        let Some(wake) = [due, Instant::now().checked_add(shortest)]
            .into_iter()
            .flatten()
            .min()
        else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(wake.into()).await;
        let unchanged =
            activity.last_ms.load(Ordering::Relaxed) == last && activity.idle_status() == status;
        let expired = due.is_some_and(|due| Instant::now() >= due);
        if let (Some(limit), true) = (limit, unchanged && expired) {
            let secs = limit.as_secs();
            return if status == Some(status::IDLE) {
                SessionError::IdleTimeout { secs }
            } else {
                SessionError::IdleInTransactionTimeout { secs }
            };
        }
    }
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// How a relay ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayEnd {
    /// The client sent Terminate; it was not forwarded.
    ClientTerminated,
    ClientClosed,
    UpstreamClosed,
}

enum PumpError {
    Read(std::io::Error),
    Write(std::io::Error),
    /// A write did not finish within the pump's write timeout.
    Stalled(Duration),
    Wire(WireError),
}

/// Writes `bytes` to `to` and flushes, within `limit` when there is one.
async fn write_within<W: AsyncWrite + Unpin>(
    to: &mut W,
    bytes: &[u8],
    limit: Option<Duration>,
) -> Result<(), PumpError> {
    let write = async {
        to.write_all(bytes).await?;
        // Pushes TLS records out; a no-op on plain TCP.
        to.flush().await
    };
    let Some(limit) = limit else {
        return write.await.map_err(PumpError::Write);
    };
    let mut write = std::pin::pin!(write);
    // Almost every write finishes at once (the socket has room): those arm no timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(written) = first {
        return written.map_err(PumpError::Write);
    }
    match tokio::time::timeout(limit, write).await {
        Ok(written) => written.map_err(PumpError::Write),
        Err(_) => Err(PumpError::Stalled(limit)),
    }
}

/// Reads what `from` has into `buf`, growing it when it runs low; false at end of stream.
/// Cancel-safe: bytes read are in `buf` whenever the future is dropped.
async fn read_more<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut BytesMut,
) -> Result<bool, PumpError> {
    if buf.capacity() - buf.len() < BUFFER_SIZE / 4 {
        buf.reserve(BUFFER_SIZE);
    }
    match from.read_buf(buf).await {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(PumpError::Read(e)),
    }
}

/// What happens to one whole message on its way through.
enum Edit {
    Keep,
    Drop,
    Replace(BytesMut),
}

/// Moves bytes from `from` to `to`, frame-checked, until `from` ends or the scanner stops.
/// For each read, `visitor` makes the visitor the scanner shows each message once (whole
/// for the types it holds whole; the visitor is dropped before the write), and a whole
/// message may be dropped or replaced; the rest pass untouched. After each write,
/// `forwarded` learns the scanner's state and the bytes sent.
/// Not cancel-safe as a stream operation (a write may be cut short), but `dir` always
/// says what was released and what not.
async fn pump<R, W, V>(
    from: &mut R,
    (to, write_limit): (&mut W, Option<Duration>),
    dir: &mut Direction,
    mut visitor: impl FnMut() -> V,
    forwarded: impl Fn(&FrameScanner, usize),
) -> Result<(), PumpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    V: FnMut(u8, Option<&[u8]>) -> Result<Edit, WireError>,
{
    // (start, end, edit) of edited messages in the bytes scanned, in order.
    let mut edits: Vec<(usize, usize, Edit)> = Vec::new();
    let mut edited = BytesMut::new();
    loop {
        if !dir.buf.is_empty() {
            let ready = {
                let mut visit = visitor();
                dir.scanner.scan_visiting(&dir.buf, |frame| {
                    match visit(frame.tag, frame.body)? {
                        Edit::Keep => {}
                        // Only a message seen whole can be cut out whole.
                        _ if frame.body.is_none() => {}
                        edit => edits.push((frame.start, frame.end(), edit)),
                    }
                    Ok::<(), WireError>(())
                })
            }
            .map_err(PumpError::Wire)?;
            if ready > 0 {
                dir.released = ready;
                // Edited messages lie wholly inside what the scanner released.
                let bytes: &[u8] = if edits.is_empty() {
                    &dir.buf[..ready]
                } else {
                    let mut at = 0;
                    for (start, end, edit) in edits.drain(..) {
                        edited.extend_from_slice(&dir.buf[at..start]);
                        if let Edit::Replace(bytes) = edit {
                            edited.extend_from_slice(&bytes);
                        }
                        at = end;
                    }
                    edited.extend_from_slice(&dir.buf[at..ready]);
                    &edited
                };
                let sent = bytes.len();
                write_within(to, bytes, write_limit).await?;
                dir.buf.advance(ready);
                dir.released = 0;
                edited.clear();
                forwarded(&dir.scanner, sent);
            }
            if dir.scanner.stopped() {
                return Ok(());
            }
        }
        if !read_more(from, &mut dir.buf).await? {
            return Ok(());
        }
    }
}

/// Relays until either side closes, the client terminates, a frame is invalid, the
/// session's `deadline` (its credential lease) passes, or the gateway stops. An error that strikes while a message to the client is half written
/// comes back as [`SessionError::MidMessage`]: the client cannot be sent an
/// ErrorResponse then.
pub(crate) async fn relay<CR, CW, UR, UW>(
    (client_rx, client_tx): (&mut CR, &mut CW),
    (upstream_rx, upstream_tx): (&mut UR, &mut UW),
    (from_client, from_upstream): (&mut Direction, &mut Direction),
    service: &str,
    limits: SessionLimits,
    watched: Option<&Inspector>,
    stop: &mut watch::Receiver<bool>,
) -> Result<RelayEnd, SessionError>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let upstream_failed = |source| SessionError::Upstream {
        service: service.to_owned(),
        source,
    };
    let activity = Activity::new();
    let to_upstream = |scanner: &FrameScanner, _: usize| {
        activity
            .requests
            .store(scanner.counted(), Ordering::Relaxed);
        activity
            .batch_open
            .store(scanner.batch_open(), Ordering::Relaxed);
        activity.status.store(0, Ordering::Relaxed);
        activity.touch();
    };
    let to_client = |scanner: &FrameScanner, _: usize| {
        activity.replies.store(scanner.counted(), Ordering::Relaxed);
        activity
            .status
            .store(scanner.ready_status().unwrap_or(0), Ordering::Relaxed);
        activity.touch();
    };
    let (to_upstream, to_client) = match watched {
        None => (
            Either::Left(pump(
                client_rx,
                (upstream_tx, None),
                from_client,
                || |_: u8, _: Option<&[u8]>| Ok(Edit::Keep),
                to_upstream,
            )),
            Either::Left(pump(
                upstream_rx,
                (client_tx, limits.client_write),
                from_upstream,
                || |_: u8, _: Option<&[u8]>| Ok(Edit::Keep),
                to_client,
            )),
        ),
        Some(inspector) => {
            from_client.scanner.hold_whole(CLIENT_WHOLE);
            from_upstream.scanner.hold_whole(UPSTREAM_WHOLE);
            (
                Either::Right(pump(
                    client_rx,
                    (upstream_tx, None),
                    from_client,
                    || {
                        let mut watch = inspector.watch();
                        move |tag: u8, body: Option<&[u8]>| match watch
                            .client_message(tag, body.unwrap_or_default())?
                        {
                            ClientAction::Forward => Ok(Edit::Keep),
                            ClientAction::Replace(bytes) => Ok(Edit::Replace(bytes)),
                        }
                    },
                    |s, sent| {
                        inspector.count_from_client(sent);
                        to_upstream(s, sent)
                    },
                )),
                Either::Right(pump(
                    upstream_rx,
                    (client_tx, limits.client_write),
                    from_upstream,
                    || {
                        let mut watch = inspector.watch();
                        move |tag: u8, body: Option<&[u8]>| {
                            Ok(if watch.upstream_message(tag, body) {
                                Edit::Keep
                            } else {
                                Edit::Drop
                            })
                        }
                    },
                    |s, sent| {
                        inspector.count_to_client(sent);
                        to_client(s, sent)
                    },
                )),
            )
        }
    };
    let result = tokio::select! {
        result = to_upstream => match result {
            Ok(()) => Ok(RelayEnd::ClientClosed),
            Err(PumpError::Read(e)) => Err(SessionError::ClientIo(e)),
            Err(PumpError::Write(e)) => Err(upstream_failed(UpstreamError::Lost(e))),
            Err(PumpError::Stalled(_)) => Err(upstream_failed(UpstreamError::Lost(
                std::io::ErrorKind::TimedOut.into(),
            ))),
            Err(PumpError::Wire(e)) => Err(SessionError::Protocol(e)),
        },
        result = to_client => match result {
            Ok(()) => Ok(RelayEnd::UpstreamClosed),
            Err(PumpError::Read(e)) => Err(upstream_failed(UpstreamError::Lost(e))),
            Err(PumpError::Write(e)) => Err(SessionError::ClientIo(e)),
            Err(PumpError::Stalled(limit)) => Err(SessionError::ClientStalled { secs: limit.as_secs() }),
            Err(PumpError::Wire(e)) => Err(upstream_failed(UpstreamError::Protocol(e))),
        },
        error = idle_timer(&activity, limits) => Err(error),
        () = until(limits.deadline) => Err(SessionError::LeaseExpired),
        _ = stop.wait_for(|stopping| *stopping) => Err(SessionError::ShuttingDown),
    };
    match result {
        Ok(RelayEnd::ClientClosed) if from_client.scanner.stopped() => {
            Ok(RelayEnd::ClientTerminated)
        }
        Ok(end) => Ok(end),
        Err(error) if from_upstream.sent_whole_messages() => Err(error),
        Err(error) => Err(SessionError::MidMessage(Box::new(error))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use postern_model::SessionInfo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_server_sending_terminate_is_relayed_not_a_panic() {
        // PostgreSQL never sends 'X'; a broken or hostile upstream might. The watched
        // relay passes it on like any other message.
        let (mut client_app, client_end) = tokio::io::duplex(4096);
        let (mut server_app, server_end) = tokio::io::duplex(4096);
        let (mut client_rx, mut client_tx) = tokio::io::split(client_end);
        let (mut server_rx, mut server_tx) = tokio::io::split(server_end);
        let from_server: &[u8] = b"X\0\0\0\x04Z\0\0\0\x05I";
        server_app.write_all(from_server).await.unwrap();
        drop(server_app);
        let inspector = Inspector::new(None, 0, None, None, Arc::new(SessionInfo::default()));
        let mut from_client = Direction::from_client(BytesMut::new(), 1 << 20);
        let mut from_upstream = Direction::from_upstream(BytesMut::new());
        let (_stop, mut stop) = watch::channel(false);
        let end = relay(
            (&mut client_rx, &mut client_tx),
            (&mut server_rx, &mut server_tx),
            (&mut from_client, &mut from_upstream),
            "svc",
            SessionLimits::default(),
            Some(&inspector),
            &mut stop,
        )
        .await
        .unwrap();
        assert_eq!(end, RelayEnd::UpstreamClosed);
        drop((client_rx, client_tx));
        let mut seen = Vec::new();
        client_app.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, from_server);
    }
}
