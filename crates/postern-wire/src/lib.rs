//! PostgreSQL wire codec with no I/O: framing, startup packets, backend messages and the
//! server side of SCRAM-SHA-256. Spec: <https://www.postgresql.org/docs/15/protocol.html>.
//!
//! A message stays `(tag, Bytes)` until someone needs its fields; the relay never decodes
//! what it only forwards. Every length read from the wire is checked against a limit before
//! anything is allocated for it.

pub mod backend;
pub mod certificate;
mod error;
pub mod frame;
pub mod frontend;
pub mod scram;
pub mod startup;
pub mod tags;

pub use error::WireError;
pub use frame::{Frame, FrameScanner, Message, TagSet};
pub use startup::{StartupParams, StartupRequest};

/// Default cap on a startup packet (PostgreSQL itself allows 10 000 bytes).
pub const DEFAULT_MAX_STARTUP_PACKET: usize = 10 * 1024;
/// Default cap on any one message after startup (PostgreSQL's own limit for data is 1 GiB).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;
/// Cap on messages exchanged during authentication, whatever the data limit says.
pub const MAX_AUTH_MESSAGE: usize = 10 * 1024;
