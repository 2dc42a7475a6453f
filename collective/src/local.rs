//! The in-process collective: ranks are threads of one process that meet in shared memory.
//! For unit tests of code that takes a [`Collective`]; it behaves like the TCP ring towards
//! failures (a dropped, failed or aborted rank makes its peers fail at once, a silent one makes
//! them time out) but sums in rank order, so its rounding differs from the ring's (and its
//! reduce-scatter gives the same bits as its all-reduce).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{AbortHandle, Collective, CollectiveError, OpSignature, Operation, Peer, shard_range};

/// Settings of the in-process collective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// How long one operation may wait for the other ranks.
    pub op_timeout: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            op_timeout: Duration::from_secs(60),
        }
    }
}

/// One rank of an in-process group made by [`LocalCollective::group`].
#[derive(Debug)]
pub struct LocalCollective {
    rank: usize,
    shared: Arc<Shared>,
    config: LocalConfig,
    abort: AbortHandle,
    seq: u64,
    broken: Option<Operation>,
}

#[derive(Debug)]
struct Shared {
    world_size: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Operations in progress, by sequence number.
    rounds: BTreeMap<u64, Round>,
    /// Ranks that left the group (dropped, failed or aborted).
    gone: Vec<bool>,
}

#[derive(Debug)]
struct Round {
    signature: OpSignature,
    /// The first rank that arrived with another signature, and that signature.
    mismatch: Option<(usize, OpSignature)>,
    contributions: Vec<Option<Vec<f32>>>,
    arrived: Vec<bool>,
    result: Option<Arc<Vec<f32>>>,
    taken: usize,
}

impl LocalCollective {
    /// A group of `world_size` ranks, in rank order; hand each to its own thread.
    pub fn group(world_size: usize, config: &LocalConfig) -> Result<Vec<Self>, CollectiveError> {
        if world_size == 0 {
            return Err(CollectiveError::InvalidGroup {
                rank: 0,
                world_size,
            });
        }
        if config.op_timeout.is_zero() {
            return Err(CollectiveError::InvalidConfig {
                key: "op_timeout",
                reason: "must be positive",
            });
        }
        let shared = Arc::new(Shared {
            world_size,
            state: Mutex::new(State {
                rounds: BTreeMap::new(),
                gone: vec![false; world_size],
            }),
            changed: Condvar::new(),
        });
        Ok((0..world_size)
            .map(|rank| {
                let abort = AbortHandle::new();
                let weak = Arc::downgrade(&shared);
                abort.on_abort(move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.leave(rank);
                    }
                });
                Self {
                    rank,
                    shared: shared.clone(),
                    config: config.clone(),
                    abort,
                    seq: 0,
                    broken: None,
                }
            })
            .collect())
    }

    /// Runs one round: contributes `data` (if any), waits for every rank, then returns the
    /// round's result.
    fn run(
        &mut self,
        operation: Operation,
        len: usize,
        data: Option<Vec<f32>>,
    ) -> Result<Arc<Vec<f32>>, CollectiveError> {
        if self.abort.is_aborted() {
            return Err(self.aborted(operation));
        }
        if let Some(failed) = self.broken {
            return Err(CollectiveError::Broken {
                rank: self.rank,
                operation,
                failed,
            });
        }
        let signature = OpSignature {
            operation,
            seq: self.seq,
            len: len as u64,
        };
        self.seq += 1;
        let result = self.meet(signature, data);
        if result.is_err() {
            self.broken = Some(operation);
            self.shared.leave(self.rank);
        }
        result
    }

    fn meet(
        &self,
        signature: OpSignature,
        data: Option<Vec<f32>>,
    ) -> Result<Arc<Vec<f32>>, CollectiveError> {
        let (rank, n) = (self.rank, self.shared.world_size);
        let deadline = Instant::now() + self.config.op_timeout;
        let mut state = self.shared.lock();
        let round = state.rounds.entry(signature.seq).or_insert_with(|| Round {
            signature,
            mismatch: None,
            contributions: vec![None; n],
            arrived: vec![false; n],
            result: None,
            taken: 0,
        });
        if round.signature != signature && round.mismatch.is_none() {
            round.mismatch = Some((rank, signature));
        }
        round.contributions[rank] = data;
        round.arrived[rank] = true;
        if round.arrived.iter().all(|&a| a) && round.mismatch.is_none() {
            round.result = Some(Arc::new(combine(
                signature.operation,
                &mut round.contributions,
            )));
        }
        self.shared.changed.notify_all();
        loop {
            let st = &mut *state;
            let round = st.rounds.get_mut(&signature.seq).expect("kept until taken");
            if let Some((other, theirs)) = round.mismatch {
                // Report the disagreement against whichever side this rank is not on.
                let (peer, ours, theirs) = if other == rank {
                    (first_arrival(round, rank), signature, round.signature)
                } else {
                    (other, signature, theirs)
                };
                return Err(CollectiveError::Mismatch {
                    rank,
                    peer: Peer {
                        rank: peer,
                        addr: None,
                    },
                    ours,
                    theirs,
                });
            }
            if let Some(result) = &round.result {
                let result = result.clone();
                round.taken += 1;
                if round.taken == n {
                    st.rounds.remove(&signature.seq);
                }
                return Ok(result);
            }
            if self.abort.is_aborted() {
                return Err(self.aborted(signature.operation));
            }
            let missing = (0..n).find(|&r| !round.arrived[r]).unwrap_or(rank);
            if let Some(gone) = (0..n).find(|&r| r != rank && st.gone[r]) {
                return Err(CollectiveError::PeerClosed {
                    rank,
                    operation: signature.operation,
                    peer: Peer {
                        rank: gone,
                        addr: None,
                    },
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CollectiveError::Timeout {
                    rank,
                    operation: signature.operation,
                    peer: Some(Peer {
                        rank: missing,
                        addr: None,
                    }),
                    timeout: self.config.op_timeout,
                });
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn aborted(&self, operation: Operation) -> CollectiveError {
        CollectiveError::Aborted {
            rank: self.rank,
            operation,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `rank` as gone and wakes every waiting rank.
    fn leave(&self, rank: usize) {
        self.lock().gone[rank] = true;
        self.changed.notify_all();
    }
}

impl Drop for LocalCollective {
    fn drop(&mut self) {
        self.shared.leave(self.rank);
    }
}

/// The result of a round whose ranks all arrived: the sum in rank order, root's buffer, the
/// ranks' shards end to end (they tile the buffer in rank order), or nothing for a barrier.
fn combine(operation: Operation, contributions: &mut [Option<Vec<f32>>]) -> Vec<f32> {
    match operation {
        Operation::Broadcast { root } => contributions[root].take().unwrap_or_default(),
        Operation::AllGather => contributions
            .iter_mut()
            .flat_map(|c| c.take().unwrap_or_default())
            .collect(),
        Operation::AllReduceSum | Operation::AllReduceMean | Operation::ReduceScatterSum => {
            let mut parts = contributions
                .iter_mut()
                .map(|c| c.take().unwrap_or_default());
            let mut sum = parts.next().unwrap_or_default();
            for part in parts {
                sum.iter_mut().zip(&part).for_each(|(s, x)| *s += *x);
            }
            sum
        }
        Operation::Barrier | Operation::Rendezvous => Vec::new(),
    }
}

/// A rank other than `rank` that arrived with the round's signature.
fn first_arrival(round: &Round, rank: usize) -> usize {
    (0..round.arrived.len())
        .find(|&r| r != rank && round.arrived[r])
        .unwrap_or(rank)
}

impl Collective for LocalCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world_size
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let sum = self.run(Operation::AllReduceSum, buf.len(), Some(buf.to_vec()))?;
        buf.copy_from_slice(&sum);
        Ok(())
    }

    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let sum = self.run(Operation::AllReduceMean, buf.len(), Some(buf.to_vec()))?;
        let n = self.shared.world_size as f32;
        buf.iter_mut()
            .zip(sum.iter())
            .for_each(|(x, s)| *x = *s / n);
        Ok(())
    }

    fn reduce_scatter_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        // Every rank contributes its whole buffer and keeps only its shard of the sum.
        let sum = self.run(Operation::ReduceScatterSum, buf.len(), Some(buf.to_vec()))?;
        let shard = shard_range(buf.len(), self.shared.world_size, self.rank);
        buf[shard.clone()].copy_from_slice(&sum[shard]);
        Ok(())
    }

    fn all_gather(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let shard = shard_range(buf.len(), self.shared.world_size, self.rank);
        let gathered = self.run(Operation::AllGather, buf.len(), Some(buf[shard].to_vec()))?;
        buf.copy_from_slice(&gathered);
        Ok(())
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        if root >= self.shared.world_size {
            return Err(CollectiveError::InvalidRoot {
                rank: self.rank,
                root,
                world_size: self.shared.world_size,
            });
        }
        let data = (self.rank == root).then(|| buf.to_vec());
        let value = self.run(Operation::Broadcast { root }, buf.len(), data)?;
        if self.rank != root {
            buf.copy_from_slice(&value);
        }
        Ok(())
    }

    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.run(Operation::Barrier, 0, None).map(drop)
    }

    fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    fn implementation(&self) -> &'static str {
        "in-process"
    }
}
