//! One ml-4m training step replayed from each vendored fixture (`model/tests/fixtures/parity-*`,
//! and the folder named by `FOURM_PARITY_FIXTURE`): token selection exactly, embeddings,
//! activations, logits and losses, every gradient norm and the listed full gradients, the listed
//! weights after one AdamW step. Every entry the fixture's config describes is checked; an entry
//! this test does not know fails it. The tolerances are all in [`Tol`].

mod fixture;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::tensor::{Device, Tensor};
use fixture::{Report, Tensors, batch, fixture_dir, load_model, param_values, read, vendored};
use fourm_model::optim::{AdamW, AdamWConfig, ParamLayout};
use fourm_model::params::ParamInfo;
use fourm_model::selection::ModalitySlots;
use fourm_model::{
    EncoderEmbedding, FourM, LossType, ModalityData, ModalityKind, Precision, StepOptions,
    sincos_1d,
};
use serde_json::Value;

/// Every tolerance of the comparison, `(atol, rtol)`: `|ours - ml4m| <= atol + rtol·|ml4m|`.
struct Tol;

impl Tol {
    /// Activations, embeddings, logits, losses (the fixtures' suggested port tolerances).
    const ACT: (f64, f64) = (1e-5, 1e-4);
    /// Gradients and their norms.
    const GRAD: (f64, f64) = (1e-6, 1e-3);
    /// Weights after one AdamW step.
    const ADAMW: (f64, f64) = (1e-6, 1e-5);
    /// Pixels and patches: copies of the input, exact up to the last float bit.
    const PIXELS: (f64, f64) = (1e-6, 0.0);
    /// A gradient element below this is float noise around an exact zero: its sign, and with it
    /// AdamW's first update (±lr whatever its size), is not determined. It is the gradients' own
    /// absolute tolerance, below which two gradients already count as equal.
    const GRAD_NOISE: f64 = Self::GRAD.0;
}

/// ml-4m's canonical name of a tied tensor (the name `named_parameters()` reports).
fn canonical(name: &str) -> String {
    let name = name.replace(".to_logits.", ".token_emb.");
    match name.strip_prefix("decoder_embeddings.") {
        Some(rest) if rest.ends_with(".mod_emb") => format!("encoder_embeddings.{rest}"),
        _ => name,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn parity_a() {
    replay(&vendored("parity-a"));
}

#[test]
fn parity_d() {
    replay(&vendored("parity-d"));
}

/// The fixture named by `FOURM_PARITY_FIXTURE`; without it, a check that every vendored
/// training-step fixture has its test above.
#[test]
fn parity_fixture_from_env() {
    if std::env::var_os("FOURM_PARITY_FIXTURE").is_some() {
        replay(&fixture_dir("FOURM_PARITY_FIXTURE", ""));
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let vendored: BTreeSet<String> = std::fs::read_dir(&root)
        .expect("fixtures folder")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("parity-"))
        .collect();
    let tested: BTreeSet<String> = ["parity-a", "parity-d"].map(String::from).into();
    assert_eq!(vendored, tested, "a vendored parity fixture has no test");
}

/// The square Linear weights a fixture records after the AdamW step are compared in ml-4m's
/// element order: the comparison fails on the untransposed values, which have the same shape.
#[test]
fn parity_catches_a_transposed_square_weight() {
    let dir = vendored("parity-d");
    let (_, _, model) = load_model(&dir, &Device::flex().autodiff());
    let weights = Tensors::read(&dir.join("weights.safetensors"));
    let name = "decoder.1.cross_attn.q.weight";
    let info = model
        .param_infos()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap();
    assert_eq!(info.shape[0], info.shape[1], "{name} is square");
    assert!(info.transposed);
    let burn_order = param_values(&model, name);
    let file = weights.values(name);
    let mut right = Report::default();
    right.close(name, &info.torch_order(&burn_order), &file, 0.0, 0.0);
    assert!(right.failures().is_empty(), "{:?}", right.failures());
    let mut wrong = Report::default();
    wrong.close(name, &burn_order, &file, Tol::ADAMW.0, Tol::ADAMW.1);
    assert_eq!(wrong.failures().len(), 1, "the transposed layout must fail");
}

/// Replays the fixture in `dir` and checks every entry it describes.
fn replay(dir: &Path) {
    let device = Device::flex().autodiff();
    let (config, mods, model) = load_model(dir, &device);

    let inputs = Tensors::read(&dir.join("inputs.safetensors"));
    let expected = Tensors::read(&dir.join("expected.safetensors"));
    let batch = batch(&inputs, &mods);
    let forward = &config["forward"];
    let loss = match forward["loss_type"].as_str().unwrap_or("mod") {
        "mod" => LossType::Mod,
        "token" => LossType::Token,
        other => panic!("loss type {other}"),
    };
    let options = |order: &Value| StepOptions {
        num_encoder_tokens: inputs.ints("num_encoder_tokens")[0] as usize,
        num_decoder_tokens: inputs.ints("num_decoder_tokens")[0] as usize,
        decoder_order: Some(strings(order)),
        loss,
        global_counts: None,
        precision: Precision::F32,
    };
    let out = model
        .forward(&batch, &options(&forward["decoder_modality_order"]))
        .expect("forward");
    let other = model
        .forward(
            &batch,
            &options(&forward["other_decoder_order_used_for_check"]),
        )
        .expect("forward");

    // Gradients, and one AdamW step with the fixture's hyper-parameters.
    let grads = out.loss.backward();
    let layout = ParamLayout::new(&model);
    let flat_grads = layout.flatten_grads(&model, &grads);
    let opt = &config["optimizer"];
    let betas = opt["betas"].as_array().expect("betas");
    let adamw_config = AdamWConfig {
        betas: (betas[0].as_f64().unwrap(), betas[1].as_f64().unwrap()),
        eps: opt["eps"].as_f64().unwrap(),
        weight_decay: opt["weight_decay"].as_f64().unwrap(),
    };
    let lr = opt["lr"].as_f64().unwrap();
    let mut adamw = AdamW::new(adamw_config, &layout, &device.clone().inner());
    let before = layout.flatten_params(&model);
    let updated = adamw.step(before.clone(), flat_grads.clone(), lr);

    let infos: BTreeMap<String, ParamInfo> = layout
        .entries()
        .iter()
        .map(|e| (e.info.name.clone(), e.info.clone()))
        .collect();
    let per_param = |flat: &Tensor<1>| -> BTreeMap<String, Vec<f64>> {
        layout
            .split(flat)
            .into_iter()
            .map(|(n, t)| (n, read(&t)))
            .collect()
    };
    let grad_values = per_param(&flat_grads);
    let before_values = per_param(&before);
    let updated_values = per_param(&updated);

    let mut r = Report::default();
    let plan_e = &out.encoder_plan;
    let plan_d = &out.decoder_plan;
    let described = config["tensors"]["expected.safetensors"]
        .as_object()
        .expect("expected tensors described");
    let mut seen_grad_norms = BTreeSet::new();
    for key in described.keys() {
        let exp_f = || expected.values(key);
        let exp_i = || expected.ints(key);
        let (kind, rest) = key.split_once('.').unwrap_or((key.as_str(), ""));
        match (kind, rest) {
            ("encoder_ids_keep", _) => r.equal(key, &plan_e.ids_keep, &exp_i()),
            ("encoder_mask", _) => r.equal(key, &plan_e.pad, &expected.bools(key)),
            ("encoder_mod_mask", _) => r.equal(key, &plan_e.mod_mask, &exp_i()),
            ("decoder_ids_keep", _) => r.equal(key, &plan_d.ids_keep, &exp_i()),
            ("decoder_mask", _) => r.equal(key, &plan_d.pad, &expected.bools(key)),
            ("decoder_target_ids", _) => r.equal(key, &plan_d.target_ids, &exp_i()),
            ("decoder_attention_mask", _) => {
                r.equal(key, &plan_d.attention_masked, &expected.bools(key))
            }
            ("decoder_mod_mask", _) => r.equal(key, &plan_d.mod_mask, &exp_i()),
            ("encoder_tokens", _) => act(&mut r, key, &read(&out.encoder_tokens), &exp_f()),
            ("encoder_emb", _) => act(&mut r, key, &read(&out.encoder_emb), &exp_f()),
            ("encoder_output", _) => act(&mut r, key, &read(&out.encoder_output), &exp_f()),
            ("decoder_context", _) => act(&mut r, key, &read(&out.context), &exp_f()),
            ("decoder_tokens", _) => act(&mut r, key, &read(&out.decoder_tokens), &exp_f()),
            ("decoder_emb", _) => act(&mut r, key, &read(&out.decoder_emb), &exp_f()),
            ("decoder_output", _) => act(&mut r, key, &read(&out.decoder_output), &exp_f()),
            ("embed", rest) => {
                check_embedding(&mut r, key, rest, &model, &batch, &device, &exp_f());
            }
            _ if kind.starts_with("sincos_1d_") => {
                let Some((rows, dim, first, last)) = sincos_key(kind) else {
                    r.equal(key, &["a sincos_1d key fourm cannot parse"], &["parsed"]);
                    continue;
                };
                let table = sincos_1d(rows, dim);
                let ours: Vec<f64> = table[first * dim..(last + 1) * dim]
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect();
                act(&mut r, key, &ours, &exp_f());
            }
            ("logits" | "targets" | "positions" | "loss", m)
                if out.modality_losses.iter().any(|l| l.modality == m) =>
            {
                let l = out
                    .modality_losses
                    .iter()
                    .find(|l| l.modality == m)
                    .unwrap();
                let slots = &plan_d
                    .per_modality
                    .iter()
                    .find(|s| mods.iter().nth(s.modality).unwrap().name == m)
                    .unwrap()
                    .slots;
                match kind {
                    "logits" => act(
                        &mut r,
                        key,
                        &l.logits.as_ref().map(read).unwrap_or_default(),
                        &exp_f(),
                    ),
                    "targets" => r.equal(key, &l.targets, &exp_i()),
                    "positions" => {
                        let pos: Vec<i64> = slots
                            .iter()
                            .flat_map(|s| [s / plan_d.slots as i64, s % plan_d.slots as i64])
                            .collect();
                        r.equal(key, &pos, &exp_i())
                    }
                    _ => act(&mut r, key, &read(&l.loss), &exp_f()),
                }
            }
            ("loss", "total") => act(&mut r, key, &read(&out.loss), &exp_f()),
            ("loss", "total_token") => {
                act(&mut r, key, &read(&out.total(LossType::Token)), &exp_f())
            }
            ("loss", "total_other_decoder_order") => act(&mut r, key, &read(&other.loss), &exp_f()),
            ("grad_norm_total", _) => {
                let norm = grad_values
                    .values()
                    .flatten()
                    .map(|g| g * g)
                    .sum::<f64>()
                    .sqrt();
                r.close(key, &[norm], &exp_f(), Tol::GRAD.0, Tol::GRAD.1)
            }
            ("grad_norm", name) => {
                let name = canonical(name);
                seen_grad_norms.insert(name.clone());
                match grad_values.get(&name) {
                    Some(g) => r.close(
                        key,
                        &[g.iter().map(|v| v * v).sum::<f64>().sqrt()],
                        &exp_f(),
                        Tol::GRAD.0,
                        Tol::GRAD.1,
                    ),
                    None => r.equal(
                        key,
                        &["not a trainable parameter of fourm's model"],
                        &["a parameter"],
                    ),
                }
            }
            ("grad", name) => {
                let name = canonical(name);
                let info = &infos[&name];
                r.close(
                    key,
                    &info.torch_order(&grad_values[&name]),
                    &exp_f(),
                    Tol::GRAD.0,
                    Tol::GRAD.1,
                )
            }
            ("after_adamw", name) => {
                let name = canonical(name);
                let info = &infos[&name];
                let step = AdamwStep {
                    before: info.torch_order(&before_values[&name]),
                    grad: info.torch_order(&grad_values[&name]),
                    lr,
                    weight_decay: adamw_config.weight_decay,
                };
                step.check(
                    &mut r,
                    key,
                    &info.torch_order(&updated_values[&name]),
                    &exp_f(),
                );
            }
            _ => r.equal(
                key,
                &["described by the fixture but not checked"],
                &["checked"],
            ),
        }
    }
    // The trainable parameters are exactly ml-4m's (one gradient norm per parameter).
    let ours: BTreeSet<String> = infos.keys().cloned().collect();
    r.equal(
        "trainable parameter names",
        &ours.iter().collect::<Vec<_>>(),
        &seen_grad_norms.iter().collect::<Vec<_>>(),
    );
    // ml-4m's weight-decay groups.
    for (group, decays) in [("decay", true), ("no_decay", false)] {
        let names = strings(&opt["param_groups"][group]);
        let wrong: Vec<&String> = names
            .iter()
            .filter(|n| infos.get(*n).map(ParamInfo::decays) != Some(decays))
            .collect();
        r.equal(
            &format!("param group {group}"),
            &wrong,
            &Vec::<&String>::new(),
        );
    }
    r.finish(&format!("parity fixture {}", dir.display()));
}

fn act(r: &mut Report, key: &str, ours: &[f64], expected: &[f64]) {
    r.close(key, ours, expected, Tol::ACT.0, Tol::ACT.1);
}

/// `embed.<modality>.<what>`: the encoder embedding of a pixel modality before token selection.
/// `patches_sample0` are the patchified pixels of the first sample (channel last inside a patch),
/// `x` their projection for the whole batch, `emb` the 2-D sin-cos plus modality embedding.
fn check_embedding(
    r: &mut Report,
    key: &str,
    rest: &str,
    model: &FourM,
    batch: &fourm_model::Batch,
    device: &Device,
    expected: &[f64],
) {
    let Some((name, what)) = rest.rsplit_once('.') else {
        return r.equal(key, &["an embed key fourm cannot parse"], &["parsed"]);
    };
    let Some((index, spec)) = model
        .modalities()
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name)
    else {
        return r.equal(key, &["a modality of the model"], &[name]);
    };
    let (ModalityKind::ImagePixels { grid, .. }, Some(data)) =
        (spec.kind, batch.modalities.get(name))
    else {
        return r.equal(key, &["a pixel modality with a batch"], &[name]);
    };
    let ModalityData::Pixels(px) = &data.data else {
        return r.equal(key, &["pixels in the batch"], &[name]);
    };
    let per_sample = grid[0] * grid[1];
    let every: Vec<usize> = (0..batch.batch_size * per_sample).collect();
    let embedding: &EncoderEmbedding = &model.encoder_embeddings[index];
    let slots = ModalitySlots {
        modality: index,
        positions: every.clone(),
        pos_rows: every.iter().map(|&p| (p % per_sample) as i64).collect(),
        slots: Vec::new(),
        input_ids: Vec::new(),
        targets: Vec::new(),
    };
    match what {
        "patches_sample0" => {
            let patches: Vec<f64> = EncoderEmbedding::patches(spec, px, &every[..per_sample])
                .into_iter()
                .map(f64::from)
                .collect();
            r.close(key, &patches, expected, Tol::PIXELS.0, Tol::PIXELS.1);
        }
        "x" => {
            let (x, _) = embedding.rows(spec, data, &slots, device);
            act(r, key, &read(&x), expected);
        }
        "emb" => {
            let (_, emb) = embedding.rows(spec, data, &slots, device);
            let emb = emb.narrow(0, 0, per_sample);
            act(r, key, &read(&emb), expected);
        }
        _ => r.equal(key, &["an embed entry fourm does not know"], &[what]),
    }
}

/// `sincos_1d_<rows>x<dim>_rows<first>_<last>` → (rows, dim, first, last).
fn sincos_key(kind: &str) -> Option<(usize, usize, usize, usize)> {
    let rest = kind.strip_prefix("sincos_1d_")?;
    let (size, range) = rest.split_once("_rows")?;
    let (rows, dim) = size.split_once('x')?;
    let (first, last) = range.split_once('_')?;
    Some((
        rows.parse().ok()?,
        dim.parse().ok()?,
        first.parse().ok()?,
        last.parse().ok()?,
    ))
}

/// One AdamW step of a parameter, in ml-4m's element order.
struct AdamwStep {
    before: Vec<f64>,
    grad: Vec<f64>,
    lr: f64,
    weight_decay: f64,
}

impl AdamwStep {
    /// Elements with a determined gradient must match tightly. Where the gradient is float noise
    /// around an exact zero (the key part of a `qkv` bias: softmax ignores a per-query constant),
    /// AdamW's first step normalises the noise to a full step of either sign, so ml-4m and fourm
    /// may step apart; there both results must be updates AdamW can make,
    /// `|p' - p| <= lr·(1 + weight_decay·|p|)`, and they may differ by `2·lr`.
    fn check(&self, r: &mut Report, key: &str, ours: &[f64], expected: &[f64]) {
        let is_noise: Vec<bool> = self
            .grad
            .iter()
            .map(|g| g.abs() < Tol::GRAD_NOISE)
            .collect();
        let determined = |v: &[f64]| -> Vec<f64> {
            v.iter()
                .zip(&is_noise)
                .filter(|(_, noise)| !**noise)
                .map(|(x, _)| *x)
                .collect()
        };
        r.close(
            key,
            &determined(ours),
            &determined(expected),
            Tol::ADAMW.0,
            Tol::ADAMW.1,
        );
        let noise: Vec<usize> = (0..is_noise.len()).filter(|&i| is_noise[i]).collect();
        if noise.is_empty() {
            return;
        }
        let bound = |i: usize| self.lr * (1.0 + self.weight_decay * self.before[i].abs());
        let outside: Vec<String> = noise
            .iter()
            .filter(|&&i| {
                (ours[i] - self.before[i]).abs() > bound(i) * (1.0 + 1e-6)
                    || (expected[i] - self.before[i]).abs() > bound(i) * (1.0 + 1e-6)
                    || (ours[i] - expected[i]).abs() > 2.0 * self.lr * (1.0 + 1e-6)
            })
            .map(|&i| {
                format!(
                    "{key}[{i}]: {} vs {} from {}",
                    ours[i], expected[i], self.before[i]
                )
            })
            .collect();
        r.equal(
            &format!("{key} (elements with a zero gradient: AdamW's bound)"),
            &outside,
            &Vec::<String>::new(),
        );
    }
}
