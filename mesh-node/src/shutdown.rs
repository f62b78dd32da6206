//! Graceful shutdown of a served node: waiting for SIGTERM or SIGINT, and the draining flag
//! the HTTP API consults to answer 503 once a stop has begun. It signals; the order of the
//! stop itself (HTTP server, then the mesh) is `run`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// Whether the node is stopping; shared by the HTTP API and the code that stops it.
#[derive(Clone, Debug, Default)]
pub struct Draining {
    inner: Arc<DrainingInner>,
}

#[derive(Debug, Default)]
struct DrainingInner {
    flag: AtomicBool,
    notify: Notify,
}

impl Draining {
    /// A node that is not stopping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the node as stopping: from now on the HTTP API answers 503.
    pub fn start(&self) {
        self.inner.flag.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }

    /// Whether a stop has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.flag.load(Ordering::Acquire)
    }

    /// Resolves once [`start`](Self::start) was called.
    pub async fn started(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_draining() {
                return;
            }
            notified.await;
        }
    }
}

/// Which signal asked the node to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM (service managers, `kill`).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        })
    }
}

/// The stop signals (SIGTERM, SIGINT), listened to from [`install`](Self::install) on: a
/// signal that arrives after it is not lost, and does not kill the process.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers. Must be called within a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(StopSignals {})
        }
    }

    /// The next stop signal.
    pub async fn recv(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => StopSignal::Terminate,
                _ = self.int.recv() => StopSignal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            StopSignal::Interrupt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn started_resolves_after_start_even_if_called_late() {
        let d = Draining::new();
        assert!(!d.is_draining());
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.started().await }
        });
        d.start();
        waiter.await.expect("waiter");
        // Already draining: returns at once.
        d.started().await;
        assert!(d.is_draining());
    }
}
