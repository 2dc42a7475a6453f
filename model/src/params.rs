//! The model's tensors under their ml-4m names, in module-visit order.
//!
//! burn names a tensor by its path in the module tree (`encoder_embeddings.0.token_emb.weight`);
//! ml-4m's state dict uses the modality's name where burn has the index
//! (`encoder_embeddings.caption.token_emb.weight`). Buffers (sin-cos tables, the zero bias of a
//! bias-less LayerNorm) live in the module too, so that they are saved and loaded, but they are
//! not trained.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use crate::fourm::FourM;

/// One tensor of the model.
#[derive(Debug, Clone)]
pub struct ParamInfo {
    /// Path in the burn module tree.
    pub path: String,
    /// ml-4m state-dict name.
    pub name: String,
    /// burn parameter id.
    pub id: ParamId,
    /// Shape in burn's layout.
    pub shape: Vec<usize>,
    /// Shape in ml-4m's layout (Linear weights are `[out, in]` there, `[in, out]` here).
    pub torch_shape: Vec<usize>,
    /// Whether ml-4m stores the transpose of burn's layout (a Linear layer's weight). Decided by
    /// what the tensor is, never by its shape: a square weight is transposed too.
    pub transposed: bool,
    /// False for buffers.
    pub trainable: bool,
}

impl ParamInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// `values` (row-major in burn's layout) in ml-4m's element order.
    pub fn torch_order<T: Copy>(&self, values: &[T]) -> Vec<T> {
        if !self.transposed {
            return values.to_vec();
        }
        let (rows, cols) = (self.shape[0], self.shape[1]);
        (0..cols)
            .flat_map(|c| (0..rows).map(move |r| values[r * cols + c]))
            .collect()
    }

    /// ml-4m's weight-decay rule (`optim_factory.get_parameter_groups`): no decay for names
    /// containing `norm.` or `.norm`, or ending in `.bias`, `.lookup_table_weight`, `.gamma`.
    /// Everything else decays, including `mask_token`, `mod_emb` and the embedding tables.
    pub fn decays(&self) -> bool {
        let n = &self.name;
        !(n.contains("norm.")
            || n.contains(".norm")
            || n.ends_with(".bias")
            || n.ends_with(".lookup_table_weight")
            || n.ends_with(".gamma"))
    }

    /// Whether the tensor belongs to an embedding module (`encoder_embeddings.*`,
    /// `decoder_embeddings.*`), the part ml-4m leaves out of its "non-embedding" counts.
    pub fn is_embedding(&self) -> bool {
        self.name.starts_with("encoder_embeddings.") || self.name.starts_with("decoder_embeddings.")
    }
}

impl FourM {
    /// Every tensor of the model (parameters and buffers) in module-visit order.
    pub fn param_infos(&self) -> Vec<ParamInfo> {
        let encoder: Vec<String> = self.modalities().iter().map(|s| s.name.clone()).collect();
        let decoder: Vec<String> = self
            .modalities()
            .targets()
            .map(|s| s.name.clone())
            .collect();
        let mut visitor = Lister {
            path: Vec::new(),
            containers: Vec::new(),
            out: Vec::new(),
            encoder: &encoder,
            decoder: &decoder,
            norm_bias_trainable: self.config().norm_bias_trainable(),
        };
        self.visit(&mut visitor);
        visitor.out
    }

    /// Trainable parameters only, in module-visit order.
    pub fn trainable_params(&self) -> Vec<ParamInfo> {
        self.param_infos()
            .into_iter()
            .filter(|p| p.trainable)
            .collect()
    }

    /// Number of trainable scalars (tied tensors are stored once, so counted once).
    pub fn num_trainable(&self) -> usize {
        self.trainable_params().iter().map(ParamInfo::numel).sum()
    }
}

/// Maps a burn module path to ml-4m's state-dict name.
pub fn ml4m_name(path: &str, encoder: &[String], decoder: &[String]) -> String {
    let rename = |prefix: &str, names: &[String]| -> Option<String> {
        let rest = path.strip_prefix(prefix)?;
        let (idx, tail) = rest.split_once('.')?;
        let name = names.get(idx.parse::<usize>().ok()?)?;
        Some(format!("{prefix}{name}.{tail}"))
    };
    rename("encoder_embeddings.", encoder)
        .or_else(|| rename("decoder_embeddings.", decoder))
        .unwrap_or_else(|| path.to_string())
}

struct Lister<'a> {
    path: Vec<String>,
    containers: Vec<String>,
    out: Vec<ParamInfo>,
    encoder: &'a [String],
    decoder: &'a [String],
    norm_bias_trainable: bool,
}

impl ModuleVisitor for Lister<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        let field = self.path.last().map(String::as_str).unwrap_or_default();
        let container = self
            .containers
            .last()
            .map(String::as_str)
            .unwrap_or_default();
        let shape = param.lazy_shape().to_vec();
        let is_linear_weight = container == "Struct:Linear" && field == "weight";
        let torch_shape = if is_linear_weight {
            shape.iter().rev().copied().collect()
        } else {
            shape.clone()
        };
        let buffer = field == "pos_emb"
            || (container == "Struct:Norm" && field == "bias" && !self.norm_bias_trainable);
        self.out.push(ParamInfo {
            name: ml4m_name(&path, self.encoder, self.decoder),
            path,
            id: param.id,
            shape,
            torch_shape,
            transposed: is_linear_weight,
            trainable: !buffer,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_linear_weights_are_transposed_for_torch() {
        let info = ParamInfo {
            path: "encoder.0.attn.proj.weight".into(),
            name: "encoder.0.attn.proj.weight".into(),
            id: ParamId::new(),
            shape: vec![2, 2],
            torch_shape: vec![2, 2],
            transposed: true,
            trainable: true,
        };
        // burn [in, out] = [[1, 2], [3, 4]] is torch [out, in] = [[1, 3], [2, 4]].
        assert_eq!(info.torch_order(&[1, 2, 3, 4]), vec![1, 3, 2, 4]);
        let bias = ParamInfo {
            transposed: false,
            ..info
        };
        assert_eq!(bias.torch_order(&[1, 2, 3, 4]), vec![1, 2, 3, 4]);
    }

    #[test]
    fn paths_map_to_ml4m_names() {
        let enc = vec!["caption".to_string(), "tok_rgb@224".to_string()];
        let dec = vec!["tok_rgb@224".to_string()];
        assert_eq!(
            ml4m_name("encoder_embeddings.1.token_emb.weight", &enc, &dec),
            "encoder_embeddings.tok_rgb@224.token_emb.weight"
        );
        assert_eq!(
            ml4m_name("decoder_embeddings.0.pos_emb", &enc, &dec),
            "decoder_embeddings.tok_rgb@224.pos_emb"
        );
        assert_eq!(
            ml4m_name("decoder.3.cross_attn.kv.weight", &enc, &dec),
            "decoder.3.cross_attn.kv.weight"
        );
    }
}
