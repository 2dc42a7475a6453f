//! Building blocks of the 4M transformer.

mod attention;
mod block;
mod kernels;
mod mlp;
mod norm;
mod softmax;
mod swiglu;

pub use attention::{Attention, CrossAttention, MASKED};
pub(crate) use attention::{attend, split_heads};
pub use block::{Block, DecoderBlock};
pub use mlp::Mlp;
pub use norm::Norm;
pub use softmax::softmax_last;
pub use swiglu::swiglu;
