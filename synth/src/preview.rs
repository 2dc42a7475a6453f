//! Drawing a sample of a synthetic dataset: every image-like modality side by side, raw (from
//! `raw/`) on the top row and decoded from its tokens (through the stored codebooks) on the bottom
//! row; the last column overlays the boxes on RGB — raw boxes from the det JSON on top, and on
//! the bottom the boxes read back from the det text after a round trip through the text
//! tokenizer. So a user sees what the tokens mean and that the modalities line up.

use bytes::Bytes;

use crate::canvas::{Canvas, depth_range};
use crate::dataset::{IMAGE_MODALITIES, RAW_DIR, TEXT_TOKENIZER_FILE, TOKENIZERS_DIR};
use crate::error::SynthError;
use crate::image_tokenizer::{ImagePlane, PatchTokenizer};
use crate::raster::{RawFormat, from_png};
use fourm_data::DatasetStore;
use fourm_data::npy::NpyArray;
use fourm_data::read_index;
use fourm_data::shard_path;
use fourm_data::{TarEntry, read_tar};
use fourm_masking::TextTokenizer;
use fourm_masking::{COORD_BINS, DET_THRESHOLD, Detections};

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
    let depth_range = depth_range(&raw[1]);
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
        canvas.boxes(det, x, y, pw, ph);
    }
    canvas.to_png("preview")
}
