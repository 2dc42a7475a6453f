//! The text tokenizer: an HF `tokenizers` WordPiece with ml-4m's special-token layout
//! (4m-spec.md §5.3): `[PAD]=0 [UNK]=1 [SOS]=2 [EOS]=3`, then sentinels `[S_0]…`, then
//! coordinate tokens `v0=0 … v3=<bins-1>` (boxes, palettes, metadata), then class names, then
//! word pieces. BERT normaliser (lower case, no accent stripping), BERT pre-tokenizer, `##`
//! continuation prefix, no post-processor.
//!
//! [`TextTokenizer::load`] reads any such JSON (ml-4m's `text_tokenizer_4m_wordpiece_30k.json`,
//! the parity fixture's tiny one); [`TextTokenizer::train`] trains one on a corpus.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::MaskError;
use crate::span::SequenceTokens;

/// Options of [`TextTokenizer::train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTokenizerOptions {
    /// Target vocabulary size, special tokens included (ml-4m: 30,000).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Number of sentinels `[S_0]…` (ml-4m: 200).
    #[serde(default = "default_sentinels")]
    pub sentinels: usize,
    /// Coordinate bins: tokens `v0=0 … v3=<bins-1>` (ml-4m: 1000; 0 for none).
    #[serde(default = "default_coord_bins")]
    pub coord_bins: usize,
    /// Class names added as whole tokens (normalised, so the same word in a caption maps to
    /// them too), as ml-4m adds the COCO classes.
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Minimum pair frequency for a merge.
    #[serde(default)]
    pub min_frequency: u64,
}

fn default_vocab_size() -> usize {
    30_000
}
fn default_sentinels() -> usize {
    200
}
fn default_coord_bins() -> usize {
    1000
}

impl Default for TextTokenizerOptions {
    fn default() -> Self {
        Self {
            vocab_size: default_vocab_size(),
            sentinels: default_sentinels(),
            coord_bins: default_coord_bins(),
            class_names: Vec::new(),
            min_frequency: 0,
        }
    }
}

impl TextTokenizerOptions {
    /// Number of special tokens the options add before any word piece.
    pub fn special_count(&self) -> usize {
        4 + self.sentinels + 4 * self.coord_bins + self.class_names.len()
    }

    /// Checks that the vocabulary can hold the special tokens and span masking has sentinels.
    pub fn validate(&self) -> Result<(), MaskError> {
        if self.sentinels < 3 {
            return Err(MaskError::TokenizerOptions(format!(
                "sentinels = {}: span masking needs at least [S_0], [S_1], [S_2]",
                self.sentinels
            )));
        }
        if self.vocab_size < self.special_count() {
            return Err(MaskError::TokenizerOptions(format!(
                "vocab_size = {} is smaller than the {} special tokens",
                self.vocab_size,
                self.special_count()
            )));
        }
        if let Some(c) = self.class_names.iter().find(|c| c.trim().is_empty()) {
            return Err(MaskError::TokenizerOptions(format!(
                "empty class name {c:?}"
            )));
        }
        Ok(())
    }
}

/// A WordPiece tokenizer with ml-4m's special tokens.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    tokens: SequenceTokens,
    sos: u32,
    unk: u32,
}

impl TextTokenizer {
    /// Reads a tokenizer JSON file.
    pub fn load(path: &Path) -> Result<Self, MaskError> {
        let bytes = std::fs::read(path).map_err(|source| MaskError::TokenizerIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&bytes, &path.display().to_string())
    }

    /// Parses tokenizer JSON; `origin` names it in errors.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Self, MaskError> {
        let inner = Tokenizer::from_bytes(bytes).map_err(|source| MaskError::TokenizerParse {
            origin: origin.to_string(),
            source,
        })?;
        Self::from_tokenizer(inner, origin)
    }

    /// Trains a tokenizer on `corpus` (one text per item).
    pub fn train<I, S>(corpus: I, options: &TextTokenizerOptions) -> Result<Self, MaskError>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        options.validate()?;
        let special = special_tokens(options);
        let model = WordPiece::builder()
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(|source| MaskError::TokenizerText {
                what: "train",
                source,
            })?;
        let mut inner = bert_pipeline(model);
        let mut trainer = TrainerWrapper::WordPieceTrainer(
            WordPieceTrainer::builder()
                .vocab_size(options.vocab_size)
                .min_frequency(options.min_frequency)
                .show_progress(false)
                .continuing_subword_prefix("##".into())
                .special_tokens(special)
                .build(),
        );
        inner
            .train(&mut trainer, corpus)
            .map_err(|source| MaskError::TokenizerText {
                what: "train",
                source,
            })?;
        Self::from_tokenizer(inner, "<trained>")
    }

    /// A tokenizer whose word pieces are given: the special tokens of `options`, then every
    /// character of `words` (alone and as a `##` continuation), then the (normalised) words
    /// themselves, each group sorted. Unlike [`TextTokenizer::train`] — whose underlying trainer
    /// numbers its alphabet in hash-map order, so that two trainings on one corpus can differ — the
    /// result is a function of its inputs. For closed vocabularies (the synthetic dataset's
    /// captions), every word is one token.
    pub fn from_vocabulary(
        words: &[&str],
        options: &TextTokenizerOptions,
    ) -> Result<Self, MaskError> {
        options.validate()?;
        let special = special_tokens(options);
        let mut pieces = std::collections::BTreeSet::new();
        let mut whole = std::collections::BTreeSet::new();
        for w in words {
            let w = w.trim().to_lowercase();
            if w.is_empty() || w.chars().any(char::is_whitespace) {
                return Err(MaskError::TokenizerOptions(format!(
                    "{w:?} is not one word"
                )));
            }
            for c in w.chars() {
                pieces.insert(c.to_string());
                pieces.insert(format!("##{c}"));
            }
            whole.insert(w);
        }
        let mut vocab = serde_json::Map::new();
        for token in special
            .iter()
            .map(|t| t.content.clone())
            .chain(pieces)
            .chain(whole)
        {
            let id = vocab.len();
            vocab.entry(token).or_insert(id.into());
        }
        if vocab.len() > options.vocab_size {
            return Err(MaskError::TokenizerOptions(format!(
                "{} tokens exceed vocab_size {}",
                vocab.len(),
                options.vocab_size
            )));
        }
        // Built through its serialized form: the builder wants the crate's own hash-map type.
        let json = serde_json::json!({
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": vocab,
        })
        .to_string();
        let model: WordPiece =
            serde_json::from_str(&json).map_err(|e| MaskError::TokenizerText {
                what: "build",
                source: Box::new(e),
            })?;
        let mut inner = bert_pipeline(model);
        inner.add_special_tokens(&special);
        Self::from_tokenizer(inner, "<vocabulary>")
    }

    fn from_tokenizer(inner: Tokenizer, origin: &str) -> Result<Self, MaskError> {
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| MaskError::TokenizerLayout {
                    origin: origin.to_string(),
                    reason: format!("no {token} token"),
                })
        };
        let (pad, unk, sos, eos) = (id("[PAD]")?, id("[UNK]")?, id("[SOS]")?, id("[EOS]")?);
        let mut numbered: Vec<(usize, u32)> = inner
            .get_vocab(true)
            .into_iter()
            .filter_map(|(token, id)| {
                let k = token.strip_prefix("[S_")?.strip_suffix(']')?.parse().ok()?;
                Some((k, id))
            })
            .collect();
        numbered.sort_unstable();
        if let Some((i, (k, _))) = numbered.iter().enumerate().find(|(i, (k, _))| i != k) {
            return Err(MaskError::TokenizerLayout {
                origin: origin.to_string(),
                reason: format!("sentinels are not numbered 0, 1, 2, …: [S_{k}] at rank {i}"),
            });
        }
        if numbered.len() < 3 {
            return Err(MaskError::TokenizerLayout {
                origin: origin.to_string(),
                reason: format!(
                    "{} sentinels, span masking needs [S_0]..[S_2] at least",
                    numbered.len()
                ),
            });
        }
        Ok(Self {
            inner,
            tokens: SequenceTokens {
                pad,
                eos,
                sentinels: numbered.into_iter().map(|(_, id)| id).collect(),
            },
            sos,
            unk,
        })
    }

    /// Token ids of a text (no `[EOS]`: masking appends it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MaskError> {
        let encoding =
            self.inner
                .encode(text, false)
                .map_err(|source| MaskError::TokenizerText {
                    what: "encode",
                    source,
                })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of token ids (`skip_special`: drop `[PAD]`, sentinels, …).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, MaskError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|source| MaskError::TokenizerText {
                what: "decode",
                source,
            })
    }

    /// The token of one id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of one token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `[PAD]`, `[EOS]` and the sentinels, for the masker.
    pub fn sequence_tokens(&self) -> &SequenceTokens {
        &self.tokens
    }

    /// Id of `[SOS]`.
    pub fn sos(&self) -> u32 {
        self.sos
    }

    /// Id of `[UNK]`.
    pub fn unk(&self) -> u32 {
        self.unk
    }

    /// The tokenizer as HF `tokenizers` JSON.
    pub fn to_json(&self) -> Result<String, MaskError> {
        self.inner
            .to_string(true)
            .map_err(|source| MaskError::TokenizerText {
                what: "serialize",
                source,
            })
    }

    /// Writes the tokenizer JSON to `path`.
    pub fn save(&self, path: &Path) -> Result<(), MaskError> {
        std::fs::write(path, self.to_json()?).map_err(|source| MaskError::TokenizerIo {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `[PAD] [UNK] [SOS] [EOS]`, the sentinels, the coordinate tokens and the class names, in
/// ml-4m's order.
fn special_tokens(options: &TextTokenizerOptions) -> Vec<AddedToken> {
    let mut special: Vec<AddedToken> = ["[PAD]", "[UNK]", "[SOS]", "[EOS]"]
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    special.extend((0..options.sentinels).map(|i| {
        AddedToken::from(format!("[S_{i}]"), true)
            .single_word(true)
            .normalized(false)
    }));
    for axis in 0..4 {
        special.extend((0..options.coord_bins).map(|i| {
            AddedToken::from(format!("v{axis}={i}"), true)
                .single_word(true)
                .normalized(false)
        }));
    }
    special.extend(options.class_names.iter().map(|c| {
        AddedToken::from(c.clone(), true)
            .single_word(true)
            .normalized(true)
    }));
    special
}

/// ml-4m's pipeline around a WordPiece model: BERT normaliser (lower case, accents kept), BERT
/// pre-tokenizer, WordPiece decoder.
fn bert_pipeline(model: WordPiece) -> Tokenizer {
    let mut inner = Tokenizer::new(model);
    inner
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_decoder(Some(WordPieceDecoder::default()));
    inner
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> TextTokenizer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../model/tests/fixtures/parity-a/text_tokenizer.json");
        TextTokenizer::load(&path).unwrap()
    }

    #[test]
    fn loads_the_parity_fixture_with_ml4m_ids() {
        let t = fixture();
        let s = t.sequence_tokens();
        assert_eq!((s.pad, t.unk(), t.sos(), s.eos), (0, 1, 2, 3));
        assert_eq!(s.sentinels, (4..24).collect::<Vec<u32>>());
        assert_eq!(t.vocab_size(), 100);
        // config.json raw_samples[1]: "re lu to ko da" -> 70 53 82 47 29 (EOS appended by masking).
        assert_eq!(
            t.encode("re lu to ko da").unwrap(),
            vec![70, 53, 82, 47, 29]
        );
        assert_eq!(t.encode("Re LU").unwrap(), vec![70, 53], "lower-cased");
        assert_eq!(t.encode("[S_1] re").unwrap(), vec![5, 70]);
        assert_eq!(t.decode(&[70, 53, 5], true).unwrap(), "re lu");
    }

    #[test]
    fn trains_with_the_ml4m_layout() {
        let corpus = [
            "a large red sphere left of a small blue cube",
            "a small green cylinder right of a large yellow sphere",
            "a blue cube and a red cylinder",
        ];
        let options = TextTokenizerOptions {
            vocab_size: 400,
            sentinels: 20,
            coord_bins: 64,
            class_names: vec!["sphere".into(), "cube".into(), "cylinder".into()],
            min_frequency: 0,
        };
        let t = TextTokenizer::train(corpus.iter(), &options).unwrap();
        let s = t.sequence_tokens();
        assert_eq!((s.pad, t.unk(), t.sos(), s.eos), (0, 1, 2, 3));
        assert_eq!(s.sentinels, (4..24).collect::<Vec<u32>>());
        assert_eq!(t.token_to_id("v0=0"), Some(24));
        assert_eq!(t.token_to_id("v3=63"), Some(24 + 4 * 64 - 1));
        assert_eq!(t.token_to_id("sphere"), Some(24 + 256));
        let ids = t.encode("v0=12 v1=3 v2=40 v3=63 sphere").unwrap();
        assert_eq!(
            ids,
            vec![36, 24 + 64 + 3, 24 + 128 + 40, 24 + 192 + 63, 280]
        );
        let ids = t.encode("A large red Sphere").unwrap();
        assert!(!ids.contains(&t.unk()), "{ids:?}");
        // Class names are special tokens (as in ml-4m): kept only when specials are kept.
        assert_eq!(t.decode(&ids, false).unwrap(), "a large red sphere");
        assert_eq!(t.decode(&ids, true).unwrap(), "a large red");
        let back = TextTokenizer::from_json(t.to_json().unwrap().as_bytes(), "<json>").unwrap();
        let fixed =
            TextTokenizer::from_vocabulary(&["a", "large", "Red", "small", "left", "of"], &options)
                .unwrap();
        assert_eq!(
            fixed.to_json().unwrap(),
            TextTokenizer::from_vocabulary(&["of", "left", "small", "red", "large", "a"], &options)
                .unwrap()
                .to_json()
                .unwrap()
        );
        assert_eq!(fixed.sequence_tokens(), t.sequence_tokens());
        assert_eq!(fixed.token_to_id("sphere"), Some(280));
        let ids = fixed
            .encode("A large red sphere left of a smaller sphere")
            .unwrap();
        assert_eq!(
            fixed.decode(&ids, false).unwrap(),
            "a large red sphere left of a smaller sphere"
        );
        assert_eq!(
            ids.len(),
            11,
            "known words are one token each, others fall back to letters"
        );
        assert!(TextTokenizer::from_vocabulary(&["two words"], &options).is_err());
        assert_eq!(
            back.encode("a small cube").unwrap(),
            t.encode("a small cube").unwrap()
        );
        let err = TextTokenizer::train(
            corpus.iter(),
            &TextTokenizerOptions {
                vocab_size: 10,
                ..options
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("vocab_size"), "{err}");
    }

    #[test]
    fn rejects_tokenizers_without_the_layout() {
        assert!(TextTokenizer::from_json(b"{not json", "<bad>").is_err());
        let t = fixture();
        let json = t.to_json().unwrap().replace("[EOS]", "[END]");
        let err = TextTokenizer::from_json(json.as_bytes(), "<renamed>").unwrap_err();
        assert!(err.to_string().contains("[EOS]"), "{err}");
    }
}
