//! A policy hook built against `postern:plugin@1.0.0` (its own `wit/`): the gateway must
//! refuse it at apply, naming both versions, and `postern plugin inspect` must say why.

wit_bindgen::generate!({ path: "wit", world: "policy" });

use exports::postern::plugin::policy_hook::Guest;

struct NextMajor;

impl Guest for NextMajor {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(NextMajor);
