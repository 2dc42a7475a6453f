//! The checks of the sharded operations (reduce-scatter, all-gather) every implementation must
//! pass. Failures (abort, dead or silent peers) go through the same machinery as the
//! all-reduce's and are checked in `checks.rs`.

use std::ops::Range;
use std::time::Duration;

use fourm_collective::{Collective, CollectiveError, Operation, shard_range};
use libtest_mimic::Failed;

use crate::checks::{LENGTHS, TIMEOUT, bits, worlds};
use crate::implementations::Implementation;
use crate::{Check, ensure, integer, noisy, on_ranks};

pub const ALL: &[Check] = &[
    Check {
        name: "reduce_scatter_sum_is_exact_on_each_shard",
        min_world: 1,
        run: reduce_scatter_sum_is_exact_on_each_shard,
    },
    Check {
        name: "all_gather_reassembles_the_buffer",
        min_world: 1,
        run: all_gather_reassembles_the_buffer,
    },
    Check {
        name: "reduce_scatter_then_all_gather_bit_identical_and_deterministic",
        min_world: 2,
        run: reduce_scatter_then_all_gather_bit_identical_and_deterministic,
    },
    Check {
        name: "sharded_ranks_that_disagree_fail",
        min_world: 2,
        run: sharded_ranks_that_disagree_fail,
    },
    Check {
        name: "device_variants_are_unsupported",
        min_world: 1,
        run: device_variants_are_unsupported,
    },
];

/// Every world the implementation hosts (up to 8): larger worlds than `worlds` gives, so that
/// several ranks own empty shards of the short buffers.
fn all_worlds(max_world: usize) -> impl Iterator<Item = usize> {
    1..=max_world.min(8)
}

/// Each rank's shard holds the exact sum (integer-valued data) for every length, including
/// lengths shorter than the world (empty shards) and lengths that span many pieces.
fn reduce_scatter_sum_is_exact_on_each_shard(
    imp: &'static dyn Implementation,
    max: usize,
) -> Result<(), Failed> {
    for world in all_worlds(max) {
        let mut group = imp.group(world, TIMEOUT);
        for &len in LENGTHS {
            let expected: Vec<f32> = (0..len)
                .map(|i| (0..world).map(|r| integer(r, i) as i64).sum::<i64>() as f32)
                .collect();
            let results = on_ranks(&mut group, |c| {
                let mut buf: Vec<f32> = (0..len).map(|i| integer(c.rank(), i)).collect();
                c.reduce_scatter_sum(&mut buf).map(|()| buf)
            });
            for (rank, result) in results.into_iter().enumerate() {
                let got = result?;
                let shard = shard_range(len, world, rank);
                ensure!(
                    got.len() == len && got[shard.clone()] == expected[shard.clone()],
                    "world {world}, len {len}: rank {rank} has a wrong sum on its shard {shard:?}"
                );
            }
        }
    }
    Ok(())
}

/// Every rank fills only its shard (with rank-specific values, garbage and NaNs elsewhere); every
/// rank ends with the whole buffer, bit for bit.
fn all_gather_reassembles_the_buffer(
    imp: &'static dyn Implementation,
    max: usize,
) -> Result<(), Failed> {
    for world in all_worlds(max) {
        let mut group = imp.group(world, TIMEOUT);
        for &len in LENGTHS {
            let shards: Vec<Range<usize>> =
                (0..world).map(|r| shard_range(len, world, r)).collect();
            let expected: Vec<u32> = (0..len)
                .map(|i| {
                    let owner = shards.iter().position(|s| s.contains(&i)).expect("tiled");
                    noisy(owner, i).to_bits()
                })
                .collect();
            let results = on_ranks(&mut group, |c| {
                let rank = c.rank();
                let shard = &shards[rank];
                let mut buf: Vec<f32> = (0..len)
                    .map(|i| match i {
                        _ if shard.contains(&i) => noisy(rank, i),
                        _ if i % 3 == 0 => f32::NAN,
                        _ => -1.0 - rank as f32,
                    })
                    .collect();
                c.all_gather(&mut buf).map(|()| bits(&buf))
            });
            for (rank, result) in results.into_iter().enumerate() {
                let got = result?;
                let wrong = got.iter().zip(&expected).position(|(g, e)| g != e);
                ensure!(
                    got.len() == len && wrong.is_none(),
                    "world {world}, len {len}: rank {rank} differs at element {wrong:?}"
                );
            }
        }
    }
    Ok(())
}

/// A reduce-scatter then an all-gather of noisy data (the order of additions shows) gives every
/// rank the same bits, run after run and group after group, and those bits are a sum.
fn reduce_scatter_then_all_gather_bit_identical_and_deterministic(
    imp: &'static dyn Implementation,
    max: usize,
) -> Result<(), Failed> {
    const LEN: usize = 100_003;
    for world in worlds(max).filter(|&w| w >= 2) {
        let mut reference: Option<Vec<u32>> = None;
        for group_index in 0..2 {
            let mut group = imp.group(world, TIMEOUT);
            for run in 0..2 {
                let results = on_ranks(&mut group, |c| {
                    let mut buf: Vec<f32> = (0..LEN).map(|i| noisy(c.rank(), i)).collect();
                    c.reduce_scatter_sum(&mut buf)?;
                    c.all_gather(&mut buf).map(|()| bits(&buf))
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
        // Close to the exact sum (within the rounding of `world` additions), and not exactly it
        // everywhere: the inputs exercise rounding.
        let mut inexact = 0;
        for (i, got) in reference.iter().flatten().enumerate() {
            let got = f32::from_bits(*got) as f64;
            let exact: f64 = (0..world).map(|r| noisy(r, i) as f64).sum();
            let magnitude: f64 = (0..world).map(|r| (noisy(r, i) as f64).abs()).sum();
            let close = (got - exact).abs() <= world as f64 * f32::EPSILON as f64 * magnitude;
            ensure!(
                close,
                "world {world}: element {i} is {got}, the sum is {exact}"
            );
            inexact += usize::from(got != exact);
        }
        ensure!(
            inexact > 0,
            "world {world}: the inputs do not exercise rounding"
        );
    }
    Ok(())
}

/// Ranks that gather buffers of different lengths, or call different sharded operations, get an
/// error, not a mix of data or a hang.
fn sharded_ranks_that_disagree_fail(
    imp: &'static dyn Implementation,
    _max: usize,
) -> Result<(), Failed> {
    let mut group = imp.group(2, Duration::from_secs(20));
    let results = on_ranks(&mut group, |c| {
        let mut buf = vec![1.0f32; 10 + c.rank()];
        c.all_gather(&mut buf)
    });
    for (rank, result) in results.into_iter().enumerate() {
        ensure!(
            matches!(result, Err(CollectiveError::Mismatch { .. })),
            "lengths: rank {rank}: expected a mismatch error, got {result:?}"
        );
    }
    let mut group = imp.group(2, Duration::from_secs(20));
    let results = on_ranks(&mut group, |c| {
        let mut buf = vec![1.0f32; 10];
        if c.rank() == 0 {
            c.reduce_scatter_sum(&mut buf)
        } else {
            c.all_gather(&mut buf)
        }
    });
    for (rank, result) in results.into_iter().enumerate() {
        ensure!(
            matches!(result, Err(CollectiveError::Mismatch { .. })),
            "operations: rank {rank}: expected a mismatch error, got {result:?}"
        );
    }
    Ok(())
}

/// Host implementations refuse device pointers, naming the operation, and stay usable.
fn device_variants_are_unsupported(
    imp: &'static dyn Implementation,
    _max: usize,
) -> Result<(), Failed> {
    let mut group = imp.group(1, TIMEOUT);
    let c: &mut dyn Collective = &mut *group[0];
    let results = [
        (Operation::AllReduceSum, c.all_reduce_sum_device(0, 4, 0)),
        (Operation::AllReduceMean, c.all_reduce_mean_device(0, 4, 0)),
        (
            Operation::ReduceScatterSum,
            c.reduce_scatter_sum_device(0, 4, 0),
        ),
        (Operation::AllGather, c.all_gather_device(0, 4, 0)),
    ];
    for (expected, result) in results {
        ensure!(
            matches!(result, Err(CollectiveError::Unsupported { operation, .. }) if operation == expected),
            "{expected}: expected Unsupported, got {result:?}"
        );
    }
    let mut buf = [1.0f32, 2.0];
    c.reduce_scatter_sum(&mut buf)?;
    c.all_gather(&mut buf)?;
    ensure!(buf == [1.0, 2.0], "a world of one changed the buffer");
    Ok(())
}
