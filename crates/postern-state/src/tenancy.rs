//! Tenancy state: workload client credentials (argon2 hashes), token signing keys (private
//! halves sealed), issued access tokens for revocation by `jti`, the admin API's bootstrap
//! token, role bindings resolved to an identity's access, and single-resource writes with
//! optimistic concurrency for the admin API.

use std::fmt;

use crate::db::{args, Db};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use postern_model::{
    plan_apply, Access, Change, IdentitySpec, Kind, LoadedResource, QualifiedName, Resource,
    SecretValue, Spec,
};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::{hex, now, random_hex, random_token, StoredResource};
use crate::{StateError, Store};

/// Client credentials just made: the only moment the secret exists outside the client.
#[derive(Debug)]
pub struct CreatedClient {
    pub client_id: String,
    pub identity: QualifiedName,
    pub secret: SecretValue,
}

#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub identity: QualifiedName,
    pub created_at: i64,
}

/// An Ed25519 token signing key. The PKCS#8 document is secret and never printed.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: i64,
    /// `None` for the key that signs; retired keys still verify until they are pruned.
    pub retired_at: Option<i64>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// An issued access token, by its `jti`.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub jti: String,
    pub identity: QualifiedName,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// What a single-resource write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing of that kind and name yet.
    Absent,
    /// The stored resource is at this generation.
    Generation(i64),
}

fn signing_key_aad(kid: &str) -> Vec<u8> {
    format!("signing-key:{kid}").into_bytes()
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hash_secret(secret: &str) -> Result<String, StateError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| StateError::Corrupt(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| StateError::Corrupt(format!("hashing a client secret: {e}")))
}

/// A hash of nothing anyone holds, checked when a client id is unknown so that a wrong
/// id costs the same time as a wrong secret.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Qe+7aGqFv7LMHwqiWy4Q0eH9y7Hh3sMiYQ6E5s3I0f4";

impl Store {
    // ---- client credentials --------------------------------------------------------------

    /// Makes a client id and secret for an identity, if `guard` (run in the write) allows;
    /// only an argon2 hash is stored.
    pub fn create_identity_client(
        &self,
        identity: &QualifiedName,
        guard: impl FnOnce(&AccessView<'_>) -> Result<(), StateError>,
    ) -> Result<CreatedClient, StateError> {
        let client_id = format!("pc_{}", random_hex(10));
        let secret = SecretValue::new(format!("pcs_{}", random_token(32)));
        let hash = hash_secret(secret.expose())?;
        self.write(|tx| {
            if Self::get_in(tx, Kind::Identity, &identity.namespace, &identity.name)?.is_none() {
                return Err(StateError::NotFound(format!("Identity {identity}")));
            }
            guard(&AccessView::new(tx))?;
            tx.execute(
                "INSERT INTO identity_clients VALUES (?1, ?2, ?3, ?4, ?5)",
                args![client_id, identity.namespace, identity.name, hash, now()],
            )?;
            Ok(())
        })?;
        Ok(CreatedClient {
            client_id,
            identity: identity.clone(),
            secret,
        })
    }

    /// The identity whose client id and secret these are, or `None`. Slow by design
    /// (argon2): call it off the async executor.
    pub fn verify_identity_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<QualifiedName>, StateError> {
        let row: Option<(String, String, String)> = self.read(|conn| {
            conn.query_opt(
                    "SELECT namespace, identity, secret_hash FROM identity_clients WHERE client_id = ?1",
                    args![client_id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
        })?;
        let hash_text = row
            .as_ref()
            .map_or(DECOY_HASH, |(_, _, hash)| hash.as_str());
        let hash = PasswordHash::new(hash_text)
            .map_err(|e| StateError::Corrupt(format!("client secret hash: {e}")))?;
        let matches = Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok();
        Ok(match row {
            Some((namespace, identity, _)) if matches => {
                Some(QualifiedName::new(namespace, identity))
            }
            _ => None,
        })
    }

    pub fn list_identity_clients(
        &self,
        identity: &QualifiedName,
    ) -> Result<Vec<ClientInfo>, StateError> {
        self.read(|conn| {
            let rows = conn.query_map(
                "SELECT client_id, created_at FROM identity_clients
                 WHERE namespace = ?1 AND identity = ?2 ORDER BY created_at, client_id",
                args![identity.namespace, identity.name],
                |row| {
                    Ok(ClientInfo {
                        client_id: row.get(0)?,
                        identity: identity.clone(),
                        created_at: row.get(1)?,
                    })
                },
            )?;
            Ok(rows)
        })
    }

    /// Deletes a client id and its secret, if `guard` (run in the write) allows.
    pub fn delete_identity_client(
        &self,
        identity: &QualifiedName,
        client_id: &str,
        guard: impl FnOnce(&AccessView<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let deleted = self.write(|tx| {
            guard(&AccessView::new(tx))?;
            tx.execute(
                "DELETE FROM identity_clients WHERE namespace = ?1 AND identity = ?2 AND client_id = ?3",
                args![identity.namespace, identity.name, client_id],
            )
        })?;
        if deleted == 0 {
            return Err(StateError::NotFound(format!(
                "client {client_id} of Identity {identity}"
            )));
        }
        Ok(())
    }

    // ---- signing keys --------------------------------------------------------------------

    /// Every signing key, newest first.
    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, StateError> {
        // Read sealed (the nonce rides in `pkcs8` until unsealed below).
        let rows: Vec<(SigningKey, Vec<u8>)> = self.read(|conn| {
            let rows = conn.query_map(
                "SELECT kid, nonce, sealed, public_key, created_at, retired_at
                 FROM signing_keys ORDER BY created_at DESC, kid",
                args![],
                |row| {
                    Ok((
                        SigningKey {
                            kid: row.get(0)?,
                            pkcs8: row.get(2)?,
                            public_key: row.get(3)?,
                            created_at: row.get(4)?,
                            retired_at: row.get(5)?,
                        },
                        row.get(1)?,
                    ))
                },
            )?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(mut key, nonce)| {
                key.pkcs8 = self
                    .key
                    .unseal(&nonce, &key.pkcs8, &signing_key_aad(&key.kid))
                    .ok_or_else(|| {
                        StateError::Corrupt(format!("signing key {} does not unseal", key.kid))
                    })?;
                Ok(key)
            })
            .collect()
    }

    /// Stores a new signing key, which signs from now on; the previous one is retired and
    /// keeps verifying the tokens it signed.
    pub fn add_signing_key(
        &self,
        kid: &str,
        pkcs8: &[u8],
        public_key: &[u8],
    ) -> Result<(), StateError> {
        let (nonce, sealed) = self.key.seal(pkcs8, &signing_key_aad(kid))?;
        let now = now();
        self.write(|tx| {
            tx.execute(
                "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
                args![now],
            )?;
            tx.execute(
                "INSERT INTO signing_keys VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
                args![kid, nonce, sealed, public_key, now],
            )?;
            Ok(())
        })
    }

    /// Deletes keys retired before `before` (unix seconds); returns how many.
    pub fn prune_signing_keys(&self, before: i64) -> Result<usize, StateError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
                args![before],
            )
        })
    }

    // ---- access tokens -------------------------------------------------------------------

    pub fn record_access_token(&self, record: &TokenRecord) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM access_tokens WHERE expires_at < ?1",
                args![now() - 60],
            )?;
            tx.execute(
                "INSERT INTO access_tokens VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
                args![
                    record.jti,
                    record.identity.namespace,
                    record.identity.name,
                    record.issued_at,
                    record.expires_at
                ],
            )?;
            Ok(())
        })
    }

    pub fn access_token(&self, jti: &str) -> Result<Option<TokenRecord>, StateError> {
        self.read(|conn| {
            conn.query_opt(
                "SELECT jti, namespace, identity, issued_at, expires_at, revoked_at
                     FROM access_tokens WHERE jti = ?1",
                args![jti],
                |row| {
                    Ok(TokenRecord {
                        jti: row.get(0)?,
                        identity: QualifiedName::new(row.get::<String>(1)?, row.get::<String>(2)?),
                        issued_at: row.get(3)?,
                        expires_at: row.get(4)?,
                        revoked_at: row.get(5)?,
                    })
                },
            )
        })
    }

    /// Marks a token revoked; revoking twice is a no-op.
    pub fn revoke_access_token(&self, jti: &str) -> Result<(), StateError> {
        let found = self.write(|tx| {
            tx.execute(
                "UPDATE access_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE jti = ?1",
                args![jti, now()],
            )
        })?;
        if found == 0 {
            return Err(StateError::NotFound(format!("token {jti}")));
        }
        Ok(())
    }

    // ---- bootstrap admin token -----------------------------------------------------------

    /// Makes the bootstrap admin token when there is none yet and hands it to `publish`
    /// (which writes it where the operator finds it); it counts only once published, so
    /// a failed write leaves no token behind that nobody holds. False when one exists.
    pub fn create_bootstrap_token(
        &self,
        publish: impl FnOnce(&SecretValue) -> std::io::Result<()>,
    ) -> Result<bool, StateError> {
        self.write(|tx| {
            let existing: i64 =
                tx.query_row("SELECT count(*) FROM admin_tokens", args![], |row| {
                    row.get(0)
                })?;
            if existing > 0 {
                return Ok(false);
            }
            let token = SecretValue::new(format!("pat_{}", random_token(32)));
            tx.execute(
                "INSERT INTO admin_tokens VALUES (?1, ?2)",
                args![sha256_hex(token.expose()), now()],
            )?;
            publish(&token).map_err(StateError::io("the bootstrap admin token file"))?;
            Ok(true)
        })
    }

    /// Whether `token` is the bootstrap admin token. Only its SHA-256 is stored: it is 32
    /// random bytes, so a fast hash is enough.
    pub fn is_admin_token(&self, token: &str) -> Result<bool, StateError> {
        let hash = sha256_hex(token);
        self.read(|conn| {
            Ok(conn
                .query_opt(
                    "SELECT 1 FROM admin_tokens WHERE token_hash = ?1",
                    args![hash],
                    |_| Ok(()),
                )?
                .is_some())
        })
    }

    // ---- role bindings -------------------------------------------------------------------

    fn access_in(
        conn: &Db<'_>,
        identity: &QualifiedName,
        groups: &[String],
    ) -> Result<Access, StateError> {
        let bindings = Self::list_in(conn, Some(Kind::RoleBinding), None)?;
        Ok(access_from(identity, groups, &bindings))
    }

    /// [`Store::access_of`] for the login path: from the snapshot when the state is
    /// shared (see `snapshot.rs`).
    pub(crate) fn login_access_of(
        &self,
        identity: &QualifiedName,
    ) -> Result<Option<(IdentitySpec, Access)>, StateError> {
        access_with(
            identity,
            self.resource(Kind::Identity, &identity.namespace, &identity.name)?,
            || self.resources(Kind::RoleBinding, None),
        )
    }

    /// The identity's spec and the access its role bindings give it; `None` when the
    /// identity does not exist.
    pub fn access_of(
        &self,
        identity: &QualifiedName,
    ) -> Result<Option<(IdentitySpec, Access)>, StateError> {
        self.read(|conn| Self::access_of_in(conn, identity))
    }

    fn access_of_in(
        conn: &Db<'_>,
        identity: &QualifiedName,
    ) -> Result<Option<(IdentitySpec, Access)>, StateError> {
        access_with(
            identity,
            Self::get_in(conn, Kind::Identity, &identity.namespace, &identity.name)?,
            || Self::list_in(conn, Some(Kind::RoleBinding), None),
        )
    }

    // ---- single-resource writes ----------------------------------------------------------

    /// Creates or replaces one resource, checked as `apply` checks it (references must
    /// exist), if the stored one matches `precondition`. Not marked as applied, so
    /// `apply --prune` leaves it alone.
    pub fn put_resource(
        &self,
        resource: Resource,
        precondition: Precondition,
    ) -> Result<StoredResource, StateError> {
        self.put_resource_guarded(resource, precondition, |_| Ok(()))
    }

    /// [`Store::put_resource`], with `guard` deciding inside the write's transaction
    /// (on the state the write changes, which no other write can change meanwhile)
    /// whether its writer may make it.
    pub fn put_resource_guarded(
        &self,
        resource: Resource,
        precondition: Precondition,
        guard: impl FnOnce(&AccessView<'_>) -> Result<(), StateError>,
    ) -> Result<StoredResource, StateError> {
        let (kind, namespace, name) = (
            resource.kind(),
            resource.namespace().to_owned(),
            resource.name().to_owned(),
        );
        let desired = [LoadedResource {
            origin: "request".to_owned(),
            resource,
        }];
        self.check_rules(&desired)?;
        let resource = &desired[0].resource;
        self.write(|tx| {
            let stored = Self::get_in(tx, kind, &namespace, &name)?;
            match (precondition, &stored) {
                (Precondition::Absent, Some(_)) => {
                    return Err(StateError::Stale(format!(
                        "{} already exists",
                        resource.describe()
                    )))
                }
                (Precondition::Generation(_), None) => {
                    return Err(StateError::NotFound(resource.describe()))
                }
                (Precondition::Generation(expected), Some(current))
                    if current.generation != expected =>
                {
                    return Err(StateError::Stale(format!(
                        "{} is at generation {}, not {expected}; read it again and retry",
                        resource.describe(),
                        current.generation
                    )))
                }
                _ => {}
            }
            guard(&AccessView::new(tx))?;
            // References never leave a namespace, so the written resource is checked
            // against its own namespace and the namespaces only: another tenant's
            // state can neither block this write nor show up in its errors.
            let mut scope = Self::list_in(tx, Some(Kind::Namespace), None)?;
            if kind.is_namespaced() {
                scope.extend(Self::list_in(tx, None, Some(&namespace))?);
            }
            let current: Vec<(Resource, bool)> =
                scope.into_iter().map(|s| (s.resource, s.applied)).collect();
            let changes = plan_apply(&desired, &current, false)?;
            if matches!(
                changes.first(),
                Some(Change::Create(_) | Change::Update { .. })
            ) {
                Self::check_component_stored(tx, resource)?;
            }
            let metadata = serde_json::to_string(&resource.metadata)
                .map_err(|e| StateError::Corrupt(e.to_string()))?;
            let spec = resource.spec_json().to_string();
            let now = now();
            match changes.first() {
                Some(Change::Create(_)) => {
                    tx.execute(
                        "INSERT INTO resources VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, ?6, ?6)",
                        args![kind.as_str(), namespace, name, metadata, spec, now],
                    )?;
                }
                Some(Change::Update { .. }) => {
                    tx.execute(
                        "UPDATE resources SET metadata = ?4, spec = ?5, generation = generation + 1,
                             updated_at = ?6
                         WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                        args![kind.as_str(), namespace, name, metadata, spec, now],
                    )?;
                }
                _ => {}
            }
            Self::get_in(tx, kind, &namespace, &name)?
                .ok_or_else(|| StateError::Corrupt(format!("{} vanished", resource.describe())))
        })
    }
}

/// The spec of the identity `stored` (`None`: it does not exist) and the access the role
/// bindings `bindings` reads give it.
fn access_with(
    identity: &QualifiedName,
    stored: Option<StoredResource>,
    bindings: impl FnOnce() -> Result<Vec<StoredResource>, StateError>,
) -> Result<Option<(IdentitySpec, Access)>, StateError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let spec = match stored.resource.spec {
        Spec::Identity(spec) => spec,
        _ => IdentitySpec::default(),
    };
    let access = access_from(identity, &spec.groups, &bindings()?);
    Ok(Some((spec, access)))
}

/// The access `bindings` give `identity` with `groups`.
fn access_from(identity: &QualifiedName, groups: &[String], bindings: &[StoredResource]) -> Access {
    Access::of_identity(
        identity,
        groups,
        bindings.iter().filter_map(|b| match &b.resource.spec {
            Spec::RoleBinding(spec) => Some((b.resource.namespace(), spec)),
            _ => None,
        }),
    )
}

/// What a write's guard reads: the state inside the write's transaction.
pub struct AccessView<'a>(&'a Db<'a>);

/// The guard of a write made with the state directory's own rights (the local CLI, the
/// demo): nothing to check.
pub fn unguarded(_: &AccessView<'_>) -> Result<(), StateError> {
    Ok(())
}

impl<'a> AccessView<'a> {
    pub(crate) fn new(conn: &'a Db<'a>) -> AccessView<'a> {
        AccessView(conn)
    }

    /// As [`Store::access_of`].
    pub fn access_of(
        &self,
        identity: &QualifiedName,
    ) -> Result<Option<(IdentitySpec, Access)>, StateError> {
        Store::access_of_in(self.0, identity)
    }

    /// The access role bindings give `identity` with `groups`, whether or not it exists
    /// (yet): what an identity written with those groups would hold.
    pub fn access_for(
        &self,
        identity: &QualifiedName,
        groups: &[String],
    ) -> Result<Access, StateError> {
        Store::access_in(self.0, identity, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::on_both_backends;

    #[test]
    fn decoy_hash_parses() {
        PasswordHash::new(DECOY_HASH).unwrap();
    }

    on_both_backends! {
        fn client_secrets_verify_only_when_right(state) {
            let store = state.open();
            let docs = postern_model::parse_documents(
                "t.yaml",
                "kind: Namespace\nmetadata: {name: a}\n---\nkind: Identity\nmetadata: {name: w, namespace: a}\nspec: {type: workload}\n",
                postern_model::Format::Yaml,
            )
            .unwrap();
            store.apply_resources(&docs, false, false).unwrap();
            let who = QualifiedName::new("a", "w");
            let client = store.create_identity_client(&who, unguarded).unwrap();
            assert_eq!(
                store
                    .verify_identity_client(&client.client_id, client.secret.expose())
                    .unwrap(),
                Some(who.clone())
            );
            assert_eq!(
                store
                    .verify_identity_client(&client.client_id, "pcs_wrong")
                    .unwrap(),
                None
            );
            assert_eq!(
                store
                    .verify_identity_client("pc_unknown", client.secret.expose())
                    .unwrap(),
                None
            );
            let stored: String = store
                .read(
                    |c| c.query_row("SELECT secret_hash FROM identity_clients", args![], |r| r.get(0)),
                )
                .unwrap();
            assert!(!stored.contains(client.secret.expose()));
        }

        fn a_guard_sees_the_write_s_state_and_its_refusal_writes_nothing(state) {
            let store = state.open();
            let yaml = |text: &str| {
                postern_model::parse_documents("t.yaml", text, postern_model::Format::Yaml).unwrap()
            };
            let setup = "kind: Namespace\nmetadata: {name: a}\n---\nkind: Identity\nmetadata: {name: w, namespace: a}\nspec: {type: workload, groups: [ops]}\n---\nkind: RoleBinding\nmetadata: {name: ops-admin, namespace: a}\nspec: {role: namespace-admin, subject: {group: ops}}\n";
            store.apply_resources(&yaml(setup), false, false).unwrap();
            let who = QualifiedName::new("a", "w");
            let changed = yaml("kind: Identity\nmetadata: {name: w, namespace: a}\nspec: {type: workload, groups: []}\n");
            let resource = changed[0].resource.clone();
            let refused =
                store.put_resource_guarded(resource.clone(), Precondition::Generation(1), |view| {
                    let (spec, access) = view.access_of(&who)?.unwrap();
                    assert_eq!(spec.groups, ["ops"]);
                    assert_ne!(access, view.access_for(&who, &[])?, "the binding counts");
                    Err(StateError::Refused("no".into()))
                });
            assert!(
                matches!(refused, Err(StateError::Refused(_))),
                "{refused:?}"
            );
            let (spec, _) = store.access_of(&who).unwrap().unwrap();
            assert_eq!(spec.groups, ["ops"], "nothing written");
            let deleted = store.delete_resource_guarded(Kind::Identity, "a", "w", None, |_| {
                Err(StateError::Refused("no".into()))
            });
            assert!(matches!(deleted, Err(StateError::Refused(_))));
            assert!(store.access_of(&who).unwrap().is_some(), "nothing deleted");
            store
                .put_resource_guarded(resource, Precondition::Generation(1), |_| Ok(()))
                .unwrap();
            assert!(store.access_of(&who).unwrap().unwrap().0.groups.is_empty());
        }

        fn bootstrap_token_is_made_once_and_only_when_published(state) {
            let store = state.open();
            let failed = store.create_bootstrap_token(|_| Err(std::io::Error::other("disk full")));
            assert!(failed.is_err());
            let mut kept = None;
            assert!(store
                .create_bootstrap_token(|token| {
                    kept = Some(token.clone());
                    Ok(())
                })
                .unwrap());
            assert!(!store.create_bootstrap_token(|_| Ok(())).unwrap());
            assert!(store.is_admin_token(kept.unwrap().expose()).unwrap());
            assert!(!store.is_admin_token("pat_other").unwrap());
        }
    }
}
