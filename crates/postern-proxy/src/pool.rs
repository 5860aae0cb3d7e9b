//! Reuse of idle upstream connections, and the count of every upstream connection the
//! gateway holds. A client session still has one upstream session of its own for its whole
//! life; only after the client has said goodbye (Terminate) is its connection reset
//! (`DISCARD ALL` by default) and, if that leaves it idle and clean, kept for the next
//! client of the same service with the same upstream user, database and startup
//! parameters. Anything unexpected closes the connection instead.
//!
//! Every open connection (in use or idle) holds an [`OpenSlot`], so the pool knows how many
//! it has per target and per upstream user, and can make room under a target's bounds by
//! closing the least recently used idle connections first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use postern_model::{ConnectionLimits, PoolSpec, SslMode};
use postern_wire::frame::{peek_header, try_take_message, HEADER_LEN};
use postern_wire::tags::{backend as be, status};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use crate::io::read_more;
use crate::stream::UpstreamStream;
use crate::upstream::UpstreamConnection;

/// Connections are interchangeable only when all of these match. The TLS settings are
/// part of it: after a target's `sslMode` or `caFile` changes, no connection made under
/// the old ones is handed out again. `params` holds only startup parameters a session
/// cannot SET itself; `application_name` and its kind are applied after checkout.
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
    /// The thread whose session returned it: its socket is registered with that
    /// thread's runtime (see [`UpstreamStream::rebind`]).
    thread: std::thread::ThreadId,
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

/// What a server says it allows, read once per target and upstream user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ServerLimits {
    /// `max_connections` less the slots reserved for superusers (and, from PostgreSQL 16,
    /// `reserved_connections`).
    pub capacity: Option<u32>,
    /// The role's `CONNECTION LIMIT`; `None` when it has none.
    pub role_limit: Option<u32>,
}

/// The share of a server's capacity the gateway takes when the target sets no bound,
/// leaving room for administrators and other clients.
const DEFAULT_CAPACITY_SHARE: (u32, u32) = (9, 10);

/// One target's open connections and what its server allows.
#[derive(Default)]
struct TargetUse {
    open: usize,
    open_by_user: HashMap<String, usize>,
    /// By upstream user; absent until a login as that user has read them.
    learned: HashMap<String, ServerLimits>,
}

impl TargetUse {
    /// The bounds in force: the target's own, else what the server said.
    fn bounds(&self, user: &str, limits: ConnectionLimits) -> Bounds {
        let capacity = self.learned.values().find_map(|l| l.capacity);
        let learned_total =
            capacity.map(|c| (c * DEFAULT_CAPACITY_SHARE.0 / DEFAULT_CAPACITY_SHARE.1).max(1));
        let learned_user = self.learned.get(user).and_then(|l| l.role_limit);
        Bounds {
            total: limits.total.or(learned_total).map(as_usize),
            per_user: limits.per_user.or(learned_user).map(as_usize),
        }
    }

    fn open_for(&self, user: &str) -> usize {
        self.open_by_user.get(user).copied().unwrap_or(0)
    }
}

fn as_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The bounds in force for one new connection.
struct Bounds {
    total: Option<usize>,
    per_user: Option<usize>,
}

#[derive(Default)]
struct PoolState {
    idle: HashMap<PoolKey, Vec<Idle>>,
    /// By target address.
    targets: HashMap<String, TargetUse>,
}

impl PoolState {
    /// Takes the least recently returned idle connection of `address` (and of `user`,
    /// when given). Dropping it closes it: never under the lock.
    fn take_oldest(&mut self, address: &str, user: Option<&str>) -> Option<Idle> {
        let (key, index) = self
            .idle
            .iter()
            .filter(|(key, _)| key.address == address && user.is_none_or(|u| key.user == u))
            .flat_map(|(key, list)| list.iter().enumerate().map(move |(i, idle)| (key, i, idle)))
            .min_by_key(|(_, _, idle)| idle.since)
            .map(|(key, i, _)| (key.clone(), i))?;
        let list = self.idle.get_mut(&key)?;
        let idle = list.remove(index);
        if list.is_empty() {
            self.idle.remove(&key);
        }
        Some(idle)
    }
}

/// Counts one open upstream connection against its target and user until dropped.
pub(crate) struct OpenSlot {
    state: Arc<Mutex<PoolState>>,
    address: String,
    user: String,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if let Some(target) = state.targets.get_mut(&self.address) {
            target.open = target.open.saturating_sub(1);
            // Users come and go (a role per session in dynamic mode): keep only live counts.
            if let Some(count) = target.open_by_user.get_mut(&self.user) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    target.open_by_user.remove(&self.user);
                }
            }
        }
    }
}

/// A target whose own bound (`maxConnections…`) is reached with nothing idle to close.
#[derive(Debug)]
pub(crate) struct LimitReached {
    pub what: &'static str,
    pub limit: usize,
}

/// Room for one more connection: its slot, and the idle connections closed to make it.
pub(crate) struct Room {
    pub slot: OpenSlot,
    pub evicted: Vec<UpstreamConnection>,
}

fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    // Every operation leaves the maps whole before anything can panic.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Idle upstream connections by key, and open ones by target. The lock is never held
/// across an await.
#[derive(Default)]
pub(crate) struct Pool {
    state: Arc<Mutex<PoolState>>,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// The most recently returned live connection for `key`, if any, registered with the
    /// calling task's runtime when it was returned on another thread (relay threads).
    pub fn take(&self, key: &PoolKey) -> Option<UpstreamConnection> {
        let now = Instant::now();
        let mut dead = Vec::new();
        let found = {
            let mut state = self.lock();
            let list = state.idle.get_mut(key)?;
            let mut found = None;
            while let Some(candidate) = list.pop() {
                // A live idle connection has nothing to say: anything readable (EOF, an
                // error from a restarting server) means it is not reusable.
                if candidate.connection.stream.is_quiet() && !candidate.expired(now) {
                    found = Some(candidate);
                    break;
                }
                dead.push(candidate);
            }
            found
        };
        dead.into_iter().for_each(close);
        let Idle {
            mut connection,
            thread,
            ..
        } = found?;
        if thread != std::thread::current().id() {
            // A connection that cannot move is dropped; the caller logs in anew.
            connection.stream = connection.stream.rebind().ok()?;
        }
        Some(connection)
    }

    /// Keeps a reset connection for reuse, within the service's limits.
    pub fn put(&self, key: PoolKey, connection: UpstreamConnection, spec: &PoolSpec) {
        let idle = Idle {
            connection,
            thread: std::thread::current().id(),
            since: Instant::now(),
            idle_timeout: Duration::from_secs(spec.idle_timeout_secs),
            max_lifetime: Duration::from_secs(spec.max_lifetime_secs),
        };
        let mut state = self.lock();
        let list = state.idle.entry(key).or_default();
        if list.len() < usize::try_from(spec.max_idle).unwrap_or(usize::MAX)
            && !idle.expired(idle.since)
        {
            list.push(idle);
        } else {
            drop(state);
            close(idle);
        }
    }

    /// Counts a new connection to `address` as `user`, first taking out of the pool as
    /// many least recently used idle connections as the bounds need (the caller closes
    /// them). Fails only when the target's own bound would be passed even with every
    /// idle connection closed; a bound read from the server is left to the server.
    pub fn make_room(
        &self,
        address: &str,
        user: &str,
        limits: ConnectionLimits,
    ) -> Result<Room, LimitReached> {
        let mut state = self.lock();
        let (idle_total, idle_user) = state
            .idle
            .iter()
            .filter(|(key, _)| key.address == address)
            .fold((0, 0), |(all, mine), (key, list)| {
                (
                    all + list.len(),
                    mine + if key.user == user { list.len() } else { 0 },
                )
            });
        let target = state.targets.entry(address.to_owned()).or_default();
        let bounds = target.bounds(user, limits);
        let (mut open, mut open_user) = (target.open, target.open_for(user));
        if let Some(limit) = limits.per_user.map(as_usize) {
            if open_user - idle_user.min(open_user) >= limit {
                return Err(LimitReached {
                    what: "maxConnectionsPerUser",
                    limit,
                });
            }
        }
        if let Some(limit) = limits.total.map(as_usize) {
            if open - idle_total.min(open) >= limit {
                return Err(LimitReached {
                    what: "maxConnections",
                    limit,
                });
            }
        }
        let mut evicted = Vec::new();
        while bounds.per_user.is_some_and(|b| open_user >= b) {
            let Some(idle) = state.take_oldest(address, Some(user)) else {
                break;
            };
            evicted.push(idle.connection);
            open -= 1;
            open_user -= 1;
        }
        while bounds.total.is_some_and(|b| open >= b) {
            let Some(idle) = state.take_oldest(address, None) else {
                break;
            };
            evicted.push(idle.connection);
            open -= 1;
        }
        let target = state.targets.entry(address.to_owned()).or_default();
        target.open += 1;
        *target.open_by_user.entry(user.to_owned()).or_default() += 1;
        Ok(Room {
            slot: OpenSlot {
                state: self.state.clone(),
                address: address.to_owned(),
                user: user.to_owned(),
            },
            evicted,
        })
    }

    /// Takes every idle connection of `address` out of the pool (the caller closes them):
    /// the server said it is full.
    pub fn drain_target(&self, address: &str) -> Vec<UpstreamConnection> {
        let mut state = self.lock();
        let mut drained = Vec::new();
        while let Some(idle) = state.take_oldest(address, None) {
            drained.push(idle.connection);
        }
        drained
    }

    /// Whether the server's limits for `address` and `user` are still unknown.
    pub fn needs_server_limits(&self, address: &str, user: &str) -> bool {
        self.lock()
            .targets
            .get(address)
            .is_none_or(|t| !t.learned.contains_key(user))
    }

    pub fn learn_server_limits(&self, address: &str, user: &str, limits: ServerLimits) {
        self.lock()
            .targets
            .entry(address.to_owned())
            .or_default()
            .learned
            .insert(user.to_owned(), limits);
    }

    /// Closes connections past their idle timeout or lifetime.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        let expired: Vec<Idle> = {
            let mut state = self.lock();
            let mut expired = Vec::new();
            for list in state.idle.values_mut() {
                let (keep, gone): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                    .into_iter()
                    .partition(|i| !i.expired(now));
                *list = keep;
                expired.extend(gone);
            }
            state.idle.retain(|_, list| !list.is_empty());
            expired
        };
        expired.into_iter().for_each(close);
    }

    /// Idle connections, over every key.
    pub fn idle_count(&self) -> usize {
        self.lock().idle.values().map(Vec::len).sum()
    }

    /// Closes every idle connection (at shutdown).
    pub fn clear(&self) {
        let drained: Vec<Idle> = self
            .lock()
            .idle
            .drain()
            .flat_map(|(_, list)| list)
            .collect();
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
        if !matches!(
            tag,
            be::ERROR_RESPONSE
                | be::READY_FOR_QUERY
                | be::COPY_IN_RESPONSE
                | be::COPY_BOTH_RESPONSE
        ) {
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
            be::ERROR_RESPONSE if ready_owed == 1 => return Err("reset query failed"),
            be::ERROR_RESPONSE => {}
            be::COPY_IN_RESPONSE | be::COPY_BOTH_RESPONSE => {
                return Err("a COPY was still waiting for data")
            }
            _ => {
                ready_owed -= 1;
                if ready_owed == 0 {
                    let idle = message.body.first() == Some(&status::IDLE);
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
