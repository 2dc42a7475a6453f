//! Any-to-any generation with a 4M model (ml-4m `fourm/models/generate.py`).
//!
//! A [`GenState`] holds the conditions (token grids, pixels, token sequences) and the targets;
//! a [`GenerationPlan`] lists the targets in order with their decoding method (MaskGIT or ROAR
//! for image-like tokens, autoregressive for sequences), steps, temperature schedule, top-k /
//! top-p and classifier-free guidance; [`Generator::generate`] runs it, each finished target
//! becoming a condition of the next, deterministically for a seed.
//!
//! ```no_run
//! # use fourm_model::{FourM, ModelError};
//! use fourm_model::generate::{GenState, GenerationPlan, Generator, NoHook, SpecialTokens, TargetPlan};
//! # fn run(model: &FourM, depth: Vec<i64>) -> Result<(), ModelError> {
//! let specials = SpecialTokens::ml4m_wordpiece();
//! let state = GenState::new(model.modalities(), 1)?.with_tokens("tok_depth@224", depth)?;
//! let plan = GenerationPlan::new(vec![
//!     TargetPlan::maskgit("tok_rgb@224", 8),
//!     TargetPlan::autoregressive("caption"),
//! ])
//! .with_seed(0);
//! let out = Generator::new(model, &specials).generate(state, &plan, &mut NoHook)?;
//! let rgb = out.tokens("tok_rgb@224");      // [1, 196] token ids
//! let caption = out.sequences("caption");   // token ids per sample
//! # Ok(()) }
//! ```

mod autoregressive;
mod chain;
mod context;
mod generator;
mod guidance;
mod hook;
mod kv_cache;
mod maskgit;
mod roar;
mod sampling;
mod schedule;
mod span;
mod special_tokens;
mod state;

pub use chain::{GenerationPlan, Method, Stop, TargetPlan};
pub use context::EncodedContext;
pub use generator::Generator;
pub use guidance::{Guidance, unconditional};
pub use hook::{
    GenerationEvent, GenerationHook, NoHook, ParallelMethod, ParallelStep, SelectionRequest,
    TokenStep,
};
pub use kv_cache::DecoderCache;
pub use sampling::{GREEDY_TEMPERATURE, Sampling, TopK, argmax, sample_rows};
pub use schedule::{GuidanceSchedule, TemperatureSchedule, TokenSchedule};
pub use span::merge_spans;
pub use special_tokens::SpecialTokens;
pub use state::{GenState, ModalityState};
