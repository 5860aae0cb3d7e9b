//! The hot path after login: one task per session moves framed messages both ways. Every
//! header is checked against the length limit, bodies are forwarded untouched as they
//! arrive (a 1 GiB message is never buffered whole), and each read is followed by one
//! write of everything that is ready.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, BytesMut};
use postern_wire::{FrameScanner, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::error::{SessionError, UpstreamError};

const BUFFER_SIZE: usize = 32 * 1024;

/// Messages from PostgreSQL are bounded by its own 1 GiB allocation limit; the gateway
/// only checks that lengths are sane there.
const UPSTREAM_MESSAGE_LIMIT: usize = i32::MAX as usize;

/// How a relay ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayEnd {
    ClientClosed,
    UpstreamClosed,
}

enum PumpError {
    Read(std::io::Error),
    Write(std::io::Error),
    Wire(WireError),
}

/// Moves bytes from `from` to `to`, frame-checked, until `from` ends. `at_boundary` is
/// true whenever everything written so far ends on a message boundary. Not cancel-safe
/// (a write may be cut short); the relay drops it only when the session ends.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    mut buf: BytesMut,
    limit: usize,
    at_boundary: &AtomicBool,
) -> Result<(), PumpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scanner = FrameScanner::new(limit);
    loop {
        if !buf.is_empty() {
            let ready = scanner.scan(&buf).map_err(PumpError::Wire)?;
            if ready > 0 {
                at_boundary.store(false, Ordering::Relaxed);
                to.write_all(&buf[..ready])
                    .await
                    .map_err(PumpError::Write)?;
                at_boundary.store(scanner.at_boundary(), Ordering::Relaxed);
                buf.advance(ready);
            }
        }
        if buf.capacity() - buf.len() < BUFFER_SIZE / 4 {
            buf.reserve(BUFFER_SIZE);
        }
        match from.read_buf(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(PumpError::Read(e)),
        }
    }
}

/// Relays until either side closes, a frame is invalid, or the gateway stops.
/// `client_pending` / `upstream_pending` are bytes already read from each side.
/// An error that strikes while a message to the client is half written comes back as
/// [`SessionError::MidMessage`]: the client cannot be sent an ErrorResponse then.
pub(crate) async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    mut client_pending: BytesMut,
    mut upstream_pending: BytesMut,
    max_message: usize,
    service: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<RelayEnd, SessionError> {
    let upstream_failed = |source| SessionError::Upstream {
        service: service.to_owned(),
        source,
    };
    let (mut client_rx, mut client_tx) = client.split();
    let (mut upstream_rx, mut upstream_tx) = upstream.split();
    client_pending.reserve(BUFFER_SIZE);
    upstream_pending.reserve(BUFFER_SIZE);
    let upstream_at_boundary = AtomicBool::new(true);
    let client_at_boundary = AtomicBool::new(true);
    let to_upstream = pump(
        &mut client_rx,
        &mut upstream_tx,
        client_pending,
        max_message,
        &upstream_at_boundary,
    );
    let to_client = pump(
        &mut upstream_rx,
        &mut client_tx,
        upstream_pending,
        UPSTREAM_MESSAGE_LIMIT,
        &client_at_boundary,
    );
    let result = tokio::select! {
        result = to_upstream => match result {
            Ok(()) => Ok(RelayEnd::ClientClosed),
            Err(PumpError::Read(e)) => Err(SessionError::ClientIo(e)),
            Err(PumpError::Write(e)) => Err(upstream_failed(UpstreamError::Lost(e))),
            Err(PumpError::Wire(e)) => Err(SessionError::Protocol(e)),
        },
        result = to_client => match result {
            Ok(()) => Ok(RelayEnd::UpstreamClosed),
            Err(PumpError::Read(e)) => Err(upstream_failed(UpstreamError::Lost(e))),
            Err(PumpError::Write(e)) => Err(SessionError::ClientIo(e)),
            Err(PumpError::Wire(e)) => Err(upstream_failed(UpstreamError::Protocol(e))),
        },
        _ = stop.wait_for(|stopping| *stopping) => Err(SessionError::ShuttingDown),
    };
    result.map_err(|error| {
        if client_at_boundary.load(Ordering::Relaxed) {
            error
        } else {
            SessionError::MidMessage(Box::new(error))
        }
    })
}
