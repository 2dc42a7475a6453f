//! Committing, retiring and cleaning up checkpoint folders.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use super::log::LogEntry;
use super::{Durable, DurableError, store_err};
use crate::manifest::{MANIFEST_NAME, Manifest, folder_step};

impl Durable {
    /// Commits a checkpoint: reads back every announced file and checks its size and SHA-256,
    /// creates its `MANIFEST.json`, then appends the commit to the log (the moment it exists).
    pub async fn commit(&self, manifest: &Manifest) -> Result<(), DurableError> {
        for f in &manifest.files {
            let path = self.path(&[&manifest.folder, &f.name]);
            let (size, sha256) = self.digest(&path).await?;
            if size != f.size || sha256 != f.sha256 {
                return Err(DurableError::BadFile {
                    path: path.to_string(),
                    reason: format!(
                        "{size} bytes with SHA-256 {sha256}, announced {} bytes with {}",
                        f.size, f.sha256
                    ),
                });
            }
        }
        // Tests widen the window between verified files and the manifest
        // (`FAILPOINTS=commit-manifest=sleep(ms)`), to kill a coordinator inside it.
        fail::fail_point!("commit-manifest");
        let path = self.path(&[&manifest.folder, MANIFEST_NAME]);
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(json.clone()), create)
            .await
        {
            Ok(_) => {}
            // A retried commit whose manifest landed before: the same bytes are fine.
            Err(object_store::Error::AlreadyExists { .. })
                if self.read(&path).await?.as_deref() == Some(&json[..]) => {}
            Err(e) => return Err(store_err(&path, e)),
        }
        let mut state = self.state.lock().await;
        let entry = LogEntry::Commit {
            incarnation: self.incarnation,
            generation: manifest.generation,
            step: manifest.step,
            folder: manifest.folder.clone(),
        };
        self.log.append(&mut state, entry).await?;
        drop(state);
        self.sweep_staging(&manifest.folder);
        Ok(())
    }

    /// Size and SHA-256 of an object, streamed.
    async fn digest(&self, path: &Path) -> Result<(u64, String), DurableError> {
        let bad = |reason: String| DurableError::BadFile {
            path: path.to_string(),
            reason,
        };
        let mut stream = match self.store.get(path).await {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Err(bad("missing".into())),
            Err(e) => return Err(store_err(path, e)),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| store_err(path, e))?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let hex = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok((size, hex))
    }

    /// Retires committed folders out of the retention window: the log first (so that no restart
    /// ever restores a half-deleted folder), then the objects.
    pub async fn retire(&self, folders: &[String]) -> Result<(), DurableError> {
        for folder in folders {
            let mut state = self.state.lock().await;
            let entry = LogEntry::Deleted {
                incarnation: self.incarnation,
                folder: folder.clone(),
            };
            self.log.append(&mut state, entry).await?;
            drop(state);
            self.delete_folder(folder).await?;
        }
        Ok(())
    }

    /// Deletes what is no longer needed, never on a partial view: folders the log retired, and
    /// folders it never committed whose step is at most `up_to` (all of them when `None`, at a
    /// coordinator's start, when no checkpoint is being written). A store error stops the
    /// clean-up and is logged: it is tried again after the next commit.
    pub async fn clean_up(&self, up_to: Option<u64>) {
        if let Err(e) = self.try_clean_up(up_to).await {
            tracing::warn!(error = %e, "checkpoint clean-up skipped");
        }
    }

    async fn try_clean_up(&self, up_to: Option<u64>) -> Result<(), DurableError> {
        let (live, retired) = {
            let state = self.state.lock().await;
            let live: Vec<String> = state.live().map(|c| c.folder.clone()).collect();
            let retired: Vec<String> = state
                .commits
                .iter()
                .filter(|c| c.deleted)
                .map(|c| c.folder.clone())
                .collect();
            (live, retired)
        };
        for folder in self.folders().await? {
            if live.contains(&folder) {
                self.sweep_staging(&folder);
                continue;
            }
            let never_committed = !retired.contains(&folder);
            let step = folder_step(&folder).unwrap_or(u64::MAX);
            if never_committed && up_to.is_some_and(|s| step > s) {
                continue;
            }
            tracing::info!(folder = %folder, retired = !never_committed, "removing checkpoint folder");
            self.delete_folder(&folder).await?;
        }
        Ok(())
    }

    /// Deletes a folder: the manifest first (so that a half-deleted folder never looks like a
    /// checkpoint), then the rest; on a local disk also what object_store cannot see.
    async fn delete_folder(&self, folder: &str) -> Result<(), DurableError> {
        let prefix = self.path(&[folder]);
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_err(&prefix, e))?;
        let manifest = self.path(&[folder, MANIFEST_NAME]);
        let mut paths: Vec<Path> = objects.into_iter().map(|m| m.location).collect();
        paths.sort_by_key(|p| *p != manifest);
        for p in paths {
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(&p, e)),
            }
        }
        if let Some(dir) = self.local_folder(folder) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(folder = %dir.display(), error = %e, "cannot remove"),
            }
        }
        Ok(())
    }

    fn local_folder(&self, folder: &str) -> Option<std::path::PathBuf> {
        self.local.as_ref().map(|d| d.join(folder))
    }

    /// Removes the staged files of interrupted writes (`name#<digits>`) from a local folder;
    /// object_store neither lists nor deletes them.
    fn sweep_staging(&self, folder: &str) {
        let Some(dir) = self.local_folder(folder) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let staged = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if staged && let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a staged upload");
            }
        }
    }
}
