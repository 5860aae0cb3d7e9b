//! What the gateway gives a plugin — its log, cache, HTTP client, secrets and clock — as
//! plain functions. In a component they call the host's imports; in a `cargo test` on
//! the host they answer from the fake that [`crate::testing::FakeHost`] installs, so a
//! plugin's logic is tested without a gateway. (Which imports a plugin may call depends
//! on its world and its resource: a policy hook calling [`http_send`] is refused at
//! `apply`.)

use std::time::SystemTime;

use crate::{HttpError, Level, Request, Response, SecretError};

#[cfg(target_arch = "wasm32")]
use crate::shared::postern::plugin::{cache, http_client, log, secrets};

/// Writes `message` into the gateway's log, tagged with the plugin (rate-limited there).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    log::write(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|host| host.record_log(level, message));
}

/// The plugin cache's value for `key`, unless it expired.
pub fn cache_get(key: &str) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    return cache::get(key);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|host| host.cache_get(key))
}

/// Keeps `value` under `key` for `ttl_ms` (the gateway bounds entries and bytes).
pub fn cache_set(key: &str, value: &[u8], ttl_ms: u32) {
    #[cfg(target_arch = "wasm32")]
    cache::set(key, value, ttl_ms);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|host| host.cache_set(key, value, ttl_ms));
}

/// Sends `request` to an origin the plugin's `spec.http.allow` lists.
pub fn http_send(request: &Request) -> Result<Response, HttpError> {
    #[cfg(target_arch = "wasm32")]
    return http_client::send(request);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|host| host.http_send(request))
}

/// The value of the Secret `name` of the plugin's namespace, if its resource grants it.
pub fn secret(name: &str) -> Result<String, SecretError> {
    #[cfg(target_arch = "wasm32")]
    return secrets::get(name);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|host| host.read_secret(name))
}

/// The wall clock (WASI's, which `postern plugin test` fixes; the fake's in a test).
pub fn now() -> SystemTime {
    #[cfg(target_arch = "wasm32")]
    return SystemTime::now();
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::with_host(|host| host.now())
}

/// [`now`] in whole seconds since the Unix epoch (0 before it).
pub fn unix_seconds() -> i64 {
    now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}
