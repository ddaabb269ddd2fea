//! The repository key: read from the operator's key file, it encrypts every object but the
//! config and the locks (see `storage::encrypted`), and a check value derived from it, kept in
//! the config, tells a wrong key from damage before anything is read.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::storage::encrypted::EncryptionKey;

/// The least key material a key file holds: 32 random bytes (`head -c 32 /dev/urandom`,
/// or `openssl rand -base64 32`, which gives 44 characters).
pub const MIN_KEY_BYTES: usize = 32;

/// The scheme written into the config of encrypted repositories.
pub const SCHEME: &str = "aes-256-gcm-64k-v1";

/// What an encrypted repository's config records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    pub scheme: String,
    /// Derived one-way from the key: equal for the right key, useless to find it.
    pub key_check: String,
}

pub struct RepoKey {
    cipher: EncryptionKey,
    check: String,
}

impl RepoKey {
    /// The key from key material. A text key (base64, hex, a long passphrase) has its
    /// trailing line break ignored, so an edited file keeps its key; binary material is
    /// taken whole (random bytes may end in what looks like a line break).
    pub fn from_material(material: &[u8]) -> Result<RepoKey, String> {
        let is_text = material
            .iter()
            .all(|&b| b.is_ascii_graphic() || matches!(b, b' ' | b'\n' | b'\r'));
        let material = if is_text {
            let m = material.strip_suffix(b"\n").unwrap_or(material);
            m.strip_suffix(b"\r").unwrap_or(m)
        } else {
            material
        };
        if material.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the encryption key file holds {} bytes; it needs at least {MIN_KEY_BYTES} random bytes \
                 (create one with `head -c 32 /dev/urandom > FILE`)",
                material.len()
            ));
        }
        let cipher = blake3::derive_key("myvault repository encryption v1", material);
        let check = blake3::derive_key("myvault repository key check v1", material);
        Ok(RepoKey {
            cipher: EncryptionKey::from_bytes(cipher),
            check: check[..16].iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    pub fn read_file(path: &Path) -> Result<RepoKey, String> {
        let material = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the encryption key file {}: {e}",
                path.display()
            )
        })?;
        RepoKey::from_material(&material)
    }

    pub fn info(&self) -> EncryptionInfo {
        EncryptionInfo {
            scheme: SCHEME.to_string(),
            key_check: self.check.clone(),
        }
    }

    pub fn opens(&self, info: &EncryptionInfo) -> bool {
        info.key_check == self.check
    }

    pub fn cipher(&self) -> EncryptionKey {
        self.cipher.clone()
    }
}

impl std::fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepoKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_refused_and_line_breaks_do_not_count() {
        assert!(RepoKey::from_material(b"short secret\n").is_err());
        let a = RepoKey::from_material(b"0123456789abcdef0123456789abcdef").unwrap();
        let b = RepoKey::from_material(b"0123456789abcdef0123456789abcdef\r\n").unwrap();
        let c = RepoKey::from_material(b"0123456789abcdef0123456789abcdeF").unwrap();
        assert!(a.opens(&b.info()));
        assert!(!a.opens(&c.info()));
        assert!(!format!("{a:?}").contains("0123"));
        // Binary keys are used whole, whatever their last byte.
        let mut binary = [0x9fu8; 32];
        binary[31] = b'\n';
        let whole = RepoKey::from_material(&binary).unwrap();
        binary[31] = b'\r';
        assert!(!whole.opens(&RepoKey::from_material(&binary).unwrap().info()));
        assert!(RepoKey::from_material(&[9u8; 32]).is_ok());
    }
}
