//! Starts the rank processes, relays the rendezvous, and reports the timings.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};

use crate::Args;

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let bytes = args.mib * 1024 * 1024;
    println!(
        "ring all-reduce of {} MiB of f32 on loopback, one process per rank, {} KiB pieces, median of {} runs after {} warm-up",
        args.mib, args.chunk_kib, args.iters, args.warmup
    );
    // Timings mean little on a busy machine: say how busy it is.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("{cpus} CPUs, load average {}", load.join(" "));
    }
    for &world in &args.ranks {
        if world < 2 {
            bail!("--ranks: a world needs at least 2 ranks, got {world}");
        }
        let mut per_run = measure(args, world)?;
        per_run.sort_unstable();
        let median = per_run[per_run.len() / 2] as f64 / 1e6;
        let min = per_run[0] as f64 / 1e6;
        let bus = 2.0 * (world - 1) as f64 / world as f64 * bytes as f64;
        println!(
            "ranks {world}: median {:.1} ms, min {:.1} ms, bus bandwidth {:.2} GB/s (median), {:.2} GB/s (best)",
            median * 1e3,
            min * 1e3,
            bus / median / 1e9,
            bus / min / 1e9,
        );
    }
    Ok(())
}

/// The rank processes of one group; those still running when it is dropped (after an error) are
/// killed, so that a failed run leaves nothing behind.
struct Ranks(Vec<(Child, BufReader<ChildStdout>)>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs one group; returns, per timed run, the slowest rank's time in microseconds.
fn measure(args: &Args, world: usize) -> anyhow::Result<Vec<u64>> {
    let exe = std::env::current_exe()?;
    let mut ranks = Ranks(Vec::new());
    for rank in 0..world {
        let mut child = Command::new(&exe)
            .args(["--rank", &rank.to_string(), "--world", &world.to_string()])
            .args([
                "--mib",
                &args.mib.to_string(),
                "--iters",
                &args.iters.to_string(),
            ])
            .args(["--warmup", &args.warmup.to_string()])
            .args(["--chunk-kib", &args.chunk_kib.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a rank process")?;
        let stdout = BufReader::new(child.stdout.take().context("rank stdout")?);
        ranks.0.push((child, stdout));
    }
    let mut addrs = Vec::new();
    for (_, stdout) in &mut ranks.0 {
        addrs.push(expect_line(stdout, "addr ")?);
    }
    let peers = format!("peers {}\n", addrs.join(","));
    for (child, _) in &mut ranks.0 {
        child
            .stdin
            .take()
            .context("rank stdin")?
            .write_all(peers.as_bytes())?;
    }
    let mut slowest = vec![0u64; args.iters];
    for (rank, (child, stdout)) in ranks.0.iter_mut().enumerate() {
        let times = expect_line(stdout, "times ")?;
        for (slot, t) in slowest.iter_mut().zip(times.split(',')) {
            *slot = (*slot).max(t.parse().context("a timing")?);
        }
        if !child.wait()?.success() {
            bail!("rank {rank} failed");
        }
    }
    Ok(slowest)
}

fn expect_line(stdout: &mut BufReader<ChildStdout>, prefix: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    match line.trim().strip_prefix(prefix) {
        Some(rest) => Ok(rest.to_string()),
        None => bail!("a rank process said {line:?}, expected {prefix:?}"),
    }
}
