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

pub use policy::postern::plugin::{cache, log, types};
