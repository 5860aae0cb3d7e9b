//! Query cancellation: each session gets its own random BackendKeyData (never the
//! upstream's); a CancelRequest carrying it is forwarded, with the upstream's own key, to
//! the upstream server the session runs on. An unknown key does nothing and reveals
//! nothing. See <https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.10>.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rand::RngExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

const CANCEL_REQUEST_CODE: i32 = 80_877_102;
const CANCEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The key a client sees: process id and secret, both random.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    pub process_id: i32,
    pub secret: i32,
}

/// Where a cancel for one session goes: the upstream address and the upstream's own
/// BackendKeyData body (process id and secret key).
#[derive(Debug, Clone)]
pub(crate) struct UpstreamKey {
    pub address: String,
    pub key_data: Bytes,
    /// Set once a cancel for this session has been forwarded: it may still be on its way
    /// when the session ends, so the upstream connection must not serve anyone else.
    pub forwarded: Arc<AtomicBool>,
}

impl UpstreamKey {
    pub fn new(address: String, key_data: Bytes) -> UpstreamKey {
        UpstreamKey {
            address,
            key_data,
            forwarded: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Live sessions' keys. The lock is never held across an await.
#[derive(Debug, Default)]
pub(crate) struct CancelMap {
    sessions: Mutex<HashMap<ClientKey, UpstreamKey>>,
}

impl CancelMap {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, UpstreamKey>> {
        // The map stays consistent even if a holder panicked: every operation on it is a
        // single insert or remove.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session under a fresh random key; the key is removed when the
    /// returned registration is dropped.
    pub(crate) fn register(&self, upstream: UpstreamKey) -> Registration<'_> {
        let forwarded = upstream.forwarded.clone();
        let mut sessions = self.lock();
        let key = loop {
            let candidate = {
                let mut rng = rand::rng();
                ClientKey {
                    process_id: rng.random(),
                    secret: rng.random(),
                }
            };
            if !sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        sessions.insert(key, upstream);
        Registration {
            map: self,
            key,
            forwarded,
        }
    }

    fn lookup(&self, key: ClientKey) -> Option<UpstreamKey> {
        self.lock().get(&key).cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A session's entry in the cancel map, removed on drop.
pub(crate) struct Registration<'a> {
    map: &'a CancelMap,
    pub key: ClientKey,
    forwarded: Arc<AtomicBool>,
}

impl Registration<'_> {
    /// True if a cancel for this session was ever forwarded upstream.
    pub fn cancel_forwarded(&self) -> bool {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.map.lock().remove(&self.key);
    }
}

/// Forwards a client's CancelRequest to the upstream it names, if any. Errors are only
/// logged: the protocol gives the canceller no answer either way.
pub(crate) async fn forward(map: &CancelMap, process_id: i32, secret_key: &[u8]) {
    let Ok(secret) = <[u8; 4]>::try_from(secret_key).map(i32::from_be_bytes) else {
        debug!("cancel request with a key of a foreign length ignored");
        return;
    };
    let Some(target) = map.lookup(ClientKey { process_id, secret }) else {
        debug!("cancel request for an unknown session ignored");
        return;
    };
    target.forwarded.store(true, Ordering::SeqCst);
    let mut packet = BytesMut::with_capacity(8 + target.key_data.len());
    packet.put_i32(i32::try_from(8 + target.key_data.len()).unwrap_or(i32::MAX));
    packet.put_i32(CANCEL_REQUEST_CODE);
    packet.put_slice(&target.key_data);
    let sent = tokio::time::timeout(CANCEL_CONNECT_TIMEOUT, async {
        let mut stream = TcpStream::connect(&target.address).await?;
        stream.write_all(&packet).await?;
        stream.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => debug!(upstream = %target.address, "cancel request forwarded"),
        Ok(Err(e)) => {
            debug!(upstream = %target.address, error = %e, "cancel request not delivered")
        }
        Err(_) => debug!(upstream = %target.address, "cancel request timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_get_distinct_keys_and_leave_on_drop() {
        let map = CancelMap::default();
        let target = UpstreamKey::new(
            "127.0.0.1:1".into(),
            Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 2]),
        );
        let first = map.register(target.clone());
        let second = map.register(target);
        assert_ne!(first.key, second.key);
        assert_eq!(map.len(), 2);
        assert!(map.lookup(first.key).is_some());
        let gone = first.key;
        drop(first);
        assert!(map.lookup(gone).is_none());
        assert_eq!(map.len(), 1);
    }
}
