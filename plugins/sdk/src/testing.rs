//! Unit-testing a plugin with `cargo test` on the host: [`FakeHost`] stands in for the
//! gateway behind [`crate::host`] — a clock that stands still until moved, secrets, canned
//! HTTP responses, the cache — and keeps what the plugin logged and asked for, per test
//! thread. Builders make the inputs the gateway would pass ([`identity`], [`statement`],
//! [`client`]). Not in a component: only on the host.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::{ClientInfo, HttpError, Identity, Level, Request, Response, SecretError, Statement};

thread_local! {
    static HOST: RefCell<FakeHost> = RefCell::new(FakeHost::new());
}

/// The fake gateway of the current test thread. Build one, then [`FakeHost::install`]
/// it; a test that installs nothing gets an empty one on the real clock.
#[derive(Default)]
pub struct FakeHost {
    clock: Option<SystemTime>,
    secrets: HashMap<String, String>,
    responses: HashMap<(String, String), Result<Response, HttpError>>,
    cache: HashMap<String, (Vec<u8>, SystemTime)>,
    logs: Vec<(Level, String)>,
    requests: Vec<Request>,
}

impl FakeHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the clock at `seconds` since the Unix epoch ([`advance`] moves it).
    pub fn at_unix_seconds(mut self, seconds: u64) -> Self {
        self.clock = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        self
    }

    /// A Secret the plugin's resource grants.
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.to_owned(), value.to_owned());
        self
    }

    /// `method url` answers `status` with `body` (no headers). A request nothing answers
    /// fails with `HttpError::Denied`, as one to an origin not allowed would.
    pub fn http_response(self, method: &str, url: &str, status: u16, body: &[u8]) -> Self {
        let response = Response {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
        };
        self.http_answer(method, url, Ok(response))
    }

    /// `method url` gets `answer` (a response or an error such as a timeout).
    pub fn http_answer(
        mut self,
        method: &str,
        url: &str,
        answer: Result<Response, HttpError>,
    ) -> Self {
        self.responses
            .insert((method.to_ascii_uppercase(), url.to_owned()), answer);
        self
    }

    /// Makes this the current thread's host, forgetting the one before (its cache, logs
    /// and requests too).
    pub fn install(self) {
        HOST.with(|host| *host.borrow_mut() = self);
    }

    pub(crate) fn record_log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_owned()));
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.unwrap_or_else(SystemTime::now)
    }

    pub(crate) fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.now();
        self.cache
            .get(key)
            .filter(|(_, expires)| now < *expires)
            .map(|(value, _)| value.clone())
    }

    pub(crate) fn cache_set(&mut self, key: &str, value: &[u8], ttl_ms: u32) {
        let expires = self.now() + Duration::from_millis(u64::from(ttl_ms));
        self.cache.insert(key.to_owned(), (value.to_vec(), expires));
    }

    pub(crate) fn http_send(&mut self, request: &Request) -> Result<Response, HttpError> {
        self.requests.push(request.clone());
        let key = (request.method.to_ascii_uppercase(), request.url.clone());
        self.responses
            .get(&key)
            .cloned()
            .unwrap_or(Err(HttpError::Denied))
    }

    pub(crate) fn read_secret(&self, name: &str) -> Result<String, SecretError> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or(SecretError::NotGranted)
    }
}

pub(crate) fn with_host<T>(f: impl FnOnce(&mut FakeHost) -> T) -> T {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Moves the current thread's fake clock on by `by` (stopping it first if it ran).
pub fn advance(by: Duration) {
    with_host(|host| host.clock = Some(host.now() + by));
}

/// What the plugin wrote through [`crate::host::log`] since its host was installed.
pub fn logs() -> Vec<(Level, String)> {
    with_host(|host| host.logs.clone())
}

/// The HTTP requests the plugin sent since its host was installed, in order.
pub fn requests() -> Vec<Request> {
    with_host(|host| host.requests.clone())
}

/// `name` of `namespace`, in no groups, with no attributes, never expiring.
pub fn identity(name: &str, namespace: &str) -> Identity {
    Identity {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        groups: Vec::new(),
        attributes: Vec::new(),
        expires_at: None,
    }
}

/// A statement of `kind` (`select`, `insert`, …) naming `tables` (`schema.table`), with
/// no text and fingerprint 1.
pub fn statement(kind: &str, tables: &[&str]) -> Statement {
    Statement {
        kind: kind.to_owned(),
        tables: tables.iter().map(|table| (*table).to_owned()).collect(),
        functions: Vec::new(),
        fingerprint: 1,
        text: None,
    }
}

/// A TLS client at 127.0.0.1 asking for `database` as `user`.
pub fn client(database: &str, user: &str) -> ClientInfo {
    ClientInfo {
        peer_address: "127.0.0.1:50000".to_owned(),
        database: database.to_owned(),
        user: user.to_owned(),
        application_name: "psql".to_owned(),
        tls: true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{advance, logs, requests, FakeHost};
    use crate::{host, HttpError, Level, Request};

    fn get(url: &str) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 0,
        }
    }

    #[test]
    fn the_fake_host_answers_for_the_gateway() {
        FakeHost::new()
            .at_unix_seconds(1_000)
            .secret("api-token", "t0k3n")
            .http_response("GET", "https://example.test/a", 200, b"hello")
            .install();
        assert_eq!(host::unix_seconds(), 1_000);
        assert_eq!(host::secret("api-token").ok().as_deref(), Some("t0k3n"));
        assert!(host::secret("other").is_err());
        let response = host::http_send(&get("https://example.test/a")).unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"hello"[..])
        );
        assert!(matches!(
            host::http_send(&get("https://example.test/b")),
            Err(HttpError::Denied)
        ));
        assert_eq!(requests().len(), 2);
        host::log(Level::Info, "hi");
        assert_eq!(logs(), vec![(Level::Info, "hi".to_owned())]);
    }

    #[test]
    fn cache_entries_expire_on_the_fake_clock() {
        FakeHost::new().at_unix_seconds(0).install();
        host::cache_set("k", b"v", 1_000);
        assert_eq!(host::cache_get("k").as_deref(), Some(&b"v"[..]));
        advance(Duration::from_millis(999));
        assert!(host::cache_get("k").is_some());
        advance(Duration::from_millis(1));
        assert_eq!(host::cache_get("k"), None);
    }
}
