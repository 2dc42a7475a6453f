//! How the ring cuts a buffer: `n` contiguous segments (one per rank), each cut into pieces of at
//! most `chunk` elements, the unit that is sent, received and reduced. The cut depends only on the
//! buffer length, the world size and the chunk size, so every rank computes the same one.

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

/// The pieces of a buffer, indexed by segment then by piece; a piece is `None` while it is lent
/// to the sending thread.
pub(crate) type Pieces<'a> = Vec<Vec<Option<&'a mut [f32]>>>;

/// Cuts `buf` into `n` segments of pieces of at most `chunk` elements (`chunk > 0`).
pub(crate) fn cut(buf: &mut [f32], n: usize, chunk: usize) -> Pieces<'_> {
    let len = buf.len();
    let mut rest = buf;
    let mut pieces = Vec::with_capacity(n);
    for j in 0..n {
        let (segment, tail) = rest.split_at_mut(segment_range(len, n, j).len());
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

    #[test]
    fn pieces_are_bounded_and_cover_their_segment_in_order() {
        let mut buf: Vec<f32> = (0..103).map(|i| i as f32).collect();
        let pieces = cut(&mut buf, 4, 10);
        assert_eq!(pieces.len(), 4);
        let mut next = 0.0;
        for (j, segment) in pieces.iter().enumerate() {
            let total: usize = segment.iter().map(|p| p.as_ref().unwrap().len()).sum();
            assert_eq!(total, segment_range(103, 4, j).len());
            for piece in segment {
                let piece = piece.as_ref().unwrap();
                assert!(!piece.is_empty() && piece.len() <= 10);
                for &x in piece.iter() {
                    assert_eq!(x, next);
                    next += 1.0;
                }
            }
        }
        assert_eq!(next, 103.0);
    }
}
