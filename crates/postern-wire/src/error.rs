//! Errors of the wire codec: every one means the peer broke the protocol (SQLSTATE 08P01).

/// A protocol violation found while decoding bytes from a peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message length {len} is invalid (must be at least {min})")]
    LengthTooSmall { len: i64, min: usize },
    #[error("message of type {tag:?} is {len} bytes, over the limit of {limit}")]
    TooLong { tag: char, len: usize, limit: usize },
    #[error("startup packet of {len} bytes is over the limit of {limit}")]
    StartupTooLong { len: usize, limit: usize },
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    #[error("unexpected message type {tag:?} during {phase}")]
    Unexpected { tag: char, phase: &'static str },
}

impl WireError {
    pub(crate) fn malformed(what: &'static str) -> Self {
        WireError::Malformed { what }
    }
}
