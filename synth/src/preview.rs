//! Drawing a sample of a synthetic dataset: every image-like modality side by side, raw (from
//! `raw/`) on the top row and decoded from its tokens (through the stored codebooks) on the bottom
//! row; the last column overlays the boxes on RGB — raw boxes from the det JSON on top, and on
//! the bottom the boxes read back from the det text after a round trip through the text
//! tokenizer. So a user sees what the tokens mean and that the modalities line up.

use bytes::Bytes;
use png::{BitDepth, ColorType};

use crate::dataset::{IMAGE_MODALITIES, RAW_DIR, TEXT_TOKENIZER_FILE, TOKENIZERS_DIR};
use crate::error::SynthError;
use crate::image_tokenizer::{ImagePlane, PatchTokenizer};
use crate::raster::{RawFormat, encode, from_png};
use fourm_data::DatasetStore;
use fourm_data::npy::NpyArray;
use fourm_data::read_index;
use fourm_data::shard_path;
use fourm_data::{TarEntry, read_tar};
use fourm_masking::TextTokenizer;
use fourm_masking::{COORD_BINS, DET_THRESHOLD, Detections};

/// Colours of the segmentation classes (background, ground, sphere, cube, cylinder, others).
const PALETTE: [[u8; 3]; 6] = [
    [20, 24, 48],
    [128, 128, 128],
    [230, 80, 80],
    [80, 200, 90],
    [80, 120, 235],
    [240, 240, 240],
];
const GAP: usize = 4;

/// A drawn sample.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The picture (PNG).
    pub png: Vec<u8>,
    /// Shard holding the sample.
    pub shard: u32,
    /// Its caption.
    pub caption: String,
    /// Its boxes as ml-4m text.
    pub det_text: String,
    /// The boxes text after encoding and decoding with the dataset's text tokenizer.
    pub det_decoded: String,
}

/// Draws sample `key` of the synthetic dataset under `store`.
pub async fn preview_sample(store: &DatasetStore, key: &str) -> Result<Preview, SynthError> {
    let index = read_index(store).await?;
    let missing = |reason: String| SynthError::Sample {
        url: store.url().to_string(),
        reason,
    };
    let tar = |path: object_store::path::Path| async move {
        let bytes: Bytes = store.get(&path).await?;
        let url = store.object_url(&path);
        let entries = read_tar(&url, &bytes)?;
        Ok::<_, SynthError>((url, entries))
    };
    let pick = |(url, entries): (String, Vec<TarEntry>)| {
        entries
            .into_iter()
            .find(|e| e.key == key)
            .ok_or_else(|| missing(format!("{url} has no entry {key}")))
    };
    let mut found = None;
    for shard in &index.shards {
        let (_, entries) = tar(shard_path(store.root(), "caption", shard.shard)).await?;
        if let Some(e) = entries.into_iter().find(|e| e.key == key) {
            found = Some((shard.shard, e));
            break;
        }
    }
    let (shard, caption_entry) =
        found.ok_or_else(|| missing(format!("no sample {key} in any shard")))?;
    let caption = String::from_utf8_lossy(&caption_entry.data).into_owned();
    let det_entry = pick(tar(shard_path(store.root(), "det", shard)).await?)?;
    let det: Detections = serde_json::from_slice(&det_entry.data)
        .map_err(|e| missing(format!("det of {key} is not ml-4m box JSON: {e}")))?;
    let text_bytes = store
        .get(&store.root().clone().join(TEXT_TOKENIZER_FILE))
        .await?;
    let text = TextTokenizer::from_json(&text_bytes, TEXT_TOKENIZER_FILE)?;
    let det_text = det.to_text(DET_THRESHOLD, COORD_BINS);
    let det_decoded = text.decode(&text.encode(&det_text)?, false)?;

    let raw_root = store.root().clone().join(RAW_DIR);
    let mut raw = Vec::new();
    let mut decoded = Vec::new();
    for (name, format) in IMAGE_MODALITIES {
        let entry = pick(tar(shard_path(&raw_root, name, shard)).await?)?;
        raw.push(from_png(
            &entry.data,
            format,
            &format!("{RAW_DIR}/{name}/{key}.png"),
        )?);
        let modality = index
            .modalities
            .keys()
            .find(|m| m.strip_prefix("tok_").and_then(|r| r.split('@').next()) == Some(name))
            .ok_or_else(|| missing(format!("no tok_{name}@… modality in the index")))?
            .clone();
        let codebook = store
            .get(
                &store
                    .root()
                    .clone()
                    .join(TOKENIZERS_DIR)
                    .join(format!("{modality}.safetensors").as_str()),
            )
            .await?;
        let tokenizer = PatchTokenizer::from_bytes(&codebook, &modality)?;
        let entry = pick(tar(shard_path(store.root(), &modality, shard)).await?)?;
        let array = NpyArray::parse(entry.data.clone())
            .map_err(|e| missing(format!("{modality}/{key}.npy: {e}")))?;
        decoded.push(tokenizer.decode(&array.row(0))?);
    }
    let png = compose(
        &raw,
        &decoded,
        &det,
        &Detections::from_text(&det_decoded, COORD_BINS),
    )?;
    Ok(Preview {
        png,
        shard,
        caption,
        det_text,
        det_decoded,
    })
}

/// Two rows of panels: rgb, depth, normal, semseg, rgb + boxes.
fn compose(
    raw: &[ImagePlane],
    decoded: &[ImagePlane],
    boxes: &Detections,
    decoded_boxes: &Detections,
) -> Result<Vec<u8>, SynthError> {
    let (w, h) = (raw[0].width, raw[0].height);
    let scale = (256 / w.max(h)).max(1);
    let (pw, ph) = (w * scale, h * scale);
    let columns = IMAGE_MODALITIES.len() + 1;
    let mut canvas = Canvas::new(columns * (pw + GAP) + GAP, 2 * (ph + GAP) + GAP);
    // One depth range for both rows, from the raw depth of visible surfaces.
    let depth_range = raw[1]
        .data
        .iter()
        .filter(|d| **d < super::render::DEPTH_FAR)
        .fold((f32::INFINITY, 0.0f32), |(lo, hi), &d| {
            (lo.min(d), hi.max(d))
        });
    for (row, (planes, det)) in [(raw, boxes), (decoded, decoded_boxes)]
        .into_iter()
        .enumerate()
    {
        let y = GAP + row * (ph + GAP);
        for (col, (plane, (_, format))) in planes.iter().zip(IMAGE_MODALITIES).enumerate() {
            canvas.blit(plane, format, depth_range, GAP + col * (pw + GAP), y, scale);
        }
        let x = GAP + (columns - 1) * (pw + GAP);
        canvas.blit(&planes[0], RawFormat::Rgb, depth_range, x, y, scale);
        for i in &det.instances {
            let [x0, y0, x1, y1] = i.boxes.map(|v| v.clamp(0.0, 1.0));
            let (l, r) = (
                x + (x0 * pw as f64) as usize,
                x + ((x1 * pw as f64) as usize).saturating_sub(1),
            );
            let (t, b) = (
                y + (y0 * ph as f64) as usize,
                y + ((y1 * ph as f64) as usize).saturating_sub(1),
            );
            canvas.rect(l, t, r.max(l), b.max(t), [255, 230, 0]);
        }
    }
    encode(
        canvas.width,
        canvas.height,
        ColorType::Rgb,
        BitDepth::Eight,
        &canvas.data,
    )
    .map_err(|reason| SynthError::Png {
        what: "preview".into(),
        reason,
    })
}

/// An RGB 8-bit drawing surface.
struct Canvas {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: [12u8, 12, 16].repeat(width * height),
        }
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let p = 3 * (y * self.width + x);
            self.data[p..p + 3].copy_from_slice(&c);
        }
    }

    /// Draws a plane scaled up `scale` times (nearest neighbour) with its top-left at `(x, y)`.
    fn blit(
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

    /// A one-pixel rectangle outline, corners inclusive.
    fn rect(&mut self, l: usize, t: usize, r: usize, b: usize, c: [u8; 3]) {
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
            if px[0] >= super::render::DEPTH_FAR - 1e-3 || far <= near {
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
