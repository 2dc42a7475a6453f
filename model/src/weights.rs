//! ml-4m state dicts in `.safetensors`, read and written through burn-store.
//!
//! A state dict written by ml-4m's `FourM.state_dict()` holds every parameter under its ml-4m
//! name (Linear weights `[out, in]`), the registered buffers (sin-cos `pos_emb` tables, the zero
//! `.bias` of bias-less LayerNorms) and both names of each tied tensor
//! (`decoder_embeddings.<m>.to_logits.weight` = `token_emb.weight`,
//! `decoder_embeddings.<m>.mod_emb` = `encoder_embeddings.<m>.mod_emb`). Loading checks all of
//! it; saving writes all of it, so ml-4m loads the file with `strict=True`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use crate::config::FourMConfig;
use crate::error::ModelError;
use crate::fourm::FourM;
use crate::modality::Modalities;

/// Metadata key under which fourm records the architecture of a saved model.
pub const METADATA_KEY: &str = "fourm";

/// What fourm writes into the safetensors header, enough to rebuild the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Architecture.
    pub config: FourMConfig,
    /// Modalities.
    pub modalities: Modalities,
}

/// The model's full ml-4m state dict (parameters, buffers, tied duplicates), lazily readable.
pub fn state_dict(model: &FourM) -> Vec<PackTensor> {
    let paths: HashMap<String, String> = model
        .param_infos()
        .into_iter()
        .map(|p| (p.path, p.name))
        .collect();
    let mut out: Vec<PackTensor> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|mut t| {
            if let Some(name) = paths.get(&t.name) {
                t.name = name.clone();
            }
            t
        })
        .collect();
    let by_name: HashMap<String, PackTensor> =
        out.iter().map(|t| (t.name.clone(), t.clone())).collect();
    for m in model.modalities().targets() {
        for (alias, source) in tied_pairs(&m.name) {
            let mut t = by_name[&source].clone();
            t.name = alias;
            out.push(t);
        }
    }
    out
}

/// `(alias, source)` names of the tied entries of a target modality.
fn tied_pairs(modality: &str) -> [(String, String); 2] {
    [
        (
            format!("decoder_embeddings.{modality}.to_logits.weight"),
            format!("decoder_embeddings.{modality}.token_emb.weight"),
        ),
        (
            format!("decoder_embeddings.{modality}.mod_emb"),
            format!("encoder_embeddings.{modality}.mod_emb"),
        ),
    ]
}

/// Serialises the state dict to safetensors bytes, with fourm's metadata in the header.
pub fn to_safetensors_bytes(model: &FourM) -> Result<Vec<u8>, ModelError> {
    let fail = |reason: String| ModelError::Weights {
        path: "<memory>".into(),
        reason,
    };
    let views = views(state_dict(model));
    safetensors::serialize(views, Some(metadata(model)?)).map_err(|e| fail(e.to_string()))
}

/// Writes the state dict to `path` (atomically: a temporary file renamed into place).
pub fn save_ml4m(model: &FourM, path: &Path) -> Result<(), ModelError> {
    let fail = |reason: String| ModelError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views(state_dict(model)), Some(metadata(model)?), &tmp)
        .map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// Loads an ml-4m (or fourm) state dict from a file into `model`.
pub fn load_ml4m(model: &mut FourM, path: &Path) -> Result<(), ModelError> {
    if !path.is_file() {
        return Err(ModelError::Weights {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let mut store = SafetensorsStore::from_file(path);
    load_from_store(model, &mut store, path)
}

/// Loads an ml-4m (or fourm) state dict from safetensors bytes into `model`.
pub fn load_ml4m_bytes(model: &mut FourM, bytes: Vec<u8>) -> Result<(), ModelError> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    load_from_store(model, &mut store, Path::new("<memory>"))
}

/// Reads fourm's metadata from a safetensors header, if the file was written by fourm.
pub fn read_meta(bytes: &[u8]) -> Result<Option<ModelMeta>, ModelError> {
    let fail = |reason: String| ModelError::Weights {
        path: "<memory>".into(),
        reason,
    };
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fail(e.to_string()))?;
    let Some(json) = header.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) else {
        return Ok(None);
    };
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| fail(format!("bad `{METADATA_KEY}` metadata: {e}")))
}

fn metadata(model: &FourM) -> Result<HashMap<String, String>, ModelError> {
    let meta = ModelMeta {
        config: model.config().clone(),
        modalities: model.modalities().clone(),
    };
    let json = serde_json::to_string(&meta).map_err(|e| ModelError::Config(e.to_string()))?;
    Ok(HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (METADATA_KEY.to_string(), json),
    ]))
}

fn load_from_store(
    model: &mut FourM,
    store: &mut SafetensorsStore,
    path: &Path,
) -> Result<(), ModelError> {
    let file_err = |reason: String| ModelError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let entries: BTreeMap<String, PackTensor> = store
        .get_all_tensors()
        .map_err(|e| file_err(e.to_string()))?
        .clone();
    let mut used: HashSet<String> = HashSet::new();
    let mut tensors = Vec::new();
    for info in model.param_infos() {
        let Some(entry) = entries.get(&info.name) else {
            // ml-4m's fine-tuning loader drops the fixed sin-cos tables; fourm recomputes them.
            if info.name.ends_with(".pos_emb") {
                continue;
            }
            return Err(entry_err(&info.name, "missing from the file"));
        };
        if entry.shape.to_vec() != info.torch_shape {
            return Err(entry_err(
                &info.name,
                format!(
                    "shape {:?} in the file, the model expects {:?}",
                    entry.shape.to_vec(),
                    info.torch_shape
                ),
            ));
        }
        used.insert(info.name.clone());
        let mut t = as_f32(entry.clone(), &info.name)?;
        t.name = info.path.clone();
        tensors.push(t);
    }
    for m in model.modalities().targets() {
        for (alias, source) in tied_pairs(&m.name) {
            if let Some(copy) = entries.get(&alias) {
                if bytes_of(copy)? != bytes_of(&entries[&source])? {
                    return Err(entry_err(
                        &alias,
                        format!("differs from `{source}`, which fourm ties it to"),
                    ));
                }
                used.insert(alias);
            }
        }
    }
    if let Some(extra) = entries.keys().find(|k| !used.contains(*k)) {
        return Err(entry_err(
            extra,
            "not a tensor of this model (wrong modalities or architecture?)",
        ));
    }
    let result = model.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if let Some(e) = result.errors.first() {
        return Err(file_err(format!("applying weights failed: {e:?}")));
    }
    Ok(())
}

fn entry_err(name: &str, reason: impl Into<String>) -> ModelError {
    ModelError::WeightEntry {
        name: name.to_string(),
        reason: reason.into(),
    }
}

fn bytes_of(t: &PackTensor) -> Result<Vec<u8>, ModelError> {
    t.to_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| entry_err(&t.name, e.to_string()))
}

/// Float entries of another precision are converted to `f32`; anything else is refused.
fn as_f32(t: PackTensor, name: &str) -> Result<PackTensor, ModelError> {
    match t.dtype {
        DType::F32 => Ok(t),
        DType::F16 | DType::BF16 | DType::F64 => {
            let (n, shape) = (t.name.clone(), t.shape.clone());
            Ok(burn::store::bridge::map_data(
                t,
                n,
                DType::F32,
                shape,
                |d| d.convert_dtype(DType::F32),
            ))
        }
        other => Err(entry_err(
            name,
            format!("dtype {other:?} is not a float type"),
        )),
    }
}

/// Adapts burn-pack tensors to safetensors' writer; each is materialised when written.
struct View(PackTensor);

impl safetensors::View for View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let bytes = self
            .0
            .to_bytes()
            .unwrap_or_else(|e| panic!("reading `{}` back from the device: {e:?}", self.0.name));
        std::borrow::Cow::Owned(bytes.to_vec())
    }

    fn data_len(&self) -> usize {
        self.0.byte_len()
    }
}

fn views(tensors: Vec<PackTensor>) -> Vec<(String, View)> {
    tensors
        .into_iter()
        .map(|t| (t.name.clone(), View(t)))
        .collect()
}
