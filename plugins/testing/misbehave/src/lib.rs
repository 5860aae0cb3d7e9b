//! A policy hook for the runtime's failure tests. `on-statement` does what the
//! statement's kind names: `spin` loops forever, `hog` allocates until its memory limit
//! stops it, `trap` panics, `deny` denies; anything else is allowed. `init` refuses the
//! config `"refuse"`.

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::postern::plugin::policy_hook::Guest;
use postern::plugin::types::{ClientInfo, Decision, Identity, Statement, Verdict};

fn allow() -> Verdict {
    Verdict {
        decision: Decision::Allow,
        cache_ttl_ms: 0,
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn init(config: String) -> Result<(), String> {
        if config.trim() == "\"refuse\"" {
            return Err("refusing to start, as asked".into());
        }
        Ok(())
    }

    fn on_connect(_identity: Identity, _client: ClientInfo) -> Verdict {
        allow()
    }

    fn on_statement(_identity: Identity, statement: Statement) -> Verdict {
        match statement.kind.as_str() {
            "deny" => Verdict {
                decision: Decision::Deny("denied, as asked".into()),
                cache_ttl_ms: 0,
            },
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                loop {
                    kept.push(vec![1; 1 << 20]);
                    std::hint::black_box(&kept);
                }
            }
            "trap" => panic!("trapping, as asked"),
            _ => allow(),
        }
    }
}

export!(Misbehave);
