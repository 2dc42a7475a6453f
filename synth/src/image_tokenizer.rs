//! Image tokenizers for image-like modalities: a patch vector quantiser.
//!
//! An image of `height × width` pixels is cut into `patch × patch` patches (a
//! `height/patch × width/patch` token grid, row-major). Each pixel becomes a small feature vector
//! ([`PixelCodec`]: colour, depth / far, unit normal, or the one-hot of a class id); a patch is the
//! concatenation of its pixels' features. The token of a patch is the index of the nearest
//! codebook vector (squared Euclidean distance); decoding replaces each token by its codebook
//! vector and maps features back to pixels (clamped colour, depth, re-normalised normal, arg-max
//! class).
//!
//! The codebook is fit by k-means ([`crate::kmeans`]) on patches of generated images, and stored beside the
//! dataset as safetensors (`codebook`: `[K, patch²·features]` f32, metadata: modality, codec,
//! patch, image size). ml-4m's tokenizers are learned VQ-VAEs / diffusion decoders
//! (4m-spec.md §7); this one is deliberately simple, exact to re-implement, and fast on a CPU.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::SynthError;
use crate::kmeans::{KMeans, kmeans, nearest, norms};

/// Format tag in the codebook file's metadata.
const FORMAT: &str = "fourm-patch-vq/1";
/// The codebook file's metadata entry.
const METADATA_KEY: &str = "fourm";

/// What the codebook file's metadata records.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodebookHeader {
    format: String,
    modality: String,
    codec: PixelCodec,
    patch: usize,
    width: usize,
    height: usize,
}

/// How a pixel of a modality becomes features and back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PixelCodec {
    /// Colour, 3 channels in `[0, 1]`.
    Rgb,
    /// Depth (1 channel, ≥ 0), as `min(depth, far) / far`.
    Depth {
        /// Largest depth represented.
        far: f32,
    },
    /// Unit normal, 3 channels in `[-1, 1]` (zero where undefined).
    Normal,
    /// A class id (1 channel, `0..classes`), as its one-hot vector.
    Classes {
        /// Number of classes.
        classes: u8,
    },
}

impl PixelCodec {
    /// Channels of a raw pixel.
    pub fn channels(self) -> usize {
        match self {
            Self::Rgb | Self::Normal => 3,
            Self::Depth { .. } | Self::Classes { .. } => 1,
        }
    }

    /// Features of a pixel.
    pub fn features(self) -> usize {
        match self {
            Self::Rgb | Self::Normal => 3,
            Self::Depth { .. } => 1,
            Self::Classes { classes } => usize::from(classes),
        }
    }

    fn encode(self, pixel: &[f32], out: &mut [f32]) {
        match self {
            Self::Rgb | Self::Normal => out.copy_from_slice(pixel),
            Self::Depth { far } => out[0] = pixel[0].clamp(0.0, far) / far,
            Self::Classes { .. } => {
                out.fill(0.0);
                if let Some(slot) = out.get_mut(pixel[0] as usize) {
                    *slot = 1.0;
                }
            }
        }
    }

    fn decode(self, features: &[f32], out: &mut [f32]) {
        match self {
            Self::Rgb => {
                for (o, f) in out.iter_mut().zip(features) {
                    *o = f.clamp(0.0, 1.0);
                }
            }
            Self::Depth { far } => out[0] = features[0].clamp(0.0, 1.0) * far,
            Self::Normal => {
                let l = features.iter().map(|f| f * f).sum::<f32>().sqrt();
                for (o, f) in out.iter_mut().zip(features) {
                    *o = if l > 0.25 { f / l } else { 0.0 };
                }
            }
            Self::Classes { .. } => {
                let best =
                    features
                        .iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |b, (i, &f)| if f > b.1 { (i, f) } else { b },
                        );
                out[0] = best.0 as f32;
            }
        }
    }
}

/// A raw image: `height × width` pixels of `channels` floats, row-major, channels last.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePlane {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel.
    pub channels: usize,
    /// `height · width · channels` values.
    pub data: Vec<f32>,
}

/// Options of [`PatchTokenizer::fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitOptions {
    /// Codebook size (the modality's vocabulary).
    pub codebook_size: usize,
    /// Lloyd iterations.
    pub iterations: usize,
    /// Seed of the k-means++ seeding.
    pub seed: u64,
}

/// A patch vector quantiser for one modality.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchTokenizer {
    /// The modality it tokenizes (e.g. `tok_rgb@64`).
    pub modality: String,
    /// Pixel features.
    pub codec: PixelCodec,
    /// Patch side in pixels.
    pub patch: usize,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// `[K, dim]` codebook.
    codebook: Vec<f32>,
    /// `‖c‖²` of each code.
    norms: Vec<f32>,
}

impl PatchTokenizer {
    /// Fits a codebook by k-means on the patches of `images` (all of `width × height`).
    pub fn fit(
        modality: &str,
        codec: PixelCodec,
        patch: usize,
        images: &[ImagePlane],
        options: FitOptions,
    ) -> Result<Self, SynthError> {
        let bad = |reason: String| SynthError::Image {
            modality: modality.to_string(),
            reason,
        };
        let first = images
            .first()
            .ok_or_else(|| bad("no image to fit on".into()))?;
        let (width, height) = (first.width, first.height);
        if patch == 0 || !width.is_multiple_of(patch) || !height.is_multiple_of(patch) {
            return Err(bad(format!(
                "{width}×{height} is not a multiple of patch {patch}"
            )));
        }
        if options.codebook_size == 0 || options.codebook_size > usize::from(u16::MAX) {
            return Err(bad(format!(
                "codebook size {} not in 1..=65535",
                options.codebook_size
            )));
        }
        let mut tok = Self {
            modality: modality.to_string(),
            codec,
            patch,
            width,
            height,
            codebook: Vec::new(),
            norms: Vec::new(),
        };
        let dim = tok.dim();
        let mut points = Vec::new();
        for image in images {
            points.extend(tok.patches(image)?);
        }
        let n = points.len() / dim;
        if n < options.codebook_size {
            return Err(bad(format!(
                "{n} patches for {} codes",
                options.codebook_size
            )));
        }
        let fit = KMeans {
            k: options.codebook_size,
            iterations: options.iterations,
            seed: options.seed,
        };
        tok.codebook = kmeans(&points, dim, &fit);
        tok.norms = norms(&tok.codebook, dim);
        Ok(tok)
    }

    /// Features per patch.
    pub fn dim(&self) -> usize {
        self.patch * self.patch * self.codec.features()
    }

    /// Codebook size.
    pub fn vocab_size(&self) -> usize {
        self.norms.len()
    }

    /// Token grid `[rows, cols]`.
    pub fn grid(&self) -> [usize; 2] {
        [self.height / self.patch, self.width / self.patch]
    }

    /// The token grid of an image, row-major.
    pub fn encode(&self, image: &ImagePlane) -> Result<Vec<i64>, SynthError> {
        let dim = self.dim();
        let points = self.patches(image)?;
        Ok(points
            .chunks_exact(dim)
            .map(|p| nearest(p, &self.codebook, &self.norms, dim).0 as i64)
            .collect())
    }

    /// The image a token grid stands for.
    pub fn decode(&self, ids: &[i64]) -> Result<ImagePlane, SynthError> {
        let [rows, cols] = self.grid();
        if ids.len() != rows * cols {
            return Err(self.bad(format!("{} tokens for a {rows}×{cols} grid", ids.len())));
        }
        let (f, c) = (self.codec.features(), self.codec.channels());
        let dim = self.dim();
        let mut data = vec![0.0; self.width * self.height * c];
        for (t, &id) in ids.iter().enumerate() {
            let code = usize::try_from(id)
                .ok()
                .filter(|&i| i < self.vocab_size())
                .ok_or_else(|| self.bad(format!("token {id} outside 0..{}", self.vocab_size())))?;
            let features = &self.codebook[code * dim..(code + 1) * dim];
            let (r0, c0) = ((t / cols) * self.patch, (t % cols) * self.patch);
            for (k, pixel) in features.chunks_exact(f).enumerate() {
                let (r, col) = (r0 + k / self.patch, c0 + k % self.patch);
                let at = (r * self.width + col) * c;
                self.codec.decode(pixel, &mut data[at..at + c]);
            }
        }
        Ok(ImagePlane {
            width: self.width,
            height: self.height,
            channels: c,
            data,
        })
    }

    /// The codebook file (safetensors).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SynthError> {
        let bytes: Vec<u8> = self.codebook.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![self.vocab_size(), self.dim()], &bytes)
            .map_err(|e| self.bad(format!("codebook tensor: {e}")))?;
        // One metadata entry: a multi-entry map would be written in hash order, and the same
        // codebook must always give the same bytes.
        let header = CodebookHeader {
            format: FORMAT.to_string(),
            modality: self.modality.clone(),
            codec: self.codec,
            patch: self.patch,
            width: self.width,
            height: self.height,
        };
        let metadata = HashMap::from([(
            METADATA_KEY.to_string(),
            serde_json::to_string(&header).unwrap_or_default(),
        )]);
        safetensors::serialize([("codebook", view)], Some(metadata))
            .map_err(|e| self.bad(format!("serializing the codebook: {e}")))
    }

    /// Reads a codebook file; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, SynthError> {
        let parse = |reason: String| SynthError::CodebookParse {
            origin: origin.to_string(),
            reason,
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| parse(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let text = meta
            .get(METADATA_KEY)
            .ok_or_else(|| parse(format!("metadata lacks `{METADATA_KEY}`")))?;
        let h: CodebookHeader =
            serde_json::from_str(text).map_err(|e| parse(format!("metadata: {e}")))?;
        if h.format != FORMAT {
            return Err(parse(format!("format {:?} is not {FORMAT}", h.format)));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| parse(e.to_string()))?;
        let t = st.tensor("codebook").map_err(|e| parse(e.to_string()))?;
        let mut tok = Self {
            modality: h.modality,
            codec: h.codec,
            patch: h.patch,
            width: h.width,
            height: h.height,
            codebook: Vec::new(),
            norms: Vec::new(),
        };
        let dim = tok.dim();
        let shape_ok = t.dtype() == Dtype::F32
            && t.shape().len() == 2
            && t.shape()[1] == dim
            && t.shape()[0] > 0;
        if !shape_ok
            || tok.patch == 0
            || !tok.width.is_multiple_of(tok.patch)
            || !tok.height.is_multiple_of(tok.patch)
        {
            return Err(parse(format!(
                "codebook {:?} {:?} does not fit patch {} of {}×{}",
                t.dtype(),
                t.shape(),
                tok.patch,
                tok.width,
                tok.height
            )));
        }
        tok.codebook = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if tok.codebook.iter().any(|v| !v.is_finite()) {
            return Err(parse("non-finite codebook value".into()));
        }
        tok.norms = norms(&tok.codebook, dim);
        Ok(tok)
    }

    /// Writes the codebook file.
    pub fn save(&self, path: &Path) -> Result<(), SynthError> {
        std::fs::write(path, self.to_bytes()?).map_err(|source| SynthError::CodebookIo {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a codebook file.
    pub fn load(path: &Path) -> Result<Self, SynthError> {
        let bytes = std::fs::read(path).map_err(|source| SynthError::CodebookIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    fn bad(&self, reason: String) -> SynthError {
        SynthError::Image {
            modality: self.modality.clone(),
            reason,
        }
    }

    /// Patch feature vectors of an image, in grid order.
    fn patches(&self, image: &ImagePlane) -> Result<Vec<f32>, SynthError> {
        let c = self.codec.channels();
        if image.width != self.width
            || image.height != self.height
            || image.channels != c
            || image.data.len() != self.width * self.height * c
        {
            return Err(self.bad(format!(
                "image {}×{}×{} ({} values), expected {}×{}×{c}",
                image.width,
                image.height,
                image.channels,
                image.data.len(),
                self.width,
                self.height
            )));
        }
        let (f, [rows, cols]) = (self.codec.features(), self.grid());
        let mut out = vec![0.0; rows * cols * self.dim()];
        let mut at = 0;
        for gr in 0..rows {
            for gc in 0..cols {
                for r in gr * self.patch..(gr + 1) * self.patch {
                    for col in gc * self.patch..(gc + 1) * self.patch {
                        let p = (r * self.width + col) * c;
                        self.codec
                            .encode(&image.data[p..p + c], &mut out[at..at + f]);
                        at += f;
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use fourm_plan::rng_for;

    fn blocks(seed: u64) -> ImagePlane {
        let mut rng = rng_for(&[seed]);
        let (w, h) = (16, 16);
        let mut data = vec![0.0; w * h * 3];
        let colour: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        let split = rng.random_range(2..14);
        for r in 0..h {
            for c in 0..w {
                let px = if c < split { colour } else { [0.5, 0.5, 0.5] };
                data[(r * w + c) * 3..(r * w + c) * 3 + 3].copy_from_slice(&px);
            }
        }
        ImagePlane {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    #[test]
    fn fits_encodes_decodes_and_round_trips_the_file() {
        let images: Vec<ImagePlane> = (0..40).map(blocks).collect();
        let options = FitOptions {
            codebook_size: 32,
            iterations: 8,
            seed: 1,
        };
        let tok = PatchTokenizer::fit("tok_rgb@16", PixelCodec::Rgb, 4, &images, options).unwrap();
        assert_eq!(tok.grid(), [4, 4]);
        assert_eq!(tok.vocab_size(), 32);
        let ids = tok.encode(&images[0]).unwrap();
        assert_eq!(ids.len(), 16);
        let back = tok.decode(&ids).unwrap();
        let mse: f32 = back
            .data
            .iter()
            .zip(&images[0].data)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / back.data.len() as f32;
        assert!(mse < 0.01, "{mse}");
        let again = PatchTokenizer::from_bytes(&tok.to_bytes().unwrap(), "<mem>").unwrap();
        assert_eq!(again, tok);
        assert_eq!(
            tok,
            PatchTokenizer::fit("tok_rgb@16", PixelCodec::Rgb, 4, &images, options).unwrap()
        );
        assert!(tok.decode(&[0; 3]).is_err());
        assert!(tok.decode(&[99; 16]).is_err());
        assert!(PatchTokenizer::from_bytes(b"junk", "<junk>").is_err());
    }

    #[test]
    fn classes_decode_by_arg_max() {
        let codec = PixelCodec::Classes { classes: 3 };
        let mut f = [0.0; 3];
        codec.encode(&[2.0], &mut f);
        assert_eq!(f, [0.0, 0.0, 1.0]);
        let mut out = [0.0];
        codec.decode(&[0.2, 0.5, 0.3], &mut out);
        assert_eq!(out, [1.0]);
        let depth = PixelCodec::Depth { far: 10.0 };
        depth.encode(&[25.0], &mut out);
        assert_eq!(out, [1.0]);
    }
}
