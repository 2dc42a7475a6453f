//! Trainable parameters and their gradients as one flat `f32` vector, in module-visit order.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Device, Gradients, Tensor, TensorData};

use crate::fourm::FourM;
use crate::params::ParamInfo;

/// Where one parameter sits in the flat vector.
#[derive(Debug, Clone)]
pub struct FlatEntry {
    /// The parameter.
    pub info: ParamInfo,
    /// First element in the flat vector.
    pub offset: usize,
}

/// The flat layout of a model's trainable parameters.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    entries: Vec<FlatEntry>,
    index: HashMap<ParamId, usize>,
    len: usize,
}

impl ParamLayout {
    /// The layout of `model`'s trainable parameters (buffers excluded).
    pub fn new(model: &FourM) -> Self {
        let mut entries = Vec::new();
        let mut offset = 0;
        for info in model.trainable_params() {
            let n = info.numel();
            entries.push(FlatEntry { info, offset });
            offset += n;
        }
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.info.id, i))
            .collect();
        Self {
            entries,
            index,
            len: offset,
        }
    }

    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a model without trainable parameters.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parameters in order.
    pub fn entries(&self) -> &[FlatEntry] {
        &self.entries
    }

    /// `1.0` where ml-4m applies weight decay, `0.0` elsewhere.
    pub fn decay_mask(&self, device: &Device) -> Tensor<1> {
        let mut mask = vec![0.0f32; self.len];
        for e in &self.entries {
            if e.info.decays() {
                mask[e.offset..e.offset + e.info.numel()].fill(1.0);
            }
        }
        Tensor::from_data(TensorData::new(mask, [self.len]), device)
    }

    /// The current parameter values (without autodiff), flattened.
    pub fn flatten_params(&self, model: &FourM) -> Tensor<1> {
        self.gather(model, Source::Values)
    }

    /// The gradients of the trainable parameters after `loss.backward()`, flattened; zeros for
    /// parameters the step did not reach (so every rank's vector has the same layout).
    pub fn flatten_grads(&self, model: &FourM, grads: &Gradients) -> Tensor<1> {
        self.gather(model, Source::Grads(grads))
    }

    fn gather(&self, model: &FourM, source: Source<'_>) -> Tensor<1> {
        let device = model.device().inner();
        let mut visitor = Gather {
            layout: self,
            parts: vec![None; self.entries.len()],
            source,
        };
        model.visit(&mut visitor);
        let parts = visitor
            .parts
            .into_iter()
            .zip(&self.entries)
            .map(|(part, e)| part.unwrap_or_else(|| Tensor::zeros([e.info.numel()], &device)))
            .collect();
        Tensor::cat(parts, 0)
    }

    /// Writes `flat` back into the model's trainable parameters (ids and gradient tracking kept).
    pub fn unflatten_into(&self, model: FourM, flat: Tensor<1>) -> FourM {
        let mut mapper = Scatter { layout: self, flat };
        model.map(&mut mapper)
    }

    /// Splits a flat vector into one tensor per parameter, `(ml-4m name, values)`.
    pub fn split(&self, flat: &Tensor<1>) -> Vec<(String, Tensor<1>)> {
        self.entries
            .iter()
            .map(|e| {
                (
                    e.info.name.clone(),
                    flat.clone().narrow(0, e.offset, e.info.numel()),
                )
            })
            .collect()
    }
}

/// What [`Gather`] reads from each parameter.
enum Source<'a> {
    Values,
    Grads(&'a Gradients),
}

struct Gather<'a> {
    layout: &'a ParamLayout,
    parts: Vec<Option<Tensor<1>>>,
    source: Source<'a>,
}

impl ModuleVisitor for Gather<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(&i) = self.layout.index.get(&param.id) {
            let n = self.layout.entries[i].info.numel();
            let value = match self.source {
                Source::Values => Some(param.val().inner()),
                Source::Grads(grads) => param.val().grad(grads),
            };
            self.parts[i] = value.map(|t| t.reshape([n]));
        }
    }
}

struct Scatter<'a> {
    layout: &'a ParamLayout,
    flat: Tensor<1>,
}

impl ModuleMapper for Scatter<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(&i) = self.layout.index.get(&param.id) else {
            return param;
        };
        let e = &self.layout.entries[i];
        let (id, old, mapper) = param.consume();
        let shape: [usize; D] = old.dims();
        let mut value: Tensor<D> = self
            .flat
            .clone()
            .narrow(0, e.offset, e.info.numel())
            .reshape(shape);
        if old.is_autodiff() {
            value = Tensor::from_inner(value);
        }
        if old.is_require_grad() {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}
