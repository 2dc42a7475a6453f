//! Running the tasks with the model's own sampler: each task's source modality as the only
//! condition, its target generated greedily (MaskGIT for token grids, autoregressive decoding for
//! sequences), in batches, seeded, so that two runs and two checkpoints compare exactly.

use std::collections::BTreeMap;

use fourm_model::FourM;
use fourm_model::generate::{
    GenState, GenerationPlan, Generator, NoHook, Sampling, SpecialTokens, TargetPlan,
};

use crate::error::EvalError;
use crate::score::{Prediction, Sums, baseline, score};
use crate::split::{EvalSample, EvalSet};
use crate::task::Task;

/// How tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Samples generated at once.
    pub batch: usize,
    /// MaskGIT steps of token-grid targets.
    pub steps: usize,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            batch: 16,
            steps: 8,
            seed: 0,
        }
    }
}

/// One task's outcome on some samples.
#[derive(Debug, Clone)]
pub struct TaskOutcome {
    /// The task.
    pub task: Task,
    /// The model's scores.
    pub model: Sums,
    /// The constant baseline's scores.
    pub baseline: Sums,
    /// The model's predictions, by sample index in the set.
    pub predictions: BTreeMap<usize, Prediction>,
}

/// Runs tasks of a model on a split.
pub struct Evaluator<'a> {
    model: &'a FourM,
    specials: &'a SpecialTokens,
    set: &'a EvalSet,
    options: RunOptions,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `model` on `set`.
    pub fn new(
        model: &'a FourM,
        specials: &'a SpecialTokens,
        set: &'a EvalSet,
        options: RunOptions,
    ) -> Self {
        Self {
            model,
            specials,
            set,
            options,
        }
    }

    /// The model's modality name of a task kind.
    fn modality(&self, task: &Task, kind: &str) -> Result<String, EvalError> {
        let name = self
            .set
            .modalities
            .get(kind)
            .cloned()
            .unwrap_or_else(|| kind.to_string());
        if self.model.modalities().get(&name).is_none() {
            return Err(EvalError::Task {
                task: task.to_string(),
                reason: format!("the model has no modality `{name}`"),
            });
        }
        Ok(name)
    }

    /// Runs `task` on the samples `indices` of the set.
    pub fn run(&self, task: &Task, indices: &[usize]) -> Result<TaskOutcome, EvalError> {
        let constant = baseline(task, self.set)?;
        let mut outcome = TaskOutcome {
            task: task.clone(),
            model: Sums::default(),
            baseline: Sums::default(),
            predictions: BTreeMap::new(),
        };
        for chunk in indices.chunks(self.options.batch.max(1)) {
            let samples: Vec<&EvalSample> = chunk.iter().map(|&i| &self.set.samples[i]).collect();
            let predictions = self.generate(task, &samples)?;
            for ((&i, sample), prediction) in chunk.iter().zip(&samples).zip(predictions) {
                outcome
                    .model
                    .add(&score(task, sample, &prediction, self.set)?);
                outcome
                    .baseline
                    .add(&score(task, sample, &constant, self.set)?);
                outcome.predictions.insert(i, prediction);
            }
        }
        Ok(outcome)
    }

    /// The target of `task` generated for `samples` from their source alone.
    pub fn generate(
        &self,
        task: &Task,
        samples: &[&EvalSample],
    ) -> Result<Vec<Prediction>, EvalError> {
        let source = self.modality(task, &task.source)?;
        let target = self.modality(task, &task.target)?;
        let mut state = GenState::new(self.model.modalities(), samples.len())?;
        state = if task.image_source() {
            let ids = samples
                .iter()
                .flat_map(|s| s.tokens[&task.source].iter().copied())
                .collect();
            state.with_tokens(&source, ids)?
        } else {
            let rows = samples
                .iter()
                .map(|s| {
                    let text = match task.source.as_str() {
                        "det" => s.det_text(),
                        _ => s.caption.clone(),
                    };
                    let ids = self.set.text.encode(&text)?;
                    Ok(ids.into_iter().map(i64::from).collect())
                })
                .collect::<Result<Vec<Vec<i64>>, EvalError>>()?;
            state.with_sequence(&source, &rows, self.specials)?
        };
        let plan = if task.image_target() {
            TargetPlan::maskgit(&target, self.options.steps)
        } else {
            TargetPlan::autoregressive(&target)
        };
        let plan = GenerationPlan::new(vec![plan.with_sampling(Sampling::greedy())])
            .with_seed(self.options.seed);
        let state =
            Generator::new(self.model, self.specials).generate(state, &plan, &mut NoHook)?;
        if task.image_target() {
            let ids = state.tokens(&target).unwrap_or_default();
            let len = ids.len() / samples.len().max(1);
            Ok(ids
                .chunks(len.max(1))
                .map(|c| Prediction::Tokens(c.to_vec()))
                .collect())
        } else {
            let rows = state.sequences(&target).unwrap_or_default();
            rows.iter()
                .map(|ids| {
                    let text: Vec<u32> = self
                        .specials
                        .text_part(ids)
                        .into_iter()
                        .map(|i| i as u32)
                        .collect();
                    Ok(Prediction::Text(self.set.text.decode(&text, false)?))
                })
                .collect()
        }
    }
}
