//! The DER walk over a client's or server's certificate: the signature algorithm (for
//! tls-server-end-point) and the subject's common name (login by certificate).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_wire::certificate::{subject_common_name, tls_server_end_point};

fuzz_target!(|data: &[u8]| {
    drop(tls_server_end_point(data));
    drop(subject_common_name(data));
});
