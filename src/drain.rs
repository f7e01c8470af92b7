//! Shutdown. Turns signals into a [`Phase`], which every listener, connection and
//! client stream watches through a [`DrainWatch`]. Nothing else stores a
//! "shutting down" flag.
//!
//! The sequence: SIGTERM/SIGINT → `Phase::Draining` (readiness false, listeners
//! close, client streams get a `retry:` hint and end) → wait for every tracked task
//! until the deadline → exit code. A second signal during the wait exits at once.

use std::io;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Where the gateway is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining { deadline: Instant },
}

/// What a signal asks of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT.
    Terminate,
    /// SIGHUP.
    Reload,
}

/// The process's signal handlers. Install them before any listener logs
/// `listening`, so a supervisor that signals on that line never hits the default
/// disposition.
pub struct Signals {
    term: UnixSignal,
    int: UnixSignal,
    hup: UnixSignal,
}

impl Signals {
    /// # Errors
    /// Fails only if the runtime cannot register a signal handler.
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancel-safe.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Terminate,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// The one writer of the phase, and the tracker of every connection task.
pub struct Drain {
    phase: watch::Sender<Phase>,
    tasks: TaskTracker,
}

/// A read-only view of the phase, cheap to clone.
#[derive(Clone, Debug)]
pub struct DrainWatch {
    phase: watch::Receiver<Phase>,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every connection closed before the deadline.
    Clean,
    /// The deadline passed with connections still open; they were dropped.
    DeadlinePassed { open: usize },
    /// A second signal arrived during the drain.
    Interrupted,
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Clean | Outcome::DeadlinePassed { .. } => 0,
            Outcome::Interrupted => 130,
        }
    }
}

impl Drain {
    pub fn new() -> Self {
        let (phase, _) = watch::channel(Phase::Serving);
        Self {
            phase,
            tasks: TaskTracker::new(),
        }
    }

    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            phase: self.phase.subscribe(),
        }
    }

    /// Connection-scoped work is spawned through this, so the drain can wait for it.
    pub fn tracker(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// Starts the drain: from now on `is_serving()` is false everywhere.
    pub fn start(&self, deadline: Duration) -> Instant {
        let deadline = Instant::now() + deadline;
        self.phase.send_replace(Phase::Draining { deadline });
        info!(deadline = ?deadline.saturating_duration_since(Instant::now()), "drain started");
        deadline
    }

    /// Starts the drain and waits for every tracked task, the deadline, or a second
    /// signal, whichever comes first.
    pub async fn run(self, deadline: Duration, signals: &mut Signals) -> Outcome {
        let deadline = self.start(deadline);
        self.tasks.close();
        let outcome = tokio::select! {
            _ = self.tasks.wait() => Outcome::Clean,
            _ = tokio::time::sleep_until(deadline) => Outcome::DeadlinePassed { open: self.tasks.len() },
            _ = signals.recv() => Outcome::Interrupted,
        };
        match outcome {
            Outcome::Clean => info!("drain finished"),
            Outcome::DeadlinePassed { open } => {
                warn!(open, "drain deadline passed; closing what is left")
            }
            Outcome::Interrupted => warn!(open = self.tasks.len(), "second signal; exiting now"),
        }
        outcome
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainWatch {
    pub fn is_serving(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Serving)
    }

    /// Resolves once a drain has started, with its deadline. Cancel-safe, so use it
    /// in `select!`. If the `Drain` is gone without draining, this never resolves.
    pub async fn draining(&mut self) -> Instant {
        loop {
            if let Phase::Draining { deadline } = *self.phase.borrow_and_update() {
                return deadline;
            }
            if self.phase.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watch_sees_the_drain_start() {
        let drain = Drain::new();
        let mut watch = drain.watch();
        assert!(watch.is_serving());
        let waiter = tokio::spawn(async move { watch.draining().await });
        let deadline = drain.start(Duration::from_secs(5));
        assert_eq!(waiter.await.expect("waiter task"), deadline);
        assert!(!drain.watch().is_serving());
    }

    #[tokio::test(start_paused = true)]
    async fn run_ends_at_the_deadline_with_the_open_count() {
        let drain = Drain::new();
        let tracker = drain.tracker();
        tracker.spawn(std::future::pending::<()>());
        let mut signals = Signals::install().expect("signal handlers");
        let outcome = drain.run(Duration::from_secs(3), &mut signals).await;
        assert_eq!(outcome, Outcome::DeadlinePassed { open: 1 });
    }

    #[tokio::test]
    async fn run_is_clean_once_tasks_finish() {
        let drain = Drain::new();
        let tracker = drain.tracker();
        let mut watch = drain.watch();
        tracker.spawn(async move {
            watch.draining().await;
        });
        let mut signals = Signals::install().expect("signal handlers");
        let outcome = drain.run(Duration::from_secs(30), &mut signals).await;
        assert_eq!(outcome, Outcome::Clean);
    }
}
