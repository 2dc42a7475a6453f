//! What the coordinator tells a running worker, shared between the heartbeat task and the
//! training thread: the generation to join, abort, checkpoint requests, shutdown.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use fourm_collective::AbortHandle;
use fourm_proto::v1 as pb;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, watch};

/// Shared control state of one worker.
#[derive(Debug)]
pub struct Control {
    /// Generation the worker trains in (0: none).
    pub generation: AtomicU64,
    /// Last completed step.
    pub step: AtomicU64,
    phase: AtomicI32,
    abort: Mutex<Option<AbortHandle>>,
    aborted: AtomicBool,
    reason: Mutex<String>,
    checkpoint: AtomicBool,
    shutdown: AtomicBool,
    finished: AtomicBool,
    failure: Mutex<Option<String>>,
    join_tx: watch::Sender<u64>,
    changed: Notify,
}

impl Control {
    /// Fresh state; returns the receiver of "join generation g" requests.
    pub fn new() -> (Self, watch::Receiver<u64>) {
        let (join_tx, join_rx) = watch::channel(0);
        let c = Self {
            generation: AtomicU64::new(0),
            step: AtomicU64::new(0),
            phase: AtomicI32::new(pb::WorkerPhase::Waiting as i32),
            abort: Mutex::new(None),
            aborted: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            checkpoint: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            failure: Mutex::new(None),
            join_tx,
            changed: Notify::new(),
        };
        (c, join_rx)
    }

    /// Enters generation `g` with the collective's abort handle.
    pub fn enter(&self, g: u64, abort: AbortHandle) {
        *self.abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(abort);
        self.aborted.store(false, Ordering::SeqCst);
        self.generation.store(g, Ordering::SeqCst);
    }

    /// Leaves the current generation.
    pub fn leave(&self) {
        *self.abort.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.generation.store(0, Ordering::SeqCst);
        self.set_phase(pb::WorkerPhase::Waiting);
    }

    /// Aborts generation `g` if it is still the current one (a late failure of an ended
    /// generation, such as its checkpoint upload, never touches the next).
    pub fn abort_generation(&self, g: u64, reason: &str) {
        if self.generation.load(Ordering::SeqCst) == g {
            self.abort(reason);
        }
    }

    /// The generation the worker is in (0: none).
    pub fn current(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Aborts the current generation (its collective returns errors at once).
    pub fn abort(&self, reason: &str) {
        if self.generation.load(Ordering::SeqCst) == 0 {
            return;
        }
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_string();
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(handle) = self
            .abort
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            handle.abort();
        }
        self.changed.notify_waiters();
    }

    /// Whether the current generation was aborted, and why.
    pub fn aborted(&self) -> Option<String> {
        self.aborted.load(Ordering::SeqCst).then(|| {
            self.reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// Asks to join generation `g`.
    pub fn request_join(&self, g: u64) {
        self.join_tx.send_replace(g);
    }

    /// Rank 0 was asked for a checkpoint.
    pub fn request_checkpoint(&self) {
        self.checkpoint.store(true, Ordering::SeqCst);
    }

    /// Takes a pending checkpoint request.
    pub fn take_checkpoint_request(&self) -> bool {
        self.checkpoint.swap(false, Ordering::SeqCst)
    }

    /// The job is over.
    pub fn shut_down(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.abort("the job is shutting down");
        self.join_tx.send_replace(u64::MAX);
        self.changed.notify_waiters();
    }

    /// The coordinator says the job failed: the worker stops with `reason` as its error.
    pub fn fail(&self, reason: &str) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        self.shut_down();
        self.changed.notify_waiters();
    }

    /// Why the job failed, if the coordinator said it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The coordinator says the job is finished: its last step is committed.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        self.shut_down();
        self.changed.notify_waiters();
    }

    /// Resolves at the next abort, shutdown or finish (created before checking the state, it
    /// does not miss one that happens in between).
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// Whether the coordinator said the job is finished (not merely that this worker must stop).
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Whether the job is over.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// What the worker does (for heartbeats).
    pub fn set_phase(&self, phase: pb::WorkerPhase) {
        self.phase.store(phase as i32, Ordering::SeqCst);
    }

    /// The phase as sent in heartbeats.
    pub fn phase(&self) -> i32 {
        self.phase.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A late failure of an ended generation (its upload, its report) never aborts the next one.
    #[test]
    fn late_aborts_of_an_ended_generation_are_ignored() {
        let (control, _join) = Control::new();
        control.enter(7, AbortHandle::new());
        control.leave();
        let next = AbortHandle::new();
        control.enter(8, next.clone());
        control.abort_generation(7, "upload of generation 7 failed");
        assert_eq!(control.aborted(), None);
        assert!(!next.is_aborted());
        control.abort_generation(8, "upload of generation 8 failed");
        assert_eq!(
            control.aborted().as_deref(),
            Some("upload of generation 8 failed")
        );
        assert!(next.is_aborted());
    }
}
