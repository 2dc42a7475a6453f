//! A rank's part of a checkpoint, copied to host memory (the only part that stalls training), then
//! uploaded in the background as multipart uploads.

use std::sync::Arc;

use burn::tensor::Tensor;
use fourm_data::sha256_hex;
use fourm_model::FourM;
use fourm_model::optim::{AdamW, ParamLayout};
use fourm_model::weights::to_safetensors_bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use super::optimizer::{self, OptimizerPart};
use super::{CheckpointError, MODEL_FILE, TRAINER_FILE, TrainerState, WrittenFile};

/// The files of a checkpoint, already copied to host memory.
pub struct Snapshot {
    files: Vec<(String, Vec<u8>)>,
}

/// Copies this rank's part of a checkpoint to host memory: the model and the trainer state when
/// given (rank 0), and the AdamW state, as `optimizer.safetensors` or, with `shard = (rank,
/// world)`, as that rank's shard file.
pub fn snapshot(
    model: Option<&FourM>,
    trainer: Option<&TrainerState>,
    layout: &ParamLayout,
    adamw: &AdamW,
    shard: Option<(u32, u32)>,
) -> Result<Snapshot, CheckpointError> {
    let corrupt = |name: &str, reason: String| CheckpointError::Corrupt {
        path: name.into(),
        reason,
    };
    let mut files = Vec::new();
    if let Some(model) = model {
        let bytes = to_safetensors_bytes(model).map_err(|e| corrupt(MODEL_FILE, e.to_string()))?;
        files.push((MODEL_FILE.to_string(), bytes));
    }
    let (m, v, step) = adamw.state();
    let part = OptimizerPart {
        offset: adamw.range().start,
        exp_avg: host(m),
        exp_avg_sq: host(v),
        step,
    };
    let name = optimizer::optimizer_file(shard);
    let bytes = optimizer::encode(&part, layout).map_err(|e| corrupt(&name, e))?;
    files.push((name, bytes));
    if let Some(trainer) = trainer {
        let bytes = serde_json::to_vec_pretty(trainer).expect("trainer state serialises");
        files.push((TRAINER_FILE.to_string(), bytes));
    }
    Ok(Snapshot { files })
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

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}
