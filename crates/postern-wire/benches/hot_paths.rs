//! Criterion benches for the gateway's hot paths: the relay's frame scanning (per byte of
//! traffic), whole-message framing, and the server side of one SCRAM login.
//! Run with `cargo bench -p postern-wire`.

// Bench code: a failed unwrap is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use postern_wire::frame::try_take_message;
use postern_wire::scram::{ScramOutcome, ScramServer, Verifier, SCRAM_SHA_256};
use postern_wire::{FrameScanner, TagSet};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// What a server sends for one `pgbench -S` transaction in the extended protocol.
fn select_reply() -> Vec<u8> {
    [
        message(b'1', b""),
        message(b'2', b""),
        message(
            b'D',
            &[0, 1, 0, 0, 0, 6, b'1', b'2', b'3', b'4', b'5', b'6'],
        ),
        message(b'C', b"SELECT 1\0"),
        message(b'Z', b"I"),
    ]
    .concat()
}

fn framing(c: &mut Criterion) {
    let stream: Vec<u8> = select_reply().repeat(1000);
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("scan 1000 pgbench -S replies", |b| {
        b.iter(|| {
            let mut scanner = FrameScanner::new(1 << 30).counting(TagSet::of(b"Z"));
            let n = scanner.scan(std::hint::black_box(&stream)).unwrap();
            assert_eq!(scanner.counted(), 1000);
            n
        })
    });
    group.bench_function("take 1000 pgbench -S replies whole", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&stream[..]);
            let mut count = 0;
            while let Some(m) = try_take_message(&mut buf, 1 << 30).unwrap() {
                count += usize::from(m.tag == b'Z');
            }
            assert_eq!(count, 1000);
        })
    });
    group.finish();
}

fn scram_login(c: &mut Criterion) {
    let salt = b"0123456789abcdef".to_vec();
    let keys = vec![Verifier::generate(b"pst_key", &salt, 4096).keys];
    // One client exchange, replayed: the server's side is deterministic for a fixed nonce.
    let mut client = ScramSha256::new(b"pst_key", ChannelBinding::unsupported());
    let client_first = client.message().to_vec();
    let mut server = ScramServer::new(salt.clone(), 4096, keys.clone(), "servernonce".into());
    let server_first = server.client_first(SCRAM_SHA_256, &client_first).unwrap();
    client.update(&server_first).unwrap();
    let client_final = client.message().to_vec();
    c.bench_function("scram server exchange (one login)", |b| {
        b.iter(|| {
            let mut server =
                ScramServer::new(salt.clone(), 4096, keys.clone(), "servernonce".into());
            server.client_first(SCRAM_SHA_256, &client_first).unwrap();
            let outcome = server.client_final(&client_final).unwrap();
            assert!(matches!(outcome, ScramOutcome::Authenticated { .. }));
        })
    });
}

criterion_group!(benches, framing, scram_login);
criterion_main!(benches);
