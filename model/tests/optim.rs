//! AdamW (both update paths), clipping and the flat parameter layout.

use burn::tensor::{Device, Tensor, TensorData};
use fourm_model::optim::{AdamW, AdamWConfig, ParamLayout, clip_global_norm, global_norm};
use fourm_model::{FourMConfig, Modalities};

fn vec1(v: Vec<f32>) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), &Device::flex())
}

fn values(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn model_and_layout() -> (fourm_model::FourM, ParamLayout) {
    let model = FourMConfig::debug()
        .init(&Modalities::perf(), 5, &Device::flex())
        .unwrap();
    let layout = ParamLayout::new(&model);
    (model, layout)
}

#[test]
fn adamw_matches_the_reference_formulas_on_both_paths() {
    let (model, layout) = model_and_layout();
    let n = layout.len();
    let config = AdamWConfig {
        betas: (0.9, 0.95),
        eps: 1e-8,
        weight_decay: 0.05,
    };
    let mut host = AdamW::new(config, &layout, &Device::flex());
    let mut device = AdamW::new(config, &layout, &Device::flex()).with_tensor_ops(&layout);
    let p0 = values(layout.flatten_params(&model));
    let decays: Vec<bool> = layout
        .entries()
        .iter()
        .flat_map(|e| std::iter::repeat_n(e.info.decays(), e.info.numel()))
        .collect();
    assert!(decays.contains(&true) && decays.contains(&false));
    // Reference in f64.
    let (mut p, mut m, mut v) = (
        p0.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        vec![0.0; n],
        vec![0.0; n],
    );
    let (mut ph, mut pd) = (vec1(p0.clone()), vec1(p0.clone()));
    for step in 1..=3 {
        let lr = 1e-3 * step as f64;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 7 + step) % 13) as f32 / 13.0 - 0.5)
            .collect();
        for i in 0..n {
            let gi = g[i] as f64;
            if decays[i] {
                p[i] *= 1.0 - lr * 0.05;
            }
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.95 * v[i] + 0.05 * gi * gi;
            let mh = m[i] / (1.0 - 0.9f64.powi(step as i32));
            let vh = v[i] / (1.0 - 0.95f64.powi(step as i32));
            p[i] -= lr * mh / (vh.sqrt() + 1e-8);
        }
        ph = host.step(ph, vec1(g.clone()), lr);
        pd = device.step(pd, vec1(g), lr);
    }
    let (h, d) = (values(ph), values(pd));
    for i in 0..n {
        assert!(
            (h[i] as f64 - p[i]).abs() < 1e-6,
            "host path, element {i}: {} vs {}",
            h[i],
            p[i]
        );
        assert!(
            (d[i] - h[i]).abs() < 1e-6,
            "device path, element {i}: {} vs {}",
            d[i],
            h[i]
        );
    }
    assert_eq!(host.steps(), 3);
}

#[test]
fn clipping_scales_only_above_the_threshold() {
    let g = vec1(vec![3.0, 4.0]);
    assert!((global_norm(&g) - 5.0).abs() < 1e-6);
    let (clipped, norm) = clip_global_norm(g.clone(), 1.0);
    assert!((norm - 5.0).abs() < 1e-6);
    let c = values(clipped);
    assert!((c[0] - 0.6).abs() < 1e-6 && (c[1] - 0.8).abs() < 1e-6);
    let (kept, _) = clip_global_norm(g, 10.0);
    assert_eq!(values(kept), vec![3.0, 4.0]);
}

#[test]
fn flat_layout_round_trips_and_writes_back() {
    let (model, layout) = model_and_layout();
    assert_eq!(layout.len(), model.num_trainable());
    let flat = layout.flatten_params(&model);
    let shifted = flat.clone().add_scalar(1.0);
    let model = layout.unflatten_into(model, shifted.clone());
    assert_eq!(values(layout.flatten_params(&model)), values(shifted));
    // Entries tile the vector in order.
    let mut offset = 0;
    for e in layout.entries() {
        assert_eq!(e.offset, offset);
        offset += e.info.numel();
    }
    assert_eq!(offset, layout.len());
}
