//! NCCL through `cudarc` (feature `cuda`), with the CUDA driver and NCCL loaded at run time.
//!
//! Rank 0 creates an [`NcclUniqueId`]; the coordinator relays its bytes to the other ranks, which
//! parse them with [`NcclUniqueId::from_bytes`]; every rank then builds its [`NcclCollective`].
//!
//! A dead peer must never hang a worker. The communicator is therefore *non-blocking*
//! (`ncclConfig_t::blocking = 0`): initialisation and every call return at once, and this rank
//! polls for completion (`ncclCommGetAsyncError`, a CUDA event) while watching its deadline and
//! its [`AbortHandle`](crate::AbortHandle). Aborting from another thread (the worker's watchdog)
//! calls `ncclCommAbort`, which stops the NCCL kernels still waiting for a peer; the polling
//! operation then returns [`CollectiveError::Aborted`](crate::CollectiveError::Aborted). A
//! timeout aborts the communicator the same way.
//!
//! Every NCCL call on the communicator, including the abort, happens under one mutex, so the
//! watchdog can never free the communicator while another thread is inside an NCCL call; the
//! calls are non-blocking, so the watchdog never waits long for it.

mod collective;
mod comm;
mod id;

pub use collective::{NcclCollective, NcclConfig};
pub use id::NcclUniqueId;
