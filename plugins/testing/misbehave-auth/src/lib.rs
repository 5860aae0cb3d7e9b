//! An auth provider for the runtime's failure tests. The password says what to do:
//! `trap` panics, `spin` loops forever, `ok:NAME` proves identity NAME of namespace
//! `default`; anything else is not this provider's. With the config `"NAME.NAMESPACE"`,
//! any client certificate (the gateway verified it) proves that identity.

wit_bindgen::generate!({ path: "../../../wit", world: "auth-provider" });

use exports::postern::plugin::authn::{Credential, Guest, Outcome};
use postern::plugin::types::{ClientInfo, Identity};

static CERTIFICATE_IDENTITY: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

fn identity(name: &str, namespace: &str) -> Identity {
    Identity {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        groups: Vec::new(),
        attributes: Vec::new(),
        expires_at: None,
    }
}

struct MisbehaveAuth;

impl Guest for MisbehaveAuth {
    fn init(config: String) -> Result<(), String> {
        if let Some((name, namespace)) = config.trim().trim_matches('"').split_once('.') {
            let _ = CERTIFICATE_IDENTITY.set((name.to_owned(), namespace.to_owned()));
        }
        Ok(())
    }

    fn authenticate(_client: ClientInfo, credential: Credential) -> Outcome {
        let password = match credential {
            Credential::Password(password) => password,
            Credential::ClientCertificate(_) => {
                return match CERTIFICATE_IDENTITY.get() {
                    Some((name, namespace)) => Outcome::Authenticated(identity(name, namespace)),
                    None => Outcome::NotApplicable,
                }
            }
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
                Some(name) => Outcome::Authenticated(identity(name, "default")),
                None => Outcome::NotApplicable,
            },
        }
    }
}

export!(MisbehaveAuth);
