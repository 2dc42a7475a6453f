//! Builds a dataset index by scanning the shards: lists `<root>/<modality>/shard-NNNNN.tar`,
//! infers each modality's kind, extension and token grid from the first readable shard, then
//! reads and validates every shard.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use tracing::{info, warn};

use crate::error::DataError;
use crate::index::{DatasetIndex, INDEX_FORMAT_VERSION, ModalityInfo, ModalityKind, ShardInfo};
use crate::layout::{CROP_SETTINGS, parse_shard_name, shard_path};
use crate::npy::NpyArray;
use crate::reader::sha256_hex;
use crate::shard::{ModalityTar, validate_shard};
use crate::store::DatasetStore;
use crate::tarball::{TarEntry, read_tar};

/// Shards read at once while scanning.
const SCAN_CONCURRENCY: usize = 4;

/// How to build the index.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Vocabulary sizes by modality name; they take precedence over ml-4m's known sizes.
    pub vocab_sizes: BTreeMap<String, u32>,
    /// Record SHA-256 checksums of every tar.
    pub checksums: bool,
}

/// The result of a scan.
#[derive(Debug)]
pub struct ScanOutcome {
    /// The index of the good shards.
    pub index: DatasetIndex,
    /// Shards that failed to read or validate, with the reason.
    pub bad: Vec<(u32, DataError)>,
}

/// Vocabulary size of ml-4m's pre-tokenized modalities (`tok_<name>@<res>`), from its
/// `modality_info.py`.
pub fn known_vocab_size(modality: &str) -> Option<u32> {
    let name = modality.split('@').next().unwrap_or(modality);
    Some(match name {
        "tok_rgb" => 16_384,
        "tok_semseg" => 4_096,
        "tok_depth"
        | "tok_normal"
        | "tok_clip"
        | "tok_canny_edge"
        | "tok_sam_edge"
        | "tok_dinov2"
        | "tok_imagebind"
        | "tok_dinov2_global"
        | "tok_imagebind_global" => 8_192,
        _ => return None,
    })
}

/// Scans the dataset under `store`'s root. Errors that concern the whole dataset (no shards, an
/// unknown vocabulary size, an unreadable listing) are returned as `Err`; a shard that fails is
/// listed in [`ScanOutcome::bad`] and left out of the index.
pub async fn scan_dataset(
    store: &DatasetStore,
    options: &ScanOptions,
) -> Result<ScanOutcome, DataError> {
    let (modalities, shards) = list_shards(store).await?;
    let mut bad = Vec::new();
    // Shards present in every modality; the others are bad.
    let mut complete = Vec::new();
    for (&shard, present) in &shards {
        match modalities.iter().find(|m| !present.contains(*m)) {
            None => complete.push(shard),
            Some(m) => {
                let url = store.object_url(&shard_path(store.root(), m, shard));
                bad.push((
                    shard,
                    DataError::Missing {
                        url,
                        modality: m.clone(),
                    },
                ));
            }
        }
    }
    let mut infos = None;
    for &shard in &complete {
        match fetch_tars(store, &modalities, shard).await {
            Ok(tars) => {
                if let Some(found) = infer_modalities(store, &tars, options)? {
                    infos = Some(found);
                    break;
                }
            }
            Err(_) => continue, // reported below, when every shard is read
        }
    }
    let infos = infos.ok_or_else(|| DataError::IndexInvalid {
        url: store.url().to_string(),
        reason: "no readable shard with samples to infer the modalities from".into(),
    })?;
    let mut index = DatasetIndex {
        format_version: INDEX_FORMAT_VERSION,
        modalities: infos,
        shards: Vec::new(),
    };
    let results: Vec<(u32, Result<ShardInfo, DataError>)> = futures::stream::iter(complete)
        .map(|shard| {
            let index = &index;
            let modalities = &modalities;
            async move {
                let result = async {
                    let tars = fetch_tars(store, modalities, shard).await?;
                    shard_info(index, shard, tars, options.checksums)
                }
                .await;
                (shard, result)
            }
        })
        .buffered(SCAN_CONCURRENCY)
        .collect()
        .await;
    for (shard, result) in results {
        match result {
            Ok(info) => index.shards.push(info),
            Err(e) => {
                warn!(shard, error = %e, "bad shard");
                bad.push((shard, e));
            }
        }
    }
    bad.sort_by_key(|(s, _)| *s);
    info!(
        url = store.url(),
        shards = index.shards.len(),
        bad = bad.len(),
        samples = index.samples(),
        "dataset scanned"
    );
    Ok(ScanOutcome { index, bad })
}

/// Modality directories and, per shard number, the modalities that have it.
async fn list_shards(
    store: &DatasetStore,
) -> Result<(Vec<String>, BTreeMap<u32, BTreeSet<String>>), DataError> {
    let top = store.list_dir(store.root()).await?;
    let mut modalities = Vec::new();
    let mut shards: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for dir in top.common_prefixes {
        let Some(name) = dir.filename().map(str::to_string) else {
            continue;
        };
        let listing = store.list_dir(&dir).await?;
        let numbers: Vec<u32> = listing
            .objects
            .iter()
            .filter_map(|o| o.location.filename().and_then(parse_shard_name))
            .collect();
        if numbers.is_empty() {
            continue;
        }
        for n in numbers {
            shards.entry(n).or_default().insert(name.clone());
        }
        modalities.push(name);
    }
    modalities.sort();
    if modalities.is_empty() {
        return Err(DataError::IndexInvalid {
            url: store.url().to_string(),
            reason: "no <modality>/shard-NNNNN.tar found".into(),
        });
    }
    Ok((modalities, shards))
}

async fn fetch_tars(
    store: &DatasetStore,
    modalities: &[String],
    shard: u32,
) -> Result<Vec<(ModalityTar, bytes::Bytes)>, DataError> {
    let gets = modalities.iter().map(|m| async move {
        let path = shard_path(store.root(), m, shard);
        let url = store.object_url(&path);
        let bytes = store.get(&path).await?;
        let entries = read_tar(&url, &bytes)?;
        Ok::<_, DataError>((
            ModalityTar {
                modality: m.clone(),
                url,
                entries,
            },
            bytes,
        ))
    });
    futures::future::try_join_all(gets).await
}

fn shard_info(
    index: &DatasetIndex,
    shard: u32,
    tars: Vec<(ModalityTar, bytes::Bytes)>,
    checksums: bool,
) -> Result<ShardInfo, DataError> {
    let bytes = tars
        .iter()
        .map(|(t, b)| (t.modality.clone(), b.len() as u64))
        .collect();
    let sha256 = checksums.then(|| {
        tars.iter()
            .map(|(t, b)| (t.modality.clone(), sha256_hex(b)))
            .collect()
    });
    let data = validate_shard(index, shard, tars.into_iter().map(|(t, _)| t).collect())?;
    Ok(ShardInfo {
        shard,
        samples: data.len() as u64,
        bytes,
        sha256,
    })
}

/// Infers every modality from a shard's first entries; `None` if the shard has no samples or a
/// first entry is unreadable (the shard will be reported bad).
fn infer_modalities(
    store: &DatasetStore,
    tars: &[(ModalityTar, bytes::Bytes)],
    options: &ScanOptions,
) -> Result<Option<BTreeMap<String, ModalityInfo>>, DataError> {
    let mut out = BTreeMap::new();
    for (tar, _) in tars {
        let Some(first) = tar.entries.first() else {
            return Ok(None);
        };
        let Some(info) = infer_modality(store, &tar.modality, first, options)? else {
            return Ok(None);
        };
        out.insert(tar.modality.clone(), info);
    }
    Ok(Some(out))
}

fn infer_modality(
    store: &DatasetStore,
    modality: &str,
    first: &TarEntry,
    options: &ScanOptions,
) -> Result<Option<ModalityInfo>, DataError> {
    let invalid = |reason: String| DataError::IndexInvalid {
        url: store.url().to_string(),
        reason,
    };
    let text = |extension: &str| ModalityInfo {
        kind: ModalityKind::Text,
        extension: extension.to_string(),
        vocab_size: None,
        token_shape: None,
        dtype: None,
    };
    let dtype_of = |entry: &TarEntry| {
        NpyArray::parse(entry.data.clone())
            .ok()
            .map(|a| a.dtype.descr())
    };
    Ok(Some(match first.ext.as_str() {
        "txt" | "json" => text(&first.ext),
        "npy" if modality == CROP_SETTINGS => {
            let Some(dtype) = dtype_of(first) else {
                return Ok(None);
            };
            ModalityInfo {
                kind: ModalityKind::CropSettings,
                extension: "npy".into(),
                vocab_size: None,
                token_shape: None,
                dtype: Some(dtype),
            }
        }
        "npy" => {
            let Ok(array) = NpyArray::parse(first.data.clone()) else {
                return Ok(None);
            };
            let Some(&per_crop) = array.shape.last().filter(|&&n| n > 0) else {
                return Ok(None);
            };
            let vocab = options
                .vocab_sizes
                .get(modality)
                .copied()
                .or_else(|| known_vocab_size(modality))
                .ok_or_else(|| {
                    invalid(format!(
                        "vocabulary size of {modality} unknown: pass --vocab {modality}=N"
                    ))
                })?;
            ModalityInfo {
                kind: ModalityKind::Tokens,
                extension: "npy".into(),
                vocab_size: Some(vocab),
                token_shape: Some(grid_of(per_crop)),
                dtype: Some(array.dtype.descr()),
            }
        }
        other => {
            return Err(invalid(format!(
                "modality {modality}: entries with extension {other:?} are not supported \
                 (npy, txt, json)"
            )));
        }
    }))
}

/// The token grid of `n` ids per crop: square when `n` is a square, else one row.
fn grid_of(n: usize) -> [u32; 2] {
    let side = (n as f64).sqrt().round() as usize;
    if side * side == n {
        [side as u32, side as u32]
    } else {
        [1, n as u32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_and_vocabularies() {
        assert_eq!(grid_of(196), [14, 14]);
        assert_eq!(grid_of(16), [4, 4]);
        assert_eq!(grid_of(10), [1, 10]);
        assert_eq!(known_vocab_size("tok_rgb@224"), Some(16_384));
        assert_eq!(known_vocab_size("tok_semseg@448"), Some(4_096));
        assert_eq!(known_vocab_size("tok_dinov2_global"), Some(8_192));
        assert_eq!(known_vocab_size("tok_mystery@224"), None);
    }
}
