//! The server side of a SCRAM-SHA-256(-PLUS) exchange: the input is the mechanism choice,
//! a client-first-message and a client-final-message (split at the first NUL). Nothing
//! a client sends may be taken for a proof of the password.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use postern_wire::scram::{ScramOutcome, ScramServer, Verifier};

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| Verifier::generate(b"correct horse", b"0123456789abcdef", 4096))
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let (first, last) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let keys = verifier().keys.clone();
    let mut server = ScramServer::new(
        verifier().salt.clone(),
        verifier().iterations,
        vec![keys],
        "server-nonce-0123456789".to_owned(),
    );
    if choice & 1 == 1 {
        server = server.with_channel_binding(b"end-point".to_vec());
    }
    let mechanism = if choice & 2 == 2 {
        "SCRAM-SHA-256-PLUS"
    } else {
        "SCRAM-SHA-256"
    };
    if server.client_first(mechanism, first).is_ok() {
        // Random bytes cannot prove knowledge of the password.
        if let Ok(outcome) = server.client_final(last) {
            assert!(!matches!(outcome, ScramOutcome::Authenticated { .. }));
        }
    }
});
