//! The coordinator's durable state in object storage, under the checkpoint root:
//! `job.json` (the job spec, written once and checked on every start), `coordinator.json` (the
//! incarnation counter that keeps generation ids unique across restarts) and the checkpoint
//! folders, whose `MANIFEST.json` is written last with `PutMode::Create`.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::manifest::{MANIFEST_FORMAT, MANIFEST_NAME, Manifest, folder_step};

/// A storage problem, naming the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// The store failed.
    #[error("object store error on {path}: {source}")]
    Store {
        /// The object.
        path: String,
        /// Why.
        #[source]
        source: object_store::Error,
    },
    /// An object holds something else than expected.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The object.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The stored job spec differs from the configuration.
    #[error("the job stored at {path} differs from the configuration: {reason}")]
    JobMismatch {
        /// `job.json`.
        path: String,
        /// The difference.
        reason: String,
    },
    /// A checkpoint file a rank announced is missing or has another size.
    #[error("checkpoint file {path}: {reason}")]
    MissingFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// What defines a job; a restarted coordinator must find the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Job id.
    pub job_id: String,
    /// Dataset URL.
    pub dataset: String,
    /// Seed of the epoch plan.
    pub seed: u64,
    /// Steps of the job.
    pub total_steps: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoordinatorFile {
    incarnation: u32,
}

/// Checkpoint root of a job.
#[derive(Debug, Clone)]
pub struct Durable {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

impl Durable {
    /// The durable state at `root` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self { store, root }
    }

    /// The store and the root, for writers of checkpoint files.
    pub fn location(&self) -> (&Arc<dyn ObjectStore>, &Path) {
        (&self.store, &self.root)
    }

    fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.root.clone(), |p, part| p.clone().join(*part))
    }

    async fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, DurableError> {
        match self.store.get(path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|source| store_err(path, source)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(store_err(path, source)),
        }
    }

    /// Writes `job.json` on the first start; afterwards checks that the configuration matches it.
    pub async fn ensure_job(&self, spec: &JobSpec) -> Result<(), DurableError> {
        let path = self.path(&["job.json"]);
        match self.read(&path).await? {
            Some(bytes) => {
                let stored: JobSpec =
                    serde_json::from_slice(&bytes).map_err(|e| DurableError::Corrupt {
                        path: path.to_string(),
                        reason: e.to_string(),
                    })?;
                if stored != *spec {
                    return Err(DurableError::JobMismatch {
                        path: path.to_string(),
                        reason: format!("stored {stored:?}, configured {spec:?}"),
                    });
                }
                Ok(())
            }
            None => {
                let json = serde_json::to_vec_pretty(spec).expect("job spec serialises");
                self.store
                    .put(&path, PutPayload::from(json))
                    .await
                    .map_err(|e| store_err(&path, e))?;
                Ok(())
            }
        }
    }

    /// Increments and returns the incarnation counter.
    pub async fn next_incarnation(&self) -> Result<u32, DurableError> {
        let path = self.path(&["coordinator.json"]);
        let mut file = match self.read(&path).await? {
            Some(bytes) => serde_json::from_slice::<CoordinatorFile>(&bytes).map_err(|e| {
                DurableError::Corrupt {
                    path: path.to_string(),
                    reason: e.to_string(),
                }
            })?,
            None => CoordinatorFile::default(),
        };
        file.incarnation = file.incarnation.wrapping_add(1).max(1);
        let json = serde_json::to_vec(&file).expect("serialises");
        self.store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|e| store_err(&path, e))?;
        Ok(file.incarnation)
    }

    /// Checkpoint folders under the root: `(folder, step, has a manifest)`, by step.
    pub async fn folders(&self) -> Result<Vec<(String, u64, bool)>, DurableError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| store_err(&self.root, e))?;
        let mut out = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(name) = prefix.filename() else {
                continue;
            };
            let Some(step) = folder_step(name) else {
                continue;
            };
            let name = name.to_string();
            let has = self
                .store
                .head(&self.path(&[&name, MANIFEST_NAME]))
                .await
                .is_ok();
            out.push((name, step, has));
        }
        out.sort_by_key(|f| f.1);
        Ok(out)
    }

    /// The manifest of the newest committed checkpoint of `job_id`.
    pub async fn latest_manifest(&self, job_id: &str) -> Result<Option<Manifest>, DurableError> {
        for (folder, _, has) in self.folders().await?.into_iter().rev() {
            if !has {
                continue;
            }
            let path = self.path(&[&folder, MANIFEST_NAME]);
            let bytes = self
                .read(&path)
                .await?
                .ok_or_else(|| DurableError::Corrupt {
                    path: path.to_string(),
                    reason: "vanished while reading".into(),
                })?;
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| DurableError::Corrupt {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?;
            if manifest.format != MANIFEST_FORMAT
                || manifest.job_id != job_id
                || manifest.folder != folder
            {
                return Err(DurableError::Corrupt {
                    path: path.to_string(),
                    reason: format!(
                        "format {} of job `{}` in folder `{}`",
                        manifest.format, manifest.job_id, manifest.folder
                    ),
                });
            }
            return Ok(Some(manifest));
        }
        Ok(None)
    }

    /// Commits a checkpoint: checks the announced files, then creates its `MANIFEST.json` (which
    /// must not exist yet).
    pub async fn commit(&self, manifest: &Manifest) -> Result<(), DurableError> {
        for f in &manifest.files {
            let path = self.path(&[&manifest.folder, &f.name]);
            match self.store.head(&path).await {
                Ok(meta) if meta.size == f.size => {}
                Ok(meta) => {
                    return Err(DurableError::MissingFile {
                        path: path.to_string(),
                        reason: format!("{} bytes, announced {}", meta.size, f.size),
                    });
                }
                Err(e) => {
                    return Err(DurableError::MissingFile {
                        path: path.to_string(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        let path = self.path(&[&manifest.folder, MANIFEST_NAME]);
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(&path, PutPayload::from(json), opts)
            .await
            .map_err(|e| store_err(&path, e))?;
        Ok(())
    }

    /// Deletes a checkpoint folder.
    pub async fn delete_folder(&self, folder: &str) -> Result<(), DurableError> {
        let prefix = self.path(&[folder]);
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_err(&prefix, e))?;
        // The manifest goes first, so that a half-deleted folder never looks committed.
        let manifest = self.path(&[folder, MANIFEST_NAME]);
        let mut paths: Vec<Path> = objects.into_iter().map(|m| m.location).collect();
        paths.sort_by_key(|p| *p != manifest);
        for p in paths {
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(&p, e)),
            }
        }
        Ok(())
    }

    /// Deletes folders without a manifest whose step is below `before` (all of them if `None`).
    pub async fn collect_garbage(&self, before: Option<u64>) -> Result<Vec<String>, DurableError> {
        let mut removed = Vec::new();
        for (folder, step, has) in self.folders().await? {
            if !has && before.is_none_or(|b| step < b) {
                self.delete_folder(&folder).await?;
                removed.push(folder);
            }
        }
        Ok(removed)
    }
}

fn store_err(path: &Path, source: object_store::Error) -> DurableError {
    DurableError::Store {
        path: path.to_string(),
        source,
    }
}
