//! What a rendered scene shows, in words and boxes: the visible objects (enough pixels), their
//! tight boxes (ml-4m det JSON), and a caption relating them ("a large red sphere left of a small
//! blue cube").

use crate::render::Frame;
use crate::scene::Scene;
use fourm_masking::{DetInstance, Detections};

/// The words of captions besides sizes, colours and shapes.
pub const CAPTION_GLUE: [&str; 11] = [
    "a", "an", "and", "left", "of", "in", "front", "behind", "empty", "ground", "plane",
];

/// A visible object of a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Visible {
    /// Index of the object in the scene.
    pub object: usize,
    /// Pixels showing it.
    pub pixels: usize,
    /// Tight pixel box `[col_min, row_min, col_max, row_max]` (inclusive).
    pub bbox: [usize; 4],
    /// Mean column of its pixels.
    pub mean_col: f64,
    /// Mean depth of its pixels.
    pub mean_depth: f64,
}

/// Fewest pixels for an object to count as visible (more at higher resolutions).
pub fn min_visible_pixels(frame: &Frame) -> usize {
    (frame.width * frame.height / 1000).max(4)
}

/// The visible objects of `frame`, left to right.
pub fn visible_objects(frame: &Frame, objects: usize) -> Vec<Visible> {
    let mut acc: Vec<Visible> = (0..objects)
        .map(|object| Visible {
            object,
            pixels: 0,
            bbox: [usize::MAX, usize::MAX, 0, 0],
            mean_col: 0.0,
            mean_depth: 0.0,
        })
        .collect();
    for row in 0..frame.height {
        for col in 0..frame.width {
            let p = row * frame.width + col;
            let id = frame.instance[p] as usize;
            if id == 0 || id > objects {
                continue;
            }
            let v = &mut acc[id - 1];
            v.pixels += 1;
            v.bbox = [
                v.bbox[0].min(col),
                v.bbox[1].min(row),
                v.bbox[2].max(col),
                v.bbox[3].max(row),
            ];
            v.mean_col += col as f64;
            v.mean_depth += f64::from(frame.depth[p]);
        }
    }
    let min = min_visible_pixels(frame);
    let mut visible: Vec<Visible> = acc
        .into_iter()
        .filter(|v| v.pixels >= min)
        .map(|mut v| {
            v.mean_col /= v.pixels as f64;
            v.mean_depth /= v.pixels as f64;
            v
        })
        .collect();
    visible.sort_by(|a, b| a.mean_col.total_cmp(&b.mean_col));
    visible
}

/// ml-4m det boxes of the visible objects: pixel-edge coordinates normalised to `[0, 1]`
/// (`xmin = col_min / W`, `xmax = (col_max + 1) / W`), class = shape name, score 1.
pub fn detections(scene: &Scene, frame: &Frame, visible: &[Visible]) -> Detections {
    let (w, h) = (frame.width as f64, frame.height as f64);
    Detections {
        instances: visible
            .iter()
            .map(|v| DetInstance {
                boxes: [
                    v.bbox[0] as f64 / w,
                    v.bbox[1] as f64 / h,
                    (v.bbox[2] + 1) as f64 / w,
                    (v.bbox[3] + 1) as f64 / h,
                ],
                class_name: scene.objects[v.object].shape.name().to_string(),
                score: 1.0,
            })
            .collect(),
    }
}

/// A caption of the visible objects, left to right, related in pairs: "in front of" / "behind"
/// when one is clearly nearer, else "left of".
pub fn caption(scene: &Scene, visible: &[Visible]) -> String {
    let describe = |v: &Visible| format!("a {}", scene.objects[v.object].description());
    if visible.is_empty() {
        return "an empty ground plane".into();
    }
    let mut clauses = Vec::new();
    for pair in visible.chunks(2) {
        match pair {
            [a, b] => {
                let relation = if a.mean_depth * 1.3 < b.mean_depth {
                    "in front of"
                } else if b.mean_depth * 1.3 < a.mean_depth {
                    "behind"
                } else {
                    "left of"
                };
                clauses.push(format!("{} {relation} {}", describe(a), describe(b)));
            }
            [a] => clauses.push(describe(a)),
            _ => {}
        }
    }
    clauses.join(" and ")
}
