//! The coordinator's durable state under faults: a store that errors never makes it delete a
//! committed checkpoint; a newer coordinator fences an older one; a commit checks every file's
//! hash; the retention window and the clean-up of interrupted writes survive restarts.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use fourm_coordinator::durable::{Durable, DurableError, JobSpec};
use fourm_coordinator::manifest::{MANIFEST_FORMAT, Manifest, ManifestFile, folder_name};
use fourm_plan::{Assignment, CursorState};
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use sha2::{Digest, Sha256};

fn spec() -> JobSpec {
    JobSpec {
        job_id: "job".into(),
        dataset: "memory://d".into(),
        seed: 0,
        total_steps: 100,
    }
}

/// A local store whose reads of manifests and listings fail with a server error while `broken`.
#[derive(Debug)]
struct Flaky {
    inner: LocalFileSystem,
    broken: AtomicBool,
}

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flaky")
    }
}

impl Flaky {
    fn check(&self, path: &Path) -> object_store::Result<()> {
        if self.broken.load(Ordering::SeqCst) && path.as_ref().contains("MANIFEST") {
            return Err(unavailable());
        }
        Ok(())
    }
}

fn unavailable() -> object_store::Error {
    object_store::Error::Generic {
        store: "Flaky",
        source: "503 Service Unavailable".into(),
    }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a checkpoint's one file under its folder and returns the manifest to commit.
async fn written(store: &Arc<dyn ObjectStore>, step: u64, generation: u64) -> Manifest {
    let folder = folder_name(step, generation);
    let data = format!("weights of step {step}").into_bytes();
    let path = Path::from("ckpt")
        .join(folder.as_str())
        .join("model.safetensors");
    store.put(&path, data.clone().into()).await.unwrap();
    Manifest {
        format: MANIFEST_FORMAT,
        job_id: "job".into(),
        step,
        generation,
        incarnation: 0,
        world_size: 1,
        folder,
        files: vec![ManifestFile {
            name: "model.safetensors".into(),
            size: data.len() as u64,
            sha256: sha(&data),
        }],
        cursor: CursorState {
            seed: 0,
            done_below: 0,
            started: Vec::new(),
        },
        assignment: Assignment::new(1).unwrap(),
        quarantined: Vec::new(),
        committed_unix_ms: 0,
    }
}

async fn open(
    store: &Arc<dyn ObjectStore>,
    dir: &std::path::Path,
) -> Result<Durable, DurableError> {
    Durable::open(
        store.clone(),
        Path::from("ckpt"),
        Some(dir.join("ckpt")),
        &spec(),
    )
    .await
}

fn folder_exists(dir: &std::path::Path, folder: &str) -> bool {
    dir.join("ckpt")
        .join(folder)
        .join("model.safetensors")
        .is_file()
}

#[tokio::test]
async fn storage_errors_never_delete_a_committed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Arc::new(Flaky {
        inner: LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
        broken: AtomicBool::new(false),
    });
    let store: Arc<dyn ObjectStore> = flaky.clone();
    let durable = open(&store, dir.path()).await.unwrap();
    let manifest = written(&store, 10, 1).await;
    durable.commit(&manifest).await.unwrap();
    drop(durable);
    // A restart while the store answers 503 for manifests: the start may fail, but deletes
    // nothing, and the committed checkpoint is restored once the store recovers.
    flaky.broken.store(true, Ordering::SeqCst);
    let again = open(&store, dir.path()).await.unwrap();
    let latest = again.latest_manifest("job").await;
    assert!(
        matches!(latest, Err(DurableError::Store { .. })),
        "{latest:?}"
    );
    again.clean_up(None).await;
    assert!(
        folder_exists(dir.path(), &manifest.folder),
        "deleted on a 503"
    );
    flaky.broken.store(false, Ordering::SeqCst);
    let again = open(&store, dir.path()).await.unwrap();
    let latest = again.latest_manifest("job").await.unwrap().unwrap();
    assert_eq!(latest.step, 10);
}

#[tokio::test]
async fn a_newer_coordinator_fences_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let old = open(&store, dir.path()).await.unwrap();
    old.commit(&written(&store, 10, 1).await).await.unwrap();
    let new = open(&store, dir.path()).await.unwrap();
    assert!(new.incarnation() > old.incarnation());
    // The old one (a stale pod, a zombie) can no longer commit, nor mark anything bad.
    let zombie = written(&store, 20, 1).await;
    let e = old.commit(&zombie).await.unwrap_err();
    assert!(matches!(e, DurableError::Fenced { .. }), "{e}");
    assert!(matches!(
        old.check_fenced().await,
        Err(DurableError::Fenced { .. })
    ));
    let e = old.mark_bad("step-000000010-g0000000000000001", "x").await;
    assert!(matches!(e, Err(DurableError::Fenced { .. })), "{e:?}");
    // The new one sees only its own history, and removes what the zombie wrote.
    let history: Vec<u64> = new.history().await.iter().map(|c| c.step).collect();
    assert_eq!(history, vec![10]);
    new.clean_up(None).await;
    assert!(!folder_exists(dir.path(), &zombie.folder));
    assert!(new.check_fenced().await.is_ok());
}

#[tokio::test]
async fn a_commit_checks_every_file_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let durable = open(&store, dir.path()).await.unwrap();
    let mut manifest = written(&store, 10, 1).await;
    // Same size, other bytes: a size check alone would pass.
    manifest.files[0].sha256 = sha(b"something else of any size");
    let e = durable.commit(&manifest).await.unwrap_err();
    assert!(matches!(e, DurableError::BadFile { .. }), "{e}");
    assert!(durable.history().await.is_empty());
}

#[tokio::test]
async fn retention_and_the_clean_up_of_interrupted_writes_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let mut folders = Vec::new();
    for step in [10, 20, 30, 40] {
        // A coordinator restart before every commit.
        let durable = open(&store, dir.path()).await.unwrap();
        let m = written(&store, step, 1).await;
        durable.commit(&m).await.unwrap();
        folders.push(m.folder);
    }
    let durable = open(&store, dir.path()).await.unwrap();
    let history: Vec<u64> = durable.history().await.iter().map(|c| c.step).collect();
    assert_eq!(
        history,
        vec![10, 20, 30, 40],
        "the whole window is known after restarts"
    );
    durable.retire(&folders[..1]).await.unwrap();
    assert!(!folder_exists(dir.path(), &folders[0]));
    // A staged upload left inside a committed folder by a killed writer.
    let staged = dir
        .path()
        .join("ckpt")
        .join(&folders[3])
        .join("optimizer.safetensors#17");
    std::fs::write(&staged, b"partial").unwrap();
    drop(durable);
    let durable = open(&store, dir.path()).await.unwrap();
    let history: Vec<u64> = durable.history().await.iter().map(|c| c.step).collect();
    assert_eq!(history, vec![20, 30, 40]);
    assert!(!staged.exists(), "the staged file is removed");
    assert!(folder_exists(dir.path(), &folders[3]));
}
