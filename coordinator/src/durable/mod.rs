//! The coordinator's durable state in object storage, under the checkpoint root:
//!
//! - `job.json`: the job spec, created once (`PutMode::Create`) and checked on every start;
//! - `log/`: the commit log ([`log`]), the one record of which checkpoints are committed, which
//!   were retired or found bad, and which coordinator incarnation is current;
//! - the checkpoint folders `step-<S>-g<generation>/`: the ranks' files, then `MANIFEST.json`.
//!
//! Safety rules: nothing is deleted on a partial view (any store error other than "not found"
//! stops a clean-up, and is logged); a committed checkpoint is deleted only after the log retired
//! it; a coordinator that a newer one replaced can no longer append to the log, so it can neither
//! commit nor retire anything.

mod commit;
pub mod log;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use self::log::{CommitLog, CommitRecord, LogEntry, LogState};
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
    /// A checkpoint file a rank announced is missing or differs from what it announced.
    #[error("checkpoint file {path}: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A newer coordinator started on this checkpoint root: this one may no longer write.
    #[error(
        "fenced: coordinator incarnation {theirs} started on this checkpoint root after this one ({mine})"
    )]
    Fenced {
        /// This coordinator's incarnation.
        mine: u32,
        /// The newer one's.
        theirs: u32,
    },
    /// The root holds checkpoint folders but no commit log (written by an older fourm).
    #[error(
        "{path} holds checkpoint folders ({example}, ...) but no commit log: they were written by an older fourm; move them away or use another checkpoint root"
    )]
    Legacy {
        /// The root.
        path: String,
        /// One of the folders.
        example: String,
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

/// The checkpoint root of a job, as one coordinator incarnation sees it.
#[derive(Debug)]
pub struct Durable {
    store: Arc<dyn ObjectStore>,
    root: Path,
    local: Option<PathBuf>,
    log: CommitLog,
    state: Mutex<LogState>,
    incarnation: u32,
}

impl Durable {
    /// Opens the root for a new coordinator incarnation: checks (or creates) `job.json`, reads the
    /// log, appends this incarnation's start (which fences every older coordinator), finishes the
    /// deletion of retired folders and removes folders that were never committed. `local` is the
    /// root's folder when the store is a local disk.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        root: Path,
        local: Option<PathBuf>,
        spec: &JobSpec,
    ) -> Result<Self, DurableError> {
        let log = CommitLog::new(store.clone(), &root);
        let partial = Self {
            store,
            root,
            local,
            log,
            state: Mutex::new(LogState::default()),
            incarnation: 0,
        };
        partial.ensure_job(spec).await?;
        let mut state = partial.log.read().await?;
        if state.next == 0 {
            partial.refuse_legacy().await?;
        }
        let incarnation = state.incarnation.wrapping_add(1).max(1);
        let start = LogEntry::Start {
            incarnation,
            at_unix_ms: unix_ms(),
        };
        partial.log.append(&mut state, start).await?;
        let durable = Self {
            state: Mutex::new(state),
            incarnation,
            ..partial
        };
        durable.clean_up(None).await;
        Ok(durable)
    }

    /// This coordinator's incarnation.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
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
        read(&self.store, path).await
    }

    /// Creates `job.json` on the first start; afterwards checks that the configuration matches it.
    async fn ensure_job(&self, spec: &JobSpec) -> Result<(), DurableError> {
        let path = self.path(&["job.json"]);
        if self.read(&path).await?.is_none() {
            let json = serde_json::to_vec_pretty(spec).expect("job spec serialises");
            let create = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&path, PutPayload::from(json), create)
                .await
            {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(store_err(&path, e)),
            }
        }
        let bytes = self
            .read(&path)
            .await?
            .ok_or_else(|| DurableError::Corrupt {
                path: path.to_string(),
                reason: "vanished after it was written".into(),
            })?;
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

    /// Checkpoint folders without a log are an older fourm's: never treat them as garbage.
    async fn refuse_legacy(&self) -> Result<(), DurableError> {
        if let Some(example) = self.folders().await?.into_iter().next() {
            return Err(DurableError::Legacy {
                path: self.root.to_string(),
                example,
            });
        }
        Ok(())
    }

    /// Checkpoint folder names under the root.
    async fn folders(&self) -> Result<Vec<String>, DurableError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| store_err(&self.root, e))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|n| folder_step(n).is_some())
            .map(str::to_string)
            .collect())
    }

    /// The committed checkpoints that may be restored, oldest first.
    pub async fn history(&self) -> Vec<CommitRecord> {
        self.state.lock().await.live().cloned().collect()
    }

    /// The manifest of the newest restorable checkpoint of `job_id`. A logged commit whose
    /// manifest is missing or unreadable is marked bad and the one before it is taken; any other
    /// store error is returned (nothing is decided on a partial view).
    pub async fn latest_manifest(&self, job_id: &str) -> Result<Option<Manifest>, DurableError> {
        loop {
            let Some(newest) = self.history().await.pop() else {
                return Ok(None);
            };
            match self.manifest(&newest.folder, job_id).await {
                Ok(m) => return Ok(Some(m)),
                Err(DurableError::Corrupt { path, reason }) => {
                    tracing::error!(folder = %newest.folder, %path, %reason, "committed checkpoint unreadable; falling back to the one before");
                    self.mark_bad(&newest.folder, &format!("{path}: {reason}"))
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The manifest of a committed folder.
    pub async fn manifest(&self, folder: &str, job_id: &str) -> Result<Manifest, DurableError> {
        let path = self.path(&[folder, MANIFEST_NAME]);
        let bytes = self
            .read(&path)
            .await?
            .ok_or_else(|| DurableError::Corrupt {
                path: path.to_string(),
                reason: "the commit log lists it but it does not exist".into(),
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
        Ok(manifest)
    }

    /// Marks a committed checkpoint bad (it failed verification): it is never restored again.
    pub async fn mark_bad(&self, folder: &str, reason: &str) -> Result<(), DurableError> {
        let mut state = self.state.lock().await;
        let entry = LogEntry::Bad {
            incarnation: self.incarnation,
            folder: folder.to_string(),
            reason: reason.to_string(),
        };
        self.log.append(&mut state, entry).await
    }

    /// Whether a newer coordinator has started on this root (`Err(Fenced)` then).
    pub async fn check_fenced(&self) -> Result<(), DurableError> {
        let state = self.state.lock().await;
        self.log.check(&state, self.incarnation).await
    }
}

/// The newest committed, restorable checkpoint folder under `root` (for tools that read
/// checkpoints without being the coordinator).
pub async fn latest_committed_folder(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
) -> Result<Option<String>, DurableError> {
    let state = CommitLog::new(store.clone(), root).read().await?;
    Ok(state.live().next_back().map(|c| c.folder.clone()))
}

async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Option<Vec<u8>>, DurableError> {
    match store.get(path).await {
        Ok(r) => r
            .bytes()
            .await
            .map(|b| Some(b.to_vec()))
            .map_err(|source| store_err(path, source)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(store_err(path, source)),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn store_err(path: &Path, source: object_store::Error) -> DurableError {
    DurableError::Store {
        path: path.to_string(),
        source,
    }
}
