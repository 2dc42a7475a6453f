//! One rank process: binds a listener, reports its address, receives the peers, joins the ring
//! and times the all-reduce.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

use anyhow::{Context, bail};
use fourm_collective::{AbortHandle, Collective, Rendezvous, RingCollective, RingConfig};

use crate::Args;

/// Protocol with the launcher, one line each on stdout / stdin:
/// `addr <listener>` → `peers <a0>,<a1>,...` → `times <µs>,<µs>,...`.
pub fn run(args: &Args, rank: usize, world: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the listener")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "addr {}", listener.local_addr()?)?;
    stdout.flush()?;

    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let peers = line
        .trim()
        .strip_prefix("peers ")
        .context("expected the peer list")?
        .split(',')
        .map(|a| a.parse::<SocketAddr>().context("peer address"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = RingConfig {
        chunk_bytes: args.chunk_kib * 1024,
        ..RingConfig::default()
    };
    let rendezvous = Rendezvous {
        generation: 1,
        rank,
        peers,
        key: b"bench".to_vec(),
    };
    let mut ring = RingCollective::connect(&listener, &rendezvous, &config, AbortHandle::new())?;

    let len = args.mib * 1024 * 1024 / 4;
    let mut buf = vec![0f32; len];
    let expected = (world * (world + 1) / 2) as f32;
    let mut times = Vec::with_capacity(args.iters);
    for iter in 0..args.warmup + args.iters {
        buf.fill((rank + 1) as f32);
        ring.barrier()?;
        let started = Instant::now();
        ring.all_reduce_sum(&mut buf)?;
        let elapsed = started.elapsed();
        if iter >= args.warmup {
            times.push(elapsed.as_micros().to_string());
        }
        // Checking the result costs CPU: wait until no rank is still being timed.
        ring.barrier()?;
        let wrong = buf.iter().filter(|&&x| x != expected).count();
        if wrong > 0 {
            bail!("rank {rank}: {wrong} elements differ from {expected} after the all-reduce");
        }
    }
    writeln!(stdout, "times {}", times.join(","))?;
    Ok(())
}
