//! One ring operation on a rank's two connections, pipelined in pieces.
//!
//! The calling thread receives from the left neighbour (and reduces); a scoped sending thread
//! writes to the right neighbour, so that sending and receiving overlap. Pieces of the caller's
//! buffer (disjoint `&mut [f32]`, see [`segments`]) move between the two threads
//! through channels: the receiver lends a piece to the sender once it holds what must be
//! forwarded, and the sender hands it back once written. Nothing is copied between the threads;
//! a received piece is added into the buffer (reduce-scatter) or read straight into it
//! (all-gather, broadcast). The all-reduce runs both phases over balanced segments; the
//! stand-alone reduce-scatter and all-gather run one phase over the public shards
//! ([`shard_range`]), each sending `(n - 1) / n` of the buffer.
//!
//! Any failure (timeout, closed peer, mismatch, abort) is recorded once and shuts both
//! connections down, which unblocks the other thread here and makes the neighbours fail fast
//! instead of waiting for their own timeouts.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::rendezvous::Links;
use crate::segments::{self, Pieces, segment_range};
use crate::{AbortHandle, CollectiveError, OpSignature, Operation, Peer, shard_range};

/// A piece in transit: segment, index in the segment, the elements.
type Lent<'a> = (usize, usize, &'a mut [f32]);

/// Marker for a failed operation; the error itself is kept in [`Pipeline::first_error`].
pub(crate) struct Failed;

/// One operation of one rank.
pub(crate) struct Pipeline<'a> {
    pub rank: usize,
    pub world_size: usize,
    pub links: &'a Links,
    pub left: Peer,
    pub right: Peer,
    pub operation: Operation,
    pub timeout: Duration,
    pub deadline: Instant,
    pub abort: &'a AbortHandle,
    pub chunk: usize,
    pub first_error: OnceLock<CollectiveError>,
}

impl Pipeline<'_> {
    /// Sends this rank's signature to the right and checks the left neighbour's against it.
    pub fn exchange_signatures(&self, ours: OpSignature) -> Result<(), Failed> {
        self.write(&self.links.right, &ours.encode())?;
        let mut bytes = [0u8; OpSignature::LEN];
        self.read(&self.links.left, &mut bytes)?;
        match OpSignature::decode(&bytes) {
            Some(theirs) if theirs == ours => Ok(()),
            Some(theirs) => Err(self.fail(CollectiveError::Mismatch {
                rank: self.rank,
                peer: self.left,
                ours,
                theirs,
            })),
            None => Err(self.fail(CollectiveError::Protocol {
                rank: self.rank,
                peer: self.left,
                what: "expected an operation header",
            })),
        }
    }

    /// Ring all-reduce (sum): reduce-scatter then all-gather, `world_size - 1` steps each.
    ///
    /// Segment `j` is summed along the ring starting at rank `j`, so every element is added in
    /// the same order on every run; the all-gather copies the finished sums, so every rank ends
    /// with the same bits.
    pub fn all_reduce(&self, buf: &mut [f32]) -> Result<(), Failed> {
        let (n, r) = (self.world_size, self.rank);
        let mut pieces = segments::cut(buf, segment_range, n, self.chunk);
        let mut incoming = vec![0f32; longest(&pieces)];
        self.with_sender(|lend, returned| {
            // Reduce-scatter, step s: send segment r - s, receive segment r - s - 1 and add it
            // in. The reduced piece is what step s + 1 sends; after the last step this rank holds
            // the full sum of segment r + 1, which is what the all-gather starts with.
            for k in 0..pieces[r].len() {
                lend_piece(lend, &mut pieces, r, k)?;
            }
            for s in 0..n - 1 {
                let j = (r + 2 * n - s - 1) % n;
                for k in 0..pieces[j].len() {
                    let piece = pieces[j][k].as_deref_mut().expect("received before lent");
                    let incoming = &mut incoming[..piece.len()];
                    self.read(&self.links.left, bytemuck::cast_slice_mut(incoming))?;
                    piece
                        .iter_mut()
                        .zip(incoming.iter())
                        .for_each(|(x, y)| *x += *y);
                    lend_piece(lend, &mut pieces, j, k)?;
                }
            }
            // All-gather, step s: receive the finished segment r - s straight into the buffer
            // and forward it, except at the last step.
            for s in 0..n - 1 {
                let j = (r + n - s) % n;
                for k in 0..pieces[j].len() {
                    reclaim(returned, &mut pieces, j, k)?;
                    let piece = pieces[j][k].as_deref_mut().expect("reclaimed");
                    self.read(&self.links.left, bytemuck::cast_slice_mut(piece))?;
                    if s + 2 < n {
                        lend_piece(lend, &mut pieces, j, k)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Ring reduce-scatter (sum) over the shards of [`shard_range`], `world_size - 1` steps:
    /// this rank ends with the full sum of shard `rank`.
    ///
    /// Step s: send shard r - 1 - s (this rank's own data at step 0, then what it reduced at the
    /// step before), receive shard r - 2 - s and add it in. Shard `j` is therefore summed along
    /// the ring starting at rank `j + 1` and ending at rank `j`, in the same order on every run.
    pub fn reduce_scatter(&self, buf: &mut [f32]) -> Result<(), Failed> {
        let (n, r) = (self.world_size, self.rank);
        let mut pieces = segments::cut(buf, shard_range, n, self.chunk);
        let mut incoming = vec![0f32; longest(&pieces)];
        self.with_sender(|lend, _returned| {
            let first = (r + n - 1) % n;
            for k in 0..pieces[first].len() {
                lend_piece(lend, &mut pieces, first, k)?;
            }
            for s in 0..n - 1 {
                // Not lent: only shards r - 1, ..., r - 1 - s were, and s < n - 1.
                let j = (r + 2 * n - 2 - s) % n;
                for k in 0..pieces[j].len() {
                    let piece = pieces[j][k].as_deref_mut().expect("received before lent");
                    let incoming = &mut incoming[..piece.len()];
                    self.read(&self.links.left, bytemuck::cast_slice_mut(incoming))?;
                    piece
                        .iter_mut()
                        .zip(incoming.iter())
                        .for_each(|(x, y)| *x += *y);
                    // At the last step j is r: the finished shard stays here.
                    if s + 2 < n {
                        lend_piece(lend, &mut pieces, j, k)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Ring all-gather over the shards of [`shard_range`], `world_size - 1` steps: every rank
    /// ends with every rank's shard.
    ///
    /// This rank first sends its own shard r; at step s it receives shard r - 1 - s straight
    /// into the buffer and forwards it, except at the last step (its right neighbour owns it).
    pub fn all_gather(&self, buf: &mut [f32]) -> Result<(), Failed> {
        let (n, r) = (self.world_size, self.rank);
        let mut pieces = segments::cut(buf, shard_range, n, self.chunk);
        self.with_sender(|lend, _returned| {
            for k in 0..pieces[r].len() {
                lend_piece(lend, &mut pieces, r, k)?;
            }
            for s in 0..n - 1 {
                // Not lent: only shards r, r - 1, ..., r - s were, and s < n - 1.
                let j = (r + 2 * n - 1 - s) % n;
                for k in 0..pieces[j].len() {
                    let piece = pieces[j][k].as_deref_mut().expect("received before lent");
                    self.read(&self.links.left, bytemuck::cast_slice_mut(piece))?;
                    if s + 2 < n {
                        lend_piece(lend, &mut pieces, j, k)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Chain broadcast along the ring from `root`: each rank receives pieces from the left and
    /// forwards them to the right, except the rank just before the root.
    pub fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), Failed> {
        let mut pieces = segments::cut(buf, segment_range, 1, self.chunk);
        let count = pieces[0].len();
        let forward = (self.rank + 1) % self.world_size != root;
        self.with_sender(|lend, _returned| {
            for k in 0..count {
                if self.rank != root {
                    let piece = pieces[0][k].as_deref_mut().expect("not lent yet");
                    self.read(&self.links.left, bytemuck::cast_slice_mut(piece))?;
                }
                if self.rank == root || forward {
                    lend_piece(lend, &mut pieces, 0, k)?;
                }
            }
            Ok(())
        })
    }

    /// The operation's error; call after a step returned [`Failed`].
    pub fn into_error(self) -> CollectiveError {
        if self.abort.is_aborted() {
            return self.aborted();
        }
        self.first_error
            .into_inner()
            .unwrap_or_else(|| unreachable!("a failed step records its error"))
    }

    /// Runs `receive` on this thread with a sending thread that writes every lent piece to the
    /// right neighbour, in order, and returns it.
    fn with_sender<'b>(
        &self,
        receive: impl FnOnce(&Sender<Lent<'b>>, &Receiver<Lent<'b>>) -> Result<(), Failed>,
    ) -> Result<(), Failed> {
        let (lend, to_send) = mpsc::channel::<Lent<'b>>();
        let (give_back, returned) = mpsc::channel::<Lent<'b>>();
        std::thread::scope(move |s| {
            // Owned by this closure, so that it is dropped (ending the sender's loop) even if
            // `receive` panics, before the scope joins the sender.
            let lend = lend;
            let sender = s.spawn(move || {
                for (j, k, piece) in to_send {
                    self.write(&self.links.right, bytemuck::cast_slice(piece))?;
                    if give_back.send((j, k, piece)).is_err() {
                        break;
                    }
                }
                Ok(())
            });
            let received = receive(&lend, &returned);
            drop(lend);
            let sent = sender
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            received.and(sent)
        })
    }

    fn write(&self, stream: &TcpStream, bytes: &[u8]) -> Result<(), Failed> {
        let peer = self.right;
        let remaining = self.remaining(peer)?;
        let mut stream = stream;
        stream
            .set_write_timeout(Some(remaining))
            .and_then(|()| stream.write_all(bytes))
            .map_err(|e| self.fail(self.classify(e, peer)))
    }

    fn read(&self, stream: &TcpStream, bytes: &mut [u8]) -> Result<(), Failed> {
        let peer = self.left;
        let remaining = self.remaining(peer)?;
        let mut stream = stream;
        stream
            .set_read_timeout(Some(remaining))
            .and_then(|()| stream.read_exact(bytes))
            .map_err(|e| self.fail(self.classify(e, peer)))
    }

    fn remaining(&self, peer: Peer) -> Result<Duration, Failed> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.fail(self.timed_out(peer)));
        }
        Ok(remaining)
    }

    /// Records the operation's first error and shuts both connections down.
    fn fail(&self, error: CollectiveError) -> Failed {
        if self.first_error.set(error).is_ok() {
            tracing::debug!(rank = self.rank, error = %self.first_error.get().unwrap_or_else(|| unreachable!()), "ring operation failed");
            let _ = self.links.left.shutdown(Shutdown::Both);
            let _ = self.links.right.shutdown(Shutdown::Both);
        }
        Failed
    }

    fn classify(&self, error: io::Error, peer: Peer) -> CollectiveError {
        if self.abort.is_aborted() {
            return self.aborted();
        }
        let (rank, operation) = (self.rank, self.operation);
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(peer),
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected => CollectiveError::PeerClosed {
                rank,
                operation,
                peer,
            },
            _ => CollectiveError::Io {
                rank,
                operation,
                peer,
                source: error,
            },
        }
    }

    fn timed_out(&self, peer: Peer) -> CollectiveError {
        CollectiveError::Timeout {
            rank: self.rank,
            operation: self.operation,
            peer: Some(peer),
            timeout: self.timeout,
        }
    }

    fn aborted(&self) -> CollectiveError {
        CollectiveError::Aborted {
            rank: self.rank,
            operation: self.operation,
        }
    }
}

/// The length of the longest piece, 0 if there are none.
fn longest(pieces: &Pieces<'_>) -> usize {
    pieces
        .iter()
        .flatten()
        .flatten()
        .map(|p| p.len())
        .max()
        .unwrap_or(0)
}

/// Lends piece `(j, k)` to the sending thread. Fails only if the sender has stopped, which it
/// does after recording an error.
fn lend_piece<'b>(
    lend: &Sender<Lent<'b>>,
    pieces: &mut Pieces<'b>,
    j: usize,
    k: usize,
) -> Result<(), Failed> {
    let piece = pieces[j][k].take().expect("a piece is lent once at a time");
    lend.send((j, k, piece)).map_err(|_| Failed)
}

/// Waits until the sending thread has handed piece `(j, k)` back.
fn reclaim<'b>(
    returned: &Receiver<Lent<'b>>,
    pieces: &mut Pieces<'b>,
    j: usize,
    k: usize,
) -> Result<(), Failed> {
    while pieces[j][k].is_none() {
        let (jj, kk, piece) = returned.recv().map_err(|_| Failed)?;
        pieces[jj][kk] = Some(piece);
    }
    Ok(())
}
