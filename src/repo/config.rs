//! The repository's `config` object: format version, identity and write settings. It is
//! created once (create-if-absent) and never changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::chunker::ChunkerConfig;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: u32,
    /// Random, identifies the repository (e.g. in caches and copy).
    pub id: String,
    pub created: DateTime<Utc>,
    /// How streams (dumps, binlogs) are cut.
    pub chunker: ChunkerConfig,
    /// How InnoDB data files, which change in place, are cut.
    pub page_chunker: ChunkerConfig,
    pub compression_level: i32,
    /// Packs are closed when they reach this size.
    pub pack_size: u32,
}

impl RepoConfig {
    pub fn new() -> RepoConfig {
        RepoConfig {
            format: FORMAT_VERSION,
            id: random_hex(16),
            created: Utc::now(),
            chunker: ChunkerConfig::default(),
            page_chunker: ChunkerConfig::Fixed { size: 256 * 1024 },
            compression_level: 1,
            pack_size: 16 * 1024 * 1024,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT_VERSION {
            return Err(format!(
                "repository format {} is not supported by this myvault (it reads format {FORMAT_VERSION})",
                self.format
            ));
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
