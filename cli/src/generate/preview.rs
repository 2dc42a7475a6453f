//! Previews of generated outputs for people: every image-like output drawn as an 8-bit RGB PNG
//! (depth colourised as inverse-depth grey, semseg through the class palette, normals mapped to
//! RGB), and boxes drawn over the RGB image of the same run (a condition or a generated output),
//! or over a dark panel where there is none. The raw files beside them keep the exact values.

use fourm_masking::{COORD_BINS, Detections};
use fourm_synth::canvas::{Canvas, depth_range};
use fourm_synth::{ImagePlane, RawFormat};

/// Panels are scaled up to about this many pixels on their long side.
const PREVIEW_PIXELS: usize = 256;

/// The scale factor of a `w × h` plane's preview.
fn scale(w: usize, h: usize) -> usize {
    (PREVIEW_PIXELS / w.max(h).max(1)).max(1)
}

/// `plane` (stored as `format`) drawn for people, as PNG.
pub fn image(plane: &ImagePlane, format: RawFormat) -> anyhow::Result<Vec<u8>> {
    let s = scale(plane.width, plane.height);
    let mut canvas = Canvas::new(plane.width * s, plane.height * s);
    let depth = if format == RawFormat::Depth {
        depth_range(plane)
    } else {
        (0.0, 0.0)
    };
    canvas.blit(plane, format, depth, 0, 0, s);
    Ok(canvas.to_png("preview")?)
}

/// The boxes of the det text `text` drawn over `rgb` (or a dark square panel), as PNG.
pub fn boxes(text: &str, rgb: Option<&ImagePlane>) -> anyhow::Result<Vec<u8>> {
    let (w, h) = rgb.map_or((PREVIEW_PIXELS, PREVIEW_PIXELS), |p| (p.width, p.height));
    let s = scale(w, h);
    let mut canvas = Canvas::new(w * s, h * s);
    if let Some(plane) = rgb {
        canvas.blit(plane, RawFormat::Rgb, (0.0, 0.0), 0, 0, s);
    }
    canvas.boxes(&Detections::from_text(text, COORD_BINS), 0, 0, w * s, h * s);
    Ok(canvas.to_png("boxes preview")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fourm_synth::from_png;

    /// The preview as 8-bit RGB values.
    fn pixels(png: &[u8]) -> ImagePlane {
        let mut plane = from_png(png, RawFormat::Rgb, "preview").unwrap();
        for v in &mut plane.data {
            *v = (*v * 255.0).round();
        }
        plane
    }

    fn at(p: &ImagePlane, x: usize, y: usize) -> [f32; 3] {
        let i = 3 * (y * p.width + x);
        [p.data[i], p.data[i + 1], p.data[i + 2]]
    }

    #[test]
    fn depth_is_shaded_not_white() {
        // A ramp of depths: the preview shows distinct greys, near brighter than far.
        let plane = ImagePlane {
            width: 4,
            height: 1,
            channels: 1,
            data: vec![1.0, 2.0, 4.0, 8.0],
        };
        let px = pixels(&image(&plane, RawFormat::Depth).unwrap());
        assert_eq!((px.width, px.height), (256, 64));
        let grey = |x: usize| at(&px, x, 0)[0];
        assert!(grey(0) > grey(64) && grey(64) > grey(128) && grey(128) > grey(192));
        assert!(grey(192) > 0.0, "the farthest surface is not drawn as sky");
    }

    #[test]
    fn classes_use_the_palette() {
        let plane = ImagePlane {
            width: 2,
            height: 1,
            channels: 1,
            data: vec![1.0, 3.0],
        };
        let px = pixels(&image(&plane, RawFormat::Classes).unwrap());
        let want = |c: usize| fourm_synth::canvas::PALETTE[c].map(f32::from);
        assert_eq!(at(&px, 0, 0), want(1));
        assert_eq!(at(&px, 255, 0), want(3));
    }

    #[test]
    fn boxes_are_drawn_over_the_image() {
        let rgb = ImagePlane {
            width: 8,
            height: 8,
            channels: 3,
            data: vec![0.5; 8 * 8 * 3],
        };
        let text = "v0=0 v1=0 v2=500 v3=500 cube";
        let px = pixels(&boxes(text, Some(&rgb)).unwrap());
        assert_eq!(at(&px, 0, 0), [255.0, 230.0, 0.0], "the box is outlined");
        assert_eq!(at(&px, 200, 200), [128.0; 3], "the image shows elsewhere");
    }
}
