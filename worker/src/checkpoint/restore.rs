//! Restoring a committed checkpoint: every file the manifest lists is checked against its size
//! and SHA-256; the weights load into the model, and the AdamW moments of the range this rank
//! needs are assembled from whichever optimizer files hold them, one file at a time.

use std::ops::Range;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use fourm_data::sha256_hex;
use fourm_model::FourM;
use fourm_model::optim::ParamLayout;
use fourm_model::weights::load_ml4m_bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;

use super::optimizer::{self, Assembler};
use super::{CheckpointError, MANIFEST_FILE, MODEL_FILE, TRAINER_FILE, TrainerState};

/// What a restored checkpoint holds besides the weights.
pub struct Restored {
    /// Trainer state.
    pub trainer: TrainerState,
    /// First AdamW moments of the requested range.
    pub exp_avg: Tensor<1>,
    /// Second moments of the requested range.
    pub exp_avg_sq: Tensor<1>,
    /// AdamW step count.
    pub adamw_step: u64,
}

#[derive(Deserialize)]
struct ManifestFiles {
    files: Vec<ManifestFile>,
}

#[derive(Deserialize)]
struct ManifestFile {
    name: String,
    size: u64,
    sha256: String,
}

/// Restores `model` from the committed checkpoint in `folder` and returns the trainer state and
/// the AdamW moments of `range` of the flat vector (all of it, or this rank's shard), whatever
/// world size and sharding wrote the checkpoint.
pub async fn restore(
    store: &Arc<dyn ObjectStore>,
    folder: &Path,
    model: &mut FourM,
    layout: &ParamLayout,
    range: Range<usize>,
    device: &Device,
) -> Result<Restored, CheckpointError> {
    let manifest_path = folder.clone().join(MANIFEST_FILE);
    let manifest = match store.get(&manifest_path).await {
        Ok(r) => r.bytes().await.map_err(|source| CheckpointError::Store {
            path: manifest_path.to_string(),
            source,
        })?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(CheckpointError::NotCommitted {
                folder: folder.to_string(),
            });
        }
        Err(source) => {
            return Err(CheckpointError::Store {
                path: manifest_path.to_string(),
                source,
            });
        }
    };
    let manifest: ManifestFiles =
        serde_json::from_slice(&manifest).map_err(|e| CheckpointError::Corrupt {
            path: manifest_path.to_string(),
            reason: e.to_string(),
        })?;
    let listed = |name: &str| -> Result<&ManifestFile, CheckpointError> {
        manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| CheckpointError::Corrupt {
                path: format!("{folder}/{name}"),
                reason: "not listed in the manifest".into(),
            })
    };
    let corrupt = |name: &str, reason: String| CheckpointError::Corrupt {
        path: format!("{folder}/{name}"),
        reason,
    };
    let trainer = read_verified(store, folder, listed(TRAINER_FILE)?).await?;
    let trainer: TrainerState =
        serde_json::from_slice(&trainer).map_err(|e| corrupt(TRAINER_FILE, e.to_string()))?;
    let weights = read_verified(store, folder, listed(MODEL_FILE)?).await?;
    load_ml4m_bytes(model, weights).map_err(|e| corrupt(MODEL_FILE, e.to_string()))?;

    let mut assembler = Assembler::new(range.clone(), layout.len());
    let mut any = false;
    for f in manifest
        .files
        .iter()
        .filter(|f| optimizer::is_optimizer_file(&f.name))
    {
        let bytes = read_verified(store, folder, f).await?;
        let path = format!("{folder}/{}", f.name);
        assembler.add(optimizer::decode(&bytes, layout, &path)?, &path)?;
        any = true;
    }
    if !any {
        return Err(corrupt(
            optimizer::OPTIMIZER_FILE,
            "the manifest lists no optimizer state".into(),
        ));
    }
    let part = assembler.finish(folder.as_ref())?;
    let n = range.len();
    Ok(Restored {
        trainer,
        exp_avg: Tensor::from_data(TensorData::new(part.exp_avg, [n]), device),
        exp_avg_sq: Tensor::from_data(TensorData::new(part.exp_avg_sq, [n]), device),
        adamw_step: part.step,
    })
}

/// The bytes of `file` in `folder`, checked against the manifest's size and SHA-256.
async fn read_verified(
    store: &Arc<dyn ObjectStore>,
    folder: &Path,
    file: &ManifestFile,
) -> Result<Vec<u8>, CheckpointError> {
    let path = folder.clone().join(file.name.as_str());
    let fail = |source| CheckpointError::Store {
        path: path.to_string(),
        source,
    };
    let bytes = store
        .get(&path)
        .await
        .map_err(fail)?
        .bytes()
        .await
        .map_err(fail)?
        .to_vec();
    if bytes.len() as u64 != file.size || sha256_hex(&bytes) != file.sha256 {
        return Err(CheckpointError::Corrupt {
            path: path.to_string(),
            reason: "size or SHA-256 differs from the manifest".into(),
        });
    }
    Ok(bytes)
}
