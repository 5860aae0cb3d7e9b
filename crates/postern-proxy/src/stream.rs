//! Connections in clear or TLS as one stream type per leg; the relay still splits a plain
//! TCP stream without locks.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The client connection.
pub(crate) enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Between taking the TCP stream out for the TLS handshake and putting TLS back; a
    /// failed handshake leaves it here, and every I/O on it fails.
    Upgrading,
}

/// The upstream connection.
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "TLS handshake did not complete",
    )
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

impl UpstreamStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            UpstreamStream::Plain(tcp) => tcp,
            UpstreamStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// True when the peer has sent nothing (no data, no close) since the last read: what
    /// an idle upstream connection looks like. Peeks, so nothing is consumed.
    pub fn is_quiet(&self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.tcp().poll_peek(&mut cx, &mut buf), Poll::Pending)
    }

    /// The same connection registered with the calling task's runtime, so a pooled
    /// connection made on another relay thread wakes the thread that now uses it. Over
    /// TLS it stays where it was registered (tokio-rustls cannot rebuild a stream from
    /// its parts); that works, with a wake-up across threads.
    pub fn rebind(self) -> io::Result<UpstreamStream> {
        match self {
            UpstreamStream::Plain(tcp) => {
                Ok(UpstreamStream::Plain(TcpStream::from_std(tcp.into_std()?)?))
            }
            tls @ UpstreamStream::Tls(_) => Ok(tls),
        }
    }

    /// Best-effort Terminate before the connection is dropped; over TLS the close is
    /// left to the transport (a raw write would corrupt the record stream).
    pub fn send_terminate_nowait(&self) {
        if let UpstreamStream::Plain(tcp) = self {
            let _ = tcp.try_write(&postern_wire::tags::frontend::TERMINATE_MESSAGE);
        }
    }
}

/// Implements AsyncRead and AsyncWrite for an enum whose variants wrap streams.
macro_rules! delegate_io {
    ($ty:ident { $($variant:ident),* } $(, $closed:ident)?) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)*
                    $($ty::$closed => Poll::Ready(Err(not_connected())),)?
                }
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write(cx, buf),)*
                    $($ty::$closed => Poll::Ready(Err(not_connected())),)?
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_flush(cx),)*
                    $($ty::$closed => Poll::Ready(Err(not_connected())),)?
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_shutdown(cx),)*
                    $($ty::$closed => Poll::Ready(Ok(())),)?
                }
            }
        }
    };
}

delegate_io!(ClientStream { Plain, Tls }, Upgrading);
delegate_io!(UpstreamStream { Plain, Tls });

/// The read half of a split stream: TCP's own split (no lock) or tokio's for TLS.
pub(crate) enum ReadHalf<'a, T> {
    Tcp(tokio::net::tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut T>),
}

/// The write half matching [`ReadHalf`].
pub(crate) enum WriteHalf<'a, T> {
    Tcp(tokio::net::tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut T>),
}

type Halves<'a, T> = (ReadHalf<'a, T>, WriteHalf<'a, T>);

fn split_tls<T: AsyncRead + AsyncWrite + Unpin>(tls: &mut T) -> Halves<'_, T> {
    let (rx, tx) = tokio::io::split(tls);
    (ReadHalf::Tls(rx), WriteHalf::Tls(tx))
}

fn split_tcp<T>(tcp: &mut TcpStream) -> Halves<'_, T> {
    let (rx, tx) = tcp.split();
    (ReadHalf::Tcp(rx), WriteHalf::Tcp(tx))
}

impl ClientStream {
    pub fn split(&mut self) -> io::Result<Halves<'_, tokio_rustls::server::TlsStream<TcpStream>>> {
        match self {
            ClientStream::Plain(tcp) => Ok(split_tcp(tcp)),
            ClientStream::Tls(tls) => Ok(split_tls(tls.as_mut())),
            ClientStream::Upgrading => Err(not_connected()),
        }
    }
}

impl UpstreamStream {
    pub fn split(&mut self) -> Halves<'_, tokio_rustls::client::TlsStream<TcpStream>> {
        match self {
            UpstreamStream::Plain(tcp) => split_tcp(tcp),
            UpstreamStream::Tls(tls) => split_tls(tls.as_mut()),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadHalf<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteHalf<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
