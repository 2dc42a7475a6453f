//! The CPU ring over TCP: bandwidth-optimal all-reduce (each rank sends `2(n-1)/n` of the buffer),
//! reduce-scatter and all-gather (`(n-1)/n` each), chain broadcast, barrier, per-operation
//! timeouts and abort.

use std::net::{Shutdown, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::pipeline::Pipeline;
use crate::rendezvous::{self, Links};
use crate::{AbortHandle, Collective, CollectiveError, OpSignature, Operation, Peer, Rendezvous};

/// Settings of the TCP ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// How long the rendezvous may wait for the neighbours (their listeners may not be up yet).
    pub connect_timeout: Duration,
    /// How long one operation may take before it fails with
    /// [`CollectiveError::Timeout`]; a peer that stops participating is detected after at most
    /// this long (at once if its process dies and its sockets close).
    pub op_timeout: Duration,
    /// The size of the pieces that are sent, received and reduced one at a time, in bytes (a
    /// multiple of 4). Smaller pieces pipeline more finely; larger ones cost fewer system calls.
    /// Results do not depend on it: the order of additions depends only on the world size and
    /// the buffer length.
    pub chunk_bytes: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(60),
            op_timeout: Duration::from_secs(300),
            chunk_bytes: 256 * 1024,
        }
    }
}

impl RingConfig {
    /// Checks the values, naming the key that is out of range.
    pub fn validate(&self) -> Result<(), CollectiveError> {
        let invalid = |key, reason| Err(CollectiveError::InvalidConfig { key, reason });
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be positive");
        }
        if self.op_timeout.is_zero() {
            return invalid("op_timeout", "must be positive");
        }
        if self.chunk_bytes < 4 || !self.chunk_bytes.is_multiple_of(4) {
            return invalid("chunk_bytes", "must be a positive multiple of 4");
        }
        Ok(())
    }
}

/// One rank of a ring of TCP connections: it receives from rank `rank - 1` and sends to rank
/// `rank + 1` (modulo the world size).
///
/// ```no_run
/// use std::net::TcpListener;
/// use fourm_collective::{AbortHandle, Collective, Rendezvous, RingCollective, RingConfig};
///
/// // Bound once at worker start; its address is published to the coordinator.
/// let listener = TcpListener::bind("0.0.0.0:0")?;
/// // For each generation, the coordinator hands out the generation, the rank and the addresses.
/// let rendezvous = Rendezvous { generation: 3, rank: 0, peers: vec![
///     "10.0.0.1:7000".parse()?, "10.0.0.2:7000".parse()?,
/// ], key: b"the job's ring key".to_vec() };
/// let abort = AbortHandle::new(); // kept by the watchdog
/// let mut ring = RingCollective::connect(&listener, &rendezvous, &RingConfig::default(), abort)?;
/// let mut grads = vec![0.0f32; 1 << 20];
/// ring.all_reduce_mean(&mut grads)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RingCollective {
    rank: usize,
    world_size: usize,
    generation: u64,
    /// `None` for a world of one.
    links: Option<Arc<Links>>,
    left: Peer,
    right: Peer,
    config: RingConfig,
    abort: AbortHandle,
    /// Operations started so far; sent in every operation header.
    seq: u64,
    /// The operation that failed, after which the ring refuses to run.
    broken: Option<Operation>,
}

impl RingCollective {
    /// Joins the ring of one generation: connects to the right neighbour (retrying while its
    /// listener is not up) and accepts the left one on `listener`, refusing connections from
    /// other generations or ranks. Waits at most `config.connect_timeout`; `abort` stops the wait
    /// and later aborts the ring's operations.
    ///
    /// `listener` is borrowed: it stays the caller's, to be reused by the next generation.
    pub fn connect(
        listener: &TcpListener,
        rendezvous: &Rendezvous,
        config: &RingConfig,
        abort: AbortHandle,
    ) -> Result<Self, CollectiveError> {
        config.validate()?;
        rendezvous.validate()?;
        let (rank, world_size) = (rendezvous.rank, rendezvous.world_size());
        let mut ring = Self {
            rank,
            world_size,
            generation: rendezvous.generation,
            links: None,
            left: rendezvous.left(),
            right: rendezvous.right(),
            config: config.clone(),
            abort,
            seq: 0,
            broken: None,
        };
        if ring.abort.is_aborted() {
            return Err(ring.aborted(Operation::Rendezvous));
        }
        if world_size == 1 {
            return Ok(ring);
        }
        let started = Instant::now();
        let links = Arc::new(rendezvous::connect(
            listener,
            rendezvous,
            config.connect_timeout,
            &ring.abort,
        )?);
        let weak = Arc::downgrade(&links);
        ring.abort.on_abort(move || {
            if let Some(links) = weak.upgrade() {
                let _ = links.left.shutdown(Shutdown::Both);
                let _ = links.right.shutdown(Shutdown::Both);
            }
        });
        ring.links = Some(links);
        tracing::info!(
            rank,
            world_size,
            generation = rendezvous.generation,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ring connected"
        );
        Ok(ring)
    }

    /// The generation this ring was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Runs one operation: checks that the ring is usable, exchanges operation headers with the
    /// neighbours, then runs `body`.
    fn run(
        &mut self,
        operation: Operation,
        len: usize,
        body: impl FnOnce(&Pipeline<'_>) -> Result<(), crate::pipeline::Failed>,
    ) -> Result<(), CollectiveError> {
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
        let seq = self.seq;
        self.seq += 1;
        let Some(links) = &self.links else {
            return Ok(());
        };
        let started = Instant::now();
        let pipeline = Pipeline {
            rank: self.rank,
            world_size: self.world_size,
            links,
            left: self.left,
            right: self.right,
            operation,
            timeout: self.config.op_timeout,
            deadline: started + self.config.op_timeout,
            abort: &self.abort,
            chunk: self.config.chunk_bytes / 4,
            first_error: OnceLock::new(),
        };
        let signature = OpSignature {
            operation,
            seq,
            len: len as u64,
        };
        match pipeline
            .exchange_signatures(signature)
            .and_then(|()| body(&pipeline))
        {
            Ok(()) => {
                tracing::trace!(rank = self.rank, %operation, seq, len, elapsed_us = started.elapsed().as_micros() as u64, "ring operation done");
                Ok(())
            }
            Err(_) => {
                let error = pipeline.into_error();
                tracing::warn!(rank = self.rank, %operation, seq, error = %error, "ring operation failed");
                self.broken = Some(operation);
                Err(error)
            }
        }
    }

    fn aborted(&self, operation: Operation) -> CollectiveError {
        CollectiveError::Aborted {
            rank: self.rank,
            operation,
        }
    }
}

impl Collective for RingCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.run(Operation::AllReduceSum, buf.len(), |p| p.all_reduce(buf))
    }

    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.run(Operation::AllReduceMean, buf.len(), |p| p.all_reduce(buf))?;
        let n = self.world_size as f32;
        if self.world_size > 1 {
            buf.iter_mut().for_each(|x| *x /= n);
        }
        Ok(())
    }

    fn reduce_scatter_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.run(Operation::ReduceScatterSum, buf.len(), |p| {
            p.reduce_scatter(buf)
        })
    }

    fn all_gather(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.run(Operation::AllGather, buf.len(), |p| p.all_gather(buf))
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        if root >= self.world_size {
            return Err(CollectiveError::InvalidRoot {
                rank: self.rank,
                root,
                world_size: self.world_size,
            });
        }
        self.run(Operation::Broadcast { root }, buf.len(), |p| {
            p.broadcast(buf, root)
        })
    }

    fn barrier(&mut self) -> Result<(), CollectiveError> {
        // Every rank's result depends on every rank's contribution, so no rank leaves before
        // all have entered.
        let mut token = vec![0f32; self.world_size];
        self.run(Operation::Barrier, token.len(), |p| {
            p.all_reduce(&mut token)
        })
    }

    fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    fn implementation(&self) -> &'static str {
        "tcp ring"
    }
}
