//! The settings of `fourm launch`: embedded defaults (`defaults.toml`), a user file merged over
//! them key by key, then flags. `[model]`, `[data]` and `[train]` are the worker configuration's
//! own section types, so a typo is an error that names the key.

use std::path::Path;

use anyhow::{Context, bail};
use fourm_worker::config::{
    CollectiveKind, CoordinatorSection, DataSection, DeviceKind, EvalSection, MetricsSection,
    ModelSection, TrainSection, WorkerConfig, WorkerSection,
};
use serde::Deserialize;

/// The embedded defaults.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// The sections a launch file may hold.
const SECTIONS: [&str; 6] = ["launch", "synthetic", "model", "data", "train", "eval"];

/// `[launch]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchSection {
    /// Worker processes.
    pub workers: u32,
    /// Steps of the job.
    pub steps: u64,
    /// Checkpoint interval in steps.
    pub checkpoint_every: u64,
    /// Seed of the epoch plan.
    pub seed: u64,
    /// Rank 0's log interval in steps.
    pub log_every: u64,
    /// Where the workers train: `cpu`, or `cuda` (worker `i` on GPU `i`; a binary built with
    /// `--features cuda`).
    #[serde(default = "cpu")]
    pub device: DeviceKind,
    /// Gradient collective: `ring` (TCP, any device) or `nccl` (with `device = "cuda"`).
    #[serde(default = "ring")]
    pub collective: CollectiveKind,
}

fn cpu() -> DeviceKind {
    DeviceKind::Cpu
}

fn ring() -> CollectiveKind {
    CollectiveKind::Ring
}

/// `[synthetic]`: the dataset written on first use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSection {
    /// Samples.
    pub samples: u64,
    /// Samples per shard.
    pub shard_samples: u64,
    /// Image side in pixels.
    pub resolution: usize,
    /// Seed of the scenes.
    pub seed: u64,
    /// Held-out samples written to `<out>/data/val` (validation during training, `fourm eval`).
    #[serde(default)]
    pub val_samples: u64,
    /// Fewest objects per scene (default: `fourm data synth`'s).
    #[serde(default)]
    pub min_objects: Option<usize>,
    /// Most objects per scene (default: `fourm data synth`'s).
    #[serde(default)]
    pub max_objects: Option<usize>,
    /// Camera zoom (default: `fourm data synth`'s, 1).
    #[serde(default)]
    pub zoom: Option<f64>,
}

/// The merged settings.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// `[launch]`.
    pub launch: LaunchSection,
    /// `[synthetic]`.
    pub synthetic: SyntheticSection,
    /// `[model]` of every worker.
    pub model: ModelSection,
    /// `[data]` of every worker (its `dataset` is set per job by [`Self::worker`]).
    pub data: DataSection,
    /// `[train]` of every worker.
    pub train: TrainSection,
    /// `[eval]` of every worker (validation during training).
    pub eval: EvalSection,
    /// The dataset set in `[data]`, if any (otherwise the synthetic one is used).
    pub dataset: Option<String>,
}

impl LaunchConfig {
    /// The defaults, with `user` (a TOML file) merged over them key by key; every section is
    /// parsed by its own type, so a misspelt key is an error that names it.
    pub fn load(user: Option<&Path>) -> anyhow::Result<Self> {
        let mut table: toml::Table = DEFAULTS.parse().context("embedded launch defaults")?;
        let origin = user.map_or_else(
            || "the embedded defaults".to_string(),
            |p| p.display().to_string(),
        );
        if let Some(path) = user {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let over: toml::Table = text
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?;
            for key in over.keys() {
                if !SECTIONS.contains(&key.as_str()) {
                    bail!(
                        "{}: unknown section `{key}` (expected one of {SECTIONS:?})",
                        path.display()
                    );
                }
            }
            merge(&mut table, over);
        }
        let mut section = |name: &str| {
            table
                .remove(name)
                .unwrap_or_else(|| toml::Value::Table(toml::Table::new()))
        };
        let invalid = |name: &str| format!("{origin}: invalid [{name}] section");
        let launch: LaunchSection = section("launch")
            .try_into()
            .with_context(|| invalid("launch"))?;
        let synthetic: SyntheticSection = section("synthetic")
            .try_into()
            .with_context(|| invalid("synthetic"))?;
        let model: ModelSection = section("model")
            .try_into()
            .with_context(|| invalid("model"))?;
        let train: TrainSection = section("train")
            .try_into()
            .with_context(|| invalid("train"))?;
        let eval: EvalSection = section("eval")
            .try_into()
            .with_context(|| invalid("eval"))?;
        let mut data = section("data");
        let dataset = data
            .get("dataset")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        if let toml::Value::Table(t) = &mut data {
            t.entry("dataset").or_insert_with(|| "".into());
        }
        let data: DataSection = data.try_into().with_context(|| invalid("data"))?;
        let config = Self {
            launch,
            synthetic,
            model,
            data,
            train,
            eval,
            dataset,
        };
        config.validate()?;
        Ok(config)
    }

    /// The configuration of one worker of a job reading `dataset`: the shared sections, with the
    /// per-process ones given.
    pub fn worker(
        &self,
        dataset: &str,
        coordinator: CoordinatorSection,
        worker: WorkerSection,
        metrics: MetricsSection,
    ) -> anyhow::Result<WorkerConfig> {
        let config = WorkerConfig {
            coordinator,
            worker,
            model: self.model.clone(),
            data: DataSection {
                dataset: dataset.to_string(),
                ..self.data.clone()
            },
            train: self.train.clone(),
            metrics,
            eval: self.eval.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let l = &self.launch;
        if l.workers == 0 || l.workers > 64 {
            bail!("launch.workers must be in 1..=64, not {}", l.workers);
        }
        if l.steps == 0 {
            bail!("launch.steps must be at least 1");
        }
        if l.log_every == 0 {
            bail!("launch.log_every must be at least 1");
        }
        let s = &self.synthetic;
        if s.samples == 0 || s.shard_samples == 0 {
            bail!("synthetic.samples and synthetic.shard_samples must be at least 1");
        }
        Ok(())
    }
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(c: &LaunchConfig, dataset: &str) -> anyhow::Result<WorkerConfig> {
        c.worker(
            dataset,
            CoordinatorSection {
                address: "http://127.0.0.1:1".into(),
                token_file: None,
                tls_ca: None,
            },
            WorkerSection {
                id: Some("w0".into()),
                ..WorkerSection::default()
            },
            MetricsSection::default(),
        )
    }

    #[test]
    fn defaults_make_a_valid_worker() {
        let c = LaunchConfig::load(None).unwrap();
        assert_eq!(c.launch.workers, 2);
        assert_eq!(c.dataset, None);
        let w = worker(&c, "/tmp/data").unwrap();
        assert_eq!(w.model.preset, "debug");
        assert_eq!(w.data.dataset, "/tmp/data");
        assert_eq!(w.worker.id.as_deref(), Some("w0"));
    }

    #[test]
    fn device_and_collective_are_launch_keys() {
        let c = LaunchConfig::load(None).unwrap();
        assert_eq!(c.launch.device, DeviceKind::Cpu);
        assert_eq!(c.launch.collective, CollectiveKind::Ring);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launch.toml");
        std::fs::write(
            &path,
            "[launch]\ndevice = \"cuda\"\ncollective = \"nccl\"\n",
        )
        .unwrap();
        let c = LaunchConfig::load(Some(&path)).unwrap();
        assert_eq!(c.launch.device, DeviceKind::Cuda);
        assert_eq!(c.launch.collective, CollectiveKind::Nccl);
        std::fs::write(&path, "[launch]\ndevice = \"tpu\"\n").unwrap();
        let err = format!("{:#}", LaunchConfig::load(Some(&path)).unwrap_err());
        assert!(err.contains("tpu"), "{err}");
    }

    #[test]
    fn user_file_overrides_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launch.toml");
        std::fs::write(&path, "[launch]\nsteps = 7\n[train]\nbatch_size = 3\n").unwrap();
        let c = LaunchConfig::load(Some(&path)).unwrap();
        assert_eq!(c.launch.steps, 7);
        assert_eq!(c.launch.workers, 2);
        assert_eq!(worker(&c, "d").unwrap().train.batch_size, 3);

        std::fs::write(&path, "[data]\ndataset = \"s3://b/d\"\n").unwrap();
        let c = LaunchConfig::load(Some(&path)).unwrap();
        assert_eq!(c.dataset.as_deref(), Some("s3://b/d"));

        std::fs::write(&path, "[train]\nbatch_sise = 3\n").unwrap();
        let e = LaunchConfig::load(Some(&path)).unwrap_err();
        assert!(format!("{e:#}").contains("batch_sise"), "{e:#}");

        std::fs::write(&path, "[lanch]\nsteps = 3\n").unwrap();
        let e = LaunchConfig::load(Some(&path)).unwrap_err();
        assert!(format!("{e:#}").contains("lanch"), "{e:#}");

        std::fs::write(&path, "[launch]\nworkers = 0\n").unwrap();
        assert!(LaunchConfig::load(Some(&path)).is_err());
    }
}
