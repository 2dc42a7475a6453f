//! One conformance suite, run against every store: an in-memory store, a local directory and a
//! real S3 API server (moto) on loopback. It writes a dataset, indexes it, reads every shard back
//! bit-identical, decodes every crop of every sample, and streams one epoch through two ranks'
//! loaders: every sample exactly once, with the right contents.

use std::collections::BTreeSet;
use std::sync::Arc;

use fourm_data::fixtures::{FixtureSpec, write_fixture};
use fourm_data::moto::MotoServer;
use fourm_data::{
    DatasetStore, LoaderConfig, ModalityKind, ShardReader, StepLoader, StoreConfig, read_index,
    shard_path,
};
use fourm_plan::{Assignment, Cursor, RankStream};
use object_store::memory::InMemory;
use object_store::path::Path;

const SPEC: FixtureSpec = FixtureSpec {
    shards: 5,
    samples_per_shard: 6,
    crops: 3,
    grid: 4,
    seed: 11,
};

async fn conformance(store: DatasetStore) {
    let index = write_fixture(&store, &SPEC, true).await.unwrap();
    assert_eq!(
        read_index(&store).await.unwrap(),
        index,
        "index.json round trip"
    );
    assert_eq!(index.shards.len(), SPEC.shards as usize);
    let total: u64 = (0..SPEC.shards)
        .map(|s| u64::from(SPEC.samples_in(s)))
        .sum();
    assert_eq!(index.samples(), total);
    let rgb = &index.modalities["tok_rgb@224"];
    assert_eq!(rgb.kind, ModalityKind::Tokens);
    assert_eq!(
        (rgb.vocab_size, rgb.token_shape),
        (Some(16_384), Some([4, 4]))
    );
    assert_eq!(index.modalities["caption"].kind, ModalityKind::Text);
    assert_eq!(
        index.modalities["crop_settings"].kind,
        ModalityKind::CropSettings
    );

    let reader = ShardReader::new(store.clone(), index.clone());
    for s in 0..SPEC.shards {
        let fixture = SPEC.shard(s);
        for (modality, tar) in &fixture.tars {
            let got = store
                .get(&shard_path(store.root(), modality, s))
                .await
                .unwrap();
            assert_eq!(&got[..], &tar[..], "shard {s} {modality}: bytes differ");
        }
        let data = reader.read_shard(s).await.unwrap();
        assert_eq!(data.len(), fixture.samples.len());
        for (i, sample) in fixture.samples.iter().enumerate() {
            for crop in 0..SPEC.crops {
                assert_eq!(data.decode_crop(i, crop).unwrap(), sample.expected(crop));
            }
            assert!(data.decode_crop(i, SPEC.crops).is_none());
        }
    }

    // One epoch through two ranks, each mixing two shards, with one shard of read-ahead.
    let plan = index.plan(3).unwrap();
    let assignment = Assignment::new(2).unwrap();
    let per_epoch = plan.shards_per_epoch();
    let config = LoaderConfig {
        shards_in_flight: 1,
        ..LoaderConfig::default()
    };
    let mut seen = BTreeSet::new();
    for rank in 0..2 {
        let quota: u64 = assignment
            .entries(rank)
            .take_while(|&k| k < per_epoch)
            .map(|k| plan.entry(k).samples)
            .sum();
        let mix = assignment
            .entries(rank)
            .take_while(|&k| k < per_epoch)
            .count();
        let mut stream = RankStream::new(&plan, &assignment, rank, mix, &Cursor::new());
        let mut loader = StepLoader::new(
            reader.clone(),
            config.clone(),
            tokio::runtime::Handle::current(),
        )
        .unwrap();
        loader.prefetch(&stream);
        let mut taken = 0;
        while taken < quota {
            let batch = 4.min(quota - taken) as usize;
            let step = loader.next_step(&mut stream, batch).await;
            assert!(loader.resident() <= mix.max(1), "read-ahead is bounded");
            assert_eq!(step.samples.len(), batch);
            for s in &step.samples {
                assert_eq!(s.at.epoch, 0);
                let decoded = s.data.as_ref().unwrap();
                let fixture = &SPEC.shard(s.at.shard).samples[s.at.sample as usize];
                assert_eq!(decoded, &fixture.expected(decoded.crop));
                assert!(seen.insert((s.at.shard, s.at.sample)), "{:?} twice", s.at);
            }
            taken += batch as u64;
        }
    }
    assert_eq!(seen.len() as u64, total, "every sample of the epoch, once");
}

fn config() -> StoreConfig {
    StoreConfig::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store() {
    let store = DatasetStore::from_store(
        Arc::new(InMemory::new()),
        Path::from("datasets/fixture"),
        "memory://datasets/fixture",
        config(),
    );
    conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    conformance(DatasetStore::open(&url, config()).unwrap()).await;
    // A bare path opens the same dataset.
    let bare = DatasetStore::open(dir.path().to_str().unwrap(), config()).unwrap();
    assert_eq!(
        read_index(&bare).await.unwrap().shards.len(),
        SPEC.shards as usize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_api_server_on_loopback() {
    let moto = match MotoServer::start("fourm-conformance") {
        Ok(m) => m,
        Err(reason) => {
            eprintln!("skipping the S3 conformance run: {reason}");
            return;
        }
    };
    let url = moto.url("datasets/fixture");
    let store = DatasetStore::open_with_options(&url, &moto.options(), config()).unwrap();
    conformance(store).await;
}

/// The training loop is a plain thread: the blocking form gives the same samples as the async one.
#[test]
fn blocking_loader_from_a_plain_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = DatasetStore::from_store(
        Arc::new(InMemory::new()),
        Path::from("d"),
        "memory://d",
        config(),
    );
    let index = runtime
        .block_on(write_fixture(&store, &SPEC, false))
        .unwrap();
    let reader = ShardReader::new(store, index.clone());
    let plan = index.plan(5).unwrap();
    let assignment = Assignment::new(1).unwrap();
    let make = || {
        let stream = RankStream::new(&plan, &assignment, 0, 2, &Cursor::new());
        let loader = StepLoader::new(
            reader.clone(),
            LoaderConfig::default(),
            runtime.handle().clone(),
        )
        .unwrap();
        (stream, loader)
    };
    let (mut s1, mut blocking) = make();
    let (mut s2, mut async_loader) = make();
    for _ in 0..5 {
        let a = blocking.next_step_blocking(&mut s1, 7);
        let b = runtime.block_on(async_loader.next_step(&mut s2, 7));
        assert_eq!(a.samples.len(), 7);
        for (x, y) in a.samples.iter().zip(&b.samples) {
            assert_eq!(x.at, y.at);
            assert_eq!(x.data.as_ref().unwrap(), y.data.as_ref().unwrap());
        }
    }
}
