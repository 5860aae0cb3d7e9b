//! The host side of `wit/plugin.wit`, generated once per world. The interfaces the worlds
//! share (`types`, `log`, `cache`) are generated with the policy world and reused by the
//! others, so a host implementation serves all three.

pub mod policy {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "policy",
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

pub mod log_sink {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "log-sink",
        imports: { "postern:plugin/http-client.send": async },
        exports: { default: async },
        with: {
            "postern:plugin/types": super::policy::postern::plugin::types,
            "postern:plugin/log": super::policy::postern::plugin::log,
        },
        additional_derives: [PartialEq, Eq],
    });
}

pub mod auth_provider {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "auth-provider",
        exports: { default: async },
        with: {
            "postern:plugin/types": super::policy::postern::plugin::types,
            "postern:plugin/log": super::policy::postern::plugin::log,
            "postern:plugin/cache": super::policy::postern::plugin::cache,
            "postern:plugin/http-client": super::log_sink::postern::plugin::http_client,
            "postern:plugin/secrets": super::log_sink::postern::plugin::secrets,
        },
        additional_derives: [PartialEq, Eq],
    });
}

pub use log_sink::postern::plugin::{http_client, secrets};
pub use policy::postern::plugin::{cache, log, types};
