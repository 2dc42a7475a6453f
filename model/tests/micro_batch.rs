//! Splitting a batch into micro-batches (run on their own threads) gives the full batch's loss
//! and gradient: the parts are normalised by the whole batch's target counts.

use burn::tensor::Device;
use fourm_model::optim::ParamLayout;
use fourm_model::{FourMConfig, LossType, Modalities, StepOptions, random_batch};

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn micro_batches_reproduce_the_full_batch_gradient() {
    let modalities = Modalities::perf();
    let model = FourMConfig::debug()
        .init(&modalities, 3, &Device::flex().autodiff())
        .unwrap();
    let layout = ParamLayout::new(&model);
    let batch = random_batch(&modalities, 5, 24, 20, 11);
    for loss in [LossType::Mod, LossType::Token] {
        let options = StepOptions {
            loss,
            ..StepOptions::new(24, 20)
        };
        let full = model.gradients(&layout, &batch, &options, 1).unwrap();
        let reference = model
            .forward(&batch, &options)
            .unwrap()
            .loss
            .into_scalar::<f32>() as f64;
        assert!(
            (full.loss - reference).abs() < 1e-5 * reference.abs(),
            "{} vs {reference}",
            full.loss
        );
        let g_full = full.grads.clone().into_data().try_to_vec::<f32>().unwrap();
        for parts in [2, 3, 5] {
            let split = model.gradients(&layout, &batch, &options, parts).unwrap();
            assert!(
                (split.loss - full.loss).abs() < 1e-5 * full.loss.abs(),
                "{parts} parts: {} vs {}",
                split.loss,
                full.loss
            );
            assert_eq!(split.counts, full.counts);
            let g = split.grads.into_data().try_to_vec::<f32>().unwrap();
            let diff = max_rel_diff(&g, &g_full);
            assert!(
                diff < 1e-5,
                "{loss:?}, {parts} parts: gradient differs by {diff}"
            );
            for ((n1, l1), (n2, l2)) in split.modality_losses.iter().zip(&full.modality_losses) {
                assert_eq!(n1, n2);
                assert!((l1 - l2).abs() < 1e-5 * l2.abs().max(1.0));
            }
        }
    }
}
