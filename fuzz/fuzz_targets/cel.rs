//! CEL conditions compiled as a Service's rule (and a dynamicConfig route) would be.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_model::PolicyEngine;

fuzz_target!(|data: &[u8]| {
    let Ok(condition) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(authorization) = serde_json::from_value(serde_json::json!({
        "rules": [{"name": "fuzzed", "effect": "allow", "condition": condition}],
    })) else {
        return;
    };
    drop(postern_policy::CelEngine::new().validate(&authorization, &[]));
});
