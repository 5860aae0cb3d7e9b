//! The master key that seals secrets (AES-256-GCM), and where it comes from:
//! `POSTERN_MASTER_KEY`, `$CREDENTIALS_DIRECTORY/master-key` (systemd), or a key file that
//! the first start generates (0600). An existing key file is never overwritten.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::Rng;

use crate::StateError;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Where to look for the master key, in order.
#[derive(Clone)]
pub struct KeySettings {
    /// Base64 of 32 bytes, from `POSTERN_MASTER_KEY`.
    pub inline: Option<String>,
    /// systemd's `$CREDENTIALS_DIRECTORY`; its `master-key` file is used when present.
    pub credentials_directory: Option<PathBuf>,
    /// The key file; generated on first start when no other source has a key.
    pub key_file: PathBuf,
}

impl fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySettings")
            .field("inline", &self.inline.as_ref().map(|_| "***"))
            .field("credentials_directory", &self.credentials_directory)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// A loaded master key. It never prints.
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// A key that was found, and a description of where (for logs; never the value).
#[derive(Debug)]
pub(crate) struct FoundKey {
    pub key: MasterKey,
    pub origin: String,
}

impl MasterKey {
    fn from_bytes(bytes: &[u8], origin: &str) -> Result<MasterKey, StateError> {
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| {
            StateError::MasterKey(format!("master key from {origin} is not {KEY_LEN} bytes"))
        })?;
        Ok(MasterKey { cipher })
    }

    /// Accepts exactly 32 raw bytes, or base64 text of 32 bytes.
    fn decode(content: &[u8], origin: &str) -> Result<MasterKey, StateError> {
        if content.len() == KEY_LEN {
            return MasterKey::from_bytes(content, origin);
        }
        let text = std::str::from_utf8(content).unwrap_or_default().trim();
        let bytes = B64.decode(text).map_err(|_| {
            StateError::MasterKey(format!(
                "master key from {origin} is neither {KEY_LEN} raw bytes nor base64 of {KEY_LEN} bytes"
            ))
        })?;
        MasterKey::from_bytes(&bytes, origin)
    }

    /// Encrypts `plaintext`, binding it to `aad` (the row it belongs to).
    pub(crate) fn seal(
        &self,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), StateError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| StateError::MasterKey("sealing failed".into()))?;
        Ok((nonce.to_vec(), ciphertext))
    }

    /// Decrypts; `None` when the key, the nonce or the bound row do not match.
    pub(crate) fn unseal(&self, nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }
}

fn read_key_file(path: &Path) -> Result<Option<MasterKey>, StateError> {
    match std::fs::read(path) {
        Ok(content) => MasterKey::decode(&content, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io(path)(e)),
    }
}

impl KeySettings {
    /// Finds a key in the configured sources, or `None` when none has one.
    pub(crate) fn find(&self) -> Result<Option<FoundKey>, StateError> {
        if let Some(inline) = &self.inline {
            let origin = "POSTERN_MASTER_KEY".to_owned();
            let key = MasterKey::decode(inline.as_bytes(), &origin)?;
            return Ok(Some(FoundKey { key, origin }));
        }
        if let Some(dir) = &self.credentials_directory {
            let path = dir.join("master-key");
            if let Some(key) = read_key_file(&path)? {
                let origin = path.display().to_string();
                return Ok(Some(FoundKey { key, origin }));
            }
        }
        Ok(read_key_file(&self.key_file)?.map(|key| FoundKey {
            key,
            origin: self.key_file.display().to_string(),
        }))
    }

    /// Generates a key into the key file, which must not exist yet.
    pub(crate) fn generate(&self) -> Result<FoundKey, StateError> {
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.key_file)
            .map_err(StateError::io(&self.key_file))?;
        writeln!(file, "{}", B64.encode(bytes))
            .and_then(|()| file.sync_all())
            .map_err(StateError::io(&self.key_file))?;
        Ok(FoundKey {
            key: MasterKey::from_bytes(&bytes, "generated key")?,
            origin: self.key_file.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_ciphertext_to_key_and_row() {
        let key = MasterKey::from_bytes(&[7; 32], "test").unwrap();
        let (nonce, sealed) = key.seal(b"hunter2", b"secret:a/b").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.unseal(&nonce, &sealed, b"secret:a/b").unwrap(),
            b"hunter2"
        );
        assert!(key.unseal(&nonce, &sealed, b"secret:a/c").is_none());
        let other = MasterKey::from_bytes(&[8; 32], "test").unwrap();
        assert!(other.unseal(&nonce, &sealed, b"secret:a/b").is_none());
    }

    #[test]
    fn generated_key_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let settings = KeySettings {
            inline: None,
            credentials_directory: None,
            key_file: dir.path().join("master.key"),
        };
        assert!(settings.find().unwrap().is_none());
        settings.generate().unwrap();
        let mode = std::fs::metadata(&settings.key_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(settings.generate().is_err());
        assert!(settings.find().unwrap().is_some());
    }

    #[test]
    fn bad_inline_key_is_a_clear_error() {
        let settings = KeySettings {
            inline: Some("short".into()),
            credentials_directory: None,
            key_file: "/nonexistent/master.key".into(),
        };
        let err = settings.find().unwrap_err().to_string();
        assert!(err.contains("POSTERN_MASTER_KEY"), "{err}");
        assert!(!err.contains("short"));
    }
}
