//! Benchmark of the CPU ring all-reduce on loopback: one process per rank.
//!
//! `cargo run --release -p fourm-collective --bin bench-allreduce -- --ranks 2,4 --mib 64`
//!
//! The launcher starts `n` copies of this binary as rank processes, relays their listener
//! addresses (as the coordinator would), and prints, per world size, the median and minimum over
//! the timed runs of the slowest rank's all-reduce time, and the bus bandwidth
//! `2(n-1)/n × bytes / time`.

mod launcher;
mod rank;

use clap::Parser;

/// Flags of the benchmark.
#[derive(Debug, Parser)]
#[command(about = "CPU ring all-reduce benchmark on loopback (one process per rank)")]
pub struct Args {
    /// World sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    pub ranks: Vec<usize>,
    /// Buffer size in MiB of f32.
    #[arg(long, default_value_t = 64)]
    pub mib: usize,
    /// Timed runs per world size.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Ring piece size in KiB.
    #[arg(long, default_value_t = 256)]
    pub chunk_kib: usize,
    /// Internal: run as this rank of a launcher-started group.
    #[arg(long, hide = true, requires = "world")]
    pub rank: Option<usize>,
    /// Internal: the world size of the group (with `--rank`).
    #[arg(long, hide = true)]
    pub world: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match (args.rank, args.world) {
        (Some(rank), Some(world)) => rank::run(&args, rank, world),
        _ => launcher::run(&args),
    }
}
