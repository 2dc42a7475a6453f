//! Checkpoint files of a rank (architecture §5). Rank 0 writes `model.safetensors` (ml-4m names,
//! loadable by ml-4m), `optimizer.safetensors` (AdamW moments over the flat layout) and
//! `trainer.json` (step, schedule, seeds, configuration, world size); the coordinator writes
//! `MANIFEST.json` last. Saving only stalls training for the copy to host memory: the upload runs
//! in the background. Restoring reads a folder only if its manifest exists and lists the files
//! with their sizes and hashes.

use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use fourm_data::sha256_hex;
use fourm_model::FourM;
use fourm_model::optim::{AdamW, AdamWConfig, CosineSchedule, ParamLayout};
use fourm_model::weights::{load_ml4m_bytes, to_safetensors_bytes};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};

/// Names of the files rank 0 writes.
pub const MODEL_FILE: &str = "model.safetensors";
/// AdamW moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Step, schedule, seeds, configuration.
pub const TRAINER_FILE: &str = "trainer.json";
const MANIFEST_FILE: &str = "MANIFEST.json";

/// A checkpoint problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The store failed.
    #[error("object store error on {path}: {source}")]
    Store {
        /// The object.
        path: String,
        /// Why.
        #[source]
        source: object_store::Error,
    },
    /// The folder has no manifest: it was never committed.
    #[error("{folder} has no MANIFEST.json: the checkpoint was never committed")]
    NotCommitted {
        /// The folder.
        folder: String,
    },
    /// A file does not match the manifest or cannot be decoded.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl CheckpointError {
    /// The checkpoint folder (`step-…`) the error concerns, where it names one.
    pub fn folder(&self) -> Option<&str> {
        let path = match self {
            Self::Store { path, .. } | Self::Corrupt { path, .. } => path,
            Self::NotCommitted { folder } => folder,
        };
        path.split('/').find(|part| part.starts_with("step-"))
    }
}

/// `trainer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Format version.
    pub format: u32,
    /// Last completed step.
    pub step: u64,
    /// Generation that wrote it.
    pub generation: u64,
    /// Ranks of that generation.
    pub world_size: u32,
    /// Learning-rate schedule.
    pub schedule: CosineSchedule,
    /// AdamW hyper-parameters.
    pub adamw: AdamWConfig,
    /// Seed of the initial weights.
    pub init_seed: u64,
    /// Digest of the shared configuration.
    pub config_digest: String,
    /// The worker configuration (for humans and tools).
    pub config: serde_json::Value,
}

/// One written file: name, size, SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Name in the folder.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The files of a checkpoint, already copied to host memory.
pub struct Snapshot {
    files: Vec<(String, Vec<u8>)>,
}

/// Copies the model, optimizer and trainer state to host memory (the only part that stalls
/// training).
pub fn snapshot(
    model: &FourM,
    layout: &ParamLayout,
    adamw: &AdamW,
    trainer: &TrainerState,
) -> Result<Snapshot, CheckpointError> {
    let corrupt = |name: &str, reason: String| CheckpointError::Corrupt {
        path: name.into(),
        reason,
    };
    let model_bytes =
        to_safetensors_bytes(model).map_err(|e| corrupt(MODEL_FILE, e.to_string()))?;
    let (m, v, step) = adamw.state();
    let m = host(m);
    let v = host(v);
    let layout_json: Vec<(String, Vec<usize>)> = layout
        .entries()
        .iter()
        .map(|e| (e.info.name.clone(), e.info.shape.clone()))
        .collect();
    let metadata = HashMap::from([
        ("step".to_string(), step.to_string()),
        (
            "layout".to_string(),
            serde_json::to_string(&layout_json).expect("serialises"),
        ),
    ]);
    let mb = f32_bytes(&m);
    let vb = f32_bytes(&v);
    let views = vec![
        (
            "exp_avg",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![m.len()], &mb)
                .expect("valid view"),
        ),
        (
            "exp_avg_sq",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![v.len()], &vb)
                .expect("valid view"),
        ),
    ];
    let opt_bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| corrupt(OPTIMIZER_FILE, e.to_string()))?;
    let trainer_bytes = serde_json::to_vec_pretty(trainer).expect("trainer state serialises");
    Ok(Snapshot {
        files: vec![
            (MODEL_FILE.into(), model_bytes),
            (OPTIMIZER_FILE.into(), opt_bytes),
            (TRAINER_FILE.into(), trainer_bytes),
        ],
    })
}

/// How checkpoint files are uploaded: multipart, `part_size` bytes a part (S3 takes 5 MiB to
/// 5 GiB, a file at most 10,000 parts), at most `concurrency` parts in flight, so that a file of
/// any size streams from the host copy with bounded extra memory and no request larger than a
/// part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// Bytes per part.
    pub part_size: usize,
    /// Parts uploading at once.
    pub concurrency: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: 32 << 20,
            concurrency: 4,
        }
    }
}

impl Snapshot {
    /// Uploads the files under `folder`; returns what was written.
    pub async fn upload(
        self,
        store: Arc<dyn ObjectStore>,
        folder: Path,
        options: UploadOptions,
    ) -> Result<Vec<WrittenFile>, CheckpointError> {
        let mut written = Vec::new();
        for (name, bytes) in self.files {
            let path = folder.clone().join(name.as_str());
            let file = WrittenFile {
                name,
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            };
            upload_file(&store, &path, bytes.into(), options).await?;
            written.push(file);
        }
        Ok(written)
    }
}

/// One file as a multipart upload, aborted (its parts discarded) if any part fails.
pub async fn upload_file(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    bytes: bytes::Bytes,
    options: UploadOptions,
) -> Result<(), CheckpointError> {
    let fail = |source| CheckpointError::Store {
        path: path.to_string(),
        source,
    };
    let part = options.part_size.max(1);
    let upload = store.put_multipart(path).await.map_err(fail)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
    let mut offset = 0;
    while offset < bytes.len() {
        if let Err(e) = writer.wait_for_capacity(options.concurrency.max(1)).await {
            let _ = writer.abort().await;
            return Err(fail(e));
        }
        let end = (offset + part).min(bytes.len());
        writer.put(bytes.slice(offset..end));
        offset = end;
    }
    writer.finish().await.map(drop).map_err(fail)
}

/// What a restored checkpoint holds.
pub struct Restored {
    /// Trainer state.
    pub trainer: TrainerState,
    /// AdamW moments and step.
    pub exp_avg: Tensor<1>,
    /// Second moments.
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

/// Restores `model` from the committed checkpoint in `folder` and returns the rest of the state.
pub async fn restore(
    store: &Arc<dyn ObjectStore>,
    folder: &Path,
    model: &mut FourM,
    layout: &ParamLayout,
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
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for f in &manifest.files {
        let path = folder.clone().join(f.name.as_str());
        let bytes = store
            .get(&path)
            .await
            .map_err(|source| CheckpointError::Store {
                path: path.to_string(),
                source,
            })?;
        let bytes = bytes
            .bytes()
            .await
            .map_err(|source| CheckpointError::Store {
                path: path.to_string(),
                source,
            })?
            .to_vec();
        if bytes.len() as u64 != f.size || sha256_hex(&bytes) != f.sha256 {
            return Err(CheckpointError::Corrupt {
                path: path.to_string(),
                reason: "size or SHA-256 differs from the manifest".into(),
            });
        }
        files.insert(f.name.clone(), bytes);
    }
    let take = |files: &mut HashMap<String, Vec<u8>>, name: &str| {
        files.remove(name).ok_or_else(|| CheckpointError::Corrupt {
            path: format!("{folder}/{name}"),
            reason: "not listed in the manifest".into(),
        })
    };
    let corrupt = |name: &str, reason: String| CheckpointError::Corrupt {
        path: format!("{folder}/{name}"),
        reason,
    };
    let trainer: TrainerState = serde_json::from_slice(&take(&mut files, TRAINER_FILE)?)
        .map_err(|e| corrupt(TRAINER_FILE, e.to_string()))?;
    load_ml4m_bytes(model, take(&mut files, MODEL_FILE)?)
        .map_err(|e| corrupt(MODEL_FILE, e.to_string()))?;
    let opt = take(&mut files, OPTIMIZER_FILE)?;
    let st = safetensors::SafeTensors::deserialize(&opt)
        .map_err(|e| corrupt(OPTIMIZER_FILE, e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&opt)
        .map_err(|e| corrupt(OPTIMIZER_FILE, e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let expected: Vec<(String, Vec<usize>)> = layout
        .entries()
        .iter()
        .map(|e| (e.info.name.clone(), e.info.shape.clone()))
        .collect();
    let stored: Vec<(String, Vec<usize>)> = meta
        .get("layout")
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| corrupt(OPTIMIZER_FILE, "missing parameter layout".into()))?;
    if stored != expected {
        return Err(corrupt(
            OPTIMIZER_FILE,
            "parameter layout differs from the model's".into(),
        ));
    }
    let adamw_step = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(OPTIMIZER_FILE, "missing step".into()))?;
    let vector = |name: &str| -> Result<Tensor<1>, CheckpointError> {
        let t = st
            .tensor(name)
            .map_err(|e| corrupt(OPTIMIZER_FILE, format!("{name}: {e}")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != [layout.len()] {
            return Err(corrupt(
                OPTIMIZER_FILE,
                format!("{name}: expected f32 [{}]", layout.len()),
            ));
        }
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Tensor::from_data(
            TensorData::new(values, [layout.len()]),
            device,
        ))
    };
    Ok(Restored {
        exp_avg: vector("exp_avg")?,
        exp_avg_sq: vector("exp_avg_sq")?,
        adamw_step,
        trainer,
    })
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
