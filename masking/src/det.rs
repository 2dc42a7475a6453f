//! Bounding boxes (`det`) as text, as ml-4m's `DetectionTransform` does (4m-spec.md §5.3).
//!
//! The file is ml-4m's JSON, `{"instances": [{"boxes": [xmin, ymin, xmax, ymax], "class_name",
//! "score"}]}` with coordinates normalised to `[0, 1]`. Instances under the score threshold (0.6)
//! are dropped, the rest ordered by the distance of `(xmin, ymin)` to the origin, and each becomes
//! `v0=<xmin> v1=<ymin> v2=<xmax> v3=<ymax> <class>` with coordinates rounded (half to even, as
//! Python's `round`) to `0 … bins-1`; boxes are joined by spaces. The text is then tokenized and
//! span-masked like a caption.

use serde::{Deserialize, Serialize};

/// ml-4m's default score threshold.
pub const DET_THRESHOLD: f64 = 0.6;
/// ml-4m's default number of coordinate bins.
pub const COORD_BINS: usize = 1000;

/// One detected instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetInstance {
    /// `[xmin, ymin, xmax, ymax]`, normalised to `[0, 1]`.
    pub boxes: [f64; 4],
    /// Class name (a word of the text tokenizer's vocabulary).
    pub class_name: String,
    /// Confidence (1 for ground truth).
    pub score: f64,
}

/// The boxes of one image (ml-4m's det JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Detections {
    /// The instances.
    pub instances: Vec<DetInstance>,
}

impl Detections {
    /// The boxes as ml-4m's text: instances with `score ≥ threshold`, nearest to the origin
    /// first, coordinates in `bins` bins.
    pub fn to_text(&self, threshold: f64, bins: usize) -> String {
        let mut kept: Vec<&DetInstance> = self
            .instances
            .iter()
            .filter(|i| i.score >= threshold)
            .collect();
        kept.sort_by(|a, b| {
            let d = |i: &DetInstance| i.boxes[0].powi(2) + i.boxes[1].powi(2);
            d(a).total_cmp(&d(b))
        });
        let scale = bins.saturating_sub(1) as f64;
        kept.iter()
            .map(|i| {
                let q = |v: f64| (v.clamp(0.0, 1.0) * scale).round_ties_even() as u64;
                format!(
                    "v0={} v1={} v2={} v3={} {}",
                    q(i.boxes[0]),
                    q(i.boxes[1]),
                    q(i.boxes[2]),
                    q(i.boxes[3]),
                    i.class_name
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads boxes back from their text (e.g. a decoded token sequence): every run
    /// `v0=a v1=b v2=c v3=d <class words>` becomes one instance with score 1. Anything else
    /// (sentinels, stray words) is skipped.
    pub fn from_text(text: &str, bins: usize) -> Self {
        let scale = bins.saturating_sub(1).max(1) as f64;
        let words: Vec<&str> = text.split_whitespace().collect();
        let coord = |w: &str, axis: usize| -> Option<f64> {
            let v: u64 = w.strip_prefix(&format!("v{axis}="))?.parse().ok()?;
            Some(v as f64 / scale)
        };
        let mut instances = Vec::new();
        let mut i = 0;
        while i + 4 <= words.len() {
            let c: Option<Vec<f64>> = (0..4).map(|a| coord(words[i + a], a)).collect();
            let Some(c) = c else {
                i += 1;
                continue;
            };
            let mut j = i + 4;
            while j < words.len() && coord(words[j], 0).is_none() {
                j += 1;
            }
            instances.push(DetInstance {
                boxes: [c[0], c[1], c[2], c[3]],
                class_name: words[i + 4..j].join(" "),
                score: 1.0,
            });
            i = j;
        }
        Self { instances }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_ml4m_and_reads_back() {
        let det = Detections {
            instances: vec![
                DetInstance {
                    boxes: [0.5, 0.5, 0.9, 1.0],
                    class_name: "cube".into(),
                    score: 0.9,
                },
                DetInstance {
                    boxes: [0.1, 0.2, 0.3, 0.4],
                    class_name: "sphere".into(),
                    score: 1.0,
                },
                DetInstance {
                    boxes: [0.0, 0.0, 0.1, 0.1],
                    class_name: "dropped".into(),
                    score: 0.5,
                },
            ],
        };
        let text = det.to_text(DET_THRESHOLD, COORD_BINS);
        // 0.5·999 = 499.5 rounds half to even: 500; 0.1·999 = 99.9 -> 100.
        assert_eq!(
            text,
            "v0=100 v1=200 v2=300 v3=400 sphere v0=500 v1=500 v2=899 v3=999 cube"
        );
        let back = Detections::from_text(&format!("[S_1] {text} junk"), COORD_BINS);
        assert_eq!(back.instances.len(), 2);
        assert_eq!(back.instances[0].class_name, "sphere");
        assert_eq!(back.instances[1].class_name, "cube junk");
        assert!((back.instances[0].boxes[3] - 0.4).abs() < 1e-3);
        let json: Detections = serde_json::from_str(
            r#"{"instances": [{"boxes": [0, 0, 1, 1], "class_name": "dog", "score": 0.7}]}"#,
        )
        .unwrap();
        assert_eq!(json.to_text(DET_THRESHOLD, 10), "v0=0 v1=0 v2=9 v3=9 dog");
    }
}
