//! The implementations under test, each able to build a group of ranks.

use crate::TEST_KEY;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fourm_collective::{
    AbortHandle, Collective, LocalCollective, LocalConfig, Rendezvous, RingCollective, RingConfig,
};

/// How a conformance check obtains groups of one implementation.
pub trait Implementation: Send + Sync {
    fn name(&self) -> &'static str;
    /// The largest group this machine can host, or why the implementation cannot run here.
    fn available(&self) -> Result<usize, String>;
    /// Why a check does not apply to this implementation, if it does not.
    fn skips(&self, _check: &str) -> Option<String> {
        None
    }
    /// Whether a peer that leaves (drops its collective) is detected before the timeout.
    fn detects_closed_peers(&self) -> bool {
        true
    }
    /// A fresh group of `world` ranks, in rank order.
    fn group(&self, world: usize, op_timeout: Duration) -> Vec<Box<dyn Collective>>;
}

pub fn all() -> Vec<&'static dyn Implementation> {
    vec![&Local, &Ring, &Nccl]
}

pub struct Local;

impl Implementation for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn available(&self) -> Result<usize, String> {
        Ok(8)
    }

    fn group(&self, world: usize, op_timeout: Duration) -> Vec<Box<dyn Collective>> {
        LocalCollective::group(world, &LocalConfig { op_timeout })
            .expect("valid group")
            .into_iter()
            .map(|c| Box::new(c) as Box<dyn Collective>)
            .collect()
    }
}

pub struct Ring;

/// Pieces of an odd size, so that small buffers already span several pieces.
pub const RING_CHUNK_BYTES: usize = 64 * 1024 + 12;

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

impl Implementation for Ring {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn available(&self) -> Result<usize, String> {
        Ok(8)
    }

    fn group(&self, world: usize, op_timeout: Duration) -> Vec<Box<dyn Collective>> {
        let config = RingConfig {
            op_timeout,
            connect_timeout: Duration::from_secs(30),
            chunk_bytes: RING_CHUNK_BYTES,
        };
        ring_group(world, &config)
            .into_iter()
            .map(|c| Box::new(c) as Box<dyn Collective>)
            .collect()
    }
}

/// Binds one loopback listener per rank and connects the ring of a fresh generation.
pub fn ring_group(world: usize, config: &RingConfig) -> Vec<RingCollective> {
    let listeners: Vec<_> = (0..world)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    let peers: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::SeqCst);
    std::thread::scope(|s| {
        let handles: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(rank, listener)| {
                let rendezvous = Rendezvous {
                    generation,
                    rank,
                    peers: peers.clone(),
                    key: TEST_KEY.to_vec(),
                };
                s.spawn(move || {
                    RingCollective::connect(listener, &rendezvous, config, AbortHandle::new())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("ring rendezvous"))
            .collect()
    })
}

pub struct Nccl;

#[cfg(not(feature = "cuda"))]
impl Implementation for Nccl {
    fn name(&self) -> &'static str {
        "nccl"
    }

    fn available(&self) -> Result<usize, String> {
        Err("built without the `cuda` feature".into())
    }

    fn group(&self, _world: usize, _op_timeout: Duration) -> Vec<Box<dyn Collective>> {
        unreachable!("never available")
    }
}

#[cfg(feature = "cuda")]
impl Implementation for Nccl {
    fn name(&self) -> &'static str {
        "nccl"
    }

    fn available(&self) -> Result<usize, String> {
        match fourm_collective::NcclCollective::device_count() {
            Ok(0) => Err("no CUDA device".into()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("CUDA or NCCL unavailable: {e}")),
        }
    }

    fn skips(&self, check: &str) -> Option<String> {
        match check {
            "ranks_that_disagree_fail" | "sharded_ranks_that_disagree_fail" => {
                Some("NCCL does not check that ranks agree on the operation".to_string())
            }
            "device_variants_are_unsupported" => {
                Some("NCCL implements the device variants".to_string())
            }
            _ => None,
        }
    }

    fn detects_closed_peers(&self) -> bool {
        false
    }

    fn group(&self, world: usize, op_timeout: Duration) -> Vec<Box<dyn Collective>> {
        use fourm_collective::{NcclCollective, NcclConfig, NcclUniqueId};
        let id = NcclUniqueId::new().expect("nccl unique id");
        // The id travels as bytes, as it does through the coordinator.
        let bytes = id.to_bytes();
        let config = NcclConfig {
            op_timeout,
            init_timeout: Duration::from_secs(60),
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..world)
                .map(|rank| {
                    let (bytes, config) = (&bytes, &config);
                    s.spawn(move || {
                        let id = NcclUniqueId::from_bytes(bytes).expect("id round trip");
                        NcclCollective::new(&id, rank, world, rank, config, AbortHandle::new())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| Box::new(h.join().unwrap().expect("nccl init")) as Box<dyn Collective>)
                .collect()
        })
    }
}
