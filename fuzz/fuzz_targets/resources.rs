//! Resource documents as `apply` reads them: YAML (several documents) and TOML, parsed
//! and checked field by field; the CEL of every Service that passes is compiled, as apply
//! does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_model::{parse_documents, Format, PolicyEngine, Spec, UpstreamSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let engine = postern_policy::CelEngine::new();
    for format in [Format::Yaml, Format::Toml] {
        let Ok(loaded) = parse_documents("fuzz", text, format) else {
            continue;
        };
        for item in loaded {
            if let Spec::Service(spec) = &item.resource.spec {
                let routes = match &spec.upstream {
                    UpstreamSpec::DynamicConfig(dynamic) => dynamic.rules.as_slice(),
                    _ => &[],
                };
                drop(engine.validate(&spec.authorization, routes));
            }
        }
    }
});
