//! Scoring one task's predictions: the sums of every metric that applies to its target, for the
//! model's predictions and for the task's trivial baseline (one constant prediction for every
//! sample: the most frequent token at every position, the majority class, the mean depth, the
//! mean normal, the most frequent caption or boxes of the set), scored the same way.

use std::collections::BTreeMap;

use fourm_masking::{COORD_BINS, Detections};
use fourm_synth::render::DEPTH_FAR;
use fourm_synth::scene::CLASS_NAMES;
use fourm_synth::{ImagePlane, PatchTokenizer};
use serde::{Deserialize, Serialize};

use crate::error::EvalError;
use crate::metrics::caption::CaptionScore;
use crate::metrics::detection::mean_ap;
use crate::metrics::{Depth, Normals, Ratio, Segmentation, token_accuracy};
use crate::split::{EvalSample, EvalSet};
use crate::task::Task;

/// What a task produced for one sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// A token grid (image-like targets).
    Tokens(Vec<i64>),
    /// Text (captions, boxes).
    Text(String),
}

/// The sums of every metric of a task over some samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sums {
    /// Token accuracy (image-like targets).
    pub tokens: Ratio,
    /// Segmentation (semseg).
    pub segmentation: Segmentation,
    /// Depth.
    pub depth: Depth,
    /// Normals.
    pub normals: Normals,
    /// Captions.
    pub caption: CaptionScore,
    /// Boxes: predicted and true, per sample (AP does not add up).
    pub boxes: Vec<(Detections, Detections)>,
}

impl Sums {
    /// Adds `other`.
    pub fn add(&mut self, other: &Sums) {
        self.tokens.add(other.tokens);
        self.segmentation.add(&other.segmentation);
        self.depth.add(other.depth);
        self.normals.add(other.normals);
        self.caption.add(&other.caption);
        self.boxes.extend(other.boxes.iter().cloned());
    }

    /// The task's metrics: `(name, value, higher is better)`.
    pub fn metrics(&self, task: &Task) -> Vec<(&'static str, f64, bool)> {
        let mut out = Vec::new();
        if task.image_target() {
            out.push(("token_accuracy", self.tokens.value(), true));
        }
        match task.target.as_str() {
            "semseg" => {
                out.push(("miou", self.segmentation.miou(), true));
                out.push(("pixel_accuracy", self.segmentation.pixels.value(), true));
            }
            "depth" => {
                out.push(("abs_rel", self.depth.abs_rel(), false));
                out.push(("delta_1.25", self.depth.delta1.value(), true));
            }
            "normal" => out.push(("mean_angle_deg", self.normals.mean(), false)),
            "caption" => {
                let c = &self.caption;
                out.push(("exact_match", c.exact.value(), true));
                out.push(("attribute_accuracy", c.attributes().value(), true));
                out.push(("shape_accuracy", c.shape.value(), true));
                out.push(("colour_accuracy", c.colour.value(), true));
                out.push(("size_accuracy", c.size.value(), true));
                out.push(("relation_accuracy", c.relation.value(), true));
            }
            "det" => {
                let (p, t): (Vec<Detections>, Vec<Detections>) = self.boxes.iter().cloned().unzip();
                out.push(("ap50", mean_ap(&p, &t, 0.5), true));
            }
            _ => {}
        }
        out
    }
}

/// Scores `prediction` of `task` for `sample`.
pub fn score(
    task: &Task,
    sample: &EvalSample,
    prediction: &Prediction,
    set: &EvalSet,
) -> Result<Sums, EvalError> {
    let mut sums = Sums::default();
    match prediction {
        Prediction::Tokens(ids) => {
            let truth = &sample.tokens[&task.target];
            sums.tokens = token_accuracy(ids, truth);
            let tokenizer = tokenizer(set, task)?;
            let pred = tokenizer.decode(ids)?;
            let raw = &sample.raw[&task.target];
            match task.target.as_str() {
                "semseg" => {
                    let classes = |p: &ImagePlane| -> Vec<u8> {
                        p.data
                            .iter()
                            .map(|v| v.round().clamp(0.0, 255.0) as u8)
                            .collect()
                    };
                    sums.segmentation =
                        Segmentation::of(&classes(&pred), &classes(raw), CLASS_NAMES.len());
                }
                "depth" => sums.depth = Depth::of(&pred.data, &raw.data, DEPTH_FAR),
                "normal" => sums.normals = Normals::of(&pred.data, &raw.data),
                _ => {}
            }
        }
        Prediction::Text(text) => match task.target.as_str() {
            "caption" => sums.caption = CaptionScore::of(text, &sample.caption),
            "det" => sums
                .boxes
                .push((Detections::from_text(text, COORD_BINS), sample.det.clone())),
            other => {
                return Err(EvalError::Task {
                    task: task.to_string(),
                    reason: format!("`{other}` is not a text target"),
                });
            }
        },
    }
    Ok(sums)
}

fn tokenizer<'a>(set: &'a EvalSet, task: &Task) -> Result<&'a PatchTokenizer, EvalError> {
    set.tokenizers
        .get(&task.target)
        .ok_or_else(|| EvalError::Task {
            task: task.to_string(),
            reason: format!("the split has no tokenizer of `{}`", task.target),
        })
}

/// The trivial baseline of `task` on `set`: one constant prediction for every sample.
pub fn baseline(task: &Task, set: &EvalSet) -> Result<Prediction, EvalError> {
    let samples = &set.samples;
    Ok(match task.target.as_str() {
        "caption" => Prediction::Text(most_frequent(samples.iter().map(|s| s.caption.clone()))),
        "det" => Prediction::Text(most_frequent(samples.iter().map(EvalSample::det_text))),
        kind => {
            let tokenizer = tokenizer(set, task)?;
            let first = &samples[0].raw[kind];
            let constant = constant_plane(kind, samples, first);
            match constant {
                // Pixels decided (majority class, mean depth, mean normal): their tokens.
                Some(plane) => Prediction::Tokens(tokenizer.encode(&plane)?),
                // RGB: the most frequent token at every position.
                None => {
                    let len = samples[0].tokens[kind].len();
                    Prediction::Tokens(
                        (0..len)
                            .map(|p| most_frequent(samples.iter().map(|s| s.tokens[kind][p])))
                            .collect(),
                    )
                }
            }
        }
    })
}

/// A constant picture for a pixel-metric target, shaped like `like`.
fn constant_plane(kind: &str, samples: &[EvalSample], like: &ImagePlane) -> Option<ImagePlane> {
    let pixels = like.width * like.height;
    let values: Vec<f32> = match kind {
        "semseg" => {
            let majority = most_frequent(
                samples
                    .iter()
                    .flat_map(|s| s.raw[kind].data.iter().map(|v| v.round() as i64)),
            );
            vec![majority as f32; pixels]
        }
        "depth" => {
            let valid: Vec<f64> = samples
                .iter()
                .flat_map(|s| s.raw[kind].data.iter())
                .filter(|d| **d < DEPTH_FAR)
                .map(|d| f64::from(*d))
                .collect();
            let mean = valid.iter().sum::<f64>() / valid.len().max(1) as f64;
            vec![mean as f32; pixels]
        }
        "normal" => {
            let mut sum = [0.0f64; 3];
            for s in samples {
                for n in s.raw[kind].data.chunks_exact(3) {
                    for (a, b) in sum.iter_mut().zip(n) {
                        *a += f64::from(*b);
                    }
                }
            }
            let norm = sum.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            let mean = sum.map(|v| (v / norm) as f32);
            mean.repeat(pixels)
        }
        _ => return None,
    };
    Some(ImagePlane {
        width: like.width,
        height: like.height,
        channels: like.channels,
        data: values,
    })
}

/// The most frequent item (ties: the smallest).
fn most_frequent<T: Ord + Clone>(items: impl Iterator<Item = T>) -> T {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for i in items {
        *counts.entry(i).or_insert(0) += 1;
    }
    let best = counts.values().copied().max().unwrap_or(0);
    counts
        .into_iter()
        .find(|(_, n)| *n == best)
        .map(|(i, _)| i)
        .expect("a non-empty set")
}
