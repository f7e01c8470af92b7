//! Accept loops and per-connection tasks.
//!
//! Each accepted connection runs in a task tracked by the drain. HTTP/1.1 (a plain
//! listener, or TLS whose ALPN chose `http/1.1` or nothing; the handshake bounded by
//! [`HANDSHAKE_TIMEOUT`]) starts in `h1`, which serves clean GETs and their streams
//! itself; whatever it hands over (an unusual request, or the h2c preface on a plain
//! port) is served by hyper-util's builder here, as is HTTP/2 after ALPN `h2`.
//!
//! Both watch for a stalled peer the same way: a client that stops reading fills its
//! socket, and writes block. While they are blocked the connection checks the
//! stream's lag once a second and drops the connection once the client is more than
//! `client.queue` behind (or its stream has ended and the last bytes can't be
//! written, or writes have been blocked for `SEND_TIMEOUT`). `h1` sees its own writes
//! block; under hyper, which stops polling a body whose socket is full, the
//! connection's I/O records it. HTTP/2 streams are watched one by one instead (see
//! `h2`), since one stalled stream doesn't block the connection's writes.
//!
//! The `limits:` timeouts apply here: the request head must arrive within
//! `header_read_timeout` and fit in `max_header_size`, and a connection with no
//! request in flight for `idle_timeout` is shut down gracefully (an open client
//! stream is a request in flight, so streaming connections never count as idle).

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;
use tracing::{debug, debug_span, warn, Instrument};

use super::h1;
use super::h2::{current_stream, StreamExecutor};
use super::stream::ResponseBody;
use super::tls::{TlsAcceptor, ALPN_H2, HANDSHAKE_TIMEOUT};
use super::{handle, ListenerKind, ServerState};
use crate::drain::DrainWatch;
use crate::hub::LagProbe;
use crate::metrics::Metrics;

/// How often a blocked connection's (or a stalled HTTP/2 stream's) lag is checked.
pub(super) const STALL_CHECK: Duration = Duration::from_secs(1);
/// A connection whose writes have been blocked this long is dropped regardless (an
/// HTTP/2 stream, once its body has gone unpolled this long past a heartbeat).
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// HTTP/2 streams one connection may have open at once.
const H2_MAX_STREAMS: u32 = 256;
/// How often an HTTP/2 connection is pinged, and how long the ack may take.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

pub(super) async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    tls: Option<TlsAcceptor>,
    state: Arc<ServerState>,
    mut drain: DrainWatch,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = drain.draining() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
                // Debug level: at the default level the span is disabled and costs
                // nothing, though the task's future is polled on every event.
                let span = debug_span!("conn", conn.id = id, client.addr = %peer, listener = %kind);
                let _ = tcp.set_nodelay(true);
                let (state, drain, tasks) = (Arc::clone(&state), drain.clone(), tracker.clone());
                // Spawned apart rather than behind one `match`: a task's future is as
                // large as its largest kind, and most connections are plain ones.
                match &tls {
                    None => {
                        let conn = serve_http(tcp, true, peer, state, drain, tasks);
                        tracker.spawn(conn.instrument(span));
                    }
                    Some(tls) => {
                        let conn = serve_tls(tcp, tls.clone(), peer, state, drain, tasks);
                        tracker.spawn(conn.instrument(span));
                    }
                }
            }
            Err(error) => {
                // Out of file descriptors (or similar): back off briefly instead of
                // spinning; the connections already open keep being served.
                warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Dropping the listener closes it: new connects are refused from here on.
    drop(listener);
}

/// Which HTTP version hyper speaks on a connection handed to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.1: a request `h1` doesn't serve itself, and what follows it.
    Http1,
    /// HTTP/2: TLS with ALPN `h2`, or the h2c preface on a plain listener.
    Http2,
}

/// Holds a gauge one higher while it lives.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An HTTP/1.1 connection (plain, or TLS after its handshake): `h1` first, then
/// hyper for whatever `h1` hands over. `sniff_h2`: a plain listener, where the
/// client may open with the HTTP/2 preface instead.
async fn serve_http<I>(
    io: I,
    sniff_h2: bool,
    peer: SocketAddr,
    state: Arc<ServerState>,
    mut drain: DrainWatch,
    tracker: TaskTracker,
) where
    I: h1::Transport + Send + 'static,
{
    let _counted = Counted::new(&state.metrics.connections);
    let shared = Arc::new(ConnShared::new(Arc::clone(&state.metrics)));
    let next = h1::serve(io, sniff_h2, peer, &state, &shared, &mut drain).await;
    if let h1::Next::Hyper { io, prefix, h2 } = next {
        let protocol = if h2 { Protocol::Http2 } else { Protocol::Http1 };
        let io = Rewind::new(io, prefix);
        // Boxed: the task holds only `h1`'s small state unless hyper is needed.
        Box::pin(serve_hyper(
            io, protocol, peer, state, shared, drain, tracker,
        ))
        .await;
    }
    debug!("connection closed");
}

async fn serve_tls(
    tcp: TcpStream,
    tls: TlsAcceptor,
    peer: SocketAddr,
    state: Arc<ServerState>,
    mut drain: DrainWatch,
    tracker: TaskTracker,
) {
    // The handshake runs in the connection's own task, so a slow one never holds up
    // the accept loop; the timeout bounds how long it can hold a connection.
    let handshake = tokio::select! {
        _ = drain.draining() => return,
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)) => handshake,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return debug!(error = %error, "tls handshake failed"),
        Err(_) => return debug!(timeout = ?HANDSHAKE_TIMEOUT, "tls handshake timed out"),
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    debug!(h2, "tls handshake done");
    // The `connections` gauge counts from here: TLS handshakes excluded.
    let _tls = Counted::new(&state.metrics.tls_connections);
    if h2 {
        let _counted = Counted::new(&state.metrics.connections);
        let shared = Arc::new(ConnShared::new(Arc::clone(&state.metrics)));
        let io = Rewind::new(stream, Bytes::new());
        serve_hyper(io, Protocol::Http2, peer, state, shared, drain, tracker).await;
        debug!("connection closed");
    } else {
        serve_http(stream, false, peer, state, drain, tracker).await;
    }
}

async fn serve_hyper<I>(
    io: I,
    protocol: Protocol,
    peer: SocketAddr,
    state: Arc<ServerState>,
    shared: Arc<ConnShared>,
    mut drain: DrainWatch,
    tracker: TaskTracker,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let executor = StreamExecutor::new(tracker, Arc::clone(&state.metrics));
    let limits = state.limiter.config().clone();
    let io = TokioIo::new(WatchedIo {
        inner: io,
        shared: Arc::clone(&shared),
    });
    let got_request = Arc::new(AtomicBool::new(false));
    let service = {
        let shared = Arc::clone(&shared);
        let got_request = Arc::clone(&got_request);
        service_fn(move |request| {
            got_request.store(true, Ordering::Relaxed);
            let in_flight = InFlight::start(&shared);
            let mut response = handle(request, peer, &state, &shared);
            async move {
                // hyper polls this future in the HTTP/2 stream's own task (where the
                // stream's watch is set) or in the HTTP/1.1 connection's task.
                if let ResponseBody::Stream(stream) = response.body_mut() {
                    stream.attach(current_stream());
                }
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let mut builder = auto::Builder::new(executor);
    builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slowloris: the head must arrive in time. On a kept-alive connection the
        // clock also runs while waiting for the next request.
        .header_read_timeout(limits.header_read_timeout)
        // Bounds the request line and headers together (hyper answers 431).
        .max_buf_size(limits.max_header_size)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Every EventSource of a page is one stream on the same connection; allow
        // plenty, while max_clients_per_ip bounds what one client can hold.
        .max_concurrent_streams(H2_MAX_STREAMS)
        // A ping finds peers that vanished (a closed laptop, a dropped NAT mapping)
        // long before TCP would, and also closes a connection whose client stopped
        // reading altogether, since its ping ack never comes.
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    // hyper's header timer starts only once hyper-util has read enough to tell
    // HTTP/1.1 from the HTTP/2 preface, and HTTP/2 has none: a peer that connects and
    // sends nothing (or a slow preface) would hold its socket until `idle_timeout`.
    // So the first request must arrive within `header_read_timeout` from accept.
    let mut first_head = std::pin::pin!(tokio::time::sleep(limits.header_read_timeout));
    let mut awaiting_first_head = true;
    let mut stall: Option<Pin<Box<Sleep>>> = None;
    let mut idle = std::pin::pin!(tokio::time::sleep(limits.idle_timeout));
    let mut shutting_down = false;
    // Made once: re-creating it in every pass of the loop would register it anew on
    // every wake of the connection, which is every event.
    let mut draining = std::pin::pin!(drain.draining());
    loop {
        tokio::select! {
            // Biased: the connection is polled first, so a write that just blocked
            // is seen by the stall branch in the same pass.
            biased;
            result = conn.as_mut() => {
                if let Err(error) = result {
                    debug!(error = %error, "connection closed with an error");
                }
                break;
            }
            _ = draining.as_mut(), if !shutting_down => {
                shutting_down = true;
                // Idle keep-alive connections close; HTTP/2 gets GOAWAY. Streams end
                // on their own through the hub.
                conn.as_mut().graceful_shutdown();
            }
            () = idle.as_mut(), if !shutting_down => {
                match shared.idle_for() {
                    Some(idle_for) if idle_for >= limits.idle_timeout => {
                        debug!(idle = ?idle_for, "idle connection closed");
                        shutting_down = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Some(idle_for) => idle.as_mut().reset(Instant::now() + (limits.idle_timeout - idle_for)),
                    None => idle.as_mut().reset(Instant::now() + limits.idle_timeout),
                }
            }
            () = poll_fn(|cx| poll_stall(&shared, &mut stall, cx)) => {
                debug!("client stalled; connection dropped");
                break;
            }
            () = first_head.as_mut(), if awaiting_first_head => {
                if !got_request.load(Ordering::Relaxed) {
                    debug!("no request within the header read timeout; connection closed");
                    break;
                }
                awaiting_first_head = false;
            }
        }
    }
}

/// Ready when a blocked connection should be dropped.
pub(super) fn poll_stall(
    shared: &ConnShared,
    timer: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(blocked_for) = shared.blocked_for() else {
        return Poll::Pending;
    };
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(STALL_CHECK)));
    while timer.as_mut().poll(cx).is_ready() {
        if blocked_for >= STALL_CHECK && shared.should_cut(blocked_for) {
            return Poll::Ready(());
        }
        timer.as_mut().reset(Instant::now() + STALL_CHECK);
    }
    Poll::Pending
}

/// What a connection's task, its I/O and its streams share.
pub(crate) struct ConnShared {
    opened: Instant,
    /// Milliseconds since `opened` when writes started blocking; `u64::MAX` if not.
    blocked_since: AtomicU64,
    probe: Mutex<Option<LagProbe>>,
    finished: AtomicBool,
    lagged: AtomicBool,
    metrics: Arc<Metrics>,
    /// Requests whose response is not finished (an open client stream is one).
    in_flight: AtomicUsize,
    /// Milliseconds since `opened` when `in_flight` last dropped to zero.
    idle_since: AtomicU64,
}

impl ConnShared {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            opened: Instant::now(),
            blocked_since: AtomicU64::new(u64::MAX),
            probe: Mutex::new(None),
            finished: AtomicBool::new(false),
            lagged: AtomicBool::new(false),
        }
    }

    /// An HTTP/1.1 stream registers its lag probe. HTTP/2 streams have their own
    /// watchdog (`h2::StreamWatch`); only the send timeout applies to the connection.
    pub(crate) fn watch_stream(&self, probe: LagProbe) {
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(probe);
        self.finished.store(false, Ordering::Relaxed);
    }

    pub(crate) fn stream_finished(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    /// The stream saw its own lag; returns whether it was first (so it is counted once).
    pub(crate) fn mark_lagged(&self) -> bool {
        !self.lagged.swap(true, Ordering::Relaxed)
    }

    pub(super) fn note_write(&self, blocked: bool) {
        let current = self.blocked_since.load(Ordering::Relaxed);
        if blocked {
            if current == u64::MAX {
                let ms = self.opened.elapsed().as_millis() as u64;
                self.blocked_since.store(ms, Ordering::Relaxed);
            }
        } else if current != u64::MAX {
            self.blocked_since.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// How long no request has been in flight; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        Some(self.opened.elapsed().saturating_sub(since))
    }

    fn blocked_for(&self) -> Option<Duration> {
        let since = self.blocked_since.load(Ordering::Relaxed);
        (since != u64::MAX).then(|| {
            self.opened
                .elapsed()
                .saturating_sub(Duration::from_millis(since))
        })
    }

    fn should_cut(&self, blocked_for: Duration) -> bool {
        if blocked_for >= SEND_TIMEOUT || self.finished.load(Ordering::Relaxed) {
            return true;
        }
        let probe = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        let lagged = probe.as_ref().is_some_and(LagProbe::is_lagged);
        if lagged && !self.lagged.swap(true, Ordering::Relaxed) {
            // Cut from outside the stream: count it here, as the stream would have.
            self.metrics.clients_lagged.inc();
        }
        lagged
    }
}

/// One request in flight on a connection, until its response body is dropped (fully
/// written, or the stream reset): what keeps a connection from counting as idle.
struct InFlight(Arc<ConnShared>);

impl InFlight {
    fn start(shared: &Arc<ConnShared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let shared = &self.0;
        let ms = u64::try_from(shared.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        shared.idle_since.store(ms, Ordering::Release);
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that counts as in flight until it is dropped.
struct Tracked {
    body: ResponseBody,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's stream (TCP, or TLS over TCP), recording whether writes are
/// blocked.
struct WatchedIo<I> {
    inner: I,
    shared: Arc<ConnShared>,
}

impl<I> WatchedIo<I> {
    fn record<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.shared.note_write(poll.is_pending());
        poll
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.record(poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.record(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes only after its writes went through; a flush that can't finish
        // (TLS records still queued for a full socket) is as blocked as a write.
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.record(poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A connection handed to hyper with the bytes `h1` already read in front.
struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    fn new(inner: I, prefix: Bytes) -> Self {
        Self { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
