//! Shutdown on SIGINT or SIGTERM (what a terminal, Kubernetes and `fourm launch` send).

/// Resolves on SIGINT or SIGTERM. Where a SIGTERM handler cannot be installed, it says so and
/// waits for SIGINT only.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGTERM; stopping on SIGINT only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
