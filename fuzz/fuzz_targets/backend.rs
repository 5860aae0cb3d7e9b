//! What an upstream sends, through the relay's one walk (`FrameScanner`): scanned in the
//! chunks the input's first byte chooses, as reads would deliver them, it must see the
//! same messages, counts, stop and errors as scanned in one piece, and never release
//! more than it was given. The first byte also chooses whether the scanner stops at a
//! Terminate (as the client leg's does). Bodies also go to the backend decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::tags::{backend as tag, frontend};
use postern_wire::{backend, FrameScanner};

const LIMIT: usize = 1 << 16;

/// What a walk saw: the tags shown, the scanner's counters, whether it failed, and (when
/// it did not: chunks released before an error differ) the bytes released, the stop and
/// the transaction status.
type Walk = (Vec<u8>, u64, u64, bool, Option<(usize, bool, Option<u8>)>);

fn walk(stream: &[u8], chunk: usize, stop_at_terminate: bool) -> Walk {
    let mut scanner = FrameScanner::new(LIMIT).counting(&[tag::READY_FOR_QUERY]);
    if stop_at_terminate {
        scanner = scanner.stopping_at(frontend::TERMINATE);
    }
    scanner.hold_whole(|t| {
        matches!(
            t,
            tag::ERROR_RESPONSE | tag::PARAMETER_STATUS | tag::DATA_ROW
        )
    });
    let (mut tags, mut pending, mut released, mut failed) = (Vec::new(), Vec::new(), 0, false);
    for piece in stream.chunks(chunk) {
        pending.extend_from_slice(piece);
        let scanned = scanner.scan_visiting(&pending, |frame| {
            tags.push(frame.tag);
            if let Some(body) = frame.body {
                match frame.tag {
                    tag::ERROR_RESPONSE => drop(backend::parse_error_fields(body)),
                    tag::PARAMETER_STATUS => drop(backend::parse_parameter_status(body)),
                    _ => drop(backend::parse_data_row(body)),
                }
            }
            Ok::<(), postern_wire::WireError>(())
        });
        match scanned {
            Ok(n) => {
                assert!(
                    n <= pending.len(),
                    "released {n} of {} bytes",
                    pending.len()
                );
                released += n;
                pending.drain(..n);
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
        if scanner.stopped() {
            break;
        }
    }
    let end = (!failed).then(|| (released, scanner.stopped(), scanner.ready_status()));
    (
        tags,
        scanner.messages_started(),
        scanner.counted(),
        failed,
        end,
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let stop_at_terminate = first & 0x10 != 0;
    let whole = walk(stream, stream.len().max(1), stop_at_terminate);
    let chunked = walk(stream, usize::from(first % 16) + 1, stop_at_terminate);
    assert_eq!(whole, chunked);
    if let Some(body) = stream.get(5..) {
        drop(backend::parse_auth_request(body));
    }
});
