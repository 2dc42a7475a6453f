//! The settings of `fourm launch`: embedded defaults (`defaults.toml`), a user file merged over
//! them key by key, then flags. `[model]`, `[data]` and `[train]` are the worker configuration's
//! sections and are checked by it, so a typo is an error that names the key.

use std::path::Path;

use anyhow::{Context, bail};
use fourm_worker::config::WorkerConfig;
use serde::Deserialize;

/// The embedded defaults.
pub const DEFAULTS: &str = include_str!("defaults.toml");

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
}

/// The merged settings.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// `[launch]`.
    pub launch: LaunchSection,
    /// `[synthetic]`.
    pub synthetic: SyntheticSection,
    /// `[model]`, `[data]` and `[train]` as TOML, completed per worker by [`Self::worker`].
    shared: toml::Table,
}

impl LaunchConfig {
    /// The defaults, with `user` (a TOML file) merged over them.
    pub fn load(user: Option<&Path>) -> anyhow::Result<Self> {
        let mut table: toml::Table = DEFAULTS.parse().context("embedded launch defaults")?;
        if let Some(path) = user {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let over: toml::Table = text
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?;
            for key in over.keys() {
                if !["launch", "synthetic", "model", "data", "train"].contains(&key.as_str()) {
                    bail!(
                        "{}: unknown section `{key}` (expected launch, synthetic, model, data, train)",
                        path.display()
                    );
                }
            }
            merge(&mut table, over);
        }
        let section = |name: &str| {
            table
                .get(name)
                .cloned()
                .unwrap_or_else(|| toml::Value::Table(toml::Table::new()))
        };
        let launch: LaunchSection = section("launch")
            .try_into()
            .context("invalid [launch] section")?;
        let synthetic: SyntheticSection = section("synthetic")
            .try_into()
            .context("invalid [synthetic] section")?;
        let mut shared = toml::Table::new();
        for name in ["model", "data", "train"] {
            shared.insert(name.into(), section(name));
        }
        let config = Self {
            launch,
            synthetic,
            shared,
        };
        config.validate()?;
        Ok(config)
    }

    /// The dataset set in `[data]`, if any (otherwise the synthetic one is used).
    pub fn dataset(&self) -> Option<String> {
        self.shared
            .get("data")
            .and_then(|d| d.get("dataset"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// The model preset name.
    pub fn preset(&self) -> &str {
        self.shared
            .get("model")
            .and_then(|m| m.get("preset"))
            .and_then(|v| v.as_str())
            .unwrap_or("debug")
    }

    /// The configuration of one worker; `local` fills the per-process keys (`[coordinator]`,
    /// `[worker]`, `[metrics]`, `data.dataset`).
    pub fn worker(&self, dataset: &str, local: toml::Table) -> anyhow::Result<WorkerConfig> {
        let mut table = self.shared.clone();
        if let Some(toml::Value::Table(data)) = table.get_mut("data") {
            data.insert("dataset".into(), dataset.into());
        }
        merge(&mut table, local);
        let text = toml::to_string(&table).context("writing the worker configuration")?;
        let config = WorkerConfig::from_toml(&text, Path::new("<launch configuration>"))?;
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

    fn local() -> toml::Table {
        toml::toml! {
            [coordinator]
            address = "http://127.0.0.1:1"
            [worker]
            id = "w0"
        }
    }

    #[test]
    fn defaults_make_a_valid_worker() {
        let c = LaunchConfig::load(None).unwrap();
        assert_eq!(c.launch.workers, 2);
        let w = c.worker("/tmp/data", local()).unwrap();
        assert_eq!(w.model.preset, "debug");
        assert_eq!(w.data.dataset, "/tmp/data");
        assert_eq!(w.worker.id.as_deref(), Some("w0"));
    }

    #[test]
    fn user_file_overrides_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launch.toml");
        std::fs::write(&path, "[launch]\nsteps = 7\n[train]\nbatch_size = 3\n").unwrap();
        let c = LaunchConfig::load(Some(&path)).unwrap();
        assert_eq!(c.launch.steps, 7);
        assert_eq!(c.launch.workers, 2);
        assert_eq!(c.worker("d", local()).unwrap().train.batch_size, 3);

        std::fs::write(&path, "[train]\nbatch_sise = 3\n").unwrap();
        let c = LaunchConfig::load(Some(&path)).unwrap();
        let e = c.worker("d", local()).unwrap_err();
        assert!(format!("{e:#}").contains("batch_sise"), "{e:#}");

        std::fs::write(&path, "[lanch]\nsteps = 3\n").unwrap();
        let e = LaunchConfig::load(Some(&path)).unwrap_err();
        assert!(format!("{e:#}").contains("lanch"), "{e:#}");

        std::fs::write(&path, "[launch]\nworkers = 0\n").unwrap();
        assert!(LaunchConfig::load(Some(&path)).is_err());
    }
}
