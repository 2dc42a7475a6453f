//! Step metrics: loss (total and per modality), gradient norm, learning rate, throughput, an MFU
//! estimate from the model's FLOPs and a configured peak, and the share of time spent waiting for
//! data. Rank 0 logs them as one line per interval.

use std::collections::BTreeMap;
use std::time::Duration;

use fourm_model::{FourMConfig, StepShape};
use fourm_proto::v1 as pb;

/// What one step measured on this rank.
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// Step number (after the update).
    pub step: u64,
    /// Total loss of the global batch.
    pub loss: f64,
    /// Per-modality loss of the global batch.
    pub modality_loss: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Wall time of the step.
    pub elapsed: Duration,
    /// Time spent waiting for data.
    pub data_wait: Duration,
    /// Tokens (encoder + decoder slots) this rank processed.
    pub tokens: usize,
    /// FLOPs this rank computed.
    pub flops: f64,
    /// Validation metrics of the held-out split after this step, when it was evaluated.
    pub eval: Vec<(String, f64)>,
}

impl StepReport {
    /// Tokens per second on this rank.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Achieved FLOPs over the device's peak, when the peak is known.
    pub fn mfu(&self, peak_flops: Option<f64>) -> Option<f64> {
        peak_flops
            .filter(|p| *p > 0.0)
            .map(|p| self.flops / self.elapsed.as_secs_f64().max(1e-9) / p)
    }

    /// Fraction of the step spent waiting for data.
    pub fn data_wait_ratio(&self) -> f64 {
        self.data_wait.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The wire form sent with the progress report.
    pub fn to_proto(&self, peak_flops: Option<f64>) -> pb::StepMetrics {
        pb::StepMetrics {
            loss: self.loss,
            modality_loss: self.modality_loss.clone().into_iter().collect(),
            grad_norm: self.grad_norm,
            lr: self.lr,
            tokens_per_s: self.tokens_per_s(),
            mfu: self.mfu(peak_flops).unwrap_or(0.0),
            data_wait: self.data_wait_ratio(),
            eval: self.eval.iter().cloned().collect(),
        }
    }

    /// Logs the step (structured fields; MFU only against a known peak).
    pub fn log(&self, peak_flops: Option<f64>) {
        let per_mod: Vec<String> = self
            .modality_loss
            .iter()
            .map(|(m, l)| format!("{m}={l:.4}"))
            .collect();
        let mfu = self.mfu(peak_flops).map(|m| format!("{m:.3}"));
        tracing::info!(
            step = self.step,
            loss = format!("{:.4}", self.loss),
            modality_loss = %per_mod.join(" "),
            grad_norm = format!("{:.3}", self.grad_norm),
            lr = format!("{:.3e}", self.lr),
            tokens_per_s = self.tokens_per_s() as u64,
            mfu,
            data_wait = format!("{:.1}%", 100.0 * self.data_wait_ratio()),
            "train step"
        );
        if !self.eval.is_empty() {
            let metrics: Vec<String> = self
                .eval
                .iter()
                .map(|(m, v)| format!("{m}={v:.4}"))
                .collect();
            tracing::info!(step = self.step, metrics = %metrics.join(" "), "validation");
        }
    }
}

/// One line of the per-step metrics file (`metrics.metrics_file`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricsLine {
    /// Generation the step ran in.
    pub generation: u64,
    /// Rank of the writer.
    pub rank: u32,
    /// Ranks of the generation.
    pub world: u32,
    /// Step number (after the update).
    pub step: u64,
    /// Total loss of the global batch.
    pub loss: f64,
    /// Per-modality loss of the global batch.
    pub modality_loss: BTreeMap<String, f64>,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Tokens per second on this rank.
    pub tokens_per_s: f64,
    /// Fraction of the step spent waiting for data.
    pub data_wait: f64,
    /// Milliseconds since the Unix epoch when the step ended.
    pub unix_ms: u64,
    /// SHA-256 of this rank's parameters after the step (`metrics.param_digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_sha256: Option<String>,
    /// Validation metrics after the step, when it was evaluated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eval: BTreeMap<String, f64>,
}

impl MetricsLine {
    /// The line of `report`.
    pub fn new(generation: u64, rank: u32, world: u32, report: &StepReport) -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            generation,
            rank,
            world,
            step: report.step,
            loss: report.loss,
            modality_loss: report.modality_loss.clone(),
            grad_norm: report.grad_norm,
            lr: report.lr,
            tokens_per_s: report.tokens_per_s(),
            data_wait: report.data_wait_ratio(),
            unix_ms,
            params_sha256: None,
            eval: report.eval.iter().cloned().collect(),
        }
    }

    /// Appends the line to `path` (created if missing).
    pub fn append(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        writeln!(file, "{line}")
    }
}

/// Reads a metrics file; a torn last line (a killed writer) is skipped.
pub fn read_metrics(path: &std::path::Path) -> std::io::Result<Vec<MetricsLine>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// FLOPs of one step of `batch` samples.
pub fn step_flops(
    config: &FourMConfig,
    batch: usize,
    inputs: usize,
    targets: usize,
    mean_vocab: usize,
) -> f64 {
    config.train_flops(StepShape {
        batch,
        encoder_tokens: inputs,
        decoder_tokens: targets,
        mean_vocab,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_elapsed_time() {
        let r = StepReport {
            elapsed: Duration::from_millis(500),
            data_wait: Duration::from_millis(50),
            tokens: 1000,
            flops: 1e9,
            ..StepReport::default()
        };
        assert!((r.tokens_per_s() - 2000.0).abs() < 1e-6);
        assert!((r.mfu(Some(4e9)).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(r.mfu(None), None, "no MFU without a known peak");
        assert!((r.data_wait_ratio() - 0.1).abs() < 1e-9);
    }
}
