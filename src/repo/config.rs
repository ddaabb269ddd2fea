//! The repository's `config` object: format version, identity and write settings. It is
//! created once (create-if-absent) and never changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::chunker::ChunkerConfig;
use super::id::HashAlg;
use super::key::{EncryptionInfo, SCHEME};

/// Format 2 names content with the configured hash; format 1 (no `hash` field) used SHA-256.
/// Both are read; new repositories are format 2, which older myvault versions refuse.
pub const FORMAT_VERSION: u32 = 2;
/// Format 3 is format 2 with every object but the config and locks encrypted: a version of
/// myvault that cannot decrypt must refuse it, never write plaintext into it.
pub const ENCRYPTED_FORMAT_VERSION: u32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: u32,
    /// Random, identifies the repository (e.g. in caches and copy).
    pub id: String,
    pub created: DateTime<Utc>,
    /// Names blobs, packs and file contents.
    #[serde(default)]
    pub hash: HashAlg,
    /// How streams (dumps, binlogs) are cut.
    pub chunker: ChunkerConfig,
    /// How InnoDB data files, which change in place, are cut.
    pub page_chunker: ChunkerConfig,
    pub compression_level: i32,
    /// Packs are closed when they reach this size.
    pub pack_size: u32,
    /// Set in encrypted repositories (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
}

impl RepoConfig {
    pub fn new() -> RepoConfig {
        RepoConfig {
            format: FORMAT_VERSION,
            id: random_hex(16),
            created: Utc::now(),
            hash: HashAlg::Blake3,
            chunker: ChunkerConfig::default(),
            page_chunker: ChunkerConfig::Fixed { size: 256 * 1024 },
            compression_level: 1,
            pack_size: 16 * 1024 * 1024,
            encryption: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match (self.format, self.hash, &self.encryption) {
            (2, _, None) | (1, HashAlg::Sha256, None) => {}
            (ENCRYPTED_FORMAT_VERSION, _, Some(e)) if e.scheme == SCHEME => {}
            (ENCRYPTED_FORMAT_VERSION, _, Some(e)) => {
                return Err(format!(
                    "encryption scheme {} is not supported by this myvault (it knows {SCHEME})",
                    e.scheme
                ));
            }
            (1, hash, None) => return Err(format!("repository format 1 cannot use hash {hash}")),
            (1 | 2, _, Some(_)) | (ENCRYPTED_FORMAT_VERSION, _, None) => {
                return Err(format!(
                    "repository format {} does not match its encryption setting",
                    self.format
                ));
            }
            (format, ..) => {
                return Err(format!(
                    "repository format {format} is not supported by this myvault (it reads formats 1 to {ENCRYPTED_FORMAT_VERSION})"
                ));
            }
        }
        self.chunker.validate()?;
        self.page_chunker.validate()?;
        if !(-7..=22).contains(&self.compression_level) {
            return Err(format!(
                "compression level {} is not within -7..22",
                self.compression_level
            ));
        }
        if !(1 << 20..=512 << 20).contains(&self.pack_size) {
            return Err(format!(
                "pack size {} is not within 1 MiB..512 MiB",
                self.pack_size
            ));
        }
        Ok(())
    }
}

impl Default for RepoConfig {
    fn default() -> Self {
        Self::new()
    }
}

pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_1_configs_read_as_sha256() {
        let mut old = serde_json::to_value(RepoConfig::new()).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("hash");
        fields.insert("format".into(), 1.into());
        let old: RepoConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.hash, HashAlg::Sha256);
        assert_eq!(old.validate(), Ok(()));

        let new = RepoConfig::new();
        assert_eq!((new.format, new.hash), (2, HashAlg::Blake3));
        assert_eq!(new.validate(), Ok(()));
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""hash":"blake3""#), "{text}");

        let mixed = RepoConfig {
            format: 1,
            ..RepoConfig::new()
        };
        assert!(mixed.validate().is_err());
        let future = RepoConfig {
            format: 3,
            ..RepoConfig::new()
        };
        assert!(future.validate().unwrap_err().contains("format 3"));
    }
}
