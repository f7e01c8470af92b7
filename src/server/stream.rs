//! `ClientStream`: the `text/event-stream` response body of one client.
//!
//! It yields, in order: `retry: <client.retry>`, the `gap` event if the resumption
//! missed, then the ring's entries as they come. While nothing comes it sends a
//! heartbeat comment every `heartbeat`. It ends cleanly (HTTP/1.1 last chunk,
//! HTTP/2 END_STREAM) when the client lags (after a `retry:` hint), when its
//! source is removed or drained (after `retry: drain.retry + jitter`), or when the
//! upstream ends the source.
//!
//! Ready entries are handed out on consecutive `poll_frame` calls without a
//! `Pending` between them, so the writer (`h1`, or hyper on HTTP/2) puts them in one
//! vectored write.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tracing::{debug, Span};

use super::h2::StreamWatch;
use super::limits::Permit;
use super::listener::ConnShared;
use crate::hub::{self, CloseReason, Read, Subscription};
use crate::metrics::Metrics;

pub(crate) struct ClientStream {
    sub: Subscription,
    /// The `retry:` that opens the stream is still to be sent.
    first: bool,
    done: bool,
    heartbeat: Pin<Box<Sleep>>,
    /// The timer holds this task's waker: nothing to poll until it has fired.
    beat_armed: bool,
    every: Duration,
    /// When the stream last carried something: the newest written event's receive
    /// time, which the ring already has, so no clock is read per event.
    last_write: Instant,
    retry: Duration,
    /// Deliveries and bytes not yet added to the counters: counted per batch, not
    /// per event.
    delivered: u64,
    bytes: u64,
    in_batch: bool,
    h2: bool,
    span: Span,
    /// Deliveries over the stream's life, for its closing log line.
    total: u64,
    metrics: Arc<Metrics>,
    watch: Watch,
    /// The stream's slot under the client limits, given back when it ends.
    permit: Option<Permit>,
}

/// What looks after the stream while hyper isn't polling its body.
enum Watch {
    /// HTTP/1.1: the connection's stall check, since its writes block once the
    /// client stops reading.
    Conn(Arc<ConnShared>),
    /// HTTP/2: the stream's own watchdog, since the connection's writes don't block.
    Stream(Arc<StreamWatch>),
}

impl Watch {
    fn finished(&self) {
        match self {
            Watch::Conn(conn) => conn.stream_finished(),
            Watch::Stream(stream) => stream.finished(),
        }
    }

    /// Whether this is the first to see the lag (so it is counted once).
    fn mark_lagged(&self) -> bool {
        match self {
            Watch::Conn(conn) => conn.mark_lagged(),
            Watch::Stream(stream) => stream.mark_lagged(),
        }
    }
}

impl ClientStream {
    pub(crate) fn new(
        sub: Subscription,
        client_retry: Duration,
        heartbeat: Duration,
        metrics: Arc<Metrics>,
        conn: Arc<ConnShared>,
        h2: bool,
        span: Span,
    ) -> Self {
        if h2 {
            metrics.streams_h2.inc();
        } else {
            metrics.streams_h1.inc();
        }
        let now = Instant::now();
        Self {
            sub,
            first: true,
            done: false,
            heartbeat: Box::pin(tokio::time::sleep_until(now + heartbeat)),
            beat_armed: false,
            every: heartbeat,
            last_write: now,
            retry: client_retry,
            delivered: 0,
            bytes: 0,
            in_batch: false,
            h2,
            span,
            total: 0,
            metrics,
            watch: Watch::Conn(conn),
            permit: None,
        }
    }

    /// Keeps the stream's slot under the client limits for as long as it lives.
    pub(crate) fn hold(&mut self, permit: Permit) {
        self.permit = Some(permit);
    }

    /// Puts the stream under watch before its body is first polled: `Some` in an
    /// HTTP/2 stream's task (its own watchdog), `None` on HTTP/1.1 (the connection).
    pub(crate) fn attach(&mut self, stream: Option<Arc<StreamWatch>>) {
        match stream {
            Some(stream) => {
                stream.watch(self.sub.probe(), self.every);
                self.watch = Watch::Stream(stream);
            }
            None => {
                if let Watch::Conn(conn) = &self.watch {
                    conn.watch_stream(self.sub.probe());
                }
            }
        }
    }

    fn flush_count(&mut self) {
        if self.delivered > 0 {
            self.total += self.delivered;
            self.metrics.events_delivered.inc_by(self.delivered);
            self.metrics.bytes_out.inc_by(self.bytes);
            self.delivered = 0;
            self.bytes = 0;
        }
    }

    /// Ends the stream after `last` (if any) has been written.
    fn finish(&mut self, last: Option<Bytes>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.done = true;
        self.flush_count();
        self.watch.finished();
        Poll::Ready(last.map(|b| Ok(Frame::data(b))))
    }

    /// A heartbeat once `every` has passed since the last write. The timer is
    /// re-armed only when it fires, not per event.
    fn poll_heartbeat(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        loop {
            // Polled once per event otherwise: a registered timer keeps the waker
            // until it fires, and a stream's body is always polled by one task.
            if self.beat_armed && !self.heartbeat.is_elapsed() {
                return Poll::Pending;
            }
            // Out of budget, the poll only reschedules the task and registers
            // nothing, so the timer isn't armed then.
            let had_budget = tokio::task::coop::has_budget_remaining();
            if self.heartbeat.as_mut().poll(cx).is_pending() {
                self.beat_armed = had_budget;
                return Poll::Pending;
            }
            self.beat_armed = false;
            let now = Instant::now();
            let due = self.last_write + self.every;
            if due > now {
                self.heartbeat.as_mut().reset(due);
                continue;
            }
            self.last_write = now;
            self.heartbeat.as_mut().reset(now + self.every);
            return Poll::Ready(hub::heartbeat_frame());
        }
    }
}

impl Body for ClientStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Watch::Stream(stream) = &this.watch {
            stream.polled();
        }
        if this.first {
            this.first = false;
            return Poll::Ready(Some(Ok(Frame::data(hub::retry_frame(this.retry)))));
        }
        match this.sub.poll_next(cx) {
            Poll::Ready(Read::Entry(delivery)) => {
                if !this.in_batch {
                    // First write of a batch: what was waiting, and for how long.
                    this.in_batch = true;
                    this.metrics
                        .client_lag
                        .observe((delivery.behind + 1) as f64);
                    if let Some(received) = delivery.received {
                        let latency = received.elapsed().as_secs_f64();
                        this.metrics.delivery_latency.observe(latency);
                    }
                }
                this.delivered += 1;
                this.bytes += delivery.wire.len() as u64;
                this.last_write = delivery.received.unwrap_or_else(Instant::now);
                Poll::Ready(Some(Ok(Frame::data(delivery.wire))))
            }
            Poll::Ready(Read::Lagged) => {
                if this.watch.mark_lagged() {
                    this.metrics.clients_lagged.inc();
                }
                debug!(parent: &this.span, "client lagged; cut loose");
                let hint = hub::retry_frame(this.retry);
                this.finish(Some(hint))
            }
            Poll::Ready(Read::Closed(CloseReason::Ended)) => this.finish(None),
            Poll::Ready(Read::Closed(CloseReason::Removed { retry, jitter })) => {
                let hint = hub::retry_frame(retry + jittered(jitter));
                this.finish(Some(hint))
            }
            Poll::Pending => {
                this.in_batch = false;
                this.flush_count();
                match this.poll_heartbeat(cx) {
                    Poll::Ready(beat) => Poll::Ready(Some(Ok(Frame::data(beat)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.flush_count();
        debug!(parent: &self.span, delivered = self.total, "client left");
        self.watch.finished();
        if self.h2 {
            self.metrics.streams_h2.dec();
        } else {
            self.metrics.streams_h1.dec();
        }
    }
}

/// A uniformly random share of `jitter`, so drained clients don't all come back
/// in the same instant.
pub(crate) fn jittered(jitter: Duration) -> Duration {
    let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(fastrand::u64(0..nanos))
}

/// Every response the public listener sends.
pub(crate) enum ResponseBody {
    // Boxed: a client stream is many times the size of a short answer, and one
    // allocation is nothing next to what a subscription costs anyway.
    Stream(Box<ClientStream>),
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub(crate) fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Stream(stream) => Pin::new(stream.as_mut()).poll_frame(cx),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(stream) => stream.is_end_stream(),
            Self::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(_) => SizeHint::default(),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_window() {
        let j = Duration::from_millis(2000);
        for _ in 0..1000 {
            assert!(jittered(j) < j);
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
