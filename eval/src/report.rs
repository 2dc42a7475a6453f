//! What an evaluation reports: a table for people, `eval.json` for tools, and a picture grid of
//! samples (condition, generation, ground truth per task).

use std::collections::BTreeMap;
use std::fmt::Write;

use fourm_masking::{COORD_BINS, Detections};
use fourm_synth::canvas::{Canvas, depth_range};
use fourm_synth::{ImagePlane, RawFormat};
use serde::{Deserialize, Serialize};

use crate::error::EvalError;
use crate::loss::LossSums;
use crate::run::TaskOutcome;
use crate::score::Prediction;
use crate::split::EvalSet;

/// One metric of a task, next to its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Name (`miou`, `abs_rel`, …).
    pub name: String,
    /// The model's value.
    pub value: f64,
    /// The constant baseline's value.
    pub baseline: f64,
    /// Whether higher is better.
    pub higher_is_better: bool,
}

impl Metric {
    /// How many times better than the baseline (the baseline over the value when lower is
    /// better); `None` when the baseline is 0 (or the value, for lower-is-better).
    pub fn ratio(&self) -> Option<f64> {
        let (num, den) = if self.higher_is_better {
            (self.value, self.baseline)
        } else {
            (self.baseline, self.value)
        };
        (den > 0.0).then(|| num / den)
    }
}

/// A task's metrics and a few examples of its text predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// `source->target`.
    pub task: String,
    /// Its metrics.
    pub metrics: Vec<Metric>,
    /// `(truth, prediction)` of the first samples, for text targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<(String, String)>,
}

/// A whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What was evaluated (a checkpoint folder).
    pub checkpoint: String,
    /// Its step.
    pub step: u64,
    /// The split (dataset URL).
    pub split: String,
    /// Samples evaluated.
    pub samples: usize,
    /// Held-out loss per modality, and `total` over every target token.
    pub heldout_loss: BTreeMap<String, f64>,
    /// Tasks.
    pub tasks: Vec<TaskReport>,
}

impl Report {
    /// A report of held-out loss sums and task outcomes.
    pub fn new(
        checkpoint: String,
        step: u64,
        set: &EvalSet,
        split: String,
        loss: &LossSums,
        outcomes: &[TaskOutcome],
    ) -> Self {
        let mut heldout_loss = loss.means();
        heldout_loss.insert("total".into(), loss.overall());
        let tasks = outcomes
            .iter()
            .map(|o| {
                let base: BTreeMap<&str, f64> = o
                    .baseline
                    .metrics(&o.task)
                    .into_iter()
                    .map(|(n, v, _)| (n, v))
                    .collect();
                let metrics = o
                    .model
                    .metrics(&o.task)
                    .into_iter()
                    .map(|(name, value, higher_is_better)| Metric {
                        name: name.into(),
                        value,
                        baseline: base.get(name).copied().unwrap_or(0.0),
                        higher_is_better,
                    })
                    .collect();
                let examples = o
                    .predictions
                    .iter()
                    .take(4)
                    .filter_map(|(&i, p)| match p {
                        Prediction::Text(t) => {
                            let s = &set.samples[i];
                            let truth = match o.task.target.as_str() {
                                "det" => s.det_text(),
                                _ => s.caption.clone(),
                            };
                            Some((truth, t.clone()))
                        }
                        Prediction::Tokens(_) => None,
                    })
                    .collect();
                TaskReport {
                    task: o.task.to_string(),
                    metrics,
                    examples,
                }
            })
            .collect();
        Self {
            checkpoint,
            step,
            split,
            samples: set.samples.len(),
            heldout_loss,
            tasks,
        }
    }

    /// The metric `name` of `task`, if reported.
    pub fn metric(&self, task: &str, name: &str) -> Option<&Metric> {
        self.tasks
            .iter()
            .find(|t| t.task == task)?
            .metrics
            .iter()
            .find(|m| m.name == name)
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} (step {}) on {} ({} samples)",
            self.checkpoint, self.step, self.split, self.samples
        );
        let _ = writeln!(out, "\nheld-out loss");
        for (m, v) in &self.heldout_loss {
            let _ = writeln!(out, "  {m:<20} {v:>8.4}");
        }
        let _ = writeln!(
            out,
            "\n{:<16} {:<20} {:>9} {:>9} {:>9}",
            "task", "metric", "model", "baseline", "×baseline"
        );
        for t in &self.tasks {
            for m in &t.metrics {
                let ratio = m.ratio().map_or("-".to_string(), |r| format!("{r:.2}"));
                let arrow = if m.higher_is_better { "↑" } else { "↓" };
                let _ = writeln!(
                    out,
                    "{:<16} {:<20} {:>9.4} {:>9.4} {:>9}",
                    t.task,
                    format!("{} {arrow}", m.name),
                    m.value,
                    m.baseline,
                    ratio
                );
            }
            for (truth, pred) in &t.examples {
                let _ = writeln!(
                    out,
                    "{:<16}   truth: {truth}\n{:<16}   model: {pred}",
                    "", ""
                );
            }
        }
        out
    }
}

/// Panels of 64 px (scaled up from the samples' resolution) with gaps.
const GAP: usize = 4;

/// The sample grid: a row per task (in `outcomes` order), and for each of the first `per_task`
/// samples three panels: condition, generation, ground truth. Text conditions and targets show
/// the sample's RGB (boxes are drawn over it).
pub fn sample_grid(
    set: &EvalSet,
    outcomes: &[TaskOutcome],
    per_task: usize,
) -> Result<Vec<u8>, EvalError> {
    let first = &set.samples[0].raw["rgb"];
    let scale = (96 / first.width.max(1)).max(1);
    let (pw, ph) = (first.width * scale, first.height * scale);
    let columns = 3 * per_task;
    let mut canvas = Canvas::new(
        columns * (pw + GAP) + GAP + per_task * GAP,
        outcomes.len() * (ph + GAP) + GAP,
    );
    for (row, o) in outcomes.iter().enumerate() {
        let y = GAP + row * (ph + GAP);
        for (k, (&i, prediction)) in o.predictions.iter().take(per_task).enumerate() {
            let sample = &set.samples[i];
            let x0 = GAP + k * (3 * (pw + GAP) + GAP);
            let depth = depth_range(&sample.raw["depth"]);
            let mut panel =
                |col: usize, plane: &ImagePlane, kind: &str, det: Option<&Detections>| {
                    let x = x0 + col * (pw + GAP);
                    let format = RawFormat::of_modality(kind).unwrap_or(RawFormat::Rgb);
                    canvas.blit(plane, format, depth, x, y, scale);
                    if let Some(d) = det {
                        canvas.boxes(d, x, y, pw, ph);
                    }
                };
            let rgb = &sample.raw["rgb"];
            if o.task.image_source() {
                panel(0, &sample.raw[&o.task.source], &o.task.source, None);
            }
            match (prediction, o.task.target.as_str()) {
                (Prediction::Tokens(ids), kind) => {
                    let decoded = set.tokenizers[kind].decode(ids)?;
                    panel(1, &decoded, kind, None);
                    panel(2, &sample.raw[kind], kind, None);
                }
                (Prediction::Text(text), "det") => {
                    panel(
                        1,
                        rgb,
                        "rgb",
                        Some(&Detections::from_text(text, COORD_BINS)),
                    );
                    panel(2, rgb, "rgb", Some(&sample.det));
                }
                (Prediction::Text(_), _) => {}
            }
        }
    }
    Ok(canvas.to_png("samples.png")?)
}
