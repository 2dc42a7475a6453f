//! The checks every implementation must pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fourm_collective::CollectiveError;
use libtest_mimic::Failed;

use crate::implementations::Implementation;
use crate::{Check, HANG, ensure, integer, noisy, on_ranks};

pub const ALL: &[Check] = &[
    Check {
        name: "sum_is_exact_for_any_length",
        min_world: 1,
        run: sum_is_exact_for_any_length,
    },
    Check {
        name: "mean_is_sum_over_world",
        min_world: 1,
        run: mean_is_sum_over_world,
    },
    Check {
        name: "sum_of_100m_elements",
        min_world: 2,
        run: sum_of_100m_elements,
    },
    Check {
        name: "broadcast_from_every_root",
        min_world: 1,
        run: broadcast_from_every_root,
    },
    Check {
        name: "barrier_waits_for_every_rank",
        min_world: 2,
        run: barrier_waits_for_every_rank,
    },
    Check {
        name: "results_bit_identical_and_deterministic",
        min_world: 2,
        run: results_bit_identical_and_deterministic,
    },
    Check {
        name: "silent_peer_times_out",
        min_world: 2,
        run: silent_peer_times_out,
    },
    Check {
        name: "dead_peer_is_an_error",
        min_world: 3,
        run: dead_peer_is_an_error,
    },
    Check {
        name: "abort_unblocks_an_operation",
        min_world: 2,
        run: abort_unblocks_an_operation,
    },
    Check {
        name: "ranks_that_disagree_fail",
        min_world: 2,
        run: ranks_that_disagree_fail,
    },
    Check {
        name: "invalid_root_is_an_error",
        min_world: 1,
        run: invalid_root_is_an_error,
    },
];

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub fn worlds(max_world: usize) -> impl Iterator<Item = usize> {
    (1..=4).filter(move |&w| w <= max_world)
}

/// Lengths around every divisibility case: empty, fewer elements than ranks, not divisible by
/// the world size, several pieces per segment.
pub const LENGTHS: &[usize] = &[0, 1, 2, 3, 5, 1000, 4099, 65_537, 1_000_003];

fn sum_is_exact_for_any_length(imp: &'static dyn Implementation, max: usize) -> Result<(), Failed> {
    for world in worlds(max) {
        let mut group = imp.group(world, TIMEOUT);
        for &len in LENGTHS {
            let expected: Vec<f32> = (0..len)
                .map(|i| (0..world).map(|r| integer(r, i) as i64).sum::<i64>() as f32)
                .collect();
            let results = on_ranks(&mut group, |c| {
                let mut buf: Vec<f32> = (0..len).map(|i| integer(c.rank(), i)).collect();
                c.all_reduce_sum(&mut buf).map(|()| buf)
            });
            for (rank, result) in results.into_iter().enumerate() {
                let got = result?;
                ensure!(
                    got == expected,
                    "world {world}, len {len}: rank {rank} has a wrong sum"
                );
            }
        }
    }
    Ok(())
}

fn mean_is_sum_over_world(imp: &'static dyn Implementation, max: usize) -> Result<(), Failed> {
    for world in worlds(max) {
        let mut group = imp.group(world, TIMEOUT);
        for &len in &[1, 17, 100_003] {
            let expected: Vec<u32> = (0..len)
                .map(|i| {
                    let sum = (0..world).map(|r| integer(r, i) as i64).sum::<i64>() as f32;
                    (sum / world as f32).to_bits()
                })
                .collect();
            let results = on_ranks(&mut group, |c| {
                let mut buf: Vec<f32> = (0..len).map(|i| integer(c.rank(), i)).collect();
                c.all_reduce_mean(&mut buf).map(|()| bits(&buf))
            });
            for (rank, result) in results.into_iter().enumerate() {
                ensure!(
                    result? == expected,
                    "world {world}, len {len}: rank {rank} has a wrong mean"
                );
            }
        }
    }
    Ok(())
}

/// 100M elements (400 MB per rank) on two ranks, when the machine has the memory for it.
fn sum_of_100m_elements(imp: &'static dyn Implementation, _max: usize) -> Result<(), Failed> {
    // Two ranks' buffers, plus the in-process group's copies of them.
    let len = if available_memory_bytes().is_some_and(|m| m > 4_000_000_000) {
        100_000_000
    } else {
        eprintln!(
            "{}: not enough free memory for 100M elements, using 25M",
            imp.name()
        );
        25_000_000
    };
    let mut group = imp.group(2, TIMEOUT);
    let results = on_ranks(&mut group, |c| {
        let rank = c.rank();
        let mut buf: Vec<f32> = (0..len).map(|i| (i % 1000 + rank) as f32).collect();
        c.all_reduce_sum(&mut buf)?;
        // The first wrong index, if any.
        Ok::<_, CollectiveError>(
            buf.iter()
                .enumerate()
                .position(|(i, &x)| x != (2 * (i % 1000) + 1) as f32),
        )
    });
    for (rank, result) in results.into_iter().enumerate() {
        let wrong = result?;
        ensure!(
            wrong.is_none(),
            "rank {rank}: element {wrong:?} of {len} is wrong"
        );
    }
    Ok(())
}

fn broadcast_from_every_root(imp: &'static dyn Implementation, max: usize) -> Result<(), Failed> {
    for world in worlds(max) {
        let mut group = imp.group(world, TIMEOUT);
        for root in 0..world {
            for &len in &[0, 1, 7, 100_003] {
                let expected: Vec<u32> = (0..len).map(|i| noisy(root, i).to_bits()).collect();
                let results = on_ranks(&mut group, |c| {
                    // Non-roots start from garbage, NaNs included.
                    let mut buf: Vec<f32> = if c.rank() == root {
                        (0..len).map(|i| noisy(root, i)).collect()
                    } else {
                        (0..len)
                            .map(|i| if i % 3 == 0 { f32::NAN } else { -1.0 })
                            .collect()
                    };
                    c.broadcast(&mut buf, root).map(|()| bits(&buf))
                });
                for (rank, result) in results.into_iter().enumerate() {
                    ensure!(
                        result? == expected,
                        "world {world}, root {root}, len {len}: rank {rank} differs from the root"
                    );
                }
            }
        }
    }
    Ok(())
}

fn barrier_waits_for_every_rank(
    imp: &'static dyn Implementation,
    max: usize,
) -> Result<(), Failed> {
    for world in worlds(max).filter(|&w| w >= 2) {
        let mut group = imp.group(world, TIMEOUT);
        for round in 0..3 {
            let entered = AtomicUsize::new(0);
            let results = on_ranks(&mut group, |c| {
                // Late ranks arrive at different times in every round.
                let late = (c.rank() + round) % world;
                std::thread::sleep(Duration::from_millis(20 * late as u64));
                entered.fetch_add(1, Ordering::SeqCst);
                c.barrier()?;
                Ok::<_, CollectiveError>(entered.load(Ordering::SeqCst))
            });
            for (rank, result) in results.into_iter().enumerate() {
                let seen = result?;
                ensure!(
                    seen == world,
                    "world {world}, round {round}: rank {rank} left the barrier when {seen} ranks had entered"
                );
            }
        }
    }
    Ok(())
}

fn results_bit_identical_and_deterministic(
    imp: &'static dyn Implementation,
    max: usize,
) -> Result<(), Failed> {
    const LEN: usize = 100_003;
    for world in worlds(max).filter(|&w| w >= 2) {
        let mut reference: Option<Vec<u32>> = None;
        // Two groups (fresh connections), three runs each.
        for group_index in 0..2 {
            let mut group = imp.group(world, TIMEOUT);
            for run in 0..3 {
                let results = on_ranks(&mut group, |c| {
                    let mut buf: Vec<f32> = (0..LEN).map(|i| noisy(c.rank(), i)).collect();
                    c.all_reduce_sum(&mut buf).map(|()| bits(&buf))
                });
                for (rank, result) in results.into_iter().enumerate() {
                    let got = result?;
                    let reference = reference.get_or_insert_with(|| got.clone());
                    ensure!(
                        got == *reference,
                        "world {world}, group {group_index}, run {run}: rank {rank} differs from rank 0 of the first run"
                    );
                }
            }
        }
        // The rounding shows: the check would notice an implementation that reorders additions.
        let exact: Vec<f64> = (0..LEN)
            .map(|i| (0..world).map(|r| noisy(r, i) as f64).sum())
            .collect();
        let inexact = reference
            .iter()
            .flatten()
            .zip(&exact)
            .filter(|(b, e)| f32::from_bits(**b) as f64 != **e)
            .count();
        ensure!(
            inexact > 0,
            "world {world}: the inputs do not exercise rounding"
        );
    }
    Ok(())
}

/// A rank that stays alive but never calls: its peers fail with a timeout, not a hang.
fn silent_peer_times_out(imp: &'static dyn Implementation, _max: usize) -> Result<(), Failed> {
    let timeout = Duration::from_millis(500);
    let mut group = imp.group(2, timeout);
    let mut silent = group.pop().expect("two ranks");
    let mut rank0 = group.pop().expect("two ranks");
    let started = Instant::now();
    let mut buf = vec![1.0f32; 100_000];
    let result = rank0.all_reduce_sum(&mut buf);
    let elapsed = started.elapsed();
    ensure!(
        matches!(result, Err(CollectiveError::Timeout { peer, .. }) if peer.is_none_or(|p| p.rank == 1)),
        "expected a timeout waiting for rank 1, got {result:?}"
    );
    ensure!(elapsed < timeout + HANG, "the timeout took {elapsed:?}");
    let again = rank0.barrier();
    ensure!(
        again.is_err(),
        "a collective that failed must refuse further operations"
    );
    // The silent rank finds out too once it calls.
    let late = silent.all_reduce_sum(&mut [1.0]);
    ensure!(
        late.is_err(),
        "the silent rank's late operation succeeded alone: {late:?}"
    );
    Ok(())
}

/// A rank that leaves (drops its collective, as a crashed process closes its sockets): the
/// others get an error instead of hanging; implementations that see the departure report it
/// before their timeout.
fn dead_peer_is_an_error(imp: &'static dyn Implementation, _max: usize) -> Result<(), Failed> {
    let timeout = if imp.detects_closed_peers() {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(2)
    };
    let mut group = imp.group(3, timeout);
    drop(group.pop());
    let started = Instant::now();
    let results = on_ranks(&mut group, |c| {
        let mut buf = vec![1.0f32; 300_000];
        c.all_reduce_sum(&mut buf)
    });
    let elapsed = started.elapsed();
    for (rank, result) in results.into_iter().enumerate() {
        ensure!(
            result.is_err(),
            "rank {rank} completed an all-reduce without rank 2"
        );
        if imp.detects_closed_peers() {
            ensure!(
                matches!(result, Err(CollectiveError::PeerClosed { .. })),
                "rank {rank}: expected the closed peer to be reported, got {result:?}"
            );
        }
    }
    ensure!(
        elapsed < HANG.min(timeout + HANG),
        "the survivors took {elapsed:?} to fail"
    );
    Ok(())
}

/// `abort()` from another thread makes a blocked operation, and every later one, return
/// `Aborted` long before the operation timeout.
fn abort_unblocks_an_operation(
    imp: &'static dyn Implementation,
    _max: usize,
) -> Result<(), Failed> {
    let mut group = imp.group(2, Duration::from_secs(300));
    let _silent = group.pop();
    let mut rank0 = group.pop().expect("two ranks");
    let handle = rank0.abort_handle();
    let (started_tx, started_rx) = mpsc::channel();
    let (result, elapsed) = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut buf = vec![1.0f32; 1000];
            started_tx.send(Instant::now()).unwrap();
            let result = rank0.all_reduce_sum(&mut buf);
            (result, Instant::now())
        });
        let started = started_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        handle.abort();
        let (result, ended) = worker.join().unwrap();
        (result, ended - started)
    });
    ensure!(
        matches!(result, Err(CollectiveError::Aborted { .. })),
        "expected Aborted, got {result:?}"
    );
    ensure!(
        elapsed < HANG,
        "abort took {elapsed:?} to unblock the operation"
    );
    for later in [rank0.barrier(), rank0.broadcast(&mut [0.0], 0)] {
        ensure!(
            matches!(later, Err(CollectiveError::Aborted { .. })),
            "an operation after abort returned {later:?}"
        );
    }
    Ok(())
}

/// Ranks that call with different lengths get an error, not a mix of data or a hang.
fn ranks_that_disagree_fail(imp: &'static dyn Implementation, _max: usize) -> Result<(), Failed> {
    let mut group = imp.group(2, Duration::from_secs(20));
    let results = on_ranks(&mut group, |c| {
        let mut buf = vec![1.0f32; 10 + c.rank()];
        c.all_reduce_sum(&mut buf)
    });
    for (rank, result) in results.into_iter().enumerate() {
        ensure!(
            matches!(result, Err(CollectiveError::Mismatch { .. })),
            "rank {rank}: expected a mismatch error, got {result:?}"
        );
    }
    Ok(())
}

fn invalid_root_is_an_error(imp: &'static dyn Implementation, max: usize) -> Result<(), Failed> {
    for world in worlds(max) {
        let mut group = imp.group(world, TIMEOUT);
        let results = on_ranks(&mut group, |c| c.broadcast(&mut [1.0], world));
        for (rank, result) in results.into_iter().enumerate() {
            ensure!(
                matches!(result, Err(CollectiveError::InvalidRoot { root, .. }) if root == world),
                "world {world}: rank {rank} got {result:?}"
            );
        }
        // Refusing bad input does not break the collective.
        let results = on_ranks(&mut group, |c| c.barrier());
        for (rank, result) in results.into_iter().enumerate() {
            ensure!(
                result.is_ok(),
                "world {world}: rank {rank}: barrier after refusal: {result:?}"
            );
        }
    }
    Ok(())
}

pub fn bits(buf: &[f32]) -> Vec<u32> {
    buf.iter().map(|x| x.to_bits()).collect()
}

fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
