//! Property tests: arbitrary bytes fed to every decoder that sees peer input (framing,
//! startup packets, backend decoders, the SCRAM exchange) never panic, and the relay's
//! frame scanner agrees with whole-message framing however the stream is split.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use postern_wire::backend::{parse_auth_request, parse_error_fields};
use postern_wire::frame::try_take_message;
use postern_wire::scram::{parse_initial_response, ScramServer, Verifier, SCRAM_SHA_256};
use postern_wire::startup::try_take_startup;
use postern_wire::FrameScanner;
use proptest::prelude::*;

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = try_take_message(&mut buf, 256) {}
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = try_take_startup(&mut buf, 10_240);
        let _ = FrameScanner::new(256).scan(&bytes);
        let _ = parse_auth_request(&bytes);
        let _ = parse_error_fields(&bytes);
        let _ = parse_initial_response(&bytes);
        let _ = std::str::from_utf8(&bytes).map(Verifier::parse);
        let _ = postern_wire::certificate::tls_server_end_point(&bytes);
        let _ = postern_wire::certificate::subject_common_name(&bytes);
    }

    #[test]
    fn scram_exchange_never_panics(first in proptest::collection::vec(any::<u8>(), 0..200),
                                   last in proptest::collection::vec(any::<u8>(), 0..200),
                                   nonce in "[a-zA-Z0-9+/]{1,30}") {
        let keys = vec![Verifier::generate(b"key", b"salt-salt-salt-1", 16).keys];
        let mut server = ScramServer::new(b"salt-salt-salt-1".to_vec(), 16, keys.clone(), "srv".into());
        let _ = server.client_first(SCRAM_SHA_256, &first);
        let _ = server.client_final(&last);
        // Well-formed first message, arbitrary final message.
        let mut server = ScramServer::new(b"salt-salt-salt-1".to_vec(), 16, keys, "srv".into());
        server.client_first(SCRAM_SHA_256, format!("n,,n=,r={nonce}").as_bytes()).unwrap();
        let _ = server.client_final(&last);
    }

    #[test]
    fn scanner_forwards_exactly_the_framed_bytes_however_split(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let stream: Vec<u8> = bodies.iter().flat_map(|b| message(b'd', b)).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        // Feed the stream in pieces, forwarding what the scanner releases each time.
        let mut scanner = FrameScanner::new(1024);
        let (mut pending, mut forwarded) = (Vec::new(), Vec::new());
        for window in points.windows(2) {
            pending.extend_from_slice(&stream[window[0]..window[1]]);
            let ready = scanner.scan(&pending).unwrap();
            forwarded.extend(pending.drain(..ready));
        }
        prop_assert_eq!(&forwarded, &stream);
        prop_assert!(scanner.at_boundary());
        prop_assert_eq!(scanner.messages_started(), bodies.len() as u64);
        // Whole-message framing finds the same messages.
        let mut buf = BytesMut::from(&stream[..]);
        for body in &bodies {
            let m = try_take_message(&mut buf, 1024).unwrap().unwrap();
            prop_assert_eq!(&m.body[..], &body[..]);
        }
        prop_assert!(buf.is_empty());
    }
}
