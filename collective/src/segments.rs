//! How the ring cuts a buffer: `n` contiguous segments (one per rank), each cut into pieces of at
//! most `chunk` elements, the unit that is sent, received and reduced. The cut depends only on the
//! partition, the buffer length, the world size and the chunk size, so every rank computes the
//! same one.
//!
//! The all-reduce and the broadcast use balanced segments ([`segment_range`]); reduce-scatter and
//! all-gather use the public shards ([`shard_range`](crate::shard_range)), so that a rank's
//! segment is the shard the caller expects it to own.

use std::ops::Range;

/// The elements of segment `j` of a buffer of `len` elements cut into `n` segments: the first
/// `len % n` segments hold one element more than the others.
pub(crate) fn segment_range(len: usize, n: usize, j: usize) -> Range<usize> {
    let base = len / n;
    let extra = len % n;
    let start = j * base + j.min(extra);
    let size = base + usize::from(j < extra);
    start..start + size
}

/// A way to cut a buffer of `len` elements into `n` segments: `partition(len, n, j)` is segment
/// `j`, and segments `0..n` tile `0..len` in order (some may be empty).
pub(crate) type Partition = fn(usize, usize, usize) -> Range<usize>;

/// The pieces of a buffer, indexed by segment then by piece; a piece is `None` while it is lent
/// to the sending thread.
pub(crate) type Pieces<'a> = Vec<Vec<Option<&'a mut [f32]>>>;

/// Cuts `buf` into the `n` segments of `partition`, each of pieces of at most `chunk` elements
/// (`chunk > 0`); an empty segment has no pieces.
pub(crate) fn cut(buf: &mut [f32], partition: Partition, n: usize, chunk: usize) -> Pieces<'_> {
    let len = buf.len();
    let mut rest = buf;
    let mut pieces = Vec::with_capacity(n);
    for j in 0..n {
        let (segment, tail) = rest.split_at_mut(partition(len, n, j).len());
        rest = tail;
        pieces.push(segment.chunks_mut(chunk).map(Some).collect());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_tile_the_buffer_and_differ_by_at_most_one() {
        for len in [0, 1, 2, 3, 7, 64, 1001] {
            for n in 1..=5 {
                let ranges: Vec<_> = (0..n).map(|j| segment_range(len, n, j)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[n - 1].end, len);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let sizes: Vec<_> = ranges.iter().map(|r| r.len()).collect();
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "len {len} n {n}: {sizes:?}");
            }
        }
    }

    /// Checks that `pieces` cut a buffer holding `0..len` along `partition`.
    fn check_cut(pieces: &Pieces<'_>, partition: Partition, len: usize, n: usize, chunk: usize) {
        assert_eq!(pieces.len(), n);
        let mut next = 0.0;
        for (j, segment) in pieces.iter().enumerate() {
            let total: usize = segment.iter().map(|p| p.as_ref().unwrap().len()).sum();
            assert_eq!(total, partition(len, n, j).len());
            for piece in segment {
                let piece = piece.as_ref().unwrap();
                assert!(!piece.is_empty() && piece.len() <= chunk);
                for &x in piece.iter() {
                    assert_eq!(x, next);
                    next += 1.0;
                }
            }
        }
        assert_eq!(next, len as f32);
    }

    #[test]
    fn pieces_are_bounded_and_cover_their_segment_in_order() {
        let mut buf: Vec<f32> = (0..103).map(|i| i as f32).collect();
        let pieces = cut(&mut buf, segment_range, 4, 10);
        check_cut(&pieces, segment_range, 103, 4, 10);
    }

    #[test]
    fn shards_are_cut_too_and_empty_ones_have_no_pieces() {
        for (len, n, chunk) in [(103, 4, 10), (10, 4, 2), (3, 5, 1), (0, 3, 4), (7, 1, 3)] {
            let mut buf: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let pieces = cut(&mut buf, crate::shard_range, n, chunk);
            check_cut(&pieces, crate::shard_range, len, n, chunk);
            for (j, segment) in pieces.iter().enumerate() {
                assert_eq!(
                    segment.len(),
                    crate::shard_range(len, n, j).len().div_ceil(chunk)
                );
            }
        }
    }
}
