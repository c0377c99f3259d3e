//! SIGUSR1: "say how the capture goes now".
//!
//! The handler only counts; the runner (its one-line summary) and summary
//! sinks (their tables) compare the count with the one they last saw on
//! their periodic ticks, so the printing happens on the pipeline's task, not
//! in a signal handler. spf installs it as `spf run` starts: SIGUSR1's
//! default action would end spf without flushing a thing.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Installs the handler (once per process; later calls only report how the
/// first went). From then on SIGUSR1 no longer ends spf.
pub fn install() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // SAFETY: the action only adds to an atomic counter, which is
            // async-signal-safe; the registry chains it with any other
            // handler of SIGUSR1 (the runtime's, should it ever add one).
            unsafe {
                signal_hook_registry::register(libc::SIGUSR1, || {
                    RECEIVED.fetch_add(1, Ordering::Relaxed);
                })
            }
            .map(|_| ())
            .map_err(|e| format!("cannot handle SIGUSR1: {e}"))
        })
        .clone()
}

/// How many SIGUSR1 the process has received since [`install`].
pub fn received() -> u64 {
    RECEIVED.load(Ordering::Relaxed)
}
