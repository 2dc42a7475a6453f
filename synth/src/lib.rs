//! # fourm-synth
//!
//! The synthetic aligned dataset: procedural 3-D scenes ([`scene`]) ray-cast ([`render`]) into
//! aligned RGB, depth, surface normals, semantic segmentation and instance masks, described by
//! boxes and a caption ([`caption`]), tokenized and written in ml-4m's layout ([`dataset`]), and
//! drawn back side by side ([`preview`]).
//!
//! Its image tokenizers are patch vector quantisers ([`PatchTokenizer`], fit by k-means) that
//! turn the image-like modalities into token grids and back; [`to_png`]/[`from_png`] move the raw
//! pictures in and out of PNG files.

pub mod canvas;
pub mod caption;
pub mod dataset;
mod error;
mod image_tokenizer;
mod kmeans;
pub mod preview;
mod raster;
pub mod render;
pub mod scene;
pub mod shape;
pub mod vec3;

pub use dataset::{SynthConfig, SynthReport, SynthSample, generate_sample, write_synthetic};
pub use error::SynthError;
pub use image_tokenizer::{FitOptions, ImagePlane, PatchTokenizer, PixelCodec};
pub use preview::{Preview, preview_sample};
pub use raster::{RawFormat, from_png, to_png};
