//! Observing and steering a generation run: every decoder pass is reported to a
//! [`GenerationHook`] (progress bars, logging, tests replaying a reference run), and a hook may
//! choose which positions a MaskGIT step commits.

use crate::generate::state::GenState;

/// Receives the events of a generation run. Every method has a default that does nothing.
pub trait GenerationHook {
    /// Called after every step.
    fn on_event(&mut self, _event: &GenerationEvent<'_>) {}

    /// Positions (per sample, `request.count` of the candidates) that a MaskGIT step commits
    /// instead of the most confident ones; `None` keeps the default choice.
    fn select(&mut self, _request: &SelectionRequest<'_>) -> Option<Vec<Vec<usize>>> {
        None
    }
}

/// A hook that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl GenerationHook for NoHook {}

/// Which parallel decoding scheme ran a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParallelMethod {
    /// Confidence-ranked (MaskGIT).
    MaskGit,
    /// Random order (ROAR).
    Roar,
}

/// What happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum GenerationEvent<'a> {
    /// A MaskGIT or ROAR step of an image-like target.
    Parallel(ParallelStep<'a>),
    /// One token of an autoregressive target.
    Token(TokenStep<'a>),
    /// A target is complete (and now a condition of the following ones).
    TargetDone {
        /// The target.
        modality: &'a str,
        /// The state after it.
        state: &'a GenState,
    },
}

/// One MaskGIT or ROAR step.
#[derive(Debug)]
pub struct ParallelStep<'a> {
    /// Index in the whole chain (the sampling seed is `seed + step`).
    pub step: usize,
    /// The target.
    pub modality: &'a str,
    /// The scheme.
    pub method: ParallelMethod,
    /// Temperature of the step.
    pub temperature: f64,
    /// Guidance scale of the step (1 = a single, conditional pass).
    pub guidance_scale: f64,
    /// Per sample, the positions the decoder predicted, in decoder order (ascending for
    /// MaskGIT, the random order for ROAR).
    pub candidates: &'a [Vec<usize>],
    /// Vocabulary size of the target.
    pub vocab: usize,
    /// `[b, candidates, vocab]` logits (after guidance), row-major.
    pub logits: &'a [f32],
    /// `[b, candidates]` sampled tokens.
    pub sampled: &'a [i64],
    /// Per sample, the positions committed at this step, ascending.
    pub selected: &'a [Vec<usize>],
    /// The state after the step.
    pub state: &'a GenState,
}

/// One autoregressive token.
#[derive(Debug)]
pub struct TokenStep<'a> {
    /// Index of the target's step in the whole chain.
    pub step: usize,
    /// The target.
    pub modality: &'a str,
    /// Token index within the target (0 = first decoded token).
    pub iteration: usize,
    /// Vocabulary size of the target.
    pub vocab: usize,
    /// `[b, vocab]` logits of the new position (after guidance).
    pub logits: &'a [f32],
    /// Per sample, the decoded sequence so far: the start token, then one token per iteration.
    pub sequences: &'a [Vec<i64>],
}

/// The choice a MaskGIT step is about to make.
#[derive(Debug)]
pub struct SelectionRequest<'a> {
    /// Index in the whole chain.
    pub step: usize,
    /// The target.
    pub modality: &'a str,
    /// Positions to commit per sample.
    pub count: usize,
    /// Per sample, the candidate positions (ascending).
    pub candidates: &'a [Vec<usize>],
    /// `[b, candidates]` probability of each sampled token (1 when greedy).
    pub confidences: &'a [f64],
    /// `[b, candidates]` sampled tokens.
    pub sampled: &'a [i64],
}
