//! The heartbeat task: liveness and step every interval, and the coordinator's instructions
//! applied to the worker's [`Control`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fourm_proto::v1 as pb;

use crate::client::Client;
use crate::control::Control;

/// Heartbeats until the job shuts down. `register` re-registers the worker when the coordinator
/// has forgotten it (after a coordinator restart).
pub async fn heartbeat_loop(
    client: Client,
    worker_id: String,
    control: Arc<Control>,
    interval: Duration,
    register: pb::RegisterRequest,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !control.is_shut_down() {
        tick.tick().await;
        let request = pb::HeartbeatRequest {
            worker_id: worker_id.clone(),
            generation: control.generation.load(Ordering::SeqCst),
            step: control.step.load(Ordering::SeqCst),
            phase: control.phase(),
        };
        let reply = match client.heartbeat(request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                continue;
            }
        };
        let current = control.generation.load(Ordering::SeqCst);
        match pb::Instruction::try_from(reply.instruction).unwrap_or(pb::Instruction::Unspecified) {
            pb::Instruction::Join if reply.generation != current => {
                if current != 0 {
                    control.abort(&format!(
                        "generation {} replaces {current}",
                        reply.generation
                    ));
                }
                control.request_join(reply.generation);
            }
            pb::Instruction::AbortCollective if current != 0 => {
                tracing::warn!(generation = current, reason = %reply.reason, "coordinator ended the generation");
                control.abort(&reply.reason);
            }
            pb::Instruction::Checkpoint => control.request_checkpoint(),
            pb::Instruction::ShutDown => {
                tracing::info!("coordinator says the job is finished");
                control.finish();
            }
            pb::Instruction::Fail => {
                tracing::error!(reason = %reply.reason, "coordinator says the job failed");
                control.fail(&reply.reason);
            }
            pb::Instruction::Register => {
                tracing::info!(
                    "coordinator does not know this worker (restarted?): registering again"
                );
                if current != 0 {
                    control.abort("the coordinator restarted");
                }
                if let Err(e) = client.register(register.clone()).await {
                    tracing::warn!(error = %e, "registering again failed");
                }
            }
            _ => {}
        }
    }
}
