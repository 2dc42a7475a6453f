//! The commit log: an append-only sequence of small objects `log/<seq>.json` under the checkpoint
//! root, each created with `PutMode::Create`, so that exactly one writer wins every sequence
//! number on any store (a local folder included, which has no conditional update).
//!
//! It is the only source of truth of what is committed, and it fences coordinators: a coordinator
//! starts by appending a `start` entry with the next incarnation; any later append of an older
//! incarnation finds its sequence number taken by someone else and learns that it was replaced.
//! A zombie coordinator (an old pod of a rollout, a stale process) can therefore never commit a
//! checkpoint, delete one, or mark one bad once a newer coordinator has started.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{DurableError, store_err};

/// Folder of the log under the checkpoint root.
pub const LOG_DIR: &str = "log";

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LogEntry {
    /// A coordinator process started (and took over from every older one).
    Start {
        /// Its incarnation (one more than the previous start's).
        incarnation: u32,
        /// Unix milliseconds.
        at_unix_ms: u64,
    },
    /// A checkpoint is committed: its files are verified and its manifest written.
    Commit {
        /// The committing coordinator.
        incarnation: u32,
        /// The generation that wrote it.
        generation: u64,
        /// Its step.
        step: u64,
        /// Its folder under the root.
        folder: String,
    },
    /// A committed checkpoint left the retention window; its folder is (being) deleted.
    Deleted {
        /// The deleting coordinator.
        incarnation: u32,
        /// The folder.
        folder: String,
    },
    /// A committed checkpoint failed verification on restore; it is never restored again.
    Bad {
        /// The coordinator that marked it.
        incarnation: u32,
        /// The folder.
        folder: String,
        /// Why.
        reason: String,
    },
}

impl LogEntry {
    fn incarnation(&self) -> u32 {
        match self {
            Self::Start { incarnation, .. }
            | Self::Commit { incarnation, .. }
            | Self::Deleted { incarnation, .. }
            | Self::Bad { incarnation, .. } => *incarnation,
        }
    }
}

/// A committed checkpoint as the log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// Step.
    pub step: u64,
    /// Generation that wrote it.
    pub generation: u64,
    /// Folder under the root.
    pub folder: String,
    /// Out of the retention window.
    pub deleted: bool,
    /// Failed verification, with the reason.
    pub bad: Option<String>,
}

impl CommitRecord {
    /// Restorable: neither deleted nor bad.
    pub fn live(&self) -> bool {
        !self.deleted && self.bad.is_none()
    }
}

/// What the log says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    /// The next free sequence number.
    pub next: u64,
    /// The incarnation of the latest start (0: none yet).
    pub incarnation: u32,
    /// Every commit, in log order.
    pub commits: Vec<CommitRecord>,
}

impl LogState {
    fn apply(&mut self, entry: &LogEntry) {
        match entry {
            LogEntry::Start { incarnation, .. } => {
                self.incarnation = self.incarnation.max(*incarnation)
            }
            LogEntry::Commit {
                generation,
                step,
                folder,
                ..
            } => self.commits.push(CommitRecord {
                step: *step,
                generation: *generation,
                folder: folder.clone(),
                deleted: false,
                bad: None,
            }),
            LogEntry::Deleted { folder, .. } => {
                for c in self.commits.iter_mut().filter(|c| c.folder == *folder) {
                    c.deleted = true;
                }
            }
            LogEntry::Bad { folder, reason, .. } => {
                for c in self.commits.iter_mut().filter(|c| c.folder == *folder) {
                    c.bad = Some(reason.clone());
                }
            }
        }
    }

    /// Restorable commits, oldest first.
    pub fn live(&self) -> impl DoubleEndedIterator<Item = &CommitRecord> {
        self.commits.iter().filter(|c| c.live())
    }
}

/// Reader and appender of the log of one checkpoint root.
#[derive(Debug)]
pub struct CommitLog {
    store: Arc<dyn ObjectStore>,
    dir: Path,
}

impl CommitLog {
    /// The log under `root`.
    pub fn new(store: Arc<dyn ObjectStore>, root: &Path) -> Self {
        Self {
            store,
            dir: root.clone().join(LOG_DIR),
        }
    }

    fn path(&self, seq: u64) -> Path {
        self.dir.clone().join(format!("{seq:012}.json"))
    }

    /// Reads the whole log. Any store error other than a missing object is an error: nothing may
    /// be decided (least of all deleted) on a partial view.
    pub async fn read(&self) -> Result<LogState, DurableError> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.dir))
            .try_collect()
            .await
            .map_err(|e| store_err(&self.dir, e))?;
        let mut seqs: Vec<u64> = listed
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut state = LogState::default();
        for (i, &seq) in seqs.iter().enumerate() {
            if seq != i as u64 {
                return Err(DurableError::Corrupt {
                    path: self.path(i as u64).to_string(),
                    reason: format!("the commit log has a gap: entry {i} is missing"),
                });
            }
            let entry = self
                .entry(seq)
                .await?
                .ok_or_else(|| DurableError::Corrupt {
                    path: self.path(seq).to_string(),
                    reason: "vanished while reading the log".into(),
                })?;
            state.apply(&entry);
            state.next = seq + 1;
        }
        Ok(state)
    }

    async fn entry(&self, seq: u64) -> Result<Option<LogEntry>, DurableError> {
        let path = self.path(seq);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(|e| store_err(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_err(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DurableError::Corrupt {
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// Appends `entry` at `state.next` and advances it. If that sequence number is taken by an
    /// entry of another incarnation, this coordinator has been replaced: [`DurableError::Fenced`].
    /// A number taken by this very entry (a retried request whose first attempt landed) counts as
    /// appended.
    pub async fn append(&self, state: &mut LogState, entry: LogEntry) -> Result<(), DurableError> {
        let bytes = serde_json::to_vec_pretty(&entry).expect("log entries serialise");
        loop {
            let path = self.path(state.next);
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&path, PutPayload::from(bytes.clone()), opts)
                .await
            {
                Ok(_) => {
                    state.apply(&entry);
                    state.next += 1;
                    return Ok(());
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let found = self.entry(state.next).await?;
                    match found {
                        Some(other) if other == entry => {
                            state.apply(&entry);
                            state.next += 1;
                            return Ok(());
                        }
                        Some(other) if other.incarnation() != entry.incarnation() => {
                            return Err(DurableError::Fenced {
                                mine: entry.incarnation(),
                                theirs: other.incarnation(),
                            });
                        }
                        // One of our own entries, appended by a request we thought failed.
                        Some(other) => {
                            state.apply(&other);
                            state.next += 1;
                        }
                        None => {
                            return Err(DurableError::Corrupt {
                                path: path.to_string(),
                                reason: "exists and does not".into(),
                            });
                        }
                    }
                }
                Err(e) => return Err(store_err(&path, e)),
            }
        }
    }

    /// Whether someone appended past `state` (a newer coordinator started): `Err(Fenced)` then.
    pub async fn check(&self, state: &LogState, incarnation: u32) -> Result<(), DurableError> {
        match self.entry(state.next).await? {
            Some(other) if other.incarnation() != incarnation => Err(DurableError::Fenced {
                mine: incarnation,
                theirs: other.incarnation(),
            }),
            _ => Ok(()),
        }
    }
}
