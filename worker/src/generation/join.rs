//! Phases 1 and 2 of a generation: what the coordinator says about it, and its collective.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use fourm_collective::{
    AbortHandle, Collective, CollectiveError, Rendezvous, RingCollective, RingConfig,
};
use fourm_plan::{Assignment, Cursor, CursorEntry, CursorState, EpochPlan};
use fourm_proto::v1 as pb;

use super::{GenerationEnd, Worker};
use crate::config::CollectiveKind;
use crate::error::WorkerError;
use crate::failure::Failure;

/// What a rank knows of its generation once it joined.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The generation.
    pub generation: u64,
    /// This worker's rank.
    pub rank: u32,
    /// Ranks.
    pub world: u32,
    /// Steps of the whole job.
    pub total_steps: u64,
    /// Checkpoint every this many steps (0: on request and at the end only).
    pub checkpoint_every: u64,
    /// The committed checkpoint to restore, if any.
    pub restore: Option<pb::RestorePoint>,
    /// The ranks' collective addresses, in rank order.
    pub peers: Vec<SocketAddr>,
    /// The data plan of the job.
    pub plan: EpochPlan,
    /// Which rank reads which entries.
    pub assignment: Assignment,
    /// What committed steps consumed.
    pub cursor: Cursor,
}

impl Worker {
    /// Phase 1: rendezvous and lease.
    pub(super) fn join(&self, g: u64) -> Result<Joined, WorkerError> {
        let rt = &self.runtime;
        let rdv = rt.block_on(self.client.rendezvous(pb::RendezvousRequest {
            worker_id: self.id.clone(),
            generation: g,
            nccl_unique_id: Vec::new(),
            wait_ms: 0,
        }))?;
        let lease = rt.block_on(self.client.lease(pb::LeaseRequest {
            worker_id: self.id.clone(),
            generation: g,
            count: 0,
        }))?;
        let plan = self.data.plan(lease.seed)?;
        let a = lease
            .assignment
            .ok_or_else(|| WorkerError::setup("lease without an assignment"))?;
        let assignment = Assignment {
            world_size: a.world_size,
            carried: a.carried,
            base: a.base,
        };
        let cursor = lease
            .cursor
            .ok_or_else(|| WorkerError::setup("lease without a cursor"))?;
        let cursor = Cursor::from_state(&plan, &cursor_from_pb(cursor))?;
        let peers = rdv
            .peers
            .iter()
            .map(|p| resolve(&p.collective_address))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(generation = g, rank = rdv.rank, world = rdv.world_size, restore = ?rdv.restore.as_ref().map(|r| r.step), "joining generation");
        Ok(Joined {
            generation: g,
            rank: rdv.rank,
            world: rdv.world_size,
            total_steps: rdv.total_steps,
            checkpoint_every: rdv.checkpoint_every,
            restore: rdv.restore,
            peers,
            plan,
            assignment,
            cursor,
        })
    }

    /// Phase 2: the generation's collective; a failure to connect ends the generation.
    pub(super) fn connect(
        &self,
        joined: &Joined,
        abort: AbortHandle,
    ) -> Result<Result<Box<dyn Collective>, GenerationEnd>, WorkerError> {
        let g = joined.generation;
        self.control.set_phase(pb::WorkerPhase::Starting);
        let connected = match self.config.worker.collective {
            CollectiveKind::Ring => {
                let rendezvous = Rendezvous {
                    generation: g,
                    rank: joined.rank as usize,
                    peers: joined.peers.clone(),
                    key: self.ring_key.clone(),
                };
                let ring_config = RingConfig {
                    connect_timeout: Duration::from_secs(30),
                    ..RingConfig::default()
                };
                RingCollective::connect(&self.listener, &rendezvous, &ring_config, abort)
                    .map(|r| Box::new(r) as Box<dyn Collective>)
            }
            CollectiveKind::Nccl => {
                crate::nccl::connect(self, g, joined.rank, joined.world, abort)?
            }
        };
        Ok(connected.map_err(|e| self.collective_failed(g, &e)))
    }

    /// The collective failed: tell the coordinator (unless it told us first) and rejoin.
    pub(super) fn collective_failed(&self, g: u64, e: &CollectiveError) -> GenerationEnd {
        self.fail(g, Failure::new(pb::FailureKind::Collective, e.to_string()))
    }
}

fn resolve(address: &str) -> Result<SocketAddr, WorkerError> {
    address
        .to_socket_addrs()
        .map_err(|e| WorkerError::io(format!("resolving peer {address}"), e))?
        .next()
        .ok_or_else(|| WorkerError::setup(format!("peer address {address} resolves to nothing")))
}

fn cursor_from_pb(c: pb::DataCursor) -> CursorState {
    CursorState {
        seed: c.seed,
        done_below: c.done_below,
        started: c
            .started
            .into_iter()
            .map(|e| CursorEntry {
                entry: e.entry,
                epoch: e.epoch,
                shard: e.shard,
                consumed: e.consumed,
            })
            .collect(),
    }
}
