//! Startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) taken
//! off a buffer of anything a client may send first.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern_wire::startup::try_take_startup;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = try_take_startup(&mut buf, 10_240) {}
});
