//! bench-read: how fast shards are read, untarred, parsed and validated, from a local directory
//! and from an S3 API server (moto) on loopback. Prints samples/s and MB/s, per wall-clock second
//! and per CPU-second of this process (the server's own CPU is not counted).
//!
//! Usage: `bench-read [shards=16] [samples_per_shard=256] [crops=4] [grid=14] [passes=5]`
//! (each measurement reads the whole dataset `passes` times).

use std::error::Error;
use std::time::{Duration, Instant};

use fourm_data::fixtures::{FixtureSpec, write_fixture};
use fourm_data::moto::MotoServer;
use fourm_data::{DatasetIndex, DatasetStore, LoaderConfig, ShardReader, StepLoader, StoreConfig};
use fourm_plan::{Assignment, Cursor, RankStream};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let arg = |i: usize, default: u32| args.get(i).copied().unwrap_or(default);
    let spec = FixtureSpec {
        shards: arg(0, 16),
        samples_per_shard: arg(1, 256),
        crops: arg(2, 4),
        grid: arg(3, 14),
        seed: 7,
    };
    let passes = arg(4, 5).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "bench-read: {} shards x ~{} samples, {} crops of {}x{} tokens, 5 modalities; {} cores",
        spec.shards,
        spec.samples_per_shard,
        spec.crops,
        spec.grid,
        spec.grid,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let dir = std::env::temp_dir().join(format!("fourm-bench-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let local = DatasetStore::open(dir.to_str().ok_or("non-UTF-8 temp dir")?, config())?;
    let result = runtime.block_on(async {
        let index = write_fixture(&local, &spec, false).await?;
        measure("local directory", &local, &index, passes).await
    });
    std::fs::remove_dir_all(&dir)?;
    result?;

    match MotoServer::start("fourm-bench") {
        Err(reason) => println!("s3 (moto): skipped: {reason}"),
        Ok(moto) => runtime.block_on(async {
            let s3 =
                DatasetStore::open_with_options(&moto.url("bench"), &moto.options(), config())?;
            let index = write_fixture(&s3, &spec, false).await?;
            measure("s3 (moto on loopback)", &s3, &index, passes).await
        })?,
    }
    Ok(())
}

fn config() -> StoreConfig {
    StoreConfig::default()
}

async fn measure(
    name: &str,
    store: &DatasetStore,
    index: &DatasetIndex,
    passes: u32,
) -> Result<(), Box<dyn Error>> {
    let reader = ShardReader::new(store.clone(), index.clone());
    let mb = f64::from(passes) * index.bytes() as f64 / 1e6;
    let samples = f64::from(passes) * index.samples() as f64;

    // Stage by stage, one shard at a time.
    let (mut fetch, mut parse) = (Duration::ZERO, Duration::ZERO);
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    for s in (0..passes).flat_map(|_| &index.shards) {
        let t = Instant::now();
        let raw = reader.fetch(s.shard).await?;
        fetch += t.elapsed();
        let t = Instant::now();
        let data = reader.parse(&raw)?;
        parse += t.elapsed();
        assert_eq!(data.len() as u64, s.samples);
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!("{name}: {mb:.1} MB, {samples} samples ({passes} passes)");
    println!(
        "  read:                      {:>9.1} MB/s",
        mb / fetch.as_secs_f64()
    );
    println!(
        "  untar+parse+validate:      {:>9.0} samples/s  {:>7.1} MB/s  (one core)",
        samples / parse.as_secs_f64(),
        mb / parse.as_secs_f64()
    );
    println!(
        "  all four, sequential:      {:>9.0} samples/s  {:>7.1} MB/s  wall; \
         {:>9.0} samples/s  {:>7.1} MB/s  per CPU-second",
        samples / wall,
        mb / wall,
        samples / cpu,
        mb / cpu
    );

    // The worker's path: one rank's loader over `passes` epochs, 4 shards in flight, batches
    // of 64, every sample decoded.
    let plan = index.plan(1)?;
    let assignment = Assignment::new(1)?;
    let mut stream = RankStream::new(&plan, &assignment, 0, 2, &Cursor::new());
    let config = LoaderConfig {
        shards_in_flight: 4,
        ..LoaderConfig::default()
    };
    let mut loader = StepLoader::new(reader, config, tokio::runtime::Handle::current())?;
    loader.prefetch(&stream);
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut left = u64::from(passes) * plan.samples_per_epoch();
    let mut waited = Duration::ZERO;
    while left > 0 {
        let batch = 64.min(left);
        let step = loader.next_step(&mut stream, batch as usize).await;
        waited += step.waited;
        if let Some((shard, e)) = step.bad_shards().first() {
            return Err(format!("shard {shard}: {e}").into());
        }
        left -= batch;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "  step loader (decoded):     {:>9.0} samples/s  {:>7.1} MB/s  wall; \
         {:>9.0} samples/s per CPU-second; waited {:.0}% of the time for shards",
        samples / wall,
        mb / wall,
        samples / cpu,
        100.0 * waited.as_secs_f64() / wall
    );
    Ok(())
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, 100 ticks per second);
/// NaN elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}
