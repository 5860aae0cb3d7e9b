//! An auth provider for the runtime's failure tests. The password says what to do:
//! `trap` panics, `spin` loops forever, `ok:NAME` proves identity NAME of namespace
//! `default`; anything else is not this provider's.

wit_bindgen::generate!({ path: "../../../wit", world: "auth-provider" });

use exports::postern::plugin::authn::{Credential, Guest, Outcome};
use postern::plugin::types::{ClientInfo, Identity};

struct MisbehaveAuth;

impl Guest for MisbehaveAuth {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn authenticate(_client: ClientInfo, credential: Credential) -> Outcome {
        let Credential::Password(password) = credential else {
            return Outcome::NotApplicable;
        };
        match password.as_str() {
            "trap" => panic!("trapping, as asked"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            other => match other.strip_prefix("ok:") {
                Some(name) => Outcome::Authenticated(Identity {
                    name: name.to_owned(),
                    namespace: "default".into(),
                    groups: Vec::new(),
                    attributes: Vec::new(),
                    expires_at: None,
                }),
                None => Outcome::NotApplicable,
            },
        }
    }
}

export!(MisbehaveAuth);
