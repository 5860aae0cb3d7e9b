//! A policy hook that tries the network through `wasi:sockets` (Rust's `std::net` on
//! wasm32-wasip2): a TCP connection to the port its config names on 127.0.0.1, a UDP
//! socket, a name lookup. The gateway lets it import the interfaces and refuses every
//! use; the hook denies with what each attempt got, for the test to read.

use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::OnceLock;

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::postern::plugin::policy_hook::Guest;
use postern::plugin::types::{ClientInfo, Decision, Identity, Statement, Verdict};

static PORT: OnceLock<u16> = OnceLock::new();

fn outcome<T, E: std::fmt::Debug>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("refused ({e:?})"),
    }
}

struct Sockets;

impl Guest for Sockets {
    fn init(config: String) -> Result<(), String> {
        let port = config
            .trim()
            .parse()
            .map_err(|e| format!("config: a port: {e}"))?;
        PORT.set(port).map_err(|_| "init called twice".to_owned())
    }

    fn on_connect(_identity: Identity, _client: ClientInfo) -> Verdict {
        Verdict {
            decision: Decision::Allow,
            cache_ttl_ms: 0,
        }
    }

    fn on_statement(_identity: Identity, _statement: Statement) -> Verdict {
        let port = PORT.get().copied().unwrap_or(9);
        let tcp = outcome(TcpStream::connect(("127.0.0.1", port)));
        let udp = outcome(
            UdpSocket::bind("127.0.0.1:0")
                .and_then(|socket| socket.send_to(b"hello", ("127.0.0.1", port))),
        );
        let dns = outcome(("localhost", 80).to_socket_addrs());
        Verdict {
            decision: Decision::Deny(format!("tcp: {tcp}; udp: {udp}; dns: {dns}")),
            cache_ttl_ms: 0,
        }
    }
}

export!(Sockets);
