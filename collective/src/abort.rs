//! Aborting a collective from another thread.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// An action that wakes up operations blocked in a collective (shutting its sockets down,
/// calling `ncclCommAbort`, notifying a condition variable).
type Hook = Box<dyn Fn() + Send + Sync>;

/// Aborts one collective from any thread, for example a watchdog that learns from the coordinator
/// that the generation has ended.
///
/// Clones share one state. After [`abort`](Self::abort), every operation of the collective that
/// is blocked returns [`CollectiveError::Aborted`](crate::CollectiveError::Aborted) promptly, and
/// so does every later one. Aborting is idempotent and cannot be undone: the next generation builds
/// a new collective with a new handle.
///
/// A handle can be created before the collective it will abort, so that a rendezvous that waits
/// for its peers can be aborted too.
#[derive(Clone, Default)]
pub struct AbortHandle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    aborted: AtomicBool,
    hooks: Mutex<Vec<Hook>>,
}

impl AbortHandle {
    /// A handle that has not been aborted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Aborts the collective: marks it aborted and runs its wake-up actions (once).
    pub fn abort(&self) {
        let hooks = {
            let mut hooks = self
                .inner
                .hooks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if self.inner.aborted.swap(true, Ordering::SeqCst) {
                return;
            }
            std::mem::take(&mut *hooks)
        };
        tracing::debug!(hooks = hooks.len(), "collective aborted");
        for hook in hooks {
            hook();
        }
    }

    /// Whether [`abort`](Self::abort) has been called on this handle or a clone.
    pub fn is_aborted(&self) -> bool {
        self.inner.aborted.load(Ordering::SeqCst)
    }

    /// Registers a wake-up action run by [`abort`](Self::abort); runs it at once if the handle
    /// is already aborted. Hooks should hold weak references to what they wake, so that a handle
    /// kept by a watchdog does not keep a dropped collective's resources alive.
    pub(crate) fn on_abort(&self, hook: impl Fn() + Send + Sync + 'static) {
        {
            let mut hooks = self
                .inner
                .hooks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !self.inner.aborted.load(Ordering::SeqCst) {
                hooks.push(Box::new(hook));
                return;
            }
        }
        hook();
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("aborted", &self.is_aborted())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn abort_runs_each_hook_once_and_late_hooks_immediately() {
        let handle = AbortHandle::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        handle.on_abort(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!handle.is_aborted());
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let clone = handle.clone();
        clone.abort();
        clone.abort();
        assert!(handle.is_aborted());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let c = calls.clone();
        handle.on_abort(move || {
            c.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 11);
    }
}
