//! A policy hook for the runtime's failure tests. `on-statement` does what the
//! statement's kind names: `spin` loops forever, `hog` allocates until its memory limit
//! stops it, `trap` panics, `deny` denies, `print` writes a line to stdout and allows;
//! anything else is allowed. `init` refuses the config `"refuse"`; with the config
//! `"deny-connect"`, `on-connect` denies every session.

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

use exports::postern::plugin::policy_hook::Guest;
use postern::plugin::types::{ClientInfo, Decision, Identity, Statement, Verdict};

static DENY_CONNECT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn allow() -> Verdict {
    Verdict {
        decision: Decision::Allow,
        cache_ttl_ms: 0,
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn init(config: String) -> Result<(), String> {
        match config.trim() {
            "\"refuse\"" => Err("refusing to start, as asked".into()),
            "\"deny-connect\"" => {
                DENY_CONNECT.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_connect(identity: Identity, client: ClientInfo) -> Verdict {
        if DENY_CONNECT.load(std::sync::atomic::Ordering::Relaxed) {
            return Verdict {
                decision: Decision::Deny(format!(
                    "{} may not connect to {}",
                    identity.name, client.database
                )),
                cache_ttl_ms: 0,
            };
        }
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
            "print" => {
                println!("a line on stdout");
                allow()
            }
            _ => allow(),
        }
    }
}

export!(Misbehave);
