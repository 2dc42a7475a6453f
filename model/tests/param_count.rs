//! The `base` and `large` SwiGLU models on ml-4m's 4M-7 modalities at 224 px have exactly ml-4m's
//! parameter counts (tied weights counted once). Parameters are lazy, so nothing is allocated.

use burn::tensor::Device;
use fourm_model::{ArchVariant, FourMConfig, Modalities};

fn counts(config: FourMConfig) -> (usize, usize) {
    let model = config
        .init(&Modalities::mod7_224(), 0, &Device::flex())
        .expect("valid config");
    let params = model.trainable_params();
    let total = params.iter().map(|p| p.numel()).sum();
    let outside = params
        .iter()
        .filter(|p| !p.is_embedding())
        .map(|p| p.numel())
        .sum();
    (total, outside)
}

#[test]
fn base_swiglu_matches_ml4m_counts() {
    assert_eq!(
        counts(FourMConfig::base(ArchVariant::SwigluNobias)),
        (360_791_040, 198_829_056)
    );
}

#[test]
fn large_swiglu_matches_ml4m_counts() {
    assert_eq!(
        counts(FourMConfig::large(ArchVariant::SwigluNobias)),
        (921_694_208, 705_744_896)
    );
}
