//! What a client sends after the startup: framed messages, each body given to the
//! decoder of its type (every frontend decoder the gateway has).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern_wire::frame::try_take_message;
use postern_wire::tags::frontend as tag;
use postern_wire::{frontend, scram};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(message)) = try_take_message(&mut buf, 1 << 20) {
        let body = &message.body[..];
        match message.tag {
            tag::QUERY => drop(frontend::parse_query(body)),
            tag::PARSE => drop(frontend::parse_parse(body)),
            tag::BIND => {
                drop(frontend::parse_bind_names(body));
                drop(frontend::parse_bind(body));
            }
            tag::EXECUTE => drop(frontend::parse_execute(body)),
            tag::CLOSE | tag::DESCRIBE => drop(frontend::parse_close(body)),
            tag::FUNCTION_CALL => drop(frontend::parse_function_call(body)),
            tag::PASSWORD => drop(scram::parse_initial_response(body)),
            _ => {}
        }
    }
});
