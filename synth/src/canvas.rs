//! Drawing planes for people: RGB as is, depth as inverse-depth grey (near bright, sky black),
//! normals as `(n + 1) / 2`, classes through a palette, boxes as outlines, on a canvas written as
//! PNG. `fourm data render`, `fourm generate`'s previews and `fourm eval`'s sample grid draw with
//! it.

use png::{BitDepth, ColorType};

use crate::error::SynthError;
use crate::image_tokenizer::ImagePlane;
use crate::raster::{RawFormat, encode};
use crate::render::DEPTH_FAR;
use fourm_masking::Detections;

/// Colours of the segmentation classes (background, ground, sphere, cube, cylinder, others).
pub const PALETTE: [[u8; 3]; 6] = [
    [20, 24, 48],
    [128, 128, 128],
    [230, 80, 80],
    [80, 200, 90],
    [80, 120, 235],
    [240, 240, 240],
];
/// The depth range of a depth plane's visible surfaces, for [`Canvas::blit`].
pub fn depth_range(depth: &ImagePlane) -> (f32, f32) {
    depth
        .data
        .iter()
        .filter(|d| **d < DEPTH_FAR)
        .fold((f32::INFINITY, 0.0f32), |(lo, hi), &d| {
            (lo.min(d), hi.max(d))
        })
}

/// An RGB 8-bit drawing surface.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    data: Vec<u8>,
}

impl Canvas {
    /// A dark canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: [12u8, 12, 16].repeat(width * height),
        }
    }

    /// Sets one pixel (outside the canvas: nothing).
    pub fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let p = 3 * (y * self.width + x);
            self.data[p..p + 3].copy_from_slice(&c);
        }
    }

    /// Draws a plane scaled up `scale` times (nearest neighbour) with its top-left at `(x, y)`;
    /// `depth` is the range depth is shaded over ([`depth_range`]).
    pub fn blit(
        &mut self,
        plane: &ImagePlane,
        format: RawFormat,
        depth: (f32, f32),
        x: usize,
        y: usize,
        scale: usize,
    ) {
        for r in 0..plane.height {
            for c in 0..plane.width {
                let p = (r * plane.width + c) * plane.channels;
                let px = &plane.data[p..p + plane.channels];
                let colour = colourise(px, format, depth);
                for dy in 0..scale {
                    for dx in 0..scale {
                        self.set(x + c * scale + dx, y + r * scale + dy, colour);
                    }
                }
            }
        }
    }

    /// The boxes of `det` (normalised coordinates) over a `w × h` panel at `(x, y)`.
    pub fn boxes(&mut self, det: &Detections, x: usize, y: usize, w: usize, h: usize) {
        for i in &det.instances {
            let [x0, y0, x1, y1] = i.boxes.map(|v| v.clamp(0.0, 1.0));
            let (l, r) = (
                x + (x0 * w as f64) as usize,
                x + ((x1 * w as f64) as usize).saturating_sub(1),
            );
            let (t, b) = (
                y + (y0 * h as f64) as usize,
                y + ((y1 * h as f64) as usize).saturating_sub(1),
            );
            self.rect(l, t, r.max(l), b.max(t), [255, 230, 0]);
        }
    }

    /// The canvas as a PNG; `what` names it in errors.
    pub fn to_png(&self, what: &str) -> Result<Vec<u8>, SynthError> {
        encode(
            self.width,
            self.height,
            ColorType::Rgb,
            BitDepth::Eight,
            &self.data,
        )
        .map_err(|reason| SynthError::Png {
            what: what.into(),
            reason,
        })
    }

    /// A one-pixel rectangle outline, corners inclusive.
    pub fn rect(&mut self, l: usize, t: usize, r: usize, b: usize, c: [u8; 3]) {
        for x in l..=r {
            self.set(x, t, c);
            self.set(x, b, c);
        }
        for y in t..=b {
            self.set(l, y, c);
            self.set(r, y, c);
        }
    }
}

/// A pixel's display colour: RGB as is, depth as inverse-depth grey (near bright, sky black), normals as
/// `(n + 1) / 2`, classes through [`PALETTE`].
fn colourise(px: &[f32], format: RawFormat, (near, far): (f32, f32)) -> [u8; 3] {
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    match format {
        RawFormat::Rgb => [byte(px[0]), byte(px[1]), byte(px[2])],
        RawFormat::Normal => [
            byte((px[0] + 1.0) / 2.0),
            byte((px[1] + 1.0) / 2.0),
            byte((px[2] + 1.0) / 2.0),
        ],
        RawFormat::Depth => {
            if px[0] >= DEPTH_FAR - 1e-3 || far <= near {
                [0, 0, 0]
            } else {
                // Inverse depth, so near objects stand out against the ground.
                let inv = |d: f32| 1.0 / d.max(1e-3);
                let g = byte(0.15 + 0.85 * (inv(px[0]) - inv(far)) / (inv(near) - inv(far)));
                [g, g, g]
            }
        }
        RawFormat::Classes => PALETTE[(px[0] as usize).min(PALETTE.len() - 1)],
    }
}
