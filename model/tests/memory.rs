//! The planner's analytic parameter count against the tensors of built models.

use burn::tensor::Device;
use fourm_model::optim::ParamLayout;
use fourm_model::{ArchVariant, FourMConfig, Modalities};

#[test]
fn counted_scalars_are_the_built_models() {
    let configs = [
        FourMConfig::debug(),
        FourMConfig::debug().with_qk_norm(true),
        FourMConfig::debug().with_variant(ArchVariant::Gelu),
        FourMConfig::debug()
            .with_variant(ArchVariant::Gelu)
            .with_qk_norm(true),
        FourMConfig::new(96, 1, 3, 6).with_mlp_ratio(3.0),
    ];
    for config in configs {
        for modalities in [Modalities::perf(), Modalities::mod7_224()] {
            let model = config.init(&modalities, 0, &Device::flex()).unwrap();
            let buffers: usize = model
                .param_infos()
                .iter()
                .filter(|p| !p.trainable)
                .map(|p| p.numel())
                .sum();
            let count = config.param_count(&modalities);
            assert_eq!(
                (count.trainable, count.buffers),
                (ParamLayout::new(&model).len(), buffers),
                "{config:?}"
            );
        }
    }
}
