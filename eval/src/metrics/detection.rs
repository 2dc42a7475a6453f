//! Boxes scored as object detection: average precision at IoU 0.5 per class (all-point
//! interpolation over the predictions in order, each true box matched once), averaged over the
//! classes present in the truth. Generated box text carries no confidences: predictions rank in
//! the order they were generated.

use std::collections::BTreeMap;

use fourm_masking::Detections;

/// Intersection over union of two `[xmin, ymin, xmax, ymax]` boxes.
pub fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// A class's true boxes (how many) and predictions (image, box) in rank order.
type ClassBoxes = (usize, Vec<(usize, [f64; 4])>);

/// Mean average precision at IoU `threshold` of `preds[i]` against `truths[i]` over a set.
pub fn mean_ap(preds: &[Detections], truths: &[Detections], threshold: f64) -> f64 {
    let mut classes: BTreeMap<&str, ClassBoxes> = BTreeMap::new();
    for t in truths {
        for inst in &t.instances {
            classes.entry(inst.class_name.as_str()).or_default().0 += 1;
        }
    }
    for (image, p) in preds.iter().enumerate() {
        for inst in &p.instances {
            if let Some(c) = classes.get_mut(inst.class_name.as_str()) {
                c.1.push((image, inst.boxes));
            }
        }
    }
    let aps: Vec<f64> = classes
        .iter()
        .filter(|(_, (n, _))| *n > 0)
        .map(|(class, (n, ranked))| {
            let mut used: Vec<Vec<bool>> = truths
                .iter()
                .map(|t| vec![false; t.instances.len()])
                .collect();
            let mut tp = 0.0;
            let mut points = Vec::with_capacity(ranked.len());
            for (k, (image, b)) in ranked.iter().enumerate() {
                let best = truths[*image]
                    .instances
                    .iter()
                    .enumerate()
                    .filter(|(j, t)| t.class_name == *class && !used[*image][*j])
                    .map(|(j, t)| (j, iou(b, &t.boxes)))
                    .max_by(|x, y| x.1.total_cmp(&y.1));
                if let Some((j, overlap)) = best
                    && overlap >= threshold
                {
                    used[*image][j] = true;
                    tp += 1.0;
                }
                points.push((tp / *n as f64, tp / (k + 1) as f64));
            }
            average_precision(&points)
        })
        .collect();
    if aps.is_empty() {
        0.0
    } else {
        aps.iter().sum::<f64>() / aps.len() as f64
    }
}

/// Area under the (recall, precision) curve with precision made monotone from the right.
fn average_precision(points: &[(f64, f64)]) -> f64 {
    let mut ap = 0.0;
    let mut last_recall = 0.0;
    for (k, &(recall, _)) in points.iter().enumerate() {
        if recall > last_recall {
            let best_after = points[k..].iter().map(|p| p.1).fold(0.0, f64::max);
            ap += (recall - last_recall) * best_after;
            last_recall = recall;
        }
    }
    ap
}

#[cfg(test)]
mod tests {
    use fourm_masking::DetInstance;

    use super::*;

    fn det(boxes: &[(&str, [f64; 4])]) -> Detections {
        Detections {
            instances: boxes
                .iter()
                .map(|(c, b)| DetInstance {
                    boxes: *b,
                    class_name: c.to_string(),
                    score: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn perfect_and_wrong_boxes() {
        let truth = vec![
            det(&[
                ("cube", [0.1, 0.1, 0.4, 0.4]),
                ("sphere", [0.5, 0.5, 0.9, 0.9]),
            ]),
            det(&[("cube", [0.2, 0.2, 0.3, 0.6])]),
        ];
        assert!((mean_ap(&truth, &truth, 0.5) - 1.0).abs() < 1e-12);
        let nothing = vec![Detections::default(), Detections::default()];
        assert_eq!(mean_ap(&nothing, &truth, 0.5), 0.0);
        // The cubes right, the sphere missed: AP(cube) = 1, AP(sphere) = 0.
        let half = vec![
            det(&[("cube", [0.1, 0.1, 0.4, 0.4])]),
            det(&[("cube", [0.2, 0.2, 0.3, 0.6])]),
        ];
        assert!((mean_ap(&half, &truth, 0.5) - 0.5).abs() < 1e-12);
        assert!((iou(&[0.0, 0.0, 1.0, 1.0], &[0.0, 0.0, 0.5, 1.0]) - 0.5).abs() < 1e-12);
    }
}
