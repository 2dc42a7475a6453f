//! ml-4m state dicts: a fixture written by ml-4m loads and is written back byte-identical under
//! the same names (parameters, buffers and both names of tied tensors); fourm's own files round
//! trip losslessly for every architecture variant; bad files give errors naming the entry.

mod fixture;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Device;
use fixture::{Tensors, fixture_dir, modalities, model_config, param_values, read, read_config};
use fourm_model::optim::ParamLayout;
use fourm_model::weights::{
    load_ml4m, load_ml4m_bytes, read_meta, save_ml4m, to_safetensors_bytes,
};
use fourm_model::{ArchVariant, FourM, FourMConfig, Modalities, ModalitySpec, ModelError};
use safetensors::SafeTensors;

fn fixture_model() -> (FourM, std::path::PathBuf) {
    let dir = fixture_dir("FOURM_PARITY_FIXTURE", "parity-a");
    let config = read_config(&dir);
    let mut model = model_config(&config)
        .init(&modalities(&config), 7, &Device::flex())
        .unwrap();
    let weights = dir.join("weights.safetensors");
    load_ml4m(&mut model, &weights).expect("fixture weights load");
    (model, weights)
}

/// name -> (dtype, shape, bytes)
fn entries(bytes: &[u8]) -> HashMap<String, (String, Vec<usize>, Vec<u8>)> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

#[test]
fn ml4m_state_dict_round_trips_byte_identical() {
    let (model, weights) = fixture_model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    save_ml4m(&model, &out).unwrap();
    let original = entries(&std::fs::read(&weights).unwrap());
    let saved = entries(&std::fs::read(&out).unwrap());
    let mut missing: Vec<_> = original
        .keys()
        .filter(|k| !saved.contains_key(*k))
        .collect();
    let mut extra: Vec<_> = saved
        .keys()
        .filter(|k| !original.contains_key(*k))
        .collect();
    missing.sort();
    extra.sort();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (name, entry) in &original {
        assert_eq!(
            &saved[name], entry,
            "entry {name} differs after a round trip"
        );
    }
    let meta = read_meta(&std::fs::read(&out).unwrap())
        .unwrap()
        .expect("fourm metadata");
    assert_eq!(meta.modalities, *model.modalities());
}

fn all_params(model: &FourM) -> Vec<(String, Vec<f64>)> {
    let layout = ParamLayout::new(model);
    let mut out: Vec<(String, Vec<f64>)> = layout
        .split(&layout.flatten_params(model))
        .into_iter()
        .map(|(n, t)| (n, read(&t)))
        .collect();
    // Buffers too.
    let bytes = to_safetensors_bytes(model).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in st.tensors() {
        if name.ends_with("pos_emb") || name.ends_with(".bias") {
            out.push((
                name,
                view.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_variant_round_trips_losslessly() {
    let mods = Modalities::new(vec![
        ModalitySpec::image_pixels("rgb@32", 32, 16, 3),
        ModalitySpec::image_tokens("tok_depth@32", 40, [2, 2]),
        ModalitySpec::sequence("caption", 50, 6),
    ])
    .unwrap();
    let device = Device::flex();
    for config in [
        FourMConfig::debug(),
        FourMConfig::debug().with_variant(ArchVariant::Gelu),
        FourMConfig::debug().with_qk_norm(true),
    ] {
        let source = config.init(&mods, 1, &device).unwrap();
        let mut target = config.init(&mods, 2, &device).unwrap();
        assert_ne!(
            all_params(&source),
            all_params(&target),
            "different seeds give different weights"
        );
        load_ml4m_bytes(&mut target, to_safetensors_bytes(&source).unwrap()).unwrap();
        assert_eq!(all_params(&source), all_params(&target), "{config:?}");
    }
}

fn rewrite(
    weights: &Path,
    edit: impl FnOnce(&mut Vec<(String, (safetensors::Dtype, Vec<usize>, Vec<u8>))>),
) -> Vec<u8> {
    let bytes = std::fs::read(weights).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut list: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut list);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = list
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load_err(
    weights: &Path,
    edit: impl FnOnce(&mut Vec<(String, (safetensors::Dtype, Vec<usize>, Vec<u8>))>),
) -> String {
    let (mut model, _) = fixture_model();
    let err: ModelError =
        load_ml4m_bytes(&mut model, rewrite(weights, edit)).expect_err("bad file must be refused");
    err.to_string()
}

#[test]
fn bad_state_dicts_are_refused_with_the_entry_named() {
    let (_, weights) = fixture_model();
    let target = "encoder.0.attn.qkv.weight";
    let e = load_err(&weights, |l| l.retain(|(n, _)| n != target));
    assert!(e.contains(target) && e.contains("missing"), "{e}");

    let e = load_err(&weights, |l| {
        let t = l.iter_mut().find(|(n, _)| n == target).unwrap();
        t.1.1 = vec![t.1.1[1], t.1.1[0]];
    });
    assert!(e.contains(target) && e.contains("shape"), "{e}");

    let tied = l_name_ending(&weights, ".to_logits.weight");
    let e = load_err(&weights, |l| {
        let t = l.iter_mut().find(|(n, _)| *n == tied).unwrap();
        t.1.2[0] ^= 0x40;
    });
    assert!(e.contains(&tied) && e.contains("differs"), "{e}");

    let e = load_err(&weights, |l| {
        let t = l[0].1.clone();
        l.push(("encoder.99.attn.qkv.weight".into(), t));
    });
    assert!(e.contains("encoder.99.attn.qkv.weight"), "{e}");

    let (mut model, _) = fixture_model();
    let e = load_ml4m(&mut model, Path::new("/nonexistent/weights.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/weights.safetensors"), "{e}");
    let e = load_ml4m_bytes(&mut model, b"not a safetensors file".to_vec())
        .unwrap_err()
        .to_string();
    assert!(!e.is_empty());
}

fn l_name_ending(weights: &Path, suffix: &str) -> String {
    Tensors::read(weights)
        .names()
        .into_iter()
        .find(|n| n.ends_with(suffix))
        .expect("a tied entry")
}

/// A square Linear weight (attention `proj`: `dim × dim`) is written in ml-4m's `[out, in]`
/// layout, the transpose of burn's `[in, out]` although the shapes agree, and read back in place.
#[test]
fn a_square_weight_round_trips_in_torch_layout() {
    let (model, _) = fixture_model();
    let name = "encoder.0.attn.proj.weight";
    let info = model
        .param_infos()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap();
    assert_eq!(info.shape[0], info.shape[1], "{name} is square");
    let burn_order = param_values(&model, name);
    let torch_order = info.torch_order(&burn_order);
    assert_ne!(
        burn_order, torch_order,
        "a square weight whose transpose differs"
    );

    let bytes = to_safetensors_bytes(&model).unwrap();
    let (_, shape, raw) = &entries(&bytes)[name];
    assert_eq!(shape, &info.torch_shape);
    let in_file: Vec<f64> = raw
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    assert_eq!(in_file, torch_order, "written in ml-4m's [out, in] order");

    // Into a model of other initial weights.
    let config = read_config(&fixture_dir("FOURM_PARITY_FIXTURE", "parity-a"));
    let mut back = model_config(&config)
        .init(&modalities(&config), 99, &Device::flex())
        .unwrap();
    assert_ne!(param_values(&back, name), burn_order);
    load_ml4m_bytes(&mut back, bytes).unwrap();
    assert_eq!(
        param_values(&back, name),
        burn_order,
        "read back in burn's order"
    );
}
