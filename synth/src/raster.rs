//! Raw image-like modalities as PNG (Omnidata / ml-4m style): RGB as 8-bit colour, depth as
//! 16-bit grey in millimetres, surface normals as 8-bit colour `(n + 1) · 127.5`, segmentation as
//! 8-bit class ids. [`to_png`] and [`from_png`] convert between [`ImagePlane`]s and those files.

use std::io::Cursor;

use png::{BitDepth, ColorType, Compression, Decoder, Encoder};
use serde::{Deserialize, Serialize};

use crate::error::SynthError;
use crate::image_tokenizer::ImagePlane;

/// How a raw modality is stored as PNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawFormat {
    /// Colour in `[0, 1]` → RGB 8-bit.
    Rgb,
    /// Depth in metres → grey 16-bit, millimetres (65.535 m at most).
    Depth,
    /// Unit normal in `[-1, 1]³` → RGB 8-bit.
    Normal,
    /// Class id → grey 8-bit.
    Classes,
}

impl RawFormat {
    /// The format of an image-like modality of the synthetic dataset, by its kind (`rgb`) or its
    /// token modality name (`tok_rgb@64`).
    pub fn of_modality(name: &str) -> Option<Self> {
        let kind = name
            .strip_prefix("tok_")
            .map_or(name, |rest| rest.split('@').next().unwrap_or(rest));
        crate::dataset::IMAGE_MODALITIES
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|&(_, format)| format)
    }

    /// Channels of the plane.
    pub fn channels(self) -> usize {
        match self {
            Self::Rgb | Self::Normal => 3,
            Self::Depth | Self::Classes => 1,
        }
    }
}

/// Encodes a plane as PNG.
pub fn to_png(plane: &ImagePlane, format: RawFormat) -> Result<Vec<u8>, SynthError> {
    let bad = |reason: String| SynthError::Png {
        what: format!("{format:?} encoding"),
        reason,
    };
    if plane.channels != format.channels()
        || plane.data.len() != plane.width * plane.height * plane.channels
    {
        return Err(bad(format!(
            "plane {}×{}×{} does not fit",
            plane.width, plane.height, plane.channels
        )));
    }
    let (color, depth, bytes): (ColorType, BitDepth, Vec<u8>) = match format {
        RawFormat::Rgb => (
            ColorType::Rgb,
            BitDepth::Eight,
            plane.data.iter().map(|v| unit_to_u8(*v)).collect(),
        ),
        RawFormat::Normal => (
            ColorType::Rgb,
            BitDepth::Eight,
            plane
                .data
                .iter()
                .map(|v| unit_to_u8((v + 1.0) / 2.0))
                .collect(),
        ),
        RawFormat::Classes => (
            ColorType::Grayscale,
            BitDepth::Eight,
            plane
                .data
                .iter()
                .map(|v| v.clamp(0.0, 255.0) as u8)
                .collect(),
        ),
        RawFormat::Depth => (
            ColorType::Grayscale,
            BitDepth::Sixteen,
            plane
                .data
                .iter()
                .flat_map(|v| ((v * 1000.0).round().clamp(0.0, 65535.0) as u16).to_be_bytes())
                .collect(),
        ),
    };
    encode(plane.width, plane.height, color, depth, &bytes).map_err(bad)
}

/// Decodes a PNG written by [`to_png`]; `what` names it in errors.
pub fn from_png(bytes: &[u8], format: RawFormat, what: &str) -> Result<ImagePlane, SynthError> {
    let bad = |reason: String| SynthError::Png {
        what: what.to_string(),
        reason,
    };
    let mut reader = Decoder::new(Cursor::new(bytes))
        .read_info()
        .map_err(|e| bad(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("image too large".into()))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    buf.truncate(info.buffer_size());
    let (width, height) = (info.width as usize, info.height as usize);
    let expected = match format {
        RawFormat::Rgb | RawFormat::Normal => (ColorType::Rgb, BitDepth::Eight),
        RawFormat::Depth => (ColorType::Grayscale, BitDepth::Sixteen),
        RawFormat::Classes => (ColorType::Grayscale, BitDepth::Eight),
    };
    if (info.color_type, info.bit_depth) != expected {
        return Err(bad(format!(
            "{:?} {:?}, expected {:?} {:?}",
            info.color_type, info.bit_depth, expected.0, expected.1
        )));
    }
    let data: Vec<f32> = match format {
        RawFormat::Rgb => buf.iter().map(|&b| f32::from(b) / 255.0).collect(),
        RawFormat::Normal => buf.iter().map(|&b| f32::from(b) / 127.5 - 1.0).collect(),
        RawFormat::Classes => buf.iter().map(|&b| f32::from(b)).collect(),
        RawFormat::Depth => buf
            .chunks_exact(2)
            .map(|b| f32::from(u16::from_be_bytes([b[0], b[1]])) / 1000.0)
            .collect(),
    };
    Ok(ImagePlane {
        width,
        height,
        channels: format.channels(),
        data,
    })
}

/// Encodes raw PNG bytes (`data` in PNG sample order).
pub fn encode(
    width: usize,
    height: usize,
    color: ColorType,
    depth: BitDepth,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, width as u32, height as u32);
    encoder.set_color(color);
    encoder.set_depth(depth);
    encoder.set_compression(Compression::Fast);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(data).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn unit_to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_quantisation() {
        let (w, h) = (5, 3);
        let plane = |channels: usize, f: &dyn Fn(usize) -> f32| ImagePlane {
            width: w,
            height: h,
            channels,
            data: (0..w * h * channels).map(f).collect(),
        };
        let cases: [(RawFormat, ImagePlane, f32); 4] = [
            (
                RawFormat::Rgb,
                plane(3, &|i| (i % 11) as f32 / 10.0),
                0.5 / 255.0,
            ),
            (
                RawFormat::Normal,
                plane(3, &|i| (i % 7) as f32 / 3.0 - 1.0),
                1.0 / 255.0,
            ),
            (RawFormat::Depth, plane(1, &|i| i as f32 * 1.7), 0.0005),
            (RawFormat::Classes, plane(1, &|i| (i % 5) as f32), 0.0),
        ];
        for (format, p, tol) in cases {
            let bytes = to_png(&p, format).unwrap();
            let back = from_png(&bytes, format, "test").unwrap();
            assert_eq!((back.width, back.height, back.channels), (w, h, p.channels));
            for (a, b) in back.data.iter().zip(&p.data) {
                assert!((a - b).abs() <= tol + 1e-6, "{format:?}: {a} vs {b}");
            }
            let other = if format == RawFormat::Depth {
                RawFormat::Classes
            } else {
                RawFormat::Depth
            };
            assert!(from_png(&bytes, other, "test").is_err());
        }
        assert!(from_png(b"not a png", RawFormat::Rgb, "junk").is_err());
    }
}
