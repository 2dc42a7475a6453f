//! What a worker builds once: the dataset (index, reader), the text tokenizer, the model's
//! modalities derived from the dataset, and the masker.

use std::collections::BTreeMap;
use std::path::Path;

use fourm_data::{DatasetIndex, DatasetStore, ModalityKind, ShardReader, StoreConfig, read_index};
use fourm_masking::{
    AlphasConfig, MaskKind, Masker, MaskingConfig, ModalityMasking, Role, SequenceTokens,
    TextTokenizer, TokenRange,
};
use fourm_model::generate::SpecialTokens;
use fourm_model::{Modalities, ModalitySpec};
use fourm_plan::EpochPlan;

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::pipeline::BatchBuilder;

/// `data.alphas` naming one Dirichlet with alpha 1 over every modality, on both sides (the
/// default when unset).
pub const UNIFORM_ALPHAS: &str = "uniform";

/// The data side of a worker.
pub struct DataSetup {
    /// The dataset index.
    pub index: DatasetIndex,
    /// Reads shards.
    pub reader: ShardReader,
    /// The model's modalities, in sorted order.
    pub modalities: Modalities,
    /// The modalities read from the dataset.
    pub names: Vec<String>,
    /// Text tokenizer (when a text modality is used).
    pub tokenizer: Option<TextTokenizer>,
    /// Masking configuration.
    pub masking: MaskingConfig,
    /// Alphas.
    pub alphas: AlphasConfig,
}

impl DataSetup {
    /// Opens the dataset of `config` and derives everything from its index.
    pub async fn open(config: &WorkerConfig) -> Result<Self, WorkerError> {
        let data = &config.data;
        let store = DatasetStore::open(&data.dataset, StoreConfig::default())?;
        let index = read_index(&store).await?;
        let names: Vec<String> = if data.modalities.is_empty() {
            index
                .modalities
                .iter()
                .filter(|(_, m)| m.kind != ModalityKind::CropSettings)
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            data.modalities.clone()
        };
        let needs_text = names.iter().any(|n| {
            index
                .modalities
                .get(n)
                .is_some_and(|m| m.kind == ModalityKind::Text)
        });
        let tokenizer = if needs_text {
            let bytes = match &data.text_tokenizer {
                Some(url) if Path::new(url).is_file() => {
                    std::fs::read(url).map_err(|e| WorkerError::setup(format!("{url}: {e}")))?
                }
                Some(url) => fetch(url).await?,
                None => store
                    .get(&store.root().clone().join("text_tokenizer.json"))
                    .await?
                    .to_vec(),
            };
            Some(TextTokenizer::from_json(&bytes, "text tokenizer")?)
        } else {
            None
        };
        let mut specs = Vec::new();
        let mut masking = BTreeMap::new();
        for name in &names {
            let info = index.modalities.get(name).ok_or_else(|| {
                WorkerError::setup(format!("modality `{name}` is not in the dataset"))
            })?;
            let (spec, kind, max_tokens) = match info.kind {
                ModalityKind::Tokens => {
                    let [h, w] = info.token_shape.ok_or_else(|| {
                        WorkerError::setup(format!("`{name}` has no token shape"))
                    })?;
                    let vocab = info.vocab_size.unwrap_or(0) as usize;
                    let spec = ModalitySpec::image_tokens(name, vocab, [h as usize, w as usize]);
                    (spec, MaskKind::Image, (h * w) as usize)
                }
                ModalityKind::Text => {
                    let vocab = tokenizer.as_ref().map_or(0, TextTokenizer::vocab_size);
                    (
                        ModalitySpec::sequence(name, vocab, data.text_max_tokens),
                        MaskKind::Sequence,
                        data.text_max_tokens,
                    )
                }
                ModalityKind::CropSettings => {
                    return Err(WorkerError::setup(format!(
                        "`{name}` is not a trainable modality"
                    )));
                }
            };
            specs.push(spec);
            masking.insert(
                name.clone(),
                ModalityMasking {
                    kind,
                    max_tokens,
                    min_tokens: 0,
                    role: Role::Both,
                },
            );
        }
        let modalities = Modalities::new(specs).map_err(|e| WorkerError::setup(e.to_string()))?;
        let masking = MaskingConfig {
            modalities: masking,
            input_tokens: TokenRange::fixed(data.input_tokens),
            target_tokens: Some(TokenRange::fixed(data.target_tokens)),
            max_tries: 100,
        };
        let alphas = match data.alphas.as_deref() {
            Some(name_or_path) if name_or_path != UNIFORM_ALPHAS => {
                AlphasConfig::named_or_load(name_or_path)?
            }
            _ => {
                let all: Vec<&str> = names.iter().map(String::as_str).collect();
                AlphasConfig::single(&all, 1.0, &all, 1.0)?
            }
        };
        let reader = ShardReader::new(store, index.clone());
        Ok(Self {
            index,
            reader,
            modalities,
            names,
            tokenizer,
            masking,
            alphas,
        })
    }

    /// The epoch plan for a seed.
    pub fn plan(&self, seed: u64) -> Result<EpochPlan, WorkerError> {
        Ok(self.index.plan(seed)?)
    }

    /// The special ids of the sequence vocabulary (from the text tokenizer; ml-4m's WordPiece
    /// layout without one).
    pub fn specials(&self) -> SpecialTokens {
        match &self.tokenizer {
            Some(t) => {
                let s = t.sequence_tokens();
                SpecialTokens {
                    pad: i64::from(s.pad),
                    eos: i64::from(s.eos),
                    sentinels: s.sentinels.iter().map(|&i| i64::from(i)).collect(),
                }
            }
            None => SpecialTokens::ml4m_wordpiece(),
        }
    }

    /// A batch builder (masker + tokenizer).
    pub fn builder(&self) -> Result<BatchBuilder, WorkerError> {
        let tokens = self
            .tokenizer
            .as_ref()
            .map(|t| t.sequence_tokens().clone())
            .unwrap_or_else(default_sequence_tokens);
        let masker = Masker::new(self.masking.clone(), &self.alphas, tokens)?;
        Ok(BatchBuilder {
            masker,
            tokenizer: self.tokenizer.clone(),
        })
    }
}

/// ml-4m's special ids (`[PAD]=0 [EOS]=3 [S_k]=4+k`), for datasets without text.
fn default_sequence_tokens() -> SequenceTokens {
    SequenceTokens {
        pad: 0,
        eos: 3,
        sentinels: (4..204).collect(),
    }
}

async fn fetch(url: &str) -> Result<Vec<u8>, WorkerError> {
    let (dir, file) = url
        .rsplit_once('/')
        .ok_or_else(|| WorkerError::setup(format!("`{url}` is not a file URL")))?;
    let store = DatasetStore::open(dir, StoreConfig::default())?;
    Ok(store.get(&store.root().clone().join(file)).await?.to_vec())
}
