//! Statement classification (PostgreSQL's parser through libpg_query), the literal-folded
//! shape the classification cache is keyed by, and redaction of secret literals.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    drop(postern_policy::classify(sql));
    drop(postern_policy::shape(sql));
    drop(postern_policy::redact(sql, &[]));
});
