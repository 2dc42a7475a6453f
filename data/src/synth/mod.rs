//! The synthetic aligned dataset: procedural 3-D scenes ([`scene`]) ray-cast ([`render`]) into
//! aligned RGB, depth, surface normals, semantic segmentation and instance masks, described by
//! boxes and a caption ([`caption`]), tokenized and written in ml-4m's layout ([`dataset`]), and
//! drawn back side by side ([`preview`]).

pub mod caption;
pub mod dataset;
pub mod preview;
pub mod render;
pub mod scene;
pub mod shape;
pub mod vec3;

pub use dataset::{SynthConfig, SynthReport, SynthSample, generate_sample, write_synthetic};
pub use preview::{Preview, preview_sample};
