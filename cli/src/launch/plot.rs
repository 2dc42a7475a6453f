//! The loss curve picture written at the end of `fourm launch` (SVG).

use std::path::Path;

use anyhow::{Context, bail};
use plotters::prelude::*;

/// Draws `curve` (step, loss) and its exponential moving average to an SVG file.
pub fn draw_loss_curve(path: &Path, title: &str, curve: &[(u64, f64)]) -> anyhow::Result<()> {
    let finite: Vec<(u64, f64)> = curve
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect();
    let (Some(first), Some(last)) = (finite.first(), finite.last()) else {
        bail!("no finite loss to draw");
    };
    let lo = finite.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = finite.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let x_end = last.0.max(first.0 + 1);
    let ema = smoothed(&finite, 0.9);

    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(first.0..x_end, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                finite.iter().copied(),
                RGBColor(160, 190, 230),
            ))?
            .label("loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(160, 190, 230)));
        chart
            .draw_series(LineSeries::new(ema.iter().copied(), BLUE.stroke_width(2)))?
            .label("moving average")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
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
        draw_loss_curve(&path, "test", &curve).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("moving average"));
        assert!(draw_loss_curve(&path, "t", &[(1, f64::NAN)]).is_err());
    }

    #[test]
    fn smoothing_starts_at_the_first_value() {
        let s = smoothed(&[(1, 4.0), (2, 2.0)], 0.9);
        assert!((s[0].1 - 4.0).abs() < 1e-12);
        assert!(s[1].1 < 4.0 && s[1].1 > 2.0);
    }
}
