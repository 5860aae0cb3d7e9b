//! Small socket helpers shared by the handshake phases.

use bytes::BytesMut;
use postern_wire::frame::{try_take_message, Message};
use postern_wire::WireError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::SessionError;
use crate::stream::ClientStream;

const READ_CHUNK: usize = 8 * 1024;

/// Turns on TCP keepalive on `tcp` when `idle` is set: after `idle` without traffic the
/// kernel probes the peer every 10 s and, when nobody answers (a host gone, a cable cut,
/// a NAT that forgot the flow), fails the socket, so a dead peer does not hold a session
/// and its upstream forever. Small protocol messages are not held back for Nagle.
pub(crate) fn tune_socket(tcp: &tokio::net::TcpStream, idle: Option<std::time::Duration>) {
    let _ = tcp.set_nodelay(true);
    if let Some(idle) = idle {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(std::time::Duration::from_secs(10));
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
            tracing::debug!(error = %e, "could not turn on TCP keepalive");
        }
    }
}

/// Reads whatever is available into `buf`; `Ok(0)` means end of stream.
/// Cancel-safe: bytes read before cancellation stay in `buf`.
pub(crate) async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    stream.read_buf(buf).await
}

/// Why reading one message failed.
pub(crate) enum ReadError {
    Eof,
    Io(std::io::Error),
    Wire(WireError),
}

/// Reads until one whole message (body at most `limit` bytes) is in `buf` and takes it.
/// Cancel-safe: partial messages stay in `buf`.
pub(crate) async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Message, ReadError> {
    loop {
        if let Some(message) = try_take_message(buf, limit).map_err(ReadError::Wire)? {
            return Ok(message);
        }
        match read_more(stream, buf).await {
            Ok(0) => return Err(ReadError::Eof),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Writes and flushes `out` to the client, then clears it.
pub(crate) async fn send(
    client: &mut ClientStream,
    out: &mut BytesMut,
) -> Result<(), SessionError> {
    client
        .write_all(out)
        .await
        .map_err(SessionError::ClientIo)?;
    client.flush().await.map_err(SessionError::ClientIo)?;
    out.clear();
    Ok(())
}
