//! Small socket helpers shared by the handshake phases.

use bytes::BytesMut;
use postern_wire::frame::{try_take_message, Message};
use postern_wire::WireError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::SessionError;
use crate::stream::ClientStream;

const READ_CHUNK: usize = 8 * 1024;

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
