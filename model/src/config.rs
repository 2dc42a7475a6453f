//! Model configuration: the sizes and architecture switches of a 4M network, with presets that
//! mirror ml-4m's model registry (`fourm/models/fm.py`, `fm_<size>_<enc>e_<dec>d_<variant>`).

use burn::config::Config;

use crate::error::ModelError;

/// Block flavour. ml-4m's released models all use [`ArchVariant::SwigluNobias`].
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ArchVariant {
    /// `_gelu`: biases everywhere, LayerNorm with a learned bias, exact-erf GELU MLP of width `4·D`.
    Gelu,
    /// `_swiglu_nobias`: no biases (LayerNorm bias is a zero buffer), SwiGLU MLP of width
    /// `int(2·int(4·D)/3)`.
    SwigluNobias,
}

/// Configuration of a [`FourM`](crate::FourM) network (the modalities are configured separately,
/// see [`Modalities`](crate::Modalities)).
#[derive(Config, Debug)]
pub struct FourMConfig {
    /// Model width `D`.
    pub dim: usize,
    /// Number of encoder blocks.
    pub encoder_depth: usize,
    /// Number of decoder blocks.
    pub decoder_depth: usize,
    /// Attention heads (`dim / num_heads` per head).
    pub num_heads: usize,
    /// MLP expansion ratio before the SwiGLU `2/3` correction.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Block flavour.
    #[config(default = "ArchVariant::SwigluNobias")]
    pub variant: ArchVariant,
    /// Per-head LayerNorm on queries and keys (`_qknorm` models).
    #[config(default = false)]
    pub qk_norm: bool,
    /// Forbid decoder attention across modalities (ml-4m default `decoder_sep_mask=True`).
    #[config(default = true)]
    pub decoder_sep_mask: bool,
    /// Replace the decoder's per-modality mask by a global causal mask (ml-4m default `False`).
    #[config(default = false)]
    pub decoder_causal_mask: bool,
}

/// LayerNorm epsilon used everywhere in 4M.
pub const NORM_EPS: f64 = 1e-6;
/// Standard deviation of normal initialisations (`init_std`).
pub const INIT_STD: f64 = 0.02;
/// Rows of every sequence sin-cos table (`max_sincos_pos_emb`, see spec §1.4).
pub const SEQ_POS_EMB_ROWS: usize = 512;

impl FourMConfig {
    /// `fm_tiny_6e_6d_*`: 384 wide, 6 + 6 blocks, 6 heads.
    pub fn tiny(variant: ArchVariant) -> Self {
        Self::new(384, 6, 6, 6).with_variant(variant)
    }

    /// `fm_small_8e_8d_*`: 512 wide, 8 + 8 blocks, 8 heads.
    pub fn small(variant: ArchVariant) -> Self {
        Self::new(512, 8, 8, 8).with_variant(variant)
    }

    /// `fm_base_12e_12d_*` (4M-B): 768 wide, 12 + 12 blocks, 12 heads.
    pub fn base(variant: ArchVariant) -> Self {
        Self::new(768, 12, 12, 12).with_variant(variant)
    }

    /// `fm_large_24e_24d_*` (4M-L): 1024 wide, 24 + 24 blocks, 16 heads.
    pub fn large(variant: ArchVariant) -> Self {
        Self::new(1024, 24, 24, 16).with_variant(variant)
    }

    /// `fm_xlarge_24e_24d_*` (4M-XL): 2048 wide, 24 + 24 blocks, 32 heads.
    pub fn xlarge(variant: ArchVariant) -> Self {
        Self::new(2048, 24, 24, 32).with_variant(variant)
    }

    /// A tiny model for tests: 64 wide, 2 + 2 blocks, 4 heads (the size of the parity fixture).
    pub fn debug() -> Self {
        Self::new(64, 2, 2, 4)
    }

    /// The CPU benchmark model of the spec (§9): 256 wide, 6 + 6 blocks, 8 heads, SwiGLU.
    pub fn perf() -> Self {
        Self::new(256, 6, 6, 8)
    }

    /// The configuration named `name`: a short preset (`debug`, `perf`, `tiny`, `small`, `base`,
    /// `large`, `xlarge`) of architecture `variant`, or an ml-4m registry name (which names its
    /// own variant; see [`Self::from_ml4m_name`]).
    pub fn from_preset(name: &str, variant: ArchVariant) -> Result<Self, ModelError> {
        Ok(match name {
            "debug" => Self::debug().with_variant(variant),
            "perf" => Self::perf().with_variant(variant),
            "tiny" => Self::tiny(variant),
            "small" => Self::small(variant),
            "base" => Self::base(variant),
            "large" => Self::large(variant),
            "xlarge" => Self::xlarge(variant),
            name => Self::from_ml4m_name(name)?,
        })
    }

    /// Builds the configuration named like an ml-4m registry entry, for example
    /// `fm_base_12e_12d_swiglu_nobias` or `fm_large_24e_24d_swiglu_qknorm_nobias`.
    pub fn from_ml4m_name(name: &str) -> Result<Self, ModelError> {
        let unknown = || ModelError::Config(format!("unknown ml-4m model name `{name}`"));
        let rest = name.strip_prefix("fm_").ok_or_else(unknown)?;
        let (size, variant) = rest.split_once("_").ok_or_else(unknown)?;
        let (depths, variant) = match variant.split_once("d_") {
            Some((d, v)) => (d, v),
            None => return Err(unknown()),
        };
        let (arch, qk_norm) = match variant {
            "gelu" => (ArchVariant::Gelu, false),
            "swiglu_nobias" => (ArchVariant::SwigluNobias, false),
            "swiglu_qknorm_nobias" => (ArchVariant::SwigluNobias, true),
            _ => return Err(unknown()),
        };
        let config = match (size, depths) {
            ("tiny", "6e_6") => Self::tiny(arch),
            ("small", "8e_8") => Self::small(arch),
            ("base", "12e_12") => Self::base(arch),
            ("large", "24e_24") => Self::large(arch),
            ("xlarge", "24e_24") => Self::xlarge(arch),
            _ => return Err(unknown()),
        };
        if qk_norm && matches!(size, "tiny" | "small") {
            return Err(unknown());
        }
        Ok(config.with_qk_norm(qk_norm))
    }

    /// Checks that the sizes are usable; every constructor path should call it.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        if self.dim == 0 || self.num_heads == 0 {
            return bad(format!(
                "dim ({}) and num_heads ({}) must be positive",
                self.dim, self.num_heads
            ));
        }
        if !self.dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "dim ({}) must be divisible by num_heads ({})",
                self.dim, self.num_heads
            ));
        }
        if !self.dim.is_multiple_of(4) {
            return bad(format!(
                "dim ({}) must be divisible by 4 for the 2-D sin-cos embedding",
                self.dim
            ));
        }
        if self.encoder_depth == 0 || self.decoder_depth == 0 {
            return bad("encoder_depth and decoder_depth must be at least 1".to_string());
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) || self.mlp_hidden() == 0 {
            return bad(format!(
                "mlp_ratio ({}) must be positive and give a non-empty MLP",
                self.mlp_ratio
            ));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.num_heads
    }

    /// Hidden width of the MLP: `int(D·r)` for GELU, `int(2·int(D·r)/3)` for SwiGLU
    /// (fm_utils.py:136, 324; not rounded to any multiple).
    pub fn mlp_hidden(&self) -> usize {
        let hidden = (self.dim as f64 * self.mlp_ratio) as usize;
        match self.variant {
            ArchVariant::Gelu => hidden,
            ArchVariant::SwigluNobias => (2 * hidden) / 3,
        }
    }

    /// Whether the Linear layers of the blocks (qkv, projections, MLP) carry biases.
    pub fn block_bias(&self) -> bool {
        self.variant == ArchVariant::Gelu
    }

    /// Whether LayerNorm biases are trained (otherwise they are zero buffers).
    pub fn norm_bias_trainable(&self) -> bool {
        self.variant == ArchVariant::Gelu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_hidden_sizes_match_ml4m() {
        let sizes: Vec<usize> = [
            FourMConfig::base(ArchVariant::SwigluNobias),
            FourMConfig::large(ArchVariant::SwigluNobias),
            FourMConfig::xlarge(ArchVariant::SwigluNobias),
            FourMConfig::perf(),
            FourMConfig::debug(),
        ]
        .iter()
        .map(FourMConfig::mlp_hidden)
        .collect();
        assert_eq!(sizes, vec![2048, 2730, 5461, 682, 170]);
        assert_eq!(FourMConfig::base(ArchVariant::Gelu).mlp_hidden(), 3072);
    }

    #[test]
    fn ml4m_names_resolve() {
        let c = FourMConfig::from_ml4m_name("fm_large_24e_24d_swiglu_qknorm_nobias").unwrap();
        assert_eq!(
            (c.dim, c.encoder_depth, c.num_heads, c.qk_norm),
            (1024, 24, 16, true)
        );
        assert!(FourMConfig::from_ml4m_name("fm_tiny_6e_6d_swiglu_qknorm_nobias").is_err());
        assert!(FourMConfig::from_ml4m_name("fm_base_12e_6d_gelu").is_err());
        assert!(FourMConfig::from_ml4m_name("resnet50").is_err());
    }

    #[test]
    fn presets_resolve_by_short_or_ml4m_name() {
        let same = |a: FourMConfig, b: FourMConfig| assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let gelu = FourMConfig::from_preset("base", ArchVariant::Gelu).unwrap();
        same(gelu, FourMConfig::base(ArchVariant::Gelu));
        // An ml-4m name carries its own variant.
        let named = FourMConfig::from_preset("fm_base_12e_12d_swiglu_nobias", ArchVariant::Gelu);
        same(named.unwrap(), FourMConfig::base(ArchVariant::SwigluNobias));
        assert!(FourMConfig::from_preset("huge", ArchVariant::SwigluNobias).is_err());
    }

    #[test]
    fn validate_rejects_bad_sizes() {
        assert!(FourMConfig::new(65, 2, 2, 5).validate().is_err());
        assert!(FourMConfig::new(64, 2, 2, 3).validate().is_err());
        assert!(FourMConfig::new(64, 0, 2, 4).validate().is_err());
        assert!(FourMConfig::debug().with_mlp_ratio(0.0).validate().is_err());
        for c in [
            FourMConfig::debug(),
            FourMConfig::perf(),
            FourMConfig::xlarge(ArchVariant::Gelu),
        ] {
            c.validate().unwrap();
        }
    }
}
