//! What the workers' metrics files say about a running job: the latest step, its loss, the job's
//! throughput, and the loss curve (a step re-run after a recovery replaces the first run's value).

use std::collections::BTreeMap;

use fourm_worker::metrics::{MetricsLine, read_metrics};

use super::cluster::ClusterSpec;

/// Every line of every worker's metrics file (files not yet written are skipped).
pub fn read_all(spec: &ClusterSpec) -> Vec<MetricsLine> {
    (0..spec.workers)
        .filter_map(|i| read_metrics(&spec.metrics_file(i)).ok())
        .flatten()
        .collect()
}

/// A snapshot of the job's progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Latest step trained.
    pub step: u64,
    /// Its loss.
    pub loss: f64,
    /// Tokens per second of the whole job at that step (sum over ranks).
    pub tokens_per_s: f64,
    /// Ranks of the generation that trained it.
    pub world: u32,
}

/// The progress shown by `lines`.
pub fn progress(lines: &[MetricsLine]) -> Option<Progress> {
    let last = lines.iter().max_by_key(|l| (l.unix_ms, l.step))?;
    let tokens_per_s = lines
        .iter()
        .filter(|l| l.generation == last.generation && l.step == last.step)
        .map(|l| l.tokens_per_s)
        .sum();
    Some(Progress {
        step: last.step,
        loss: last.loss,
        tokens_per_s,
        world: last.world,
    })
}

/// Loss per step; where a step ran more than once (a recovery re-runs the steps after the last
/// checkpoint), the latest run counts.
pub fn loss_curve(lines: &[MetricsLine]) -> Vec<(u64, f64)> {
    let mut by_step: BTreeMap<u64, &MetricsLine> = BTreeMap::new();
    for l in lines {
        let e = by_step.entry(l.step).or_insert(l);
        if l.unix_ms > e.unix_ms {
            *e = l;
        }
    }
    by_step.into_iter().map(|(s, l)| (s, l.loss)).collect()
}

/// Rank 0's line of each step among `lines` that pass `keep` (the latest run of a step counts).
fn rank0_by_step(
    lines: &[MetricsLine],
    keep: impl Fn(&MetricsLine) -> bool,
) -> BTreeMap<u64, &MetricsLine> {
    let mut latest: BTreeMap<u64, &MetricsLine> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.rank == 0 && keep(l)) {
        let e = latest.entry(l.step).or_insert(l);
        if l.unix_ms > e.unix_ms {
            *e = l;
        }
    }
    latest
}

/// Each modality's loss per step (rank 0's; the latest run of a step counts).
pub fn modality_curves(lines: &[MetricsLine]) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut out: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for (step, l) in rank0_by_step(lines, |_| true) {
        for (m, v) in &l.modality_loss {
            out.entry(m.clone()).or_default().push((step, *v));
        }
    }
    out
}

/// Each validation metric per evaluated step (rank 0's lines; the latest run of a step counts).
pub fn eval_curves(lines: &[MetricsLine]) -> BTreeMap<String, Vec<(u64, f64)>> {
    let latest = rank0_by_step(lines, |l| !l.eval.is_empty());
    let mut out: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for (step, l) in latest {
        for (m, v) in &l.eval {
            out.entry(m.clone()).or_default().push((step, *v));
        }
    }
    out
}

/// The latest validation metrics (rank 0's newest evaluated step).
pub fn latest_eval(lines: &[MetricsLine]) -> Option<(u64, &BTreeMap<String, f64>)> {
    lines
        .iter()
        .filter(|l| l.rank == 0 && !l.eval.is_empty())
        .max_by_key(|l| (l.unix_ms, l.step))
        .map(|l| (l.step, &l.eval))
}

/// Mean job throughput (tokens/s summed over ranks) over the steps after the first `skip`.
pub fn mean_tokens_per_s(lines: &[MetricsLine], skip: u64) -> f64 {
    let mut per_step: BTreeMap<(u64, u64), f64> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.step > skip) {
        *per_step.entry((l.generation, l.step)).or_default() += l.tokens_per_s;
    }
    if per_step.is_empty() {
        return 0.0;
    }
    per_step.values().sum::<f64>() / per_step.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(generation: u64, rank: u32, step: u64, loss: f64, unix_ms: u64) -> MetricsLine {
        MetricsLine {
            generation,
            rank,
            world: 2,
            step,
            loss,
            modality_loss: BTreeMap::new(),
            grad_norm: 1.0,
            lr: 1e-3,
            tokens_per_s: 100.0,
            data_wait: 0.0,
            unix_ms,
            params_sha256: None,
            eval: BTreeMap::new(),
        }
    }

    #[test]
    fn a_rerun_step_replaces_the_first_run() {
        let lines = vec![
            line(1, 0, 1, 5.0, 10),
            line(1, 1, 1, 5.0, 11),
            line(1, 0, 2, 4.0, 20),
            line(2, 0, 2, 3.5, 40),
            line(2, 1, 2, 3.5, 41),
        ];
        assert_eq!(loss_curve(&lines), vec![(1, 5.0), (2, 3.5)]);
        let p = progress(&lines).unwrap();
        assert_eq!((p.step, p.loss, p.tokens_per_s), (2, 3.5, 200.0));
        assert!((mean_tokens_per_s(&lines, 0) - 500.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn modality_and_validation_curves() {
        let mut a = line(1, 0, 1, 5.0, 10);
        a.modality_loss.insert("caption".into(), 4.0);
        let mut b = line(1, 0, 2, 4.0, 20);
        b.modality_loss.insert("caption".into(), 3.0);
        b.eval.insert("held_out/total".into(), 3.5);
        let mut other_rank = line(1, 1, 2, 4.0, 21);
        other_rank.eval.insert("held_out/total".into(), 9.9);
        let lines = vec![a, b, other_rank];
        assert_eq!(modality_curves(&lines)["caption"], vec![(1, 4.0), (2, 3.0)]);
        assert_eq!(eval_curves(&lines)["held_out/total"], vec![(2, 3.5)]);
        assert_eq!(latest_eval(&lines).unwrap().0, 2);
    }
}
