//! `myvault init`: creates a repository.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::chunker::ChunkerConfig;
use crate::repo::config::RepoConfig;
use crate::repo::{HashAlg, Repo};
use crate::storage::{self, OpenOptions};

#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Average chunk size for streams, bytes.
    pub chunk_size: Option<u32>,
    pub compression_level: Option<i32>,
    pub pack_size: Option<u32>,
    pub hash: Option<HashAlg>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    pub repo: String,
    pub id: String,
    pub config: RepoConfig,
}

pub fn run(location: &str, store_opts: &OpenOptions, opts: &InitOptions) -> Result<InitReport> {
    let mut config = RepoConfig::new();
    if let Some(avg) = opts.chunk_size {
        config.chunker = ChunkerConfig::cdc(avg);
    }
    if let Some(level) = opts.compression_level {
        config.compression_level = level;
    }
    if let Some(size) = opts.pack_size {
        config.pack_size = size;
    }
    if let Some(hash) = opts.hash {
        config.hash = hash;
    }
    config.validate().map_err(Error::Usage)?;
    let key = super::repos::read_key(store_opts)?;
    let store = storage::create(&storage::Location::parse(location)?, store_opts)?;
    let repo = Repo::init_with_key(store, config, key.as_ref())?;
    Ok(InitReport {
        repo: repo.name().to_string(),
        id: repo.config().id.clone(),
        config: repo.config().clone(),
    })
}
