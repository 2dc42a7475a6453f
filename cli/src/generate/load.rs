//! A trained model for inference: the checkpoint's weights, rebuilt from the configuration it was
//! trained with (`trainer.json`) and the modalities of its dataset.

use anyhow::{Context, bail};
use burn::tensor::Device;
use fourm_coordinator::durable::latest_committed_folder;
use fourm_coordinator::manifest::MANIFEST_NAME;
use fourm_data::{DatasetStore, StoreConfig};
use fourm_model::FourM;
use fourm_model::generate::SpecialTokens;
use fourm_model::weights::load_ml4m_bytes;
use fourm_worker::checkpoint::{MODEL_FILE, TRAINER_FILE, TrainerState};
use fourm_worker::config::WorkerConfig;
use fourm_worker::setup::DataSetup;

/// What generation needs from a checkpoint.
pub struct Loaded {
    /// The model with the checkpoint's weights.
    pub model: FourM,
    /// The configuration it was trained with (its dataset possibly replaced).
    pub config: WorkerConfig,
    /// Its dataset: index, modalities, text tokenizer.
    pub data: DataSetup,
    /// Special ids of the sequence vocabulary.
    pub specials: SpecialTokens,
    /// The step folder read.
    pub folder: String,
    /// Its step.
    pub step: u64,
}

/// Loads `url`: a committed step folder, or a checkpoint root (its latest committed step).
/// `dataset` replaces the dataset recorded in the checkpoint (where the tokenizers are).
pub async fn load(url: &str, dataset: Option<&str>, device: &Device) -> anyhow::Result<Loaded> {
    let store = DatasetStore::open(url, StoreConfig::default())
        .with_context(|| format!("opening {url}"))?;
    let folder = step_folder(&store).await?;
    let read = |name: &str| {
        let path = folder.clone().join(name);
        let store = &store;
        async move {
            store
                .get(&path)
                .await
                .with_context(|| format!("reading {}", store.object_url(&path)))
        }
    };
    let trainer: TrainerState = serde_json::from_slice(&read(TRAINER_FILE).await?)
        .with_context(|| format!("{url}: {TRAINER_FILE} is not a fourm trainer state"))?;
    let mut config: WorkerConfig = serde_json::from_value(trainer.config.clone())
        .with_context(|| format!("{url}: {TRAINER_FILE} holds no worker configuration"))?;
    config.data.dataset = match dataset {
        Some(d) => d.to_string(),
        None => resolve_dataset(&config.data.dataset, &store, &folder),
    };
    let data = DataSetup::open(&config)
        .await
        .with_context(|| format!("opening the dataset {}", config.data.dataset))?;
    let model_config = config.model.build()?;
    let mut model = model_config.init(&data.modalities, config.model.init_seed, device)?;
    load_ml4m_bytes(&mut model, read(MODEL_FILE).await?.to_vec())
        .with_context(|| format!("loading {MODEL_FILE}"))?;
    let specials = data.specials();
    Ok(Loaded {
        model,
        config,
        data,
        specials,
        folder: store.object_url(&folder),
        step: trainer.step,
    })
}

/// The store's root if it is a committed step folder, else the newest committed checkpoint its
/// commit log lists.
async fn step_folder(store: &DatasetStore) -> anyhow::Result<object_store::path::Path> {
    let root = store.root().clone();
    if store.get(&root.clone().join(MANIFEST_NAME)).await.is_ok() {
        return Ok(root);
    }
    let latest = latest_committed_folder(store.inner(), &root)
        .await
        .with_context(|| format!("reading the commit log of {}", store.url()))?;
    match latest {
        Some(folder) => Ok(root.join(folder.as_str())),
        None => bail!(
            "{} is neither a committed checkpoint folder nor a checkpoint root with one",
            store.url()
        ),
    }
}

/// The dataset a checkpoint was trained on, found from any working directory: a local path
/// recorded relative to the training's working directory (or since moved with its job folder) is
/// looked up beside the checkpoint root and in the job folder too; other URLs are kept.
fn resolve_dataset(
    recorded: &str,
    store: &DatasetStore,
    folder: &object_store::path::Path,
) -> String {
    let path = std::path::Path::new(recorded.strip_prefix("file://").unwrap_or(recorded));
    if recorded.contains("://") && !recorded.starts_with("file://") || path.is_dir() {
        return recorded.to_string();
    }
    // The checkpoint root, then the job folder holding it, then the training's directory.
    let Some(local) = store.local_dir() else {
        return recorded.to_string();
    };
    // The store is the checkpoint root, or (when the folder is its root) a step folder in it.
    let root = if folder == store.root() {
        local.parent().unwrap_or(local)
    } else {
        local
    };
    let job = root.parent().unwrap_or(root);
    let candidates = [
        Some(job.join(path)),
        job.parent().map(|p| p.join(path)),
        path.file_name().map(|name| job.join(name)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|c| c.join("index.json").is_file())
        .and_then(|c| c.to_str().map(str::to_string))
        .unwrap_or_else(|| recorded.to_string())
}
