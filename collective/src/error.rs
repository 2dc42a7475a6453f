//! The crate's error type.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{OpSignature, Operation};

/// A peer rank, with its address where the implementation has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer's rank.
    pub rank: usize,
    /// Its listener address (TCP ring only).
    pub addr: Option<SocketAddr>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => write!(f, "rank {} ({addr})", self.rank),
            None => write!(f, "rank {}", self.rank),
        }
    }
}

/// Why a rank refused a connection during the ring rendezvous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The connecting rank belongs to another generation.
    Generation {
        /// The generation of the rank that refused.
        theirs: u64,
    },
    /// The connecting rank is not the expected left neighbour, or disagrees on the world size.
    Rank {
        /// The rank the acceptor expected.
        expected: usize,
    },
    /// Different protocol version or byte order.
    Protocol,
    /// The hello's authentication code is wrong (another job's key, a forgery) or replayed.
    Unauthenticated,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Generation { theirs } => write!(f, "the peer is in generation {theirs}"),
            Self::Rank { expected } => write!(f, "the peer expects rank {expected}"),
            Self::Protocol => f.write_str("protocol version or byte order differs"),
            Self::Unauthenticated => f.write_str("the hello is not authenticated by the job's key"),
        }
    }
}

/// Errors of the collectives. Every variant names the rank that reports it; a failed operation
/// leaves the collective [`Broken`](CollectiveError::Broken).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectiveError {
    /// The collective was aborted through its [`AbortHandle`](crate::AbortHandle).
    #[error("rank {rank}: {operation} aborted")]
    Aborted {
        /// The reporting rank.
        rank: usize,
        /// The operation that was running or asked for.
        operation: Operation,
    },
    /// The operation did not complete within the timeout: a peer did not take part.
    #[error("rank {rank}: {operation} timed out after {timeout:?}{}", waiting_for(.peer))]
    Timeout {
        /// The reporting rank.
        rank: usize,
        /// The operation.
        operation: Operation,
        /// The peer waited for, where the implementation knows it (NCCL does not).
        peer: Option<Peer>,
        /// The operation's time limit.
        timeout: Duration,
    },
    /// A peer closed its connection or left the group (it died, failed or was aborted).
    #[error("rank {rank}: {operation}: {peer} closed the connection")]
    PeerClosed {
        /// The reporting rank.
        rank: usize,
        /// The operation.
        operation: Operation,
        /// The peer that left.
        peer: Peer,
    },
    /// Sending to or receiving from a peer failed.
    #[error("rank {rank}: {operation}: i/o error with {peer}")]
    Io {
        /// The reporting rank.
        rank: usize,
        /// The operation.
        operation: Operation,
        /// The peer of the connection.
        peer: Peer,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The rendezvous did not complete in time: the peer's listener was not reachable or the
    /// expected peer did not connect.
    #[error(
        "rank {rank}: rendezvous with {peer} did not complete within {waited:?} ({attempts} attempts)"
    )]
    RendezvousTimeout {
        /// The reporting rank.
        rank: usize,
        /// The peer that could not be reached or did not connect.
        peer: Peer,
        /// How long the rank waited.
        waited: Duration,
        /// Connection attempts made (0 while waiting for the left neighbour to connect).
        attempts: u32,
        /// The last connection error, if any.
        #[source]
        last_error: Option<io::Error>,
    },
    /// The peer is in a newer generation: this rank is stale and must rejoin.
    #[error(
        "rank {rank}: generation {generation} is stale, {peer} is in generation {peer_generation}"
    )]
    StaleGeneration {
        /// The reporting rank.
        rank: usize,
        /// This rank's generation.
        generation: u64,
        /// The peer that refused.
        peer: Peer,
        /// The peer's generation.
        peer_generation: u64,
    },
    /// The peer refused the connection for another reason than the generation.
    #[error("rank {rank}: {peer} refused the connection: {reason}")]
    Rejected {
        /// The reporting rank.
        rank: usize,
        /// The peer that refused.
        peer: Peer,
        /// Why.
        reason: RejectReason,
    },
    /// A peer sent bytes that do not follow the protocol.
    #[error("rank {rank}: {peer} does not speak the ring protocol ({what})")]
    Protocol {
        /// The reporting rank.
        rank: usize,
        /// The peer.
        peer: Peer,
        /// What was wrong.
        what: &'static str,
    },
    /// The ranks disagree on the operation (kind, sequence number, length or root).
    #[error(
        "rank {rank}: ranks disagree on the operation: this rank runs {ours}, {peer} runs {theirs}"
    )]
    Mismatch {
        /// The reporting rank.
        rank: usize,
        /// The peer that disagrees.
        peer: Peer,
        /// This rank's operation.
        ours: OpSignature,
        /// The peer's operation.
        theirs: OpSignature,
    },
    /// A broadcast root outside `0..world_size`.
    #[error("rank {rank}: broadcast root {root} is not a rank of a world of {world_size}")]
    InvalidRoot {
        /// The reporting rank.
        rank: usize,
        /// The root asked for.
        root: usize,
        /// The world size.
        world_size: usize,
    },
    /// A rank outside the group, an empty group, or a peer list of the wrong length.
    #[error("invalid group: rank {rank} of a world of {world_size}")]
    InvalidGroup {
        /// The rank asked for.
        rank: usize,
        /// The world size.
        world_size: usize,
    },
    /// A configuration value out of range.
    #[error("invalid collective configuration: `{key}` {reason}")]
    InvalidConfig {
        /// The configuration key.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An earlier operation failed; the collective must be rebuilt.
    #[error("rank {rank}: {operation} refused: the collective is unusable since {failed} failed")]
    Broken {
        /// The reporting rank.
        rank: usize,
        /// The operation asked for.
        operation: Operation,
        /// The operation that failed.
        failed: Operation,
    },
    /// The implementation does not provide this operation (device pointers on a host collective).
    #[error("rank {rank}: {implementation} does not support {operation} on device memory")]
    Unsupported {
        /// The reporting rank.
        rank: usize,
        /// The operation.
        operation: Operation,
        /// The implementation.
        implementation: &'static str,
    },
    /// A shared library that the implementation loads at run time is missing.
    #[error("the {library} library could not be loaded (is it installed and on the library path?)")]
    LibraryMissing {
        /// The library (`cuda`, `nccl`).
        library: &'static str,
    },
    /// NCCL unique-id bytes of the wrong length.
    #[error("an NCCL unique id has {expected} bytes, got {len}")]
    InvalidNcclId {
        /// The length received.
        len: usize,
        /// The length of an id.
        expected: usize,
    },
    /// An NCCL call failed.
    #[error("rank {rank}: {call} failed: {code} ({message})")]
    Nccl {
        /// The reporting rank.
        rank: usize,
        /// The NCCL function.
        call: &'static str,
        /// NCCL's result code.
        code: String,
        /// NCCL's description of the failure.
        message: String,
    },
    /// A CUDA driver call failed.
    #[cfg(feature = "cuda")]
    #[error("rank {rank}: {call} failed")]
    Cuda {
        /// The reporting rank.
        rank: usize,
        /// The driver function.
        call: &'static str,
        /// The driver's error.
        #[source]
        source: cudarc::driver::DriverError,
    },
}

fn waiting_for(peer: &Option<Peer>) -> String {
    peer.map(|p| format!(" waiting for {p}"))
        .unwrap_or_default()
}

impl CollectiveError {
    /// Whether the error means the collective was aborted through its handle.
    pub fn is_aborted(&self) -> bool {
        matches!(self, Self::Aborted { .. })
    }
}
