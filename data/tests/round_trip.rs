//! Property tests: shards written in the layout read back bit-identical and decode to what was
//! written, for random shapes; `.npy` arrays of every integer dtype round-trip.

use std::sync::Arc;

use bytes::Bytes;
use fourm_data::fixtures::{FixtureSpec, write_fixture};
use fourm_data::npy::{Dtype, NpyArray, encode};
use fourm_data::{DatasetStore, ShardReader, StoreConfig, shard_path};
use object_store::memory::InMemory;
use object_store::path::Path;
use proptest::prelude::*;

fn spec() -> impl Strategy<Value = FixtureSpec> {
    (1u32..4, 1u32..7, 1u32..4, 1u32..5, any::<u64>()).prop_map(
        |(shards, samples_per_shard, crops, grid, seed)| FixtureSpec {
            shards,
            samples_per_shard,
            crops,
            grid,
            seed,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn written_shards_read_back_identical(spec in spec()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = DatasetStore::from_store(
                Arc::new(InMemory::new()),
                Path::from("p"),
                "memory://p",
                StoreConfig::default(),
            );
            let index = write_fixture(&store, &spec, spec.seed % 2 == 0).await.unwrap();
            let reader = ShardReader::new(store.clone(), index);
            for s in 0..spec.shards {
                let fixture = spec.shard(s);
                for (m, tar) in &fixture.tars {
                    let got = store.get(&shard_path(store.root(), m, s)).await.unwrap();
                    assert_eq!(&got[..], &tar[..]);
                }
                let data = reader.read_shard(s).await.unwrap();
                assert_eq!(data.len(), fixture.samples.len());
                for (i, sample) in fixture.samples.iter().enumerate() {
                    for crop in 0..spec.crops {
                        assert_eq!(data.decode_crop(i, crop).unwrap(), sample.expected(crop));
                    }
                }
            }
        });
    }

    #[test]
    fn npy_round_trips_every_integer_dtype(
        (descr, rows, cols, seed) in (
            prop::sample::select(vec!["|i1", "|u1", "<i2", ">i2", "<u2", "<i4", ">u4", "<i8", ">i8"]),
            1usize..5,
            0usize..9,
            any::<u64>(),
        )
    ) {
        let dtype = Dtype::parse(descr).unwrap();
        let bits = 8 * dtype.width as u32;
        let values: Vec<i64> = (0..rows * cols)
            .map(|i| {
                let r = fourm_plan::derive_seed(&[seed, i as u64]);
                match (dtype.signed, bits) {
                    (_, 64) => r as i64 & i64::MAX,
                    (true, b) => (r >> (64 - b)) as i64 - (1i64 << (b - 1)),
                    (false, b) => (r >> (64 - b)) as i64,
                }
            })
            .collect();
        let bytes = encode(dtype, &[rows, cols], &values).unwrap();
        prop_assert_eq!(bytes.len() % 64, (rows * cols * dtype.width) % 64);
        let parsed = NpyArray::parse(Bytes::from(bytes)).unwrap();
        prop_assert_eq!(parsed.dtype, dtype);
        prop_assert_eq!(&parsed.shape, &vec![rows, cols]);
        prop_assert_eq!(parsed.values().collect::<Vec<_>>(), values);
    }
}
