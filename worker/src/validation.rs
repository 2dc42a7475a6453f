//! Validation during training (`[eval]`): every `eval.every` steps, every rank evaluates its
//! share of the held-out split (sample `i` goes to rank `i mod world`) with the model as it is,
//! and one all-reduce adds the ranks' sums, so that the numbers are those of the whole split
//! whatever the world size: the held-out loss per modality and the metrics of the configured
//! tasks (all but box AP, which does not add up).

use burn::module::Module;
use fourm_collective::Collective;
use fourm_eval::{EvalSet, Evaluator, LossSums, RunOptions, Sums, Task, heldout_loss};
use fourm_model::generate::SpecialTokens;
use fourm_model::{Batch, FourM, StepOptions};
use fourm_plan::derive_seed;

use crate::error::WorkerError;
use crate::pipeline::{BatchBuilder, PipelineError};

/// The seed path of the held-out masking: the same masks every time.
pub const EVAL_MASKING_SEED: u64 = 0x4d34_4556_414c;

/// The held-out split, its fixed-seed masked batches and what to evaluate.
pub struct Validation {
    set: EvalSet,
    tasks: Vec<Task>,
    options: RunOptions,
    step_options: StepOptions,
}

/// The masked batches of samples `indices` of `set`, `batch` at a time, each sample masked with
/// a seed of its own index (the same masks on every run, every rank and every world size).
pub fn heldout_batches(
    builder: &BatchBuilder,
    set: &EvalSet,
    indices: &[usize],
    batch: usize,
) -> Result<Vec<Batch>, PipelineError> {
    indices
        .chunks(batch.max(1))
        .map(|chunk| {
            let samples: Vec<(String, u64, &fourm_data::DecodedSample)> = chunk
                .iter()
                .map(|&i| {
                    let s = &set.samples[i];
                    (
                        format!("val/{}", s.key),
                        derive_seed(&[EVAL_MASKING_SEED, i as u64]),
                        &s.decoded,
                    )
                })
                .collect();
            builder.build(&samples)
        })
        .collect()
}

impl Validation {
    /// Validation of `tasks` on `set`.
    pub fn new(
        set: EvalSet,
        tasks: Vec<Task>,
        options: RunOptions,
        step_options: StepOptions,
    ) -> Self {
        Self {
            set,
            tasks,
            options,
            step_options,
        }
    }

    /// The tasks.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// Runs this rank's share and adds every rank's sums; returns the metrics of the whole
    /// split: `held_out/<modality>` losses, `held_out/total`, and `<task>/<metric>`.
    pub fn run(
        &self,
        model: &FourM,
        builder: &BatchBuilder,
        specials: &SpecialTokens,
        rank: usize,
        world: usize,
        collective: &mut dyn Collective,
    ) -> Result<Vec<(String, f64)>, WorkerError> {
        let valid = model.valid();
        let mine: Vec<usize> = (rank..self.set.samples.len())
            .step_by(world.max(1))
            .collect();
        let batches = heldout_batches(builder, &self.set, &mine, self.options.batch)?;
        let loss = heldout_loss(&valid, &batches, &self.step_options)?;
        let evaluator = Evaluator::new(&valid, specials, &self.set, self.options);
        let mut sums = Vec::new();
        for task in &self.tasks {
            sums.push(evaluator.run(task, &mine)?.model);
        }
        let modalities: Vec<String> = model
            .modalities()
            .targets()
            .map(|s| s.name.clone())
            .collect();
        let mut flat = flatten_loss(&loss, &modalities);
        for s in &sums {
            flat.extend(flatten(s));
        }
        let mut buf: Vec<f32> = flat.iter().map(|&v| v as f32).collect();
        collective.all_reduce_sum(&mut buf)?;
        let all: Vec<f64> = buf.iter().map(|&v| f64::from(v)).collect();
        let (loss, mut rest) = unflatten_loss(&all, &modalities);
        let mut out: Vec<(String, f64)> = loss
            .means()
            .into_iter()
            .map(|(m, v)| (format!("held_out/{m}"), v))
            .collect();
        out.push(("held_out/total".into(), loss.overall()));
        for task in &self.tasks {
            let (s, tail) = unflatten(rest);
            rest = tail;
            for (name, value, _) in s.metrics(task) {
                if name != "ap50" {
                    out.push((format!("{task}/{name}"), value));
                }
            }
        }
        Ok(out)
    }
}

fn flatten_loss(loss: &LossSums, modalities: &[String]) -> Vec<f64> {
    modalities
        .iter()
        .flat_map(|m| {
            [
                loss.sum.get(m).copied().unwrap_or(0.0),
                loss.tokens.get(m).copied().unwrap_or(0.0),
            ]
        })
        .collect()
}

fn unflatten_loss<'a>(v: &'a [f64], modalities: &[String]) -> (LossSums, &'a [f64]) {
    let mut loss = LossSums::default();
    for (k, m) in modalities.iter().enumerate() {
        if v[2 * k + 1] > 0.0 {
            loss.sum.insert(m.clone(), v[2 * k]);
            loss.tokens.insert(m.clone(), v[2 * k + 1]);
        }
    }
    (loss, &v[2 * modalities.len()..])
}

/// Classes of the segmentation sums (the synthetic dataset's).
const CLASSES: usize = fourm_synth::scene::CLASS_NAMES.len();
/// Values of one task's flattened sums.
const FLAT: usize = 2 + 2 * CLASSES + 2 + 3 + 2 + 10;

/// A task's sums as numbers that add (box lists excluded).
fn flatten(s: &Sums) -> Vec<f64> {
    let mut v = vec![s.tokens.hits, s.tokens.total];
    let seg = |x: &Vec<f64>| {
        (0..CLASSES)
            .map(|c| x.get(c).copied().unwrap_or(0.0))
            .collect::<Vec<_>>()
    };
    v.extend(seg(&s.segmentation.intersection));
    v.extend(seg(&s.segmentation.union));
    v.extend([s.segmentation.pixels.hits, s.segmentation.pixels.total]);
    v.extend([s.depth.abs_rel, s.depth.delta1.hits, s.depth.delta1.total]);
    v.extend([s.normals.degrees, s.normals.pixels]);
    let c = &s.caption;
    for r in [c.exact, c.shape, c.colour, c.size, c.relation] {
        v.extend([r.hits, r.total]);
    }
    debug_assert_eq!(v.len(), FLAT);
    v
}

fn unflatten(v: &[f64]) -> (Sums, &[f64]) {
    use fourm_eval::metrics::{Ratio, Segmentation};
    let r = |i: usize| Ratio {
        hits: v[i],
        total: v[i + 1],
    };
    let mut s = Sums {
        tokens: r(0),
        ..Sums::default()
    };
    let seg = 2;
    s.segmentation = Segmentation {
        intersection: v[seg..seg + CLASSES].to_vec(),
        union: v[seg + CLASSES..seg + 2 * CLASSES].to_vec(),
        pixels: r(seg + 2 * CLASSES),
    };
    let d = seg + 2 * CLASSES + 2;
    s.depth.abs_rel = v[d];
    s.depth.delta1 = r(d + 1);
    s.normals.degrees = v[d + 3];
    s.normals.pixels = v[d + 4];
    let c = d + 5;
    s.caption.exact = r(c);
    s.caption.shape = r(c + 2);
    s.caption.colour = r(c + 4);
    s.caption.size = r(c + 6);
    s.caption.relation = r(c + 8);
    (s, &v[FLAT..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use fourm_eval::metrics::caption::CaptionScore;
    use fourm_eval::metrics::{Depth, Normals, Ratio, Segmentation};

    #[test]
    fn sums_survive_the_all_reduce_layout() {
        let s = Sums {
            tokens: Ratio {
                hits: 3.0,
                total: 4.0,
            },
            segmentation: Segmentation::of(&[0, 1, 2], &[0, 1, 1], CLASSES),
            depth: Depth::of(&[2.0, 3.0], &[2.0, 4.0], 30.0),
            normals: Normals::of(&[0.0, 1.0, 0.0], &[1.0, 0.0, 0.0]),
            caption: CaptionScore::of("a small red cube", "a large red cube"),
            boxes: Vec::new(),
        };
        let flat = flatten(&s);
        assert_eq!(flat.len(), FLAT);
        let (back, rest) = unflatten(&flat);
        assert!(rest.is_empty());
        assert_eq!(back, s);
    }
}
