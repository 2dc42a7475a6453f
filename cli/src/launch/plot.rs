//! The loss curve picture written at the end of `fourm launch` (SVG).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use plotters::prelude::*;

/// Colours of the series, in turn.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `curve` (step, loss), its exponential moving average and each modality's smoothed loss
/// to an SVG file.
pub fn draw_loss_curve(
    path: &Path,
    title: &str,
    curve: &[(u64, f64)],
    per_modality: &BTreeMap<String, Vec<(u64, f64)>>,
) -> anyhow::Result<()> {
    let total = finite(curve);
    if total.is_empty() {
        bail!("no finite loss to draw");
    }
    let ema = smoothed(&total, 0.9);
    let mut series = vec![
        (
            "loss".to_string(),
            total.clone(),
            RGBColor(170, 200, 235),
            1,
        ),
        ("loss (moving average)".to_string(), ema, BLUE, 2),
    ];
    for (k, (m, c)) in per_modality.iter().enumerate() {
        let points = smoothed(&finite(c), 0.9);
        series.push((m.clone(), points, PALETTE[(k + 1) % PALETTE.len()], 1));
    }
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    draw_chart(&root, title, "loss", &series)
        .and_then(|()| root.present().map_err(|e| e.to_string()))
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("drawing {}", path.display()))
}

/// Draws the validation curves: held-out loss per modality on top, the task metrics that live in
/// `[0, 1]` (accuracies, mIoU, δ < 1.25) below.
pub fn draw_eval_curves(
    path: &Path,
    title: &str,
    curves: &BTreeMap<String, Vec<(u64, f64)>>,
) -> anyhow::Result<()> {
    let pick = |keep: &dyn Fn(&str) -> bool| -> Vec<Series> {
        curves
            .iter()
            .filter(|(m, c)| keep(m) && !finite(c).is_empty())
            .enumerate()
            .map(|(k, (m, c))| (m.clone(), finite(c), PALETTE[k % PALETTE.len()], 2))
            .collect()
    };
    let losses = pick(&|m| m.starts_with("held_out/"));
    let metrics = pick(&|m| {
        !m.starts_with("held_out/") && !m.ends_with("abs_rel") && !m.ends_with("angle_deg")
    });
    if losses.is_empty() && metrics.is_empty() {
        bail!("no validation metrics to draw");
    }
    let root = SVGBackend::new(path, (900, 900)).into_drawing_area();
    let (top, bottom) = root.split_vertically(450);
    draw_chart(&top, &format!("{title}: held-out loss"), "loss", &losses)
        .and_then(|()| {
            draw_chart(
                &bottom,
                &format!("{title}: cross-modal metrics"),
                "score",
                &metrics,
            )
        })
        .and_then(|()| root.present().map_err(|e| e.to_string()))
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("drawing {}", path.display()))
}

/// A named line: its points, colour and width.
type Series = (String, Vec<(u64, f64)>, RGBColor, u32);

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y: &str,
    series: &[Series],
) -> Result<(), String> {
    let all: Vec<(u64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let (Some(x0), Some(x1)) = (all.iter().map(|p| p.0).min(), all.iter().map(|p| p.0).max())
    else {
        return Ok(());
    };
    let lo = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = all.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1), (lo - pad)..(hi + pad))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y)
        .draw()
        .map_err(e)?;
    for (name, points, colour, width) in series {
        let style = colour.stroke_width(*width);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

fn finite(curve: &[(u64, f64)]) -> Vec<(u64, f64)> {
    curve
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect()
}

/// Exponential moving average with bias correction (as TensorBoard smooths).
fn smoothed(curve: &[(u64, f64)], beta: f64) -> Vec<(u64, f64)> {
    let mut avg = 0.0;
    curve
        .iter()
        .enumerate()
        .map(|(i, &(s, l))| {
            avg = beta * avg + (1.0 - beta) * l;
            (s, avg / (1.0 - beta.powi(i as i32 + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_both_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.svg");
        let curve: Vec<(u64, f64)> = (1..=50).map(|s| (s, 6.0 - s as f64 * 0.05)).collect();
        let per_modality = BTreeMap::from([("caption".to_string(), curve.clone())]);
        draw_loss_curve(&path, "test", &curve, &per_modality).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("moving average") && svg.contains("caption"));
        assert!(draw_loss_curve(&path, "t", &[(1, f64::NAN)], &BTreeMap::new()).is_err());
        let eval = BTreeMap::from([
            ("held_out/total".to_string(), vec![(10, 4.0), (20, 3.0)]),
            ("rgb->semseg/miou".to_string(), vec![(10, 0.2), (20, 0.4)]),
        ]);
        let path = dir.path().join("eval.svg");
        draw_eval_curves(&path, "test", &eval).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("held_out/total") && svg.contains("miou"));
    }

    #[test]
    fn smoothing_starts_at_the_first_value() {
        let s = smoothed(&[(1, 4.0), (2, 2.0)], 0.9);
        assert!((s[0].1 - 4.0).abs() < 1e-12);
        assert!(s[1].1 < 4.0 && s[1].1 > 2.0);
    }
}
