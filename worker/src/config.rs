//! The worker's configuration: a TOML file (`deploy/worker.toml` is the documented template), then
//! `FOURM_*` environment variables and command-line flags (see [`crate::cli`]). Unknown keys are errors; values are
//! validated with errors that name the key. The `model`, `data` and `train` sections must be the
//! same on every worker of a job: their digest is checked by the coordinator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fourm_model::{ArchVariant, FourMConfig, LossType, Precision};
pub use fourm_process::ConfigError;
use fourm_process::{load_toml, parse_toml};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// How to reach the coordinator.
    pub coordinator: CoordinatorSection,
    /// This worker.
    #[serde(default)]
    pub worker: WorkerSection,
    /// The model.
    #[serde(default)]
    pub model: ModelSection,
    /// The data.
    pub data: DataSection,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainSection,
    /// Logging and metrics.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Validation during training.
    #[serde(default)]
    pub eval: EvalSection,
}

/// Validation during training: every `every` steps, the ranks evaluate the held-out split
/// together (see `fourm eval` for what the metrics mean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate every this many steps (and after the last); 0: never.
    pub every: u64,
    /// Held-out samples evaluated.
    pub samples: usize,
    /// Tasks (`source->target`).
    pub tasks: Vec<String>,
    /// The held-out split's URL (default: `<data.dataset>/val`).
    pub split: Option<String>,
    /// MaskGIT steps of token-grid targets.
    pub steps: usize,
    /// Samples generated at once.
    pub batch: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            every: 0,
            samples: 64,
            tasks: vec![
                "rgb->semseg".into(),
                "rgb->caption".into(),
                "rgb->depth".into(),
            ],
            split: None,
            steps: 8,
            batch: 16,
        }
    }
}

/// How to reach the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSection {
    /// gRPC endpoint, e.g. `http://fourm-coordinator:50051`.
    pub address: String,
    /// File holding the job token (`FOURM_JOB_TOKEN` also works).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify a TLS coordinator.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

/// Which device the worker trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// burn's Flex CPU backend.
    Cpu,
    /// burn's CUDA backend (cargo feature `cuda`).
    Cuda,
}

/// Which collective the ranks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveKind {
    /// The CPU ring over TCP.
    Ring,
    /// NCCL (cargo feature `cuda`).
    Nccl,
}

/// This worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Unique id in the job (a Kubernetes job index, a host name...). Default: the host name.
    pub id: Option<String>,
    /// Where the CPU collective listens.
    pub collective_listen: SocketAddr,
    /// Address the other ranks use to reach it (default: the listen address, or this host's
    /// name when listening on all interfaces).
    pub collective_advertise: Option<String>,
    /// Training device.
    pub device: DeviceKind,
    /// Device ordinal for CUDA.
    pub device_index: usize,
    /// Gradient collective.
    pub collective: CollectiveKind,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            id: None,
            collective_listen: "0.0.0.0:0".parse().expect("valid address"),
            collective_advertise: None,
            device: DeviceKind::Cpu,
            device_index: 0,
            collective: CollectiveKind::Ring,
        }
    }
}

/// The model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// `debug`, `perf`, `tiny`, `small`, `base`, `large`, `xlarge`, or an ml-4m registry name such
    /// as `fm_base_12e_12d_swiglu_nobias`.
    pub preset: String,
    /// `swiglu_nobias` or `gelu` (for the short preset names).
    pub variant: ArchVariantName,
    /// Seed of the initial weights (the same on every rank).
    pub init_seed: u64,
    /// Width, replacing the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    /// Encoder blocks, replacing the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_depth: Option<usize>,
    /// Decoder blocks, replacing the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_depth: Option<usize>,
    /// Attention heads, replacing the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
}

/// Serde name of an [`ArchVariant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchVariantName {
    /// SwiGLU without biases.
    SwigluNobias,
    /// GELU with biases.
    Gelu,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            preset: "debug".into(),
            variant: ArchVariantName::SwigluNobias,
            init_seed: 0,
            dim: None,
            encoder_depth: None,
            decoder_depth: None,
            heads: None,
        }
    }
}

impl ModelSection {
    /// The model configuration (validated).
    pub fn build(&self) -> Result<FourMConfig, ConfigError> {
        let variant = match self.variant {
            ArchVariantName::SwigluNobias => ArchVariant::SwigluNobias,
            ArchVariantName::Gelu => ArchVariant::Gelu,
        };
        let mut config = FourMConfig::from_preset(&self.preset, variant)
            .map_err(|e| ConfigError::invalid("model.preset", e.to_string()))?;
        config.dim = self.dim.unwrap_or(config.dim);
        config.encoder_depth = self.encoder_depth.unwrap_or(config.encoder_depth);
        config.decoder_depth = self.decoder_depth.unwrap_or(config.decoder_depth);
        config.num_heads = self.heads.unwrap_or(config.num_heads);
        config
            .validate()
            .map_err(|e| ConfigError::invalid("model.preset", e.to_string()))?;
        Ok(config)
    }
}

/// The data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Dataset root URL (with `index.json`).
    pub dataset: String,
    /// Modalities to train on (default: every token and text modality of the dataset).
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Text tokenizer (HF `tokenizers` JSON) for text modalities; default `<dataset>/text_tokenizer.json`.
    #[serde(default)]
    pub text_tokenizer: Option<String>,
    /// Maximum tokens of a text modality (ml-4m `max_tokens`).
    #[serde(default = "default_text_tokens")]
    pub text_max_tokens: usize,
    /// Encoder tokens per sample (`num_input_tokens`).
    #[serde(default = "default_tokens")]
    pub input_tokens: usize,
    /// Decoder tokens per sample (`num_target_tokens`).
    #[serde(default = "default_tokens")]
    pub target_tokens: usize,
    /// Masking alphas: a file path, or the name of a shipped config.
    #[serde(default)]
    pub alphas: Option<String>,
    /// Whole shards read ahead.
    #[serde(default = "default_in_flight")]
    pub shards_in_flight: usize,
    /// Shards a rank reads at once (round-robin).
    #[serde(default = "default_mix")]
    pub mix: usize,
}

fn default_text_tokens() -> usize {
    32
}

fn default_tokens() -> usize {
    64
}

fn default_in_flight() -> usize {
    4
}

fn default_mix() -> usize {
    2
}

/// Optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Samples per optimizer step over all ranks, whatever the world size: each rank takes its
    /// share (`global_batch / world`, the first `global_batch % world` ranks one more) and
    /// accumulates gradients over micro-batches of at most `batch_size` samples. 0: no fixed
    /// global batch; every rank takes `batch_size` samples a step.
    pub global_batch: usize,
    /// Samples per rank per step, or with `global_batch`, per forward/backward (micro-batch).
    pub batch_size: usize,
    /// Micro-batches computed concurrently on the CPU (0: one per core).
    pub micro_batches: usize,
    /// Base learning rate; `lr = blr · global_batch / 256`.
    pub blr: f64,
    /// Final learning rate of the cosine.
    pub min_lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW epsilon.
    pub eps: f64,
    /// Global-norm clipping threshold (0: none).
    pub clip_grad: f64,
    /// Loss reduction.
    pub loss: LossType,
    /// Shard the AdamW state over the ranks (ZeRO-1): a reduce-scatter of the gradient, each
    /// rank updates its shard of the parameters, an all-gather restores them.
    pub shard_optimizer: bool,
    /// Arithmetic of the forward pass's matrix products: `"f32"`, or `"bf16"` mixed precision
    /// (f32 master weights, moments, softmax, LayerNorm and loss; see
    /// [`fourm_model::precision`]). Unset: `bf16` on a GPU, `f32` on the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            global_batch: 0,
            batch_size: 8,
            micro_batches: 0,
            blr: 1e-4,
            min_lr: 0.0,
            warmup_steps: 10,
            weight_decay: 0.05,
            betas: (0.9, 0.95),
            eps: 1e-8,
            clip_grad: 0.0,
            loss: LossType::Mod,
            shard_optimizer: false,
            precision: None,
        }
    }
}

impl TrainSection {
    /// The precision of the training forward pass on `device` (see [`Self::precision`]).
    pub fn precision_on(&self, device: DeviceKind) -> Precision {
        self.precision.unwrap_or(match device {
            DeviceKind::Cuda => Precision::Bf16,
            DeviceKind::Cpu => Precision::F32,
        })
    }

    /// Samples of an optimizer step over `world` ranks.
    pub fn step_samples(&self, world: u32) -> usize {
        match self.global_batch {
            0 => self.batch_size * world as usize,
            global => global,
        }
    }

    /// Samples rank `rank` of `world` takes per optimizer step.
    pub fn rank_samples(&self, world: u32, rank: u32) -> usize {
        match self.global_batch {
            0 => self.batch_size,
            global => {
                let world = world.max(1) as usize;
                global / world + usize::from((rank as usize) < global % world)
            }
        }
    }

    /// Forward/backward passes of a rank's step of `samples` samples (gradient accumulation).
    pub fn accumulation_steps(&self, samples: usize) -> usize {
        samples.div_ceil(self.batch_size.max(1)).max(1)
    }
}

/// Logging and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Log one line every this many steps (rank 0).
    pub log_every: u64,
    /// Peak TFLOP/s of the device, for the MFU estimate (default: detected on known GPUs;
    /// without one, no MFU is reported).
    pub peak_tflops: Option<f64>,
    /// Append the sample keys of every committed step to this file (tests, audits).
    pub audit_samples: Option<PathBuf>,
    /// Append one JSON line per step of this rank to this file (loss curves, tests).
    pub metrics_file: Option<PathBuf>,
    /// Add the SHA-256 of this rank's parameters to every line of `metrics_file` (replicas must
    /// agree bit for bit).
    pub param_digest: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            log_every: 10,
            peak_tflops: None,
            audit_samples: None,
            metrics_file: None,
            param_digest: false,
        }
    }
}

impl WorkerConfig {
    /// Parses a TOML document (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        parse_toml(text, origin)
    }

    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_toml(path)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason| Err(ConfigError::invalid(key, reason));
        if !(self.coordinator.address.starts_with("http://")
            || self.coordinator.address.starts_with("https://"))
        {
            return invalid("coordinator.address", "must be an http:// or https:// URL");
        }
        if self
            .worker
            .id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > 256)
        {
            return invalid("worker.id", "must have 1 to 256 characters");
        }
        if self.worker.collective == CollectiveKind::Nccl && self.worker.device != DeviceKind::Cuda
        {
            return invalid("worker.collective", "nccl needs worker.device = \"cuda\"");
        }
        self.model.build()?;
        if self.data.dataset.is_empty() {
            return invalid("data.dataset", "must name the dataset URL");
        }
        if self.data.input_tokens == 0 || self.data.target_tokens == 0 {
            return invalid(
                "data.input_tokens",
                "input and target tokens must be positive",
            );
        }
        if self.data.shards_in_flight == 0 || self.data.mix == 0 {
            return invalid(
                "data.shards_in_flight",
                "shards_in_flight and mix must be at least 1",
            );
        }
        if self.data.text_max_tokens == 0
            || self.data.text_max_tokens > fourm_model::SEQ_POS_EMB_ROWS
        {
            return invalid("data.text_max_tokens", "must be in 1..=512");
        }
        let t = &self.train;
        if t.batch_size == 0 {
            return invalid("train.batch_size", "must be at least 1");
        }
        if !t.blr.is_finite() || t.blr <= 0.0 || !t.min_lr.is_finite() || t.min_lr < 0.0 {
            return invalid(
                "train.blr",
                "learning rates must be finite, blr > 0 and min_lr >= 0",
            );
        }
        if !(0.0..1.0).contains(&t.betas.0) || !(0.0..1.0).contains(&t.betas.1) {
            return invalid("train.betas", "must be in [0, 1)");
        }
        if t.eps.is_nan() || t.eps <= 0.0 || t.weight_decay < 0.0 || t.clip_grad < 0.0 {
            return invalid(
                "train.eps",
                "eps must be positive, weight_decay and clip_grad non-negative",
            );
        }
        for task in &self.eval.tasks {
            task.parse::<fourm_eval::Task>()
                .map_err(|reason| ConfigError::invalid("eval.tasks", reason))?;
        }
        if self.eval.every > 0 && (self.eval.samples == 0 || self.eval.batch == 0) {
            return invalid("eval.samples", "samples and batch must be at least 1");
        }
        if self.metrics.log_every == 0 || self.metrics.peak_tflops.is_some_and(|p| p <= 0.0) {
            return invalid(
                "metrics.log_every",
                "log_every and peak_tflops must be positive",
            );
        }
        Ok(())
    }

    /// Digest of everything that must agree across the workers of a job (and between a
    /// checkpoint and the run that resumes it). How the work is laid out over the ranks is not
    /// part of it: the optimizer's sharding and the CPU threads per rank; nor, with a fixed
    /// global batch, the micro-batch size; nor the arithmetic precision (a run may resume in
    /// another one).
    pub fn digest(&self) -> String {
        // `eval` too: the ranks evaluate together, in one collective.
        let mut train = self.train.clone();
        train.shard_optimizer = false;
        train.micro_batches = 0;
        train.precision = None;
        if train.global_batch > 0 {
            train.batch_size = 0;
        }
        let shared = serde_json::json!({
            "model": self.model,
            "data": self.data,
            "train": train,
            "eval": self.eval,
        });
        let hash = Sha256::digest(shared.to_string().as_bytes());
        hash.iter().take(12).map(|b| format!("{b:02x}")).collect()
    }
}
