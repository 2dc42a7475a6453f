//! Masking properties over every shipped alphas config (budgets respected, inputs and targets
//! disjoint, valid layouts, determinism), and the structure of ml-4m's own masking output in
//! `model/tests/fixtures/parity-a/inputs.safetensors` (vendored from ml-4m) against ours.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fourm_masking::{
    AlphasConfig, Budget, MaskKind, MaskedModality, MaskedSample, MaskedTensor, Masker,
    MaskingConfig, ModalityInput, ModalityMasking, Role, SequenceTokens, TextTokenizer, TokenRange,
};
use proptest::prelude::*;
use safetensors::{Dtype, SafeTensors};

fn alphas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("alphas")
}

fn shipped_alphas() -> Vec<(String, AlphasConfig)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(alphas_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let c = AlphasConfig::load(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), c)
        })
        .collect()
}

/// ml-4m's special-token layout: `[PAD]=0 [EOS]=3 [S_0..S_199]=4..203`.
fn ml4m_tokens() -> SequenceTokens {
    SequenceTokens {
        pad: 0,
        eos: 3,
        sentinels: (4..204).collect(),
    }
}

/// The modality shapes ml-4m gives each name (224 px / patch 16 → 14×14, 448 → 28×28,
/// sequences 256) and fourm's synthetic dataset (64 px / patch 8 → 8×8).
fn modality_for(name: &str) -> ModalityMasking {
    let grid = |px: usize| if px == 64 { 64 } else { (px / 16) * (px / 16) };
    let px = name
        .rsplit_once('@')
        .map(|(_, px)| px.parse().unwrap())
        .unwrap_or(0);
    match name {
        "caption" | "det" => ModalityMasking {
            kind: MaskKind::Sequence,
            max_tokens: 256,
            min_tokens: 0,
            role: Role::Both,
        },
        n if n.starts_with("rgb@") => ModalityMasking {
            kind: MaskKind::Image,
            max_tokens: grid(px),
            min_tokens: 0,
            role: Role::Input,
        },
        _ => ModalityMasking {
            kind: MaskKind::Image,
            max_tokens: grid(px),
            min_tokens: 0,
            role: Role::Both,
        },
    }
}

fn config_for(
    alphas: &AlphasConfig,
    inputs: TokenRange,
    targets: Option<TokenRange>,
) -> MaskingConfig {
    MaskingConfig {
        modalities: alphas
            .modalities
            .keys()
            .map(|n| (n.clone(), modality_for(n)))
            .collect(),
        input_tokens: inputs,
        target_tokens: targets,
        max_tries: 100,
    }
}

/// A sample for a config: random-looking grids, a text of `text_len` ids per sequence.
fn sample_for(
    config: &MaskingConfig,
    text_len: usize,
    salt: u64,
) -> BTreeMap<String, ModalityInput> {
    config
        .modalities
        .iter()
        .map(|(name, m)| {
            let data = match (m.kind, m.role) {
                (MaskKind::Image, Role::Input) => {
                    ModalityInput::Pixels(vec![0.5; 3 * 16 * 16 * m.max_tokens])
                }
                (MaskKind::Image, _) => ModalityInput::ImageTokens(
                    (0..m.max_tokens as i64)
                        .map(|i| (i * 7 + salt as i64) % 1000)
                        .collect(),
                ),
                (MaskKind::Sequence, _) => ModalityInput::Sequence(
                    (0..text_len as u32)
                        .map(|i| 300 + (i * 13 + salt as u32) % 500)
                        .collect(),
                ),
            };
            (name.clone(), data)
        })
        .collect()
}

/// Checks one masked modality; returns (inputs, targets).
fn check_modality(
    name: &str,
    m: &MaskedModality,
    spec: &ModalityMasking,
    budget: Budget,
    tokens: &SequenceTokens,
    source: Option<&[u32]>,
) -> (usize, usize) {
    let len = match spec.kind {
        MaskKind::Image => spec.max_tokens,
        MaskKind::Sequence => 2 * (spec.max_tokens + 1),
    };
    assert_eq!(m.input_mask.len(), len, "{name}: input_mask length");
    assert_eq!(m.target_mask.len(), len, "{name}: target_mask length");
    assert_eq!(
        m.decoder_attention_mask.len(),
        len,
        "{name}: attention length"
    );
    let (inputs, targets) = (m.num_inputs(), m.num_targets());
    // Disjoint inputs and targets (for sequences: different tensor positions).
    for (i, (a, b)) in m.input_mask.iter().zip(&m.target_mask).enumerate() {
        assert!(*a || *b, "{name}: position {i} is both input and target");
    }
    if spec.role == Role::Input {
        assert_eq!(targets, 0, "{name}: input-only modality has targets");
    }
    match spec.kind {
        MaskKind::Image => {
            assert_eq!(
                inputs,
                budget.input.min(len),
                "{name}: image inputs = budget"
            );
            match budget.target {
                Some(t) => assert_eq!(targets, t, "{name}: image targets = budget"),
                None => assert_eq!(inputs + targets, len, "{name}: targets = complement"),
            }
            assert!(
                budget.input + budget.target.unwrap_or(0) <= len,
                "{name}: img cap"
            );
            let nonzero: Vec<(usize, i32)> = m
                .decoder_attention_mask
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, v)| *v != 0)
                .collect();
            if targets == 0 {
                assert!(nonzero.is_empty(), "{name}");
            } else {
                let first = m.target_mask.iter().position(|x| !x).unwrap();
                assert_eq!(
                    nonzero,
                    vec![(first, targets as i32)],
                    "{name}: compressed mask"
                );
            }
        }
        MaskKind::Sequence => {
            let t = m.tensor.tokens();
            assert_eq!(t.len(), len);
            assert!(
                inputs <= budget.input,
                "{name}: {inputs} inputs > budget {}",
                budget.input
            );
            assert!(budget.input <= spec.max_tokens);
            if let Some(b) = budget.target {
                assert!(targets <= b, "{name}: {targets} targets > budget {b}");
                assert!(b <= spec.max_tokens);
            }
            // Input is a prefix; target is contiguous from the input budget.
            assert!(
                m.input_mask[..inputs].iter().all(|x| !x),
                "{name}: input prefix"
            );
            if targets > 0 {
                let start = budget.input;
                assert!(
                    m.target_mask[start..start + targets].iter().all(|x| !x),
                    "{name}"
                );
                assert!(
                    tokens.is_sentinel(t[start] as u32),
                    "{name}: target starts with a sentinel"
                );
            }
            for (i, &id) in t.iter().enumerate() {
                let is_target = !m.target_mask[i];
                assert_eq!(
                    m.decoder_attention_mask[i],
                    i32::from(is_target),
                    "{name}: causal 1s"
                );
                if m.input_mask[i] && m.target_mask[i] {
                    assert_eq!(id, i64::from(tokens.pad), "{name}: padding at {i}");
                }
            }
            // Sentinels are numbered 1, 2, … in the input, and [S_0] is never used.
            let sentinel_k = |id: i64| tokens.sentinels.iter().position(|&s| i64::from(s) == id);
            let ks: Vec<usize> = t[..inputs]
                .iter()
                .filter_map(|&id| sentinel_k(id))
                .collect();
            assert_eq!(
                ks,
                (1..=ks.len()).collect::<Vec<_>>(),
                "{name}: input sentinels"
            );
            let target = &t[budget.input..budget.input + targets];
            let tk: Vec<usize> = target.iter().filter_map(|&id| sentinel_k(id)).collect();
            assert!(
                tk.windows(2).all(|w| w[1] == w[0] + 1),
                "{name}: target sentinels {tk:?}"
            );
            assert!(!ks.contains(&0) && !tk.contains(&0));
            // An untruncated target merges with the input back into the source (+ EOS). An
            // empty input (budget 0) stands for the whole text masked: `[S_1]`.
            let input: Vec<i64> = if inputs == 0 {
                vec![i64::from(tokens.sentinels[1])]
            } else {
                t[..inputs].to_vec()
            };
            let spans = input.iter().filter(|&&id| sentinel_k(id).is_some()).count();
            if let (Some(src), Some(&1)) = (source, tk.first())
                && tk.len() == spans + 1
                && target.last().and_then(|&id| sentinel_k(id)) == Some(spans + 1)
            {
                let mut merged = Vec::new();
                for &id in &input {
                    match sentinel_k(id) {
                        Some(k) => {
                            let at = target
                                .iter()
                                .position(|&x| sentinel_k(x) == Some(k))
                                .unwrap();
                            merged.extend(
                                target[at + 1..]
                                    .iter()
                                    .take_while(|x| sentinel_k(**x).is_none()),
                            );
                        }
                        None => merged.push(id),
                    }
                }
                let mut expected: Vec<i64> = src.iter().map(|&x| i64::from(x)).collect();
                expected.push(i64::from(tokens.eos));
                expected.truncate(spec.max_tokens);
                assert_eq!(
                    merged, expected,
                    "{name}: input + target reassemble the text"
                );
            }
        }
    }
    (inputs, targets)
}

fn check_sample(
    s: &MaskedSample,
    config: &MaskingConfig,
    tokens: &SequenceTokens,
    sample: &BTreeMap<String, ModalityInput>,
) {
    assert_eq!(
        s.modalities.keys().collect::<Vec<_>>(),
        config.modalities.keys().collect::<Vec<_>>(),
        "sorted modality order"
    );
    let (mut in_budget, mut tgt_budget) = (0, 0);
    for (name, m) in &s.modalities {
        let spec = &config.modalities[name];
        let budget = s.budgets[name];
        let source = match &sample[name] {
            ModalityInput::Sequence(ids) => Some(ids.as_slice()),
            _ => None,
        };
        check_modality(name, m, spec, budget, tokens, source);
        in_budget += budget.input;
        tgt_budget += budget.target.unwrap_or(0);
        if let (MaskedTensor::Tokens(t), ModalityInput::ImageTokens(src)) =
            (&m.tensor, &sample[name])
        {
            assert_eq!(t, src, "{name}: image tokens pass through");
        }
    }
    assert!(
        in_budget <= config.input_tokens.max,
        "total input budget {in_budget}"
    );
    if let Some(r) = config.target_tokens {
        assert!(tgt_budget <= r.max, "total target budget {tgt_budget}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_shipped_config_masks_validly(
        which in 0usize..64,
        seed in any::<u64>(),
        min_in in 1usize..300,
        extra_in in 0usize..100,
        targets in proptest::option::of((0usize..300, 0usize..100)),
        text_len in 0usize..400,
    ) {
        let all = shipped_alphas();
        let (file, alphas) = &all[which % all.len()];
        let inputs = TokenRange { min: min_in, max: min_in + extra_in };
        let targets = targets.map(|(min, extra)| TokenRange { min, max: min + extra });
        let config = config_for(alphas, inputs, targets);
        let masker = Masker::new(config.clone(), alphas, ml4m_tokens())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let sample = sample_for(&config, text_len, seed % 97);
        let masked = masker.mask(&sample, seed).unwrap_or_else(|e| panic!("{file}: {e}"));
        prop_assert!(masked.component < alphas.components());
        check_sample(&masked, &config, &ml4m_tokens(), &sample);
        prop_assert_eq!(&masked, &masker.mask(&sample, seed).unwrap(), "deterministic");
    }
}

#[test]
fn shipped_yaml_and_toml_configs_agree() {
    let all: BTreeMap<String, AlphasConfig> = shipped_alphas().into_iter().collect();
    assert!(all.len() >= 10, "{:?}", all.keys());
    for (file, yaml) in all.iter().filter(|(f, _)| f.ends_with(".yaml")) {
        let toml = &all[&file.replace(".yaml", ".toml")];
        assert_eq!(yaml, toml, "{file}");
    }
    let mod7 = &all["mix_mod7_all2all_rgb2all_a0.5.yaml"];
    assert_eq!(mod7.components(), 2);
    assert_eq!(mod7.modalities["rgb@224"].input_alphas, vec![1000.0, 0.5]);
    let capbias = &all["mix_mod7_all2allmix_rgb2all_capbias.yaml"];
    assert_eq!(capbias.sampling_weights.as_ref().map(Vec::len), Some(6));
}

#[test]
fn mixture_components_follow_their_alphas() {
    // rgb2all (component 0) gives the whole input budget to raw RGB; all2all spreads it.
    let alphas =
        AlphasConfig::load(&alphas_dir().join("mix_mod7_all2all_rgb2all_a0.5.yaml")).unwrap();
    let config = config_for(
        &alphas,
        TokenRange::fixed(128),
        Some(TokenRange::fixed(128)),
    );
    let masker = Masker::new(config.clone(), &alphas, ml4m_tokens()).unwrap();
    let sample = sample_for(&config, 20, 1);
    let mut seen = [0; 2];
    for seed in 0..200 {
        let s = masker.mask(&sample, seed).unwrap();
        seen[s.component] += 1;
        if s.component == 0 {
            assert_eq!(s.budgets["rgb@224"].input, 128, "rgb2all");
        }
        assert_eq!(s.budgets["rgb@224"].target, Some(0));
    }
    assert!(seen[0] > 60 && seen[1] > 60, "uniform components: {seen:?}");
}

// ---- parity-a: ml-4m's own masking output ----

fn parity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/parity-a")
}

struct Row {
    shape: Vec<usize>,
    dtype: Dtype,
    values: Vec<i64>,
}

fn read_tensor(st: &SafeTensors<'_>, name: &str) -> Row {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let data = t.data();
    let values = match t.dtype() {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Dtype::BOOL => data.iter().map(|&b| i64::from(b)).collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    Row {
        shape: t.shape().to_vec(),
        dtype: t.dtype(),
        values,
    }
}

#[test]
fn structure_matches_ml4m_parity_fixture() {
    let dir = parity_dir();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let tokenizer = TextTokenizer::load(&dir.join("text_tokenizer.json")).unwrap();
    let tokens = tokenizer.sequence_tokens().clone();
    assert_eq!(
        config["text_tokenizer"]["sentinel_to_id"]["1"].as_u64(),
        Some(u64::from(tokens.sentinels[1]))
    );
    let range = |key: &str| {
        let r = &config["masking"][key];
        TokenRange {
            min: r[0].as_u64().unwrap() as usize,
            max: r[1].as_u64().unwrap() as usize,
        }
    };
    let mut modalities = BTreeMap::new();
    for (name, info) in config["modalities"].as_object().unwrap() {
        let kind = match info["type"].as_str().unwrap() {
            "img" => MaskKind::Image,
            "seq" => MaskKind::Sequence,
            t => panic!("type {t}"),
        };
        let spec = ModalityMasking {
            kind,
            max_tokens: info["max_tokens"].as_u64().unwrap() as usize,
            min_tokens: 0,
            role: Role::Both,
        };
        modalities.insert(name.clone(), spec);
    }
    let mask_config = MaskingConfig {
        modalities,
        input_tokens: range("input_tokens_range"),
        target_tokens: Some(range("target_tokens_range")),
        max_tries: 100,
    };
    let names: Vec<&str> = config["modalities"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let alphas = AlphasConfig::single(&names, 1.0, &names, 1.0).unwrap();
    let masker = Masker::new(mask_config.clone(), &alphas, tokens.clone()).unwrap();

    let bytes = std::fs::read(dir.join("inputs.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let batch = config["batch_size"].as_u64().unwrap() as usize;
    let budgets = config["masking"]["sampled_budgets_per_sample"]
        .as_array()
        .unwrap();
    let raw = config["raw_samples"].as_array().unwrap();
    for b in 0..batch {
        // The fixture's text, without the EOS masking appends.
        let mut caption_ids: Vec<u32> = raw[b]["caption_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            caption_ids.pop(),
            Some(tokens.eos),
            "fixture captions end with [EOS]"
        );
        assert_eq!(
            tokenizer
                .encode(raw[b]["caption"].as_str().unwrap())
                .unwrap(),
            caption_ids
        );
        let sample_budgets: Vec<Budget> = (0..names.len())
            .map(|i| Budget {
                input: budgets[b]["input"][i].as_u64().unwrap() as usize,
                target: Some(budgets[b]["target"][i].as_u64().unwrap() as usize),
            })
            .collect();
        let mut sample = BTreeMap::new();
        for name in &names {
            let tensor = read_tensor(&st, &format!("{name}.tensor"));
            let len = tensor.shape[1];
            let data = match mask_config.modalities[*name].kind {
                MaskKind::Image => {
                    ModalityInput::ImageTokens(tensor.values[b * len..(b + 1) * len].to_vec())
                }
                MaskKind::Sequence => ModalityInput::Sequence(caption_ids.clone()),
            };
            sample.insert(name.to_string(), data);
        }
        let ours = masker
            .mask_with_budgets(&sample, 0, &sample_budgets, b as u64)
            .unwrap();
        check_sample(&ours, &mask_config, &tokens, &sample);
        for (i, name) in names.iter().enumerate() {
            let spec = &mask_config.modalities[*name];
            let theirs_row = |field: &str| {
                let t = read_tensor(&st, &format!("{name}.{field}"));
                assert_eq!(t.shape.len(), 2, "{name}.{field}");
                assert_eq!(t.shape[0], batch);
                let len = t.shape[1];
                (t.dtype, len, t.values[b * len..(b + 1) * len].to_vec())
            };
            let (tensor_dtype, len, tensor) = theirs_row("tensor");
            let (_, _, input_mask) = theirs_row("input_mask");
            let (_, _, target_mask) = theirs_row("target_mask");
            let (attention_dtype, _, attention) = theirs_row("decoder_attention_mask");
            assert_eq!(attention_dtype, Dtype::I32, "{name}");
            assert_eq!(
                tensor_dtype,
                if spec.kind == MaskKind::Image {
                    Dtype::I64
                } else {
                    Dtype::I32
                },
                "{name}"
            );
            let theirs = MaskedModality {
                tensor: MaskedTensor::Tokens(tensor),
                input_mask: input_mask.iter().map(|&v| v != 0).collect(),
                target_mask: target_mask.iter().map(|&v| v != 0).collect(),
                decoder_attention_mask: attention.iter().map(|&v| v as i32).collect(),
            };
            // ml-4m's row passes the same structural checks as ours, with its recorded budgets.
            let source = match &sample[*name] {
                ModalityInput::Sequence(ids) => Some(ids.as_slice()),
                _ => None,
            };
            let counts = check_modality(name, &theirs, spec, sample_budgets[i], &tokens, source);
            let mine = &ours.modalities[*name];
            assert_eq!(mine.len(), len, "{name}: same row length");
            assert_eq!(mine.tensor.len(), len, "{name}: same tensor length");
            if spec.kind == MaskKind::Image {
                assert_eq!(
                    (mine.num_inputs(), mine.num_targets()),
                    counts,
                    "{name}: same counts"
                );
            }
        }
    }
}
