//! HTTP/2 streams: the executor hyper runs each stream's task on, and the watchdog
//! that resets a stream whose client stopped reading, without touching its siblings.
//!
//! hyper polls an HTTP/2 response body only while its stream has send capacity. A
//! client that never releases a stream's flow-control window therefore freezes that
//! body where it stands: the `ClientStream`'s own lag check never runs, and the
//! connection's writes never block (the other streams keep flowing), so the
//! HTTP/1.1 stall check can't see it either. Cutting the connection would take every
//! sibling stream with it.
//!
//! So every stream task hyper spawns runs under a [`StreamWatch`]: the stream's body
//! registers its lag probe there (found through a task-local, since hyper creates the
//! body before it spawns the task), and the task checks it every [`STALL_CHECK`].
//! Once the client is more than `client.queue` behind, or its next event has been
//! evicted from the ring, or the body has not been polled for `heartbeat +
//! SEND_TIMEOUT` (a healthy body is polled at least once per heartbeat), the task is
//! dropped. Dropping it drops hyper's send handle, and h2 resets that one stream
//! (RST_STREAM CANCEL); the subscription is released with the body.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::listener::{SEND_TIMEOUT, STALL_CHECK};
use crate::hub::LagProbe;
use crate::metrics::Metrics;

tokio::task_local! {
    /// The watch of the HTTP/2 stream whose task is running; unset on HTTP/1.1.
    static STREAM: Arc<StreamWatch>;
}

/// The watch of the HTTP/2 stream being served, if this code runs in one's task.
pub(crate) fn current_stream() -> Option<Arc<StreamWatch>> {
    STREAM.try_with(Arc::clone).ok()
}

/// Runs each HTTP/2 stream's task on the drain's tracker, under a watchdog.
#[derive(Clone)]
pub(crate) struct StreamExecutor {
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
}

impl StreamExecutor {
    pub(crate) fn new(tracker: TaskTracker, metrics: Arc<Metrics>) -> Self {
        Self { tracker, metrics }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let watch = Arc::new(StreamWatch::new());
        let metrics = Arc::clone(&self.metrics);
        let stream = STREAM.scope(Arc::clone(&watch), stream);
        self.tracker.spawn(async move {
            tokio::select! {
                _ = stream => {}
                () = watch.stalled() => {
                    if !watch.lagged.swap(true, Ordering::Relaxed) {
                        // Cut from outside the body: count it here, as the body would have.
                        metrics.clients_lagged.inc();
                    }
                    debug!("http/2 stream stalled; reset");
                }
            }
        });
    }
}

/// What an HTTP/2 stream's body and its watchdog share.
pub(crate) struct StreamWatch {
    probe: Mutex<Option<Watched>>,
    registered: Notify,
    started: Instant,
    /// Milliseconds since `started` when the body was last polled.
    last_poll: AtomicU64,
    lagged: AtomicBool,
}

struct Watched {
    probe: LagProbe,
    /// Not polled for this long: the stream has had no send capacity all along.
    deadline: Duration,
}

impl StreamWatch {
    fn new() -> Self {
        Self {
            probe: Mutex::new(None),
            registered: Notify::new(),
            started: Instant::now(),
            last_poll: AtomicU64::new(0),
            lagged: AtomicBool::new(false),
        }
    }

    /// A client stream starts being watched; `heartbeat` is how often its body is
    /// polled at the least while the client reads.
    pub(crate) fn watch(&self, probe: LagProbe, heartbeat: Duration) {
        *self.lock() = Some(Watched {
            probe,
            deadline: heartbeat + SEND_TIMEOUT,
        });
        self.polled();
        // `notify_one` keeps a permit if the watchdog isn't waiting yet.
        self.registered.notify_one();
    }

    /// The body was polled: the stream had send capacity just now.
    pub(crate) fn polled(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_poll.store(ms, Ordering::Relaxed);
    }

    /// The body ended by itself; nothing left to watch.
    pub(crate) fn finished(&self) {
        *self.lock() = None;
    }

    /// The body saw its own lag and counted it; returns whether it was first.
    pub(crate) fn mark_lagged(&self) -> bool {
        !self.lagged.swap(true, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Watched>> {
        // Plain data, consistent after any single assignment: a poisoned lock is fine.
        self.probe.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the stream should be cut. Never resolves for a response that
    /// isn't a client stream.
    async fn stalled(&self) {
        self.registered.notified().await;
        let mut tick = tokio::time::interval(STALL_CHECK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.should_cut() {
                return;
            }
        }
    }

    fn should_cut(&self) -> bool {
        let watched = self.lock();
        let Some(watched) = watched.as_ref() else {
            return false;
        };
        let since_poll = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_poll.load(Ordering::Relaxed),
        ));
        watched.probe.is_lagged() || since_poll >= watched.deadline
    }
}
