//! Reuse of idle upstream connections. A client session still has one upstream session
//! of its own for its whole life; only after the client has said goodbye (Terminate) is
//! its connection reset (`DISCARD ALL` by default) and, if that leaves it idle and clean,
//! kept for the next client of the same service with the same upstream user, database and
//! startup parameters. Anything unexpected closes the connection instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use postern_model::{PoolSpec, SslMode};
use postern_wire::frame::{peek_header, try_take_message, HEADER_LEN};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use crate::io::read_more;
use crate::stream::UpstreamStream;
use crate::upstream::UpstreamConnection;

/// Connections are interchangeable only when all of these match. The TLS settings are
/// part of it: after a target's `sslMode` or `caFile` changes, no connection made under
/// the old ones is handed out again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub service: String,
    pub address: String,
    pub ssl_mode: SslMode,
    pub ca_file: Option<String>,
    pub user: String,
    pub database: String,
    pub params: Vec<(String, String)>,
}

struct Idle {
    connection: UpstreamConnection,
    since: Instant,
    idle_timeout: Duration,
    max_lifetime: Duration,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= self.idle_timeout
            || now.duration_since(self.connection.logged_in_at) >= self.max_lifetime
    }
}

fn close(idle: Idle) {
    idle.connection.stream.send_terminate_nowait();
}

/// Idle upstream connections by key. The lock is never held across an await.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Idle>>> {
        // Every operation is a single push, pop or retain: a panic cannot leave it torn.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently returned live connection for `key`, if any.
    pub fn take(&self, key: &PoolKey) -> Option<UpstreamConnection> {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        while let Some(candidate) = list.pop() {
            // A live idle connection has nothing to say: anything readable (EOF, an
            // error from a restarting server) means it is not reusable.
            if candidate.connection.stream.is_quiet() && !candidate.expired(now) {
                return Some(candidate.connection);
            }
            close(candidate);
        }
        None
    }

    /// Keeps a reset connection for reuse, within the service's limits.
    pub fn put(&self, key: PoolKey, connection: UpstreamConnection, spec: &PoolSpec) {
        let idle = Idle {
            connection,
            since: Instant::now(),
            idle_timeout: Duration::from_secs(spec.idle_timeout_secs),
            max_lifetime: Duration::from_secs(spec.max_lifetime_secs),
        };
        let mut pool = self.lock();
        let list = pool.entry(key).or_default();
        if list.len() < usize::try_from(spec.max_idle).unwrap_or(usize::MAX)
            && !idle.expired(idle.since)
        {
            list.push(idle);
        } else {
            close(idle);
        }
    }

    /// Closes connections past their idle timeout or lifetime.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        let mut pool = self.lock();
        for list in pool.values_mut() {
            let (keep, expired): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                .into_iter()
                .partition(|i| !i.expired(now));
            *list = keep;
            expired.into_iter().for_each(close);
        }
        pool.retain(|_, list| !list.is_empty());
    }

    /// Idle connections, over every key.
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Closes every idle connection (at shutdown).
    pub fn clear(&self) {
        let drained: Vec<Idle> = self.lock().drain().flat_map(|(_, list)| list).collect();
        drained.into_iter().for_each(close);
    }
}

/// Cap on the messages the reset reads whole (errors, ReadyForQuery, COPY starts).
const RESET_MESSAGE_LIMIT: usize = 64 * 1024;

async fn fill(stream: &mut UpstreamStream, buf: &mut BytesMut) -> Result<(), &'static str> {
    match read_more(stream, buf).await {
        Ok(0) => Err("closed"),
        Ok(_) => Ok(()),
        Err(_) => Err("read failed"),
    }
}

/// Brings a connection whose client has gone back to idle: sends `reset_query`, then
/// reads past the replies still owed to the client (`ready_owed` ReadyForQuery messages;
/// `unread` holds bytes already read, the first `skip` of them the rest of a message
/// body) and past the reset's own replies. Succeeds only if the reset ran without error
/// and left the connection idle outside a transaction with nothing more to say.
/// Not cancel-safe; the caller bounds it with a timeout and drops the connection on any
/// failure.
pub(crate) async fn reset(
    stream: &mut UpstreamStream,
    mut unread: BytesMut,
    mut skip: usize,
    ready_owed: u64,
    reset_query: &str,
) -> Result<(), &'static str> {
    let mut out = BytesMut::new();
    frontend::query(reset_query, &mut out).map_err(|_| "reset query contains a NUL byte")?;
    stream.write_all(&out).await.map_err(|_| "write failed")?;
    stream.flush().await.map_err(|_| "write failed")?;
    let mut ready_owed = ready_owed + 1;
    loop {
        // The rest of a message nobody needs: drop it as it comes, whatever its size.
        if skip > 0 {
            if unread.is_empty() {
                fill(stream, &mut unread).await?;
            }
            let n = skip.min(unread.len());
            unread.advance(n);
            skip -= n;
            continue;
        }
        let Some((tag, body_len)) =
            peek_header(&unread, i32::MAX as usize).map_err(|_| "bad frame")?
        else {
            fill(stream, &mut unread).await?;
            continue;
        };
        if !matches!(tag, b'E' | b'Z' | b'G' | b'W') {
            unread.advance(HEADER_LEN);
            skip = body_len;
            continue;
        }
        let Some(message) =
            try_take_message(&mut unread, RESET_MESSAGE_LIMIT).map_err(|_| "bad frame")?
        else {
            fill(stream, &mut unread).await?;
            continue;
        };
        match message.tag {
            // An error in the client's own last statements is theirs; one in the reset
            // means the connection cannot be trusted.
            b'E' if ready_owed == 1 => return Err("reset query failed"),
            b'E' => {}
            b'G' | b'W' => return Err("a COPY was still waiting for data"),
            _ => {
                ready_owed -= 1;
                if ready_owed == 0 {
                    let idle = message.body.first() == Some(&b'I');
                    return if idle && unread.is_empty() {
                        Ok(())
                    } else {
                        Err("not idle after the reset")
                    };
                }
            }
        }
    }
}
