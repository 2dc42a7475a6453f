//! Reads whole shards: one GET per modality tar (concurrently), size and checksum checks against
//! the index, then untar, parse and validation off the async threads.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tracing::debug;

use crate::error::DataError;
use crate::index::{DatasetIndex, ShardInfo};
use crate::layout::{index_path, shard_path};
use crate::shard::{ModalityTar, ShardData, validate_shard};
use crate::store::DatasetStore;
use crate::tarball::read_tar;

/// Reads and validates shards of an indexed dataset.
#[derive(Debug, Clone)]
pub struct ShardReader {
    store: DatasetStore,
    index: Arc<DatasetIndex>,
    verify_checksums: bool,
}

/// The raw tars of one shard as downloaded, before parsing.
#[derive(Debug, Clone)]
pub struct RawShard {
    /// Shard number.
    pub shard: u32,
    /// `(modality, url, archive bytes)`, in modality name order.
    pub tars: Vec<(String, String, Bytes)>,
}

impl RawShard {
    /// Bytes downloaded.
    pub fn bytes(&self) -> u64 {
        self.tars.iter().map(|(_, _, b)| b.len() as u64).sum()
    }
}

impl ShardReader {
    /// A reader over `store` using `index`.
    pub fn new(store: DatasetStore, index: DatasetIndex) -> Self {
        Self {
            store,
            index: Arc::new(index),
            verify_checksums: true,
        }
    }

    /// Reads `<root>/index.json` and makes a reader.
    pub async fn open(store: DatasetStore) -> Result<Self, DataError> {
        let index = read_index(&store).await?;
        Ok(Self::new(store, index))
    }

    /// Whether to check SHA-256 checksums when the index has them (default: yes).
    pub fn with_checksums(mut self, verify: bool) -> Self {
        self.verify_checksums = verify;
        self
    }

    /// The index.
    pub fn index(&self) -> &DatasetIndex {
        &self.index
    }

    /// The store.
    pub fn store(&self) -> &DatasetStore {
        &self.store
    }

    /// Downloads every modality tar of `shard` and checks its size (and checksum) against the
    /// index.
    pub async fn fetch(&self, shard: u32) -> Result<RawShard, DataError> {
        let info = self.shard_info(shard)?;
        let gets = self.index.modalities.keys().map(|modality| async move {
            let path = shard_path(self.store.root(), modality, shard);
            let url = self.store.object_url(&path);
            let bytes = self.store.get(&path).await?;
            check_size(info, modality, &url, bytes.len() as u64)?;
            Ok::<_, DataError>((modality.clone(), url, bytes))
        });
        let tars = futures::future::try_join_all(gets).await?;
        debug!(shard, "shard downloaded");
        Ok(RawShard { shard, tars })
    }

    /// Untars, checks checksums, parses and validates a downloaded shard (CPU work: call it from a
    /// blocking thread in async code).
    pub fn parse(&self, raw: &RawShard) -> Result<ShardData, DataError> {
        let info = self.shard_info(raw.shard)?;
        let mut tars = Vec::with_capacity(raw.tars.len());
        for (modality, url, bytes) in &raw.tars {
            if self.verify_checksums
                && let Some(expected) = info.sha256.as_ref().and_then(|s| s.get(modality))
            {
                let found = sha256_hex(bytes);
                if &found != expected {
                    return Err(DataError::ChecksumMismatch {
                        url: url.clone(),
                        expected: expected.clone(),
                        found,
                    });
                }
            }
            tars.push(ModalityTar {
                modality: modality.clone(),
                url: url.clone(),
                entries: read_tar(url, bytes)?,
            });
        }
        validate_shard(&self.index, raw.shard, tars)
    }

    /// Downloads, parses and validates `shard`.
    pub async fn read_shard(&self, shard: u32) -> Result<ShardData, DataError> {
        let raw = self.fetch(shard).await?;
        let reader = self.clone();
        tokio::task::spawn_blocking(move || reader.parse(&raw))
            .await
            .map_err(|source| DataError::Task { shard, source })?
    }

    fn shard_info(&self, shard: u32) -> Result<&ShardInfo, DataError> {
        self.index
            .shard(shard)
            .ok_or_else(|| DataError::UnknownShard {
                url: self.store.url().to_string(),
                shard,
            })
    }
}

/// Reads and validates `<root>/index.json`.
pub async fn read_index(store: &DatasetStore) -> Result<DatasetIndex, DataError> {
    let path = index_path(store.root());
    let json = store.get(&path).await?;
    DatasetIndex::from_json(&store.object_url(&path), &json)
}

/// Writes `<root>/index.json` (after validating it).
pub async fn write_index(store: &DatasetStore, index: &DatasetIndex) -> Result<(), DataError> {
    let path = index_path(store.root());
    index.validate(&store.object_url(&path))?;
    store.put(&path, Bytes::from(index.to_json())).await
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_size(info: &ShardInfo, modality: &str, url: &str, found: u64) -> Result<(), DataError> {
    match info.bytes.get(modality) {
        Some(&expected) if expected != found => Err(DataError::SizeMismatch {
            url: url.to_string(),
            expected,
            found,
        }),
        _ => Ok(()),
    }
}
