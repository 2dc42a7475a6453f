//! Files in and out of `fourm generate`: conditions from PNG images (tokenized with the dataset's
//! patch tokenizers), token `.npy` files or text; outputs as token `.npy`, PNG images decoded by
//! the same tokenizers (with previews for people), and text.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fourm_data::npy::{self, NpyArray};
use fourm_data::{DatasetStore, StoreConfig};
use fourm_model::ModalityKind;
use fourm_synth::dataset::TOKENIZERS_DIR;
use fourm_synth::{ImagePlane, PatchTokenizer, RawFormat, from_png, to_png};

use super::load::Loaded;
use super::preview;

/// Token ids of one condition.
pub enum Condition {
    /// An image-like token grid.
    Grid(Vec<i64>),
    /// A token sequence.
    Sequence(Vec<i64>),
}

/// Reads `file` as a condition of `modality`.
pub async fn read_condition(
    loaded: &Loaded,
    modality: &str,
    file: &Path,
) -> anyhow::Result<Condition> {
    let spec = loaded
        .model
        .modalities()
        .get(modality)
        .with_context(|| format!("the model has no modality `{modality}`"))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let ids: Vec<i64> = match ext {
        "npy" => {
            let array = NpyArray::parse(bytes.into())
                .with_context(|| format!("{} is not a token array", file.display()))?;
            array.row(0)
        }
        "png" => {
            let tokenizer = image_tokenizer(loaded, modality).await?;
            let format = raw_format(modality)?;
            let plane = from_png(&bytes, format, &file.display().to_string())?;
            tokenizer.encode(&plane)?
        }
        _ => {
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
            let tokenizer = loaded
                .data
                .tokenizer
                .as_ref()
                .context("the dataset has no text tokenizer")?;
            tokenizer
                .encode(text.trim())?
                .into_iter()
                .map(i64::from)
                .collect()
        }
    };
    if let Some(&bad) = ids
        .iter()
        .find(|&&i| i < 0 || i as usize >= spec.vocab_size)
    {
        bail!(
            "{}: token {bad} is outside `{modality}`'s vocabulary of {}",
            file.display(),
            spec.vocab_size
        );
    }
    match spec.kind {
        ModalityKind::ImageTokens { grid } => {
            if ids.len() != grid[0] * grid[1] {
                bail!(
                    "{}: {} tokens, `{modality}` needs a {}x{} grid",
                    file.display(),
                    ids.len(),
                    grid[0],
                    grid[1]
                );
            }
            Ok(Condition::Grid(ids))
        }
        ModalityKind::Sequence { .. } => Ok(Condition::Sequence(ids)),
        ModalityKind::ImagePixels { .. } => {
            bail!("pixel modalities (`{modality}`) are not supported as conditions yet")
        }
    }
}

/// What [`write_output`] wrote.
pub struct Written {
    /// The files, in order.
    pub files: Vec<PathBuf>,
    /// The decoded image of an image-like output.
    pub plane: Option<ImagePlane>,
    /// The decoded text of a sequence output.
    pub text: Option<String>,
}

/// Writes the generated `ids` of `modality` under `out`: the tokens, and where the dataset's
/// tokenizers decode them, the raw image (`.png`, exact values) with a preview for people
/// (`.preview.png`), or the text.
pub async fn write_output(
    loaded: &Loaded,
    modality: &str,
    ids: &[i64],
    out: &Path,
) -> anyhow::Result<Written> {
    let spec = loaded
        .model
        .modalities()
        .get(modality)
        .with_context(|| format!("the model has no modality `{modality}`"))?;
    let stem = modality.replace(['@', '/'], "_");
    let mut written = Written {
        files: Vec::new(),
        plane: None,
        text: None,
    };
    let write = |name: String, bytes: &[u8]| -> anyhow::Result<PathBuf> {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    match spec.kind {
        ModalityKind::ImageTokens { .. } => {
            let array = npy::encode(npy::Dtype::I16, &[1, ids.len()], ids)?;
            written.files.push(write(format!("{stem}.npy"), &array)?);
            if let (Ok(tokenizer), Ok(format)) = (
                image_tokenizer(loaded, modality).await,
                raw_format(modality),
            ) {
                let plane = tokenizer.decode(ids)?;
                written
                    .files
                    .push(write(format!("{stem}.png"), &to_png(&plane, format)?)?);
                written.files.push(write(
                    format!("{stem}.preview.png"),
                    &preview::image(&plane, format)?,
                )?);
                written.plane = Some(plane);
            }
        }
        ModalityKind::Sequence { .. } => {
            let text_ids = loaded.specials.text_part(ids);
            let array = npy::encode(npy::Dtype::I64, &[1, text_ids.len()], &text_ids)?;
            written.files.push(write(format!("{stem}.npy"), &array)?);
            if let Some(t) = &loaded.data.tokenizer {
                let ids: Vec<u32> = text_ids.iter().map(|&i| i as u32).collect();
                // Not skipping special tokens: the closed vocabulary of the synthetic captions
                // and every box coordinate are special tokens (as in ml-4m's tokenizer);
                // `text_part` already dropped padding, sentinels and what follows `[EOS]`.
                let text = t.decode(&ids, false)?;
                written.files.push(write(
                    format!("{stem}.txt"),
                    format!("{text}\n").as_bytes(),
                )?);
                written.text = Some(text);
            }
        }
        ModalityKind::ImagePixels { .. } => bail!("`{modality}` is an input-only modality"),
    }
    Ok(written)
}

/// The image of an image-like condition file, decoded for previews (`None` for other files).
pub async fn condition_plane(
    loaded: &Loaded,
    modality: &str,
    condition: &Condition,
) -> anyhow::Result<Option<ImagePlane>> {
    match condition {
        Condition::Grid(ids) => match image_tokenizer(loaded, modality).await {
            Ok(tokenizer) => Ok(Some(tokenizer.decode(ids)?)),
            Err(_) => Ok(None),
        },
        Condition::Sequence(_) => Ok(None),
    }
}

/// The patch tokenizer of `modality` in the dataset's `tokenizers/` folder.
async fn image_tokenizer(loaded: &Loaded, modality: &str) -> anyhow::Result<PatchTokenizer> {
    let store = DatasetStore::open(&loaded.config.data.dataset, StoreConfig::default())?;
    let path = store
        .root()
        .clone()
        .join(TOKENIZERS_DIR)
        .join(format!("{modality}.safetensors").as_str());
    let bytes = store.get(&path).await.with_context(|| {
        format!(
            "`{modality}` has no image tokenizer at {}",
            store.object_url(&path)
        )
    })?;
    Ok(PatchTokenizer::from_bytes(&bytes, modality)?)
}

/// How the raw image of a `tok_<kind>@<res>` modality is stored.
fn raw_format(modality: &str) -> anyhow::Result<RawFormat> {
    RawFormat::of_modality(modality)
        .with_context(|| format!("no image format known for `{modality}`"))
}
