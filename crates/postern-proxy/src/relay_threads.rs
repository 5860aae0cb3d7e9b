//! Thread-per-core relaying: sessions handed round-robin to N current-thread runtimes,
//! one OS thread each, so a session's reads, writes and wake-ups stay on one thread
//! with no work stealing between them. With none, sessions run on the accepting runtime.
//!
//! Why one listener and a hand-off rather than one SO_REUSEPORT listener per thread: the
//! kernel spreads SO_REUSEPORT connections by a hash of their addresses, and a pooler's
//! clients are few and long-lived (eight pgbench clients can land six on one thread);
//! round-robin spreads them evenly, and accepting costs once per connection, not per
//! statement.

use std::io;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Relay runtimes running on their own threads; dropping this stops them (their
/// sessions' tasks are dropped, closing their sockets).
pub struct RelayThreads {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
}

impl RelayThreads {
    /// Starts `count` relay threads (none for 0).
    pub fn start(count: usize) -> io::Result<RelayThreads> {
        let mut relays = RelayThreads {
            handles: Vec::with_capacity(count),
            stops: Vec::with_capacity(count),
        };
        for n in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            relays.handles.push(runtime.handle().clone());
            relays.stops.push(stop);
            // Not joined: the runtime ends on its own thread once told to stop, and
            // joining could block an async worker.
            std::thread::Builder::new()
                .name(format!("relay-{n}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(relays)
    }

    /// The runtimes sessions are spread over; empty when sessions stay on the caller's.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for RelayThreads {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}
