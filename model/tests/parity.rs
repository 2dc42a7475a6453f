//! One ml-4m training step replayed from a fixture (`../shared/fixtures/parity-a`, or the folder
//! named by `FOURM_PARITY_FIXTURE`): token selection exactly, activations, logits and losses
//! within atol 1e-5 / rtol 1e-4, every gradient norm and the listed full gradients within
//! rtol 1e-3, the listed weights after one AdamW step. Every entry that the fixture's config
//! describes is checked; an entry this test does not know fails it.

mod fixture;

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::Device;
use fixture::{Report, Tensors, batch, fixture_dir, modalities, model_config, read, read_config};
use fourm_model::optim::{AdamW, AdamWConfig, ParamLayout};
use fourm_model::params::ParamInfo;
use fourm_model::weights::load_ml4m;
use fourm_model::{LossType, StepOptions};
use serde_json::Value;

const ACT: (f64, f64) = (1e-5, 1e-4);
const GRAD: (f64, f64) = (1e-6, 1e-3);
const ADAMW: (f64, f64) = (1e-6, 1e-5);

/// ml-4m's canonical name of a tied tensor (the name `named_parameters()` reports).
fn canonical(name: &str) -> String {
    let name = name.replace(".to_logits.", ".token_emb.");
    match name.strip_prefix("decoder_embeddings.") {
        Some(rest) if rest.ends_with(".mod_emb") => format!("encoder_embeddings.{rest}"),
        _ => name,
    }
}

/// Values of a parameter-shaped tensor in torch's layout.
fn torch_layout(info: &ParamInfo, values: Vec<f64>) -> Vec<f64> {
    if info.shape == info.torch_shape {
        return values;
    }
    let (rows, cols) = (info.shape[0], info.shape[1]);
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| (r, c)))
        .map(|(r, c)| values[r * cols + c])
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn parity_training_step() {
    let dir = fixture_dir("FOURM_PARITY_FIXTURE", "parity-a");
    let config = read_config(&dir);
    let mods = modalities(&config);
    let device = Device::flex().autodiff();
    let mut model = model_config(&config)
        .init(&mods, 0, &device)
        .expect("valid fixture model");
    load_ml4m(&mut model, &dir.join("weights.safetensors")).expect("ml-4m weights load");

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
    let mut adamw = AdamW::new(adamw_config, &layout, &device.clone().inner());
    let updated = adamw.step(
        layout.flatten_params(&model),
        flat_grads.clone(),
        opt["lr"].as_f64().unwrap(),
    );

    let infos: BTreeMap<String, ParamInfo> = layout
        .entries()
        .iter()
        .map(|e| (e.info.name.clone(), e.info.clone()))
        .collect();
    let per_param = |flat: &burn::tensor::Tensor<1>| -> BTreeMap<String, Vec<f64>> {
        layout
            .split(flat)
            .into_iter()
            .map(|(n, t)| (n, read(&t)))
            .collect()
    };
    let grad_values = per_param(&flat_grads);
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
            ("encoder_tokens", _) => {
                r.close(key, &read(&out.encoder_tokens), &exp_f(), ACT.0, ACT.1)
            }
            ("encoder_emb", _) => r.close(key, &read(&out.encoder_emb), &exp_f(), ACT.0, ACT.1),
            ("encoder_output", _) => {
                r.close(key, &read(&out.encoder_output), &exp_f(), ACT.0, ACT.1)
            }
            ("decoder_context", _) => r.close(key, &read(&out.context), &exp_f(), ACT.0, ACT.1),
            ("decoder_tokens", _) => {
                r.close(key, &read(&out.decoder_tokens), &exp_f(), ACT.0, ACT.1)
            }
            ("decoder_emb", _) => r.close(key, &read(&out.decoder_emb), &exp_f(), ACT.0, ACT.1),
            ("decoder_output", _) => {
                r.close(key, &read(&out.decoder_output), &exp_f(), ACT.0, ACT.1)
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
                    "logits" => r.close(
                        key,
                        &l.logits.as_ref().map(read).unwrap_or_default(),
                        &exp_f(),
                        ACT.0,
                        ACT.1,
                    ),
                    "targets" => r.equal(key, &l.targets, &exp_i()),
                    "positions" => {
                        let pos: Vec<i64> = slots
                            .iter()
                            .flat_map(|s| [s / plan_d.slots as i64, s % plan_d.slots as i64])
                            .collect();
                        r.equal(key, &pos, &exp_i())
                    }
                    _ => r.close(key, &read(&l.loss), &exp_f(), ACT.0, ACT.1),
                }
            }
            ("loss", "total") => r.close(key, &read(&out.loss), &exp_f(), ACT.0, ACT.1),
            ("loss", "total_token") => r.close(
                key,
                &read(&out.total(LossType::Token)),
                &exp_f(),
                ACT.0,
                ACT.1,
            ),
            ("loss", "total_other_decoder_order") => {
                r.close(key, &read(&other.loss), &exp_f(), ACT.0, ACT.1)
            }
            ("grad_norm_total", _) => {
                let norm = grad_values
                    .values()
                    .flatten()
                    .map(|g| g * g)
                    .sum::<f64>()
                    .sqrt();
                r.close(key, &[norm], &exp_f(), GRAD.0, GRAD.1)
            }
            ("grad_norm", name) => {
                let name = canonical(name);
                seen_grad_norms.insert(name.clone());
                match grad_values.get(&name) {
                    Some(g) => r.close(
                        key,
                        &[g.iter().map(|v| v * v).sum::<f64>().sqrt()],
                        &exp_f(),
                        GRAD.0,
                        GRAD.1,
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
                    &torch_layout(info, grad_values[&name].clone()),
                    &exp_f(),
                    GRAD.0,
                    GRAD.1,
                )
            }
            ("after_adamw", name) => {
                let name = canonical(name);
                let info = &infos[&name];
                r.close(
                    key,
                    &torch_layout(info, updated_values[&name].clone()),
                    &exp_f(),
                    ADAMW.0,
                    ADAMW.1,
                )
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
