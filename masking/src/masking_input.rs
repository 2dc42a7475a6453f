//! From a decoded sample (what the shard reader yields) to the masker's input: token grids pass
//! through, captions are tokenized, det box JSON becomes ml-4m's box text and is tokenized
//! (4m-spec.md §5.3). Masking then appends `[EOS]` and span-masks the sequences.

use std::collections::BTreeMap;

use crate::det::{COORD_BINS, DET_THRESHOLD, Detections};
use crate::error::MaskError;
use crate::masking::ModalityInput;
use crate::masking_config::{MaskKind, MaskingConfig};
use crate::text_tokenizer::TextTokenizer;
use fourm_data::{DecodedSample, ModalityData};

/// The masker input of every modality of `config`, from `sample`. Text modalities need
/// `tokenizer`.
pub fn masking_input(
    sample: &DecodedSample,
    config: &MaskingConfig,
    tokenizer: Option<&TextTokenizer>,
) -> Result<BTreeMap<String, ModalityInput>, MaskError> {
    let mut out = BTreeMap::new();
    for (name, spec) in &config.modalities {
        let bad = |reason: String| MaskError::Input {
            modality: name.clone(),
            reason: format!("sample {}: {reason}", sample.key),
        };
        let data = sample
            .modalities
            .get(name)
            .ok_or_else(|| bad("missing from the sample".into()))?;
        let encode = |text: &str| match tokenizer {
            Some(t) => t.encode(text).map_err(|e| bad(e.to_string())),
            None => Err(bad("a text modality needs a text tokenizer".into())),
        };
        let input = match (spec.kind, data) {
            (MaskKind::Image, ModalityData::Tokens(grid)) => {
                ModalityInput::ImageTokens(grid.ids.clone())
            }
            (MaskKind::Sequence, ModalityData::Text(text)) => {
                ModalityInput::Sequence(encode(text)?)
            }
            (MaskKind::Sequence, ModalityData::Json(value)) => {
                let det: Detections = serde_json::from_value(value.clone())
                    .map_err(|e| bad(format!("not ml-4m box JSON: {e}")))?;
                ModalityInput::Sequence(encode(&det.to_text(DET_THRESHOLD, COORD_BINS))?)
            }
            (kind, _) => return Err(bad(format!("its data does not fit kind {kind:?}"))),
        };
        out.insert(name.clone(), input);
    }
    Ok(out)
}
