//! Fault tests: each kind of bad shard gives its documented error naming the object and entry,
//! the loader reports the shard as bad and goes on, and a store that fails or hangs on its first
//! requests is recovered from by retries. Nothing is yielded twice or lost.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fourm_data::fixtures::{FixtureSpec, write_fixture};
use fourm_data::npy::NpyError;
use fourm_data::{
    DataError, DatasetIndex, DatasetStore, LoaderConfig, ScanOptions, ShardReader, StepLoader,
    StoreConfig, read_tar, scan_dataset, shard_path, write_tar,
};
use fourm_plan::{Assignment, Cursor, RankStream};
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

const SPEC: FixtureSpec = FixtureSpec {
    shards: 4,
    samples_per_shard: 5,
    crops: 2,
    grid: 3,
    seed: 5,
};

fn fast_retries() -> StoreConfig {
    StoreConfig {
        max_retries: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        request_timeout: Duration::from_secs(10),
        ..StoreConfig::default()
    }
}

async fn dataset(store: Arc<dyn ObjectStore>) -> (DatasetStore, DatasetIndex) {
    let ds = DatasetStore::from_store(store, Path::from("ds"), "memory://ds", fast_retries());
    let index = write_fixture(&ds, &SPEC, false).await.unwrap();
    (ds, index)
}

/// Rewrites one entry of a modality's tar of shard 1 with `edit`, or drops it when `edit` gives
/// `None`; returns the new tar bytes.
async fn rewrite(
    ds: &DatasetStore,
    modality: &str,
    entry: usize,
    edit: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Bytes {
    let path = shard_path(ds.root(), modality, 1);
    let old = ds.get(&path).await.unwrap();
    let entries = read_tar("t", &old).unwrap();
    let files: Vec<(String, Vec<u8>)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let data = if i == entry {
                edit(&e.data)?
            } else {
                e.data.to_vec()
            };
            Some((e.name.clone(), data))
        })
        .collect();
    let new = Bytes::from(write_tar(
        files.iter().map(|(n, d)| (n.as_str(), d.as_slice())),
    ));
    ds.put(&path, new.clone()).await.unwrap();
    new
}

/// The index with the recorded size of `modality`'s tar of shard 1 set to `len` (as if indexed
/// from the bad copy's twin), so the reader gets past the size check to validation.
fn resized(index: &DatasetIndex, modality: &str, len: usize) -> DatasetIndex {
    let mut index = index.clone();
    *index.shards[1].bytes.get_mut(modality).unwrap() = len as u64;
    index
}

/// Streams one epoch through one rank; returns the good samples and the bad refs, checking
/// that no sample comes twice and none is lost.
async fn epoch(ds: &DatasetStore, index: &DatasetIndex) -> (BTreeSet<(u32, u32)>, Vec<u32>) {
    let plan = index.plan(9).unwrap();
    let assignment = Assignment::new(1).unwrap();
    let mut stream = RankStream::new(&plan, &assignment, 0, 2, &Cursor::new());
    let reader = ShardReader::new(ds.clone(), index.clone());
    let config = LoaderConfig {
        shards_in_flight: 2,
        ..LoaderConfig::default()
    };
    let mut loader = StepLoader::new(reader, config, tokio::runtime::Handle::current()).unwrap();
    let mut all = BTreeSet::new();
    let mut good = BTreeSet::new();
    let mut bad = Vec::new();
    let mut left = plan.samples_per_epoch();
    while left > 0 {
        let batch = 3.min(left) as usize;
        let step = loader.next_step(&mut stream, batch).await;
        for s in &step.samples {
            assert!(
                all.insert((s.at.shard, s.at.sample)),
                "{:?} yielded twice",
                s.at
            );
            match &s.data {
                Ok(d) => {
                    let f = &SPEC.shard(s.at.shard).samples[s.at.sample as usize];
                    assert_eq!(d, &f.expected(d.crop));
                    good.insert((s.at.shard, s.at.sample));
                }
                Err(_) => bad.push(s.at.shard),
            }
        }
        for (shard, e) in step.bad_shards() {
            assert!(
                e.url()
                    .is_some_and(|u| u.contains(&format!("shard-{shard:05}"))),
                "{e}"
            );
        }
        left -= batch as u64;
    }
    assert_eq!(all.len() as u64, plan.samples_per_epoch(), "nothing lost");
    bad.dedup();
    (good, bad)
}

fn good_count_without(shard: u32) -> usize {
    (0..SPEC.shards)
        .filter(|&s| s != shard)
        .map(|s| SPEC.samples_in(s) as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_tar() {
    let (ds, index) = dataset(Arc::new(InMemory::new())).await;
    let path = shard_path(ds.root(), "tok_rgb@224", 1);
    let full = ds.get(&path).await.unwrap();
    let cut = full.slice(..full.len() * 2 / 3);
    ds.put(&path, cut.clone()).await.unwrap();
    // With the index: the size no longer matches.
    let err = ShardReader::new(ds.clone(), index.clone())
        .read_shard(1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DataError::SizeMismatch { url, .. } if url == "memory://ds/tok_rgb@224/shard-00001.tar"),
        "{err}"
    );
    // Past the size check, the tar itself is refused.
    let err = ShardReader::new(ds.clone(), resized(&index, "tok_rgb@224", cut.len()))
        .read_shard(1)
        .await
        .unwrap_err();
    assert!(matches!(&err, DataError::Tar { .. }), "{err}");
    // A scan reports the shard and indexes the others.
    let outcome = scan_dataset(&ds, &ScanOptions::default()).await.unwrap();
    assert_eq!(outcome.bad.len(), 1);
    assert!(matches!(outcome.bad[0], (1, DataError::Tar { .. })));
    assert_eq!(outcome.index.shards.len(), SPEC.shards as usize - 1);
    // The stream goes on: every other sample arrives, the shard's samples carry its error.
    let (good, bad) = epoch(&ds, &index).await;
    assert_eq!(good.len(), good_count_without(1));
    assert_eq!(bad, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_npy_header() {
    let (ds, index) = dataset(Arc::new(InMemory::new())).await;
    let tar = rewrite(&ds, "tok_depth@224", 2, |npy| {
        let mut npy = npy.to_vec();
        let at = npy.windows(7).position(|w| w == b"'descr'").unwrap();
        npy[at..at + 7].copy_from_slice(b"'dexcr'");
        Some(npy)
    })
    .await;
    let index = resized(&index, "tok_depth@224", tar.len());
    let err = ShardReader::new(ds.clone(), index.clone())
        .read_shard(1)
        .await
        .unwrap_err();
    let key = &SPEC.shard(1).samples[2].key;
    match &err {
        DataError::Npy { url, entry, source } => {
            assert_eq!(url, "memory://ds/tok_depth@224/shard-00001.tar");
            assert_eq!(entry, &format!("{key}.npy"));
            assert!(matches!(source, NpyError::BadHeader(_)), "{source}");
        }
        other => panic!("expected an npy error, got {other}"),
    }
    let (good, bad) = epoch(&ds, &index).await;
    assert_eq!(good.len(), good_count_without(1));
    assert_eq!(bad, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_in_one_modality() {
    let (ds, index) = dataset(Arc::new(InMemory::new())).await;
    let tar = rewrite(&ds, "caption", 3, |_| None).await;
    let index = resized(&index, "caption", tar.len());
    let err = ShardReader::new(ds.clone(), index.clone())
        .read_shard(1)
        .await
        .unwrap_err();
    let keys: Vec<String> = SPEC
        .shard(1)
        .samples
        .iter()
        .map(|s| s.key.clone())
        .collect();
    match &err {
        DataError::KeyMismatch {
            url,
            position,
            expected,
            found,
            ..
        } => {
            assert_eq!(url, "memory://ds/caption/shard-00001.tar");
            assert_eq!(*position, 3);
            assert_eq!(expected.as_ref(), Some(&keys[3]));
            assert_eq!(found.as_ref(), keys.get(4));
        }
        other => panic!("expected a key mismatch, got {other}"),
    }
    let (good, bad) = epoch(&ds, &index).await;
    assert_eq!(good.len(), good_count_without(1));
    assert_eq!(bad, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_id_at_or_above_the_vocabulary() {
    let (ds, index) = dataset(Arc::new(InMemory::new())).await;
    for bad_id in [16_384i16, -1] {
        let tar = rewrite(&ds, "tok_rgb@224", 0, |npy| {
            let mut npy = npy.to_vec();
            // The data is 2 crops x 9 ids of 2 bytes at the end; id 14 is the 6th of crop 1.
            let data = npy.len() - 2 * 9 * 2;
            let at = data + 2 * (9 + 5);
            npy[at..at + 2].copy_from_slice(&bad_id.to_le_bytes());
            Some(npy)
        })
        .await;
        let index = resized(&index, "tok_rgb@224", tar.len());
        let err = ShardReader::new(ds.clone(), index.clone())
            .read_shard(1)
            .await
            .unwrap_err();
        let key = &SPEC.shard(1).samples[0].key;
        match &err {
            DataError::TokenOutOfRange {
                url,
                entry,
                id,
                position,
                vocab_size,
            } => {
                assert_eq!(url, "memory://ds/tok_rgb@224/shard-00001.tar");
                assert_eq!(entry, &format!("{key}.npy"));
                assert_eq!(
                    (*id, *position, *vocab_size),
                    (i64::from(bad_id), 14, 16_384)
                );
            }
            other => panic!("expected an out-of-range id, got {other}"),
        }
        let (good, bad) = epoch(&ds, &index).await;
        assert_eq!(good.len(), good_count_without(1));
        assert_eq!(bad, vec![1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_catches_a_same_size_change() {
    let inner = Arc::new(InMemory::new());
    let ds = DatasetStore::from_store(inner, Path::from("ds"), "memory://ds", fast_retries());
    let index = write_fixture(&ds, &SPEC, true).await.unwrap();
    rewrite(&ds, "caption", 0, |t| {
        let mut t = t.to_vec();
        t[0] = if t[0] == b'x' { b'y' } else { b'x' };
        Some(t)
    })
    .await;
    let err = ShardReader::new(ds.clone(), index.clone())
        .read_shard(1)
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    let unchecked = ShardReader::new(ds, index).with_checksums(false);
    assert!(unchecked.read_shard(1).await.is_ok());
}

/// A store whose first `fail` reads fail (transiently) and whose next `hang` reads never answer.
#[derive(Debug)]
struct FlakyStore {
    inner: InMemory,
    fail: AtomicU32,
    hang: AtomicU32,
    reads: AtomicU32,
}

impl FlakyStore {
    fn new() -> Self {
        Self {
            inner: InMemory::new(),
            fail: AtomicU32::new(0),
            hang: AtomicU32::new(0),
            reads: AtomicU32::new(0),
        }
    }
}

impl fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlakyStore")
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl ObjectStore for FlakyStore {
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
        self.reads.fetch_add(1, Ordering::SeqCst);
        if take(&self.fail) {
            return Err(object_store::Error::Generic {
                store: "FlakyStore",
                source: "connection reset by peer".into(),
            });
        }
        if take(&self.hang) {
            futures::future::pending::<()>().await;
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failing_the_first_requests_is_recovered() {
    let flaky = Arc::new(FlakyStore::new());
    let (ds, index) = dataset(flaky.clone()).await;
    // Three failures and a hang: within four retries, every read recovers.
    flaky.fail.store(3, Ordering::SeqCst);
    flaky.hang.store(1, Ordering::SeqCst);
    let config = StoreConfig {
        max_retries: 4,
        request_timeout: Duration::from_millis(300),
        ..fast_retries()
    };
    let ds = DatasetStore::from_store(flaky.clone(), ds.root().clone(), ds.url(), config);
    let before = flaky.reads.load(Ordering::SeqCst);
    let (good, bad) = epoch(&ds, &index).await;
    assert!(bad.is_empty(), "bad shards {bad:?}");
    assert_eq!(good.len() as u64, index.samples());
    let reads = flaky.reads.load(Ordering::SeqCst) - before;
    let objects = SPEC.shards * index.modalities.len() as u32;
    assert!(reads >= objects + 4, "{reads} reads for {objects} objects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failing_past_the_retries_marks_the_shard_bad() {
    let flaky = Arc::new(FlakyStore::new());
    let (ds, index) = dataset(flaky.clone()).await;
    let reader = ShardReader::new(ds.clone(), index.clone());
    flaky.fail.store(100, Ordering::SeqCst);
    let err = reader.read_shard(2).await.unwrap_err();
    match &err {
        DataError::Store { url, attempts, .. } => {
            assert!(url.starts_with("memory://ds/") && url.ends_with("/shard-00002.tar"));
            assert_eq!(*attempts, fast_retries().max_retries + 1);
        }
        other => panic!("expected a store error, got {other}"),
    }
    // A permanent error is not retried.
    flaky.fail.store(0, Ordering::SeqCst);
    let missing = ShardReader::new(ds.clone(), index.clone());
    let path = shard_path(ds.root(), "det", 3);
    ds.inner().delete(&path).await.unwrap();
    let before = flaky.reads.load(Ordering::SeqCst);
    let err = missing.read_shard(3).await.unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::Store {
                attempts: 1,
                source: object_store::Error::NotFound { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(flaky.reads.load(Ordering::SeqCst) - before <= index.modalities.len() as u32);
}

/// A store failing for longer than one read's retries is not bad data: the loader reads the
/// shard again (within its `retry_for`) and every sample arrives; nothing is skipped. A shard
/// that is really missing is bad data, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_for_a_while_is_not_bad_data() {
    let flaky = Arc::new(FlakyStore::new());
    let (ds, index) = dataset(flaky.clone()).await;
    // More failures in a row than one read's 4 attempts.
    flaky.fail.store(9, Ordering::SeqCst);
    let (good, bad) = epoch(&ds, &index).await;
    assert!(
        bad.is_empty(),
        "samples skipped for a passing outage: {bad:?}"
    );
    assert_eq!(good.len(), good_count_without(u32::MAX));

    let reader = ShardReader::new(ds.clone(), index.clone());
    flaky.fail.store(100, Ordering::SeqCst);
    let outage = reader.read_shard(2).await.unwrap_err();
    assert!(outage.is_transient(), "{outage}");
    flaky.fail.store(0, Ordering::SeqCst);
    ds.inner()
        .delete(&shard_path(ds.root(), "det", 3))
        .await
        .unwrap();
    let missing = reader.read_shard(3).await.unwrap_err();
    assert!(!missing.is_transient(), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtype_other_than_the_index_records() {
    let (ds, index) = dataset(Arc::new(InMemory::new())).await;
    assert_eq!(
        index.modalities["tok_depth@224"].dtype.as_deref(),
        Some("<i2")
    );
    let tar = rewrite(&ds, "tok_depth@224", 0, |npy| {
        let a = fourm_data::npy::NpyArray::parse(Bytes::copy_from_slice(npy)).unwrap();
        let values: Vec<i64> = a.values().collect();
        Some(
            fourm_data::npy::encode(
                fourm_data::npy::Dtype::parse("<i4").unwrap(),
                &a.shape,
                &values,
            )
            .unwrap(),
        )
    })
    .await;
    let index = resized(&index, "tok_depth@224", tar.len());
    let err = ShardReader::new(ds.clone(), index.clone())
        .read_shard(1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DataError::Shape { reason, .. } if reason == "dtype <i4, the index says <i2"),
        "{err}"
    );
    let (good, bad) = epoch(&ds, &index).await;
    assert_eq!(good.len(), good_count_without(1));
    assert_eq!(bad, vec![1]);
}
