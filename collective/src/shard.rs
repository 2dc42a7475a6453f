//! Which part of a buffer each rank owns in a reduce-scatter or an all-gather.
//!
//! Shards have the same size on every rank, `ceil(len / world)` elements, in rank order; the
//! last ones are shorter, or empty when the buffer has few elements. Equal shards map directly
//! onto NCCL's `ncclReduceScatter` and `ncclAllGather`, which need the same count on every rank:
//! on the device the buffer is [`padded_len`] elements long and every shard is full.

use std::ops::Range;

/// The elements of a buffer of `len` elements that rank `rank` of `world` owns in
/// [`Collective::reduce_scatter_sum`](crate::Collective::reduce_scatter_sum) and
/// [`Collective::all_gather`](crate::Collective::all_gather): shards of `ceil(len / world)`
/// elements in rank order, the last ones shorter or empty.
///
/// The shards of ranks `0..world` tile `0..len`. A world of one owns the whole buffer; a rank
/// outside `0..world` owns nothing (`len..len`).
///
/// ```
/// use fourm_collective::shard_range;
///
/// // 10 elements over 4 ranks: shards of 3, the last one short.
/// let shards: Vec<_> = (0..4).map(|rank| shard_range(10, 4, rank)).collect();
/// assert_eq!(shards, [0..3, 3..6, 6..9, 9..10]);
/// // Fewer elements than ranks: the last ranks own nothing.
/// assert_eq!(shard_range(2, 4, 3), 2..2);
/// ```
///
/// # Panics
///
/// If `world` is 0.
pub fn shard_range(len: usize, world: usize, rank: usize) -> Range<usize> {
    let size = shard_len(len, world);
    let start = rank.saturating_mul(size).min(len);
    start..start.saturating_add(size).min(len)
}

/// `ceil(len / world) * world`: the length of a buffer whose shards are all full, which is what
/// the device variants
/// ([`reduce_scatter_sum_device`](crate::Collective::reduce_scatter_sum_device),
/// [`all_gather_device`](crate::Collective::all_gather_device)) need their allocation to hold.
///
/// ```
/// use fourm_collective::padded_len;
///
/// assert_eq!(padded_len(10, 4), 12);
/// assert_eq!(padded_len(12, 4), 12);
/// assert_eq!(padded_len(0, 4), 0);
/// ```
///
/// # Panics
///
/// If `world` is 0.
pub fn padded_len(len: usize, world: usize) -> usize {
    shard_len(len, world) * world
}

/// `ceil(len / world)`, the size of a full shard.
fn shard_len(len: usize, world: usize) -> usize {
    assert!(world > 0, "a group has at least one rank");
    len.div_ceil(world)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENGTHS: &[usize] = &[0, 1, 2, 3, 4, 5, 7, 8, 9, 64, 1001, 4099];

    #[test]
    fn shards_tile_the_buffer_in_rank_order() {
        for &len in LENGTHS {
            for world in 1..=9 {
                let mut next = 0;
                for rank in 0..world {
                    let range = shard_range(len, world, rank);
                    assert_eq!(range.start, next, "len {len} world {world} rank {rank}");
                    assert!(range.end >= range.start);
                    next = range.end;
                }
                assert_eq!(next, len, "len {len} world {world}");
            }
        }
    }

    #[test]
    fn shards_are_full_but_for_the_last_ones() {
        for &len in LENGTHS {
            for world in 1..=9 {
                let full = len.div_ceil(world);
                let sizes: Vec<_> = (0..world)
                    .map(|rank| shard_range(len, world, rank).len())
                    .collect();
                // Full shards, then at most one partial one, then empty ones.
                let partial = sizes.iter().position(|&s| s < full).unwrap_or(world);
                assert!(sizes[..partial].iter().all(|&s| s == full), "{sizes:?}");
                assert!(
                    sizes[partial..].iter().skip(1).all(|&s| s == 0),
                    "{sizes:?}"
                );
                // Each shard starts where the padded buffer's would.
                for rank in 0..world {
                    let range = shard_range(len, world, rank);
                    if !range.is_empty() {
                        assert_eq!(range.start, rank * full);
                    }
                }
            }
        }
    }

    #[test]
    fn one_rank_owns_everything_and_outsiders_nothing() {
        for &len in LENGTHS {
            assert_eq!(shard_range(len, 1, 0), 0..len);
            assert_eq!(padded_len(len, 1), len);
            assert!(shard_range(len, 3, 3).is_empty());
            assert!(shard_range(len, 3, usize::MAX).is_empty());
        }
    }

    #[test]
    fn fewer_elements_than_ranks_leave_the_last_ranks_empty() {
        let shards: Vec<_> = (0..5).map(|rank| shard_range(3, 5, rank)).collect();
        assert_eq!(shards, [0..1, 1..2, 2..3, 3..3, 3..3]);
        assert_eq!(padded_len(3, 5), 5);
        assert_eq!(shard_range(0, 4, 0), 0..0);
        assert_eq!(padded_len(0, 4), 0);
    }

    #[test]
    fn padded_length_is_the_smallest_multiple_that_holds_the_buffer() {
        for &len in LENGTHS {
            for world in 1..=9 {
                let padded = padded_len(len, world);
                assert!(padded >= len && padded.is_multiple_of(world));
                assert!(padded < len + world);
                for rank in 0..world {
                    let full = padded / world;
                    assert!(shard_range(len, world, rank).end <= (rank + 1) * full);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "at least one rank")]
    fn a_world_of_zero_is_refused() {
        let _ = shard_range(1, 0, 0);
    }
}
