//! Per-modality embeddings of the encoder and decoder.

mod decoder;
mod encoder;

pub use decoder::DecoderEmbedding;
pub use encoder::EncoderEmbedding;
pub(crate) use encoder::int_tensor;
