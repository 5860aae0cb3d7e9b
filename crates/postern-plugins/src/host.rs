//! What a plugin's store holds and the host imports it may call: `log` (into Postern's
//! log, tagged and rate-limited) and `cache` (bounded, shared by the plugin's instances).
//! Also the check that a component imports only what its world offers and its resource
//! grants.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, StoreLimits};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{cache, http_client, log, secrets, types};
use crate::error::PluginError;

/// A host interface a plugin's resource may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    Log,
    Cache,
    HttpClient,
    Secrets,
}

impl Capability {
    /// The interface's name in `wit/plugin.wit`.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Cache => "cache",
            Capability::HttpClient => "http-client",
            Capability::Secrets => "secrets",
        }
    }

    pub fn from_interface(name: &str) -> Option<Capability> {
        [
            Capability::Log,
            Capability::Cache,
            Capability::HttpClient,
            Capability::Secrets,
        ]
        .into_iter()
        .find(|c| c.interface() == name)
    }
}

/// WASI interfaces every plugin may import. Nothing behind them is granted (no
/// environment, no preopened directories, stdin empty, stdout and stderr into the plugin's
/// log, every socket refused), so importing them gives a plugin nothing but the clocks and
/// randomness. Rust's standard library imports most of them whether it uses them or not;
/// components with an interpreter inside (componentize-py) import `wasi:sockets` too.
/// `wasi:http` is not among them: outbound HTTP is `postern:plugin/http-client`'s.
const WASI_PACKAGES: [&str; 6] = ["cli", "io", "clocks", "random", "filesystem", "sockets"];

/// The WIT package plugins are built against (`wit/plugin.wit`).
pub const PACKAGE: &str = "postern:plugin";
/// The version of [`PACKAGE`] this gateway implements.
pub const PACKAGE_VERSION: &str = "0.1.0";

/// The versions this gateway loads, as people say them: `0.1.x` (for 0.y, a new minor
/// version breaks), or `1.0–1.3` (for 1.y and later, up to this gateway's minor).
pub fn supported_versions() -> String {
    match semver::Version::parse(PACKAGE_VERSION) {
        Ok(v) if v.major == 0 => format!("{PACKAGE}@0.{}.x", v.minor),
        Ok(v) => format!("{PACKAGE}@{}.0 to {}.{}.x", v.major, v.major, v.minor),
        Err(_) => format!("{PACKAGE}@{PACKAGE_VERSION}"),
    }
}

/// Whether a component built against `version` of [`PACKAGE`] runs on this gateway:
/// the same major version, and the same minor for 0.y (where a minor version may break),
/// or at most this gateway's minor for 1.y and later (a newer one may call functions this
/// gateway does not have). Patch versions never matter.
pub fn compatible_version(version: &str) -> bool {
    let (Ok(built), Ok(ours)) = (
        semver::Version::parse(version),
        semver::Version::parse(PACKAGE_VERSION),
    ) else {
        return false;
    };
    built.major == ours.major
        && if ours.major == 0 {
            built.minor == ours.minor
        } else {
            built.minor <= ours.minor
        }
}

/// The versions of [`PACKAGE`] a component's imports and exports name, in order.
pub(crate) fn package_versions(engine: &Engine, component: &Component) -> Vec<String> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    let mut versions: Vec<String> = names
        .filter_map(|name| name.strip_prefix(PACKAGE)?.strip_prefix('/'))
        .filter_map(|rest| rest.split_once('@').map(|(_, v)| v.to_owned()))
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// Refuses a component built against a version of [`PACKAGE`] this gateway cannot run,
/// naming both versions.
pub(crate) fn check_version(
    plugin: &str,
    engine: &Engine,
    component: &Component,
) -> Result<(), PluginError> {
    match package_versions(engine, component)
        .into_iter()
        .find(|v| !compatible_version(v))
    {
        Some(built) => Err(PluginError::Version {
            plugin: plugin.to_owned(),
            built: format!("{PACKAGE}@{built}"),
            supported: supported_versions(),
        }),
        None => Ok(()),
    }
}

/// What an import asks of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportNeed {
    /// A WASI interface with nothing behind it (clocks and randomness only).
    Wasi,
    /// `postern:plugin/types`: type definitions, nothing to grant.
    Types,
    /// A host interface the plugin's resource must grant.
    Capability(Capability),
}

/// What an import needs, or why no plugin of a kind offering `offered` may have it.
pub fn classify_import(name: &str, offered: &[Capability]) -> Result<ImportNeed, &'static str> {
    let (path, version) = name.split_once('@').unwrap_or((name, ""));
    let Some((package, interface)) = path.split_once('/') else {
        return Err("is not an interface of postern:plugin or WASI");
    };
    match package {
        "wasi:http" => Err("plugins are never given (outbound HTTP is postern:plugin/http-client)"),
        _ if package
            .strip_prefix("wasi:")
            .is_some_and(|p| WASI_PACKAGES.contains(&p)) =>
        {
            Ok(ImportNeed::Wasi)
        }
        PACKAGE => {
            if !compatible_version(version) {
                return Err("is a version of postern:plugin this gateway does not offer");
            }
            if interface == "types" {
                return Ok(ImportNeed::Types);
            }
            let Some(capability) = Capability::from_interface(interface) else {
                return Err("postern:plugin does not define");
            };
            if !offered.contains(&capability) {
                return Err("this kind of plugin is never given");
            }
            Ok(ImportNeed::Capability(capability))
        }
        _ => Err("is not an interface of postern:plugin or WASI"),
    }
}

/// Refuses a component that imports anything but harmless WASI and the interfaces in
/// `offered` that `granted` names. The error names the first such import.
pub(crate) fn check_imports(
    plugin: &str,
    engine: &Engine,
    component: &Component,
    offered: &[Capability],
    granted: &[Capability],
) -> Result<(), PluginError> {
    for (name, _) in component.component_type().imports(engine) {
        let why = match classify_import(name, offered) {
            Ok(ImportNeed::Capability(c)) if !granted.contains(&c) => {
                "the plugin's resource does not grant (spec.capabilities)"
            }
            Ok(_) => continue,
            Err(why) => why,
        };
        return Err(PluginError::UngrantedImport {
            plugin: plugin.to_owned(),
            import: name.to_owned(),
            why,
        });
    }
    Ok(())
}

/// What the gateway gives plugins as the current time; tests fake it.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

pub(crate) struct PluginClock(pub WallClock);

impl HostWallClock for PluginClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        (self.0)().duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

/// Lines a plugin may log per second, and at once after a quiet spell.
const LOG_LINES_PER_SECOND: f64 = 50.0;
const LOG_BURST: f64 = 100.0;
/// A logged line is cut to this many bytes.
const LOG_LINE_BYTES: usize = 2048;
/// The cache's bound per plugin: keys and values together.
const CACHE_BYTES: u64 = 1 << 20;
const CACHE_ENTRIES_ESTIMATE: usize = 4096;

struct LogBudget {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last one written.
    suppressed: u64,
}

#[derive(Clone)]
struct CacheEntry {
    value: Arc<[u8]>,
    expires: Instant,
}

#[derive(Clone)]
struct EntryBytes;

impl quick_cache::Weighter<String, CacheEntry> for EntryBytes {
    fn weight(&self, key: &String, entry: &CacheEntry) -> u64 {
        (key.len() + entry.value.len()) as u64 + 1
    }
}

/// Where plugins' log lines go besides the gateway's own log (the state database, for
/// `postern plugin logs`): namespace, plugin, level (`info`, …), the line.
pub type LogLines = Arc<dyn Fn(&str, &str, &'static str, &str) + Send + Sync>;

/// What all instances of one plugin share.
pub(crate) struct PluginShared {
    pub name: String,
    namespace: String,
    log_lines: Option<LogLines>,
    log: Mutex<LogBudget>,
    cache: quick_cache::sync::Cache<String, CacheEntry, EntryBytes>,
    http: Arc<HttpGrant>,
    secret_names: Vec<String>,
    secrets: Option<SecretReader>,
}

impl PluginShared {
    pub fn new(
        spec: &crate::PluginSpec,
        secrets: Option<SecretReader>,
        log_lines: Option<LogLines>,
    ) -> PluginShared {
        PluginShared {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            log_lines,
            http: Arc::new(spec.http.clone()),
            secret_names: spec.secrets.clone(),
            secrets,
            log: Mutex::new(LogBudget {
                tokens: LOG_BURST,
                refilled: Instant::now(),
                suppressed: 0,
            }),
            cache: quick_cache::sync::Cache::with_weighter(
                CACHE_ENTRIES_ESTIMATE,
                CACHE_BYTES,
                EntryBytes,
            ),
        }
    }

    pub(crate) fn log(&self, level: log::Level, message: &str) {
        let suppressed = {
            let mut budget = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(budget.refilled).as_secs_f64() * LOG_LINES_PER_SECOND;
            budget.tokens = (budget.tokens + refill).min(LOG_BURST);
            budget.refilled = now;
            if budget.tokens < 1.0 {
                budget.suppressed += 1;
                return;
            }
            budget.tokens -= 1.0;
            std::mem::take(&mut budget.suppressed)
        };
        let plugin = self.name.as_str();
        if suppressed > 0 {
            tracing::warn!(target: "postern::plugin", plugin, suppressed, "plugin log lines dropped (rate limit)");
            // The gap shows where the lines are read too (`postern plugin logs`).
            if let Some(lines) = &self.log_lines {
                let gap = format!(
                    "({suppressed} lines dropped here: more than {LOG_LINES_PER_SECOND} a second)"
                );
                lines(&self.namespace, plugin, "warn", &gap);
            }
        }
        let mut end = message.len().min(LOG_LINE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        if let Some(lines) = &self.log_lines {
            let level_name = match level {
                log::Level::Trace => "trace",
                log::Level::Debug => "debug",
                log::Level::Info => "info",
                log::Level::Warn => "warn",
                log::Level::Error => "error",
            };
            lines(&self.namespace, plugin, level_name, message);
        }
        match level {
            log::Level::Trace => tracing::trace!(target: "postern::plugin", plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "postern::plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "postern::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "postern::plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "postern::plugin", plugin, "{message}"),
        }
    }
}

/// The data of one instance's store.
pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub shared: Arc<PluginShared>,
    /// Epoch ticks the current call spent waiting on the host (HTTP): its time limit
    /// counts the guest's own time, so these are given back when the deadline comes.
    pub host_wait_ticks: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) {
        self.shared.log(level, &message);
    }
}

impl cache::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let entry = self.shared.cache.get(&key)?;
        if entry.expires <= Instant::now() {
            self.shared.cache.remove(&key);
            return None;
        }
        Some(entry.value.to_vec())
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u32) {
        let expires = Instant::now() + Duration::from_millis(u64::from(ttl_ms));
        self.shared.cache.insert(
            key,
            CacheEntry {
                value: value.into(),
                expires,
            },
        );
    }

    fn delete(&mut self, key: String) {
        self.shared.cache.remove(&key);
    }
}

/// Reads a secret of the plugin's namespace by name (the gateway's store).
pub type SecretReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where a plugin's `http-client` may go, and how far.
#[derive(Debug, Clone)]
pub struct HttpGrant {
    /// `(scheme, host, port)`, host lowercased.
    pub allow: Vec<(String, String, u16)>,
    pub timeout: Duration,
    pub max_response_bytes: u64,
    /// Answers given in place of the network (`postern plugin test`): a request the
    /// allow-list lets through gets the first one for its method and URL, or a connect
    /// error; nothing leaves the machine.
    pub canned: Option<Arc<Vec<CannedResponse>>>,
}

/// A response `postern plugin test` gives to one method and URL.
#[derive(Debug, Clone)]
pub struct CannedResponse {
    pub method: String,
    pub url: url::Url,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Default for HttpGrant {
    fn default() -> Self {
        HttpGrant {
            allow: Vec::new(),
            timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
            canned: None,
        }
    }
}

/// Whether an address is one a plugin reaches only by naming it: anything but a global
/// unicast address (loopback, private, link-local, shared, benchmarking, reserved,
/// multicast, documentation; for IPv6 anything outside 2000::/3, and the 6to4 and
/// documentation ranges inside it; IPv4-mapped addresses as their IPv4).
fn is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && c == 0)
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(v4.into());
            }
            let [first, second, ..] = v6.segments();
            (first & 0xe000) != 0x2000 || first == 0x2002 || (first == 0x2001 && second == 0x0db8)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{
        compatible_version, http_client, is_internal, HttpGrant, PACKAGE, PACKAGE_VERSION,
    };

    #[test]
    fn the_gateway_implements_the_version_the_wit_declares() {
        let wit = include_str!("../../../wit/plugin.wit");
        assert!(
            wit.contains(&format!("package {PACKAGE}@{PACKAGE_VERSION};")),
            "wit/plugin.wit declares another version than PACKAGE_VERSION"
        );
    }

    /// `wit/README.md`'s reference lists every interface, world, type and function the
    /// WIT declares, as `| interface | item |` rows (worlds under `worlds`).
    #[test]
    fn the_wit_reference_lists_everything_the_wit_declares() {
        let wit = include_str!("../../../wit/plugin.wit");
        let readme = include_str!("../../../wit/README.md");
        let mut interface = "";
        let mut missing = Vec::new();
        for line in wit.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let declared = match words.as_slice() {
                ["interface", name, ..] => {
                    interface = name;
                    continue;
                }
                ["world", name, ..] => Some(("worlds", *name)),
                ["record" | "variant" | "enum", name, ..] => Some((interface, *name)),
                ["type", name, ..] => Some((interface, *name)),
                [name, ..] if name.ends_with(':') && line.contains(": func(") => {
                    Some((interface, name.trim_end_matches(':')))
                }
                _ => None,
            };
            if let Some((scope, name)) = declared {
                if !readme.contains(&format!("| `{scope}` | `{name}` |"))
                    && !readme.contains(&format!("| {scope} | `{name}` |"))
                {
                    missing.push(format!("{scope}/{name}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "wit/README.md's reference lacks {missing:?}"
        );
    }

    #[test]
    fn components_of_the_same_0_minor_are_compatible() {
        assert!(compatible_version(PACKAGE_VERSION));
        assert!(compatible_version("0.1.7"));
        assert!(!compatible_version("0.2.0"));
        assert!(!compatible_version("1.0.0"));
        assert!(!compatible_version("0.1"));
        assert!(!compatible_version(""));
    }

    fn get(url: &str) -> http_client::Request {
        http_client::Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 0,
        }
    }

    #[test]
    fn only_allowed_origins_and_no_name_that_leads_inside() {
        // A loopback port nobody listens on (bound, then let go).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let grant = HttpGrant {
            allow: vec![
                ("http".into(), "localhost".into(), port),
                ("http".into(), "127.0.0.1".into(), port),
            ],
            ..HttpGrant::default()
        };
        let other = port.wrapping_add(1);
        for (url, why) in [
            (
                format!("http://localhost:{port}/"),
                "a name that resolves to loopback",
            ),
            (format!("http://127.0.0.1:{other}/"), "a port not allowed"),
            (format!("https://127.0.0.1:{port}/"), "a scheme not allowed"),
            (format!("http://user:pw@127.0.0.1:{port}/"), "userinfo"),
            (format!("http://example.com:{port}/"), "a host not allowed"),
        ] {
            assert!(
                matches!(grant.send(get(&url)), Err(http_client::HttpError::Denied)),
                "{why}: {url}"
            );
        }
        let mut connect = get(&format!("http://127.0.0.1:{port}/"));
        connect.method = "CONNECT".into();
        assert!(matches!(
            grant.send(connect),
            Err(http_client::HttpError::Denied)
        ));
        // The address itself, named in the allow-list, is tried: refused by the closed
        // port, not denied.
        assert!(matches!(
            grant.send(get(&format!("http://127.0.0.1:{port}/"))),
            Err(http_client::HttpError::Connect(_))
        ));
    }

    /// A server on 127.0.0.1 that reads one request and writes `answer` (or nothing,
    /// holding the connection, when `answer` is `None`); its port.
    fn serve_once(answer: Option<String>) -> u16 {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(socket);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            match answer {
                Some(answer) => {
                    let _ = reader.get_mut().write_all(answer.as_bytes());
                }
                // Hold the connection until the client gives up.
                None => {
                    let _ = reader.read_line(&mut line);
                }
            }
        });
        port
    }

    fn grant_for(port: u16) -> HttpGrant {
        HttpGrant {
            allow: vec![("http".into(), "127.0.0.1".into(), port)],
            timeout: std::time::Duration::from_millis(300),
            max_response_bytes: 1024,
            canned: None,
        }
    }

    #[test]
    fn redirects_are_returned_not_followed_and_size_and_time_are_bounded() {
        let port = serve_once(Some(
            "HTTP/1.1 302 Found\r\nlocation: http://10.0.0.1/\r\ncontent-length: 0\r\n\r\n".into(),
        ));
        let response = grant_for(port)
            .send(get(&format!("http://127.0.0.1:{port}/")))
            .unwrap();
        assert_eq!(response.status, 302);

        let big = "x".repeat(4096);
        let port = serve_once(Some(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}",
            big.len()
        )));
        assert!(matches!(
            grant_for(port).send(get(&format!("http://127.0.0.1:{port}/"))),
            Err(http_client::HttpError::TooLarge)
        ));

        let port = serve_once(None);
        assert!(matches!(
            grant_for(port).send(get(&format!("http://127.0.0.1:{port}/"))),
            Err(http_client::HttpError::Timeout)
        ));
    }

    #[test]
    fn only_global_unicast_addresses_are_outside() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fec0::1",
            "2002:7f00:1::1",
            "2001:db8::1",
            "64:ff9b::7f00:1",
            "::ffff:127.0.0.1",
            "::7f00:1",
        ] {
            assert!(is_internal(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!is_internal(outside.parse().unwrap()), "{outside}");
        }
    }
}

/// Resolves to the addresses [`HttpGrant::send`] checked, whatever is asked.
#[derive(Debug)]
struct Checked(Vec<std::net::SocketAddr>);

impl ureq::unversioned::resolver::Resolver for Checked {
    fn resolve(
        &self,
        _uri: &http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        if self.0.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        let mut resolved = self.empty();
        // ureq keeps at most 16.
        for address in self.0.iter().take(16) {
            resolved.push(*address);
        }
        Ok(resolved)
    }
}

impl HttpGrant {
    /// Sends one request, blocking (run it on a blocking thread).
    fn send(
        &self,
        request: http_client::Request,
    ) -> Result<http_client::Response, http_client::HttpError> {
        use http_client::HttpError;
        let url = url::Url::parse(&request.url).map_err(|_| HttpError::Denied)?;
        let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return Err(HttpError::Denied);
        };
        let host_text = match &host {
            url::Host::Domain(name) => name.to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => format!("[{ip}]"),
        };
        let listed = self
            .allow
            .iter()
            .any(|(s, h, p)| *s == url.scheme() && *h == host_text && *p == port);
        const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
        if !listed
            || !url.username().is_empty()
            || url.password().is_some()
            || !METHODS.contains(&request.method.as_str())
        {
            return Err(HttpError::Denied);
        }
        if let Some(canned) = &self.canned {
            // As the network would answer: a name that leads inside is refused (only
            // `localhost` is known without resolving), a body past the limit too large.
            if matches!(&host, url::Host::Domain(name) if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost"))
            {
                return Err(HttpError::Denied);
            }
            let answer = canned
                .iter()
                .find(|c| c.method == request.method && c.url == url)
                .ok_or_else(|| {
                    HttpError::Connect(format!("no canned response for {} {url}", request.method))
                })?;
            if answer.body.len() as u64 > self.max_response_bytes {
                return Err(HttpError::TooLarge);
            }
            return Ok(http_client::Response {
                status: answer.status,
                headers: answer.headers.clone(),
                body: answer.body.clone(),
            });
        }
        // The addresses the request may go to, resolved once here and handed to the
        // client as they are: resolving the name again could answer otherwise (DNS
        // rebinding). A name must not lead inside: only an origin naming the address may.
        let addresses: Vec<std::net::SocketAddr> = match &host {
            url::Host::Domain(name) => {
                use std::net::ToSocketAddrs;
                let resolved: Vec<_> = (*name, port)
                    .to_socket_addrs()
                    .map_err(|e| HttpError::Connect(format!("cannot resolve {name}: {e}")))?
                    .collect();
                if resolved.iter().any(|a| is_internal(a.ip())) {
                    return Err(HttpError::Denied);
                }
                resolved
            }
            url::Host::Ipv4(ip) => vec![std::net::SocketAddr::new((*ip).into(), port)],
            url::Host::Ipv6(ip) => vec![std::net::SocketAddr::new((*ip).into(), port)],
        };
        let asked = Duration::from_millis(u64::from(request.timeout_ms));
        let timeout = if asked.is_zero() {
            self.timeout
        } else {
            asked.min(self.timeout)
        };
        let config = ureq::Agent::config_builder()
            // No proxy from the environment: it would take the request past these checks.
            .proxy(None)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            Checked(addresses),
        );
        // The URL as checked, not the plugin's text (two parsers may read it apart).
        let mut builder = http::Request::builder()
            .method(request.method.as_str())
            .uri(url.as_str());
        const HOST_SET: [&str; 7] = [
            "host",
            "connection",
            "transfer-encoding",
            "content-length",
            "upgrade",
            "te",
            "proxy-authorization",
        ];
        for (name, value) in &request.headers {
            if !HOST_SET.contains(&name.to_ascii_lowercase().as_str()) {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        let built = builder
            .body(request.body)
            .map_err(|e| HttpError::Connect(format!("bad request: {e}")))?;
        let mut response = agent.run(built).map_err(|e| match e {
            ureq::Error::Timeout(_) => HttpError::Timeout,
            ureq::Error::Rustls(e) => HttpError::Tls(e.to_string()),
            other => HttpError::Connect(other.to_string()),
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(self.max_response_bytes)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => HttpError::TooLarge,
                ureq::Error::Timeout(_) => HttpError::Timeout,
                other => HttpError::Connect(other.to_string()),
            })?;
        Ok(http_client::Response {
            status,
            headers,
            body,
        })
    }
}

impl http_client::Host for HostState {
    async fn send(
        &mut self,
        request: http_client::Request,
    ) -> Result<http_client::Response, http_client::HttpError> {
        let grant = self.shared.http.clone();
        let started = Instant::now();
        let answer = tokio::task::spawn_blocking(move || grant.send(request))
            .await
            .unwrap_or_else(|_| Err(http_client::HttpError::Connect("internal error".into())));
        let waited = started.elapsed().as_millis() / crate::runtime::EPOCH_TICK.as_millis();
        self.host_wait_ticks = self
            .host_wait_ticks
            .saturating_add(u64::try_from(waited).unwrap_or(u64::MAX).saturating_add(1));
        answer
    }
}

impl secrets::Host for HostState {
    fn get(&mut self, name: String) -> Result<String, secrets::SecretError> {
        if !self.shared.secret_names.contains(&name) {
            return Err(secrets::SecretError::NotGranted);
        }
        self.shared
            .secrets
            .as_ref()
            .and_then(|read| read(&name))
            .ok_or(secrets::SecretError::NotFound)
    }
}

/// A store for one instance of a plugin: WASI with nothing granted (the runtime's clock;
/// stdout and stderr into the plugin's log), its memory limit, and the deadline of its
/// first call.
pub(crate) fn new_store(
    runtime: &crate::Runtime,
    spec: &crate::PluginSpec,
    shared: &Arc<PluginShared>,
    timeout_ticks: u64,
) -> wasmtime::Store<HostState> {
    let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
    if let Some(clock) = &runtime.settings.clock {
        wasi.wall_clock(PluginClock(clock.clone()));
    }
    // Importing wasi:sockets is allowed (interpreters import it whether they use it or
    // not); every use of it is refused.
    wasi.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    wasi.stdout(PluginOutput::new(shared.clone(), log::Level::Info));
    wasi.stderr(PluginOutput::new(shared.clone(), log::Level::Warn));
    let state = HostState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limits: wasmtime::StoreLimitsBuilder::new()
            .memory_size(spec.memory_bytes)
            .instances(16)
            .build(),
        shared: shared.clone(),
        host_wait_ticks: 0,
    };
    let mut store = wasmtime::Store::new(&runtime.engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(timeout_ticks);
    store.epoch_deadline_callback(|mut store| {
        let credit = std::mem::take(&mut store.data_mut().host_wait_ticks);
        Ok(if credit > 0 {
            wasmtime::UpdateDeadline::Continue(credit)
        } else {
            wasmtime::UpdateDeadline::Interrupt
        })
    });
    store
}

/// A plugin's stdout or stderr: each line goes to the gateway's log as the plugin's
/// (rate-limited as its `log` import is), never to the gateway's own output. Writes
/// never wait, so a policy hook that prints still runs to its end in one go.
#[derive(Clone)]
pub(crate) struct PluginOutput {
    shared: Arc<PluginShared>,
    level: log::Level,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl PluginOutput {
    pub fn new(shared: Arc<PluginShared>, level: log::Level) -> PluginOutput {
        PluginOutput {
            shared,
            level,
            pending: Arc::default(),
        }
    }

    fn take(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.shared
                .log(self.level, String::from_utf8_lossy(&line).trim_end());
        }
        if pending.len() > LOG_LINE_BYTES {
            let line = std::mem::take(&mut *pending);
            self.shared.log(self.level, &String::from_utf8_lossy(&line));
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::OutputStream for PluginOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for PluginOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for PluginOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.take(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
