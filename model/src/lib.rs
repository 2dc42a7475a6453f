//! # fourm-model
//!
//! The 4M network ("Massively Multimodal Masked Modeling", apple/ml-4m) on burn: single-device
//! code whose numerics match ml-4m's at the same weights, with ml-4m's parameter names so that
//! weights move between the two.
//!
//! - [`FourMConfig`] (sizes, presets) and [`Modalities`] (what the model reads and predicts)
//!   build a [`FourM`] with [`FourMConfig::init`].
//! - [`FourM::forward`] runs one training forward pass on a [`Batch`] (ml-4m's `mod_dict`).
//! - [`weights`] loads and saves ml-4m state dicts; [`optim`] holds AdamW with ml-4m's parameter
//!   groups and schedule, gradient flattening and clipping.
//! - [`generate`] runs any-to-any generation: MaskGIT, ROAR and autoregressive decoding
//!   (with a key/value cache), temperature and guidance schedules, chained targets.

pub mod allocator;
mod batch;
pub mod bench;
mod config;
mod embed;
mod error;
mod flops;
mod fourm;
pub mod generate;
mod init;
pub mod layers;
mod loss;
pub mod memory;
mod modality;
pub mod optim;
pub mod params;
mod posemb;
pub mod precision;
mod random_batch;
pub mod selection;
mod step;
pub mod weights;

pub use batch::{Batch, ModalityBatch, ModalityData};
pub use config::{ArchVariant, FourMConfig, INIT_STD, NORM_EPS, SEQ_POS_EMB_ROWS};
pub use embed::{DecoderEmbedding, EncoderEmbedding};
pub use error::ModelError;
pub use flops::StepShape;
pub use fourm::{FourM, StepOptions, StepOutput};
pub use init::InitRng;
pub use loss::{LossType, LossWeights, ModalityLoss, TargetCount, sum_counts};
pub use modality::{Modalities, ModalityKind, ModalitySpec, modality_id};
pub use posemb::{sincos_1d, sincos_2d};
pub use precision::Precision;
pub use random_batch::random_batch;
pub use step::StepGradients;
