//! What the gRPC service, the ticker and the HTTP endpoints share: the state machine (stamped
//! with the coordinator's clock), durable storage, and the two workflows that need both, the
//! commit of a checkpoint and the fall-back from a bad one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, broadcast, watch};

use crate::durable::{Durable, DurableError};
use crate::manifest::Manifest;
use crate::server::committed_of;
use crate::state::{GenerationEvent, StateMachine};

/// State shared by the service, the ticker and the HTTP endpoints.
pub struct Shared {
    state: Mutex<StateMachine>,
    durable: Arc<Durable>,
    pub(crate) checkpoint_url: String,
    started: Instant,
    pub(crate) events: broadcast::Sender<GenerationEvent>,
    pub(crate) nccl_published: Notify,
    failure: watch::Sender<Option<String>>,
}

impl Shared {
    /// Wraps a state machine.
    pub fn new(state: StateMachine, durable: Durable, checkpoint_url: String) -> Arc<Self> {
        let (events, _) = broadcast::channel(256);
        Arc::new(Self {
            state: Mutex::new(state),
            durable: Arc::new(durable),
            checkpoint_url,
            started: Instant::now(),
            events,
            nccl_published: Notify::new(),
            failure: watch::Sender::new(None),
        })
    }

    /// Milliseconds since the coordinator started (the state machine's clock).
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Locks the state machine.
    pub fn lock(&self) -> MutexGuard<'_, StateMachine> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes the generation changes the state machine produced, and its failure.
    fn publish(&self, state: &mut StateMachine) {
        for event in state.take_events() {
            tracing::info!(generation = event.generation, state = ?event.state, reason = %event.reason, "generation change");
            let _ = self.events.send(event);
        }
        if let Some(reason) = state.failure() {
            self.failure.send_if_modified(|f| {
                let new = f.is_none();
                f.get_or_insert_with(|| reason.to_string());
                new
            });
        }
    }

    /// Advances the clock: lost and wedged workers, stalls, generation formation.
    pub fn tick(&self) {
        self.with(|s, now| s.tick(now));
    }

    /// Runs `f` on the state machine and publishes what changed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut StateMachine, u64) -> R) -> R {
        let now = self.now();
        let mut state = self.lock();
        let r = f(&mut state, now);
        self.publish(&mut state);
        r
    }

    /// Durable storage.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// Resolves with the reason once the job has failed.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.subscribe();
        let reason = rx
            .wait_for(Option::is_some)
            .await
            .map(|r| r.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // The sender lives as long as `self`: never reached.
            Err(_) => std::future::pending().await,
        }
    }

    /// Fails the job if a newer coordinator took over the checkpoint root.
    pub async fn check_fenced(&self) {
        if let Err(e @ DurableError::Fenced { .. }) = self.durable.check_fenced().await {
            self.with(|s, now| s.fail(e.to_string(), now));
        }
    }

    /// Commits the checkpoint every rank acknowledged: verifies and writes it, tells the state
    /// machine, then retires what left the retention window and removes what was never
    /// committed, in the background. `Err` (the state machine knows) when it could not.
    pub async fn commit(&self, manifest: Manifest) -> Result<(), String> {
        let step = manifest.step;
        if let Err(e) = self.durable.commit(&manifest).await {
            tracing::error!(step, error = %e, "checkpoint commit failed");
            let reason = e.to_string();
            self.with(|s, now| match e {
                DurableError::Fenced { .. } => s.fail(reason.clone(), now),
                _ => s.checkpoint_failed(step, &reason, now),
            });
            return Err(reason);
        }
        let retired = self
            .with(|s, now| s.checkpoint_committed(&manifest, now))
            .map_err(|e| e.to_string())?;
        tracing::info!(step, generation = manifest.generation, folder = %manifest.folder, "checkpoint committed");
        let durable = self.durable.clone();
        tokio::spawn(async move {
            if let Err(e) = durable.retire(&retired).await {
                tracing::warn!(error = %e, "cannot retire old checkpoints");
            }
            durable.clean_up(Some(step)).await;
        });
        Ok(())
    }

    /// A rank could not restore the committed checkpoint `folder` (a file fails its hash): it is
    /// marked bad in the log and the job falls back to the newest good one before it.
    pub async fn checkpoint_bad(&self, folder: &str, reason: &str) -> Result<(), DurableError> {
        let current = self.lock().committed().map(|c| c.folder.clone());
        if current.as_deref() != Some(folder) {
            return Ok(());
        }
        tracing::error!(
            folder,
            reason,
            "committed checkpoint failed verification; falling back"
        );
        self.durable.mark_bad(folder, reason).await?;
        let job_id = self.lock().config().job_id.clone();
        let previous = self.durable.latest_manifest(&job_id).await?;
        let plan = self.lock().plan().clone();
        let previous = previous
            .map(|m| committed_of(&plan, m))
            .transpose()
            .map_err(|e| DurableError::Corrupt {
                path: folder.to_string(),
                reason: e.to_string(),
            })?;
        self.with(|s, now| s.checkpoint_bad(folder, previous, now));
        Ok(())
    }
}
