//! What the benchmark binaries share: their batch shape, the device they run on (`--device cpu|cuda`,
//! `--device-index N`), the median of their timings, and the peak FLOP/s of known GPUs.

use burn::tensor::Device;
use clap::ValueEnum;

use crate::error::ModelError;

/// The shape of a benchmark's training batch.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct BatchShape {
    /// Samples per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Encoder (input) tokens per sample.
    #[arg(long, default_value_t = 128)]
    pub inputs: usize,
    /// Decoder (target) tokens per sample.
    #[arg(long, default_value_t = 128)]
    pub targets: usize,
}

/// Where a benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchDevice {
    /// burn's CPU backend (Flex).
    Cpu,
    /// burn's CUDA backend (a binary built with `--features cuda`).
    Cuda,
}

impl BenchDevice {
    /// The burn device (without autodiff); `index` picks the GPU.
    pub fn device(self, index: usize) -> Result<Device, ModelError> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(index)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => Err(ModelError::Config(format!(
                "--device cuda (GPU {index}) needs a binary built with --features cuda"
            ))),
        }
    }

    /// Concurrent micro-batches by default: one per core on the CPU, one on a GPU.
    pub fn default_threads(self) -> usize {
        match self {
            Self::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Self::Cuda => 1,
        }
    }
}

/// The median of `times` (the upper one of an even count); NaN when empty.
pub fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Dense bf16 peak TFLOP/s of GPUs fourm knows, by a part of their name.
const KNOWN_PEAKS: [(&str, f64); 6] = [
    ("H200", 989.0),
    ("H100 SXM", 989.0),
    ("H100", 756.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
];

/// The peak TFLOP/s of a device by its name, if fourm knows it.
pub fn known_peak_tflops(device_name: &str) -> Option<f64> {
    KNOWN_PEAKS
        .iter()
        .find(|(part, _)| device_name.contains(part))
        .map(|(_, tflops)| *tflops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_peaks() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
        assert_eq!(known_peak_tflops("NVIDIA H200"), Some(989.0));
        assert_eq!(known_peak_tflops("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(known_peak_tflops("AMD EPYC"), None);
    }
}
