//! Bad batches are errors naming the culprit; degenerate but valid batches run (a sample without
//! any visible token attends uniformly over padding, as ml-4m does, and stays finite).

use burn::tensor::Device;
use fourm_model::{Batch, FourM, FourMConfig, Modalities, ModalityData, StepOptions, random_batch};

fn model() -> (FourM, Modalities) {
    let mods = Modalities::perf();
    (
        FourMConfig::debug()
            .init(&mods, 0, &Device::flex())
            .unwrap(),
        mods,
    )
}

fn err(model: &FourM, batch: &Batch, options: &StepOptions) -> String {
    model
        .forward(batch, options)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn malformed_batches_are_refused() {
    let (model, mods) = model();
    let good = random_batch(&mods, 2, 16, 16, 1);
    let opts = StepOptions::new(16, 16);
    model.forward(&good, &opts).expect("valid batch");

    let mut b = good.clone();
    let m = b.modalities.remove("caption").unwrap();
    b.modalities.insert("speech".into(), m);
    assert!(err(&model, &b, &opts).contains("speech"));

    let mut b = good.clone();
    b.modalities.get_mut("tok_rgb").unwrap().input_mask.pop();
    let e = err(&model, &b, &opts);
    assert!(e.contains("tok_rgb") && e.contains("input_mask"), "{e}");

    let mut b = good.clone();
    if let ModalityData::Tokens(ids) = &mut b.modalities.get_mut("tok_depth").unwrap().data {
        ids[3] = 1024;
    }
    let e = err(&model, &b, &opts);
    assert!(e.contains("tok_depth") && e.contains("1024"), "{e}");

    let mut b = good.clone();
    b.batch_size = 0;
    assert!(err(&model, &b, &opts).contains("empty"));

    let order = StepOptions {
        decoder_order: Some(vec!["caption".into(), "caption".into()]),
        ..opts.clone()
    };
    assert!(err(&model, &good, &order).contains("caption"));
    let order = StepOptions {
        decoder_order: Some(vec!["tok_rgb".into()]),
        ..opts
    };
    assert!(err(&model, &good, &order).contains("every target modality"));
}

#[test]
fn degenerate_batches_stay_finite() {
    let (model, mods) = model();
    // No input token at all in sample 0, and more slots requested than tokens exist.
    let mut b = random_batch(&mods, 2, 8, 8, 2);
    for m in b.modalities.values_mut() {
        let half = m.input_mask.len() / 2;
        m.input_mask[..half].fill(true);
    }
    let out = model
        .forward(&b, &StepOptions::new(10_000, 10_000))
        .expect("runs");
    assert_eq!(
        out.encoder_plan.slots,
        mods.iter().map(|s| s.tensor_len()).sum::<usize>()
    );
    assert!(
        out.encoder_plan.pad[..out.encoder_plan.slots]
            .iter()
            .all(|&p| p)
    );
    let y = out.decoder_output.into_data().try_to_vec::<f32>().unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
    assert!(out.loss.into_scalar::<f32>().is_finite());
}
