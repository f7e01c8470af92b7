//! `origin`: the SSE source the gateway subscribes to, or (`--publish`) the publisher
//! that POSTs the same events to nchan.
//!
//! Events are numbered from 1, stamped with their send time (ns since the Unix
//! epoch, so another process on this machine can subtract) and padded to `--size`
//! bytes on the wire. They are produced at `--rate` per second by a clock, not by
//! a sleep per event, so a late tick catches up instead of drifting. The last
//! `--history` events are kept so `Last-Event-ID: N` resumes right after event N.
//! `GET /stats` answers the stream and event counts as JSON; the runner reads
//! `streams_opened + publish_connections` as "upstream connections".
//!
//! `--skip N` and `--dup N` inject faults (event N never sent, or sent twice) so
//! the load generator's gap and duplicate counters can be shown to work.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::wire;

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    /// Address to serve the event stream (any path) and `/stats` on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub(crate) listen: SocketAddr,
    /// Events per second; 0 sends none (idle).
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Bytes per event on the wire (`id:` and `data:` lines included).
    #[arg(long, default_value_t = 256)]
    pub(crate) size: usize,
    /// Events kept for `Last-Event-ID` resumption.
    #[arg(long, default_value_t = 65_536)]
    pub(crate) history: usize,
    /// Stop producing after this many events (connections stay open).
    #[arg(long)]
    pub(crate) events: Option<u64>,
    /// Fault injection: never send event N (repeatable).
    #[arg(long = "skip")]
    pub(crate) skip: Vec<u64>,
    /// Fault injection: send event N twice (repeatable).
    #[arg(long = "dup")]
    pub(crate) dup: Vec<u64>,
    /// Instead of serving, POST each event's data to this nchan publisher URL
    /// (`http://127.0.0.1:8090/pub`); `/stats` is still served on `--listen`.
    #[arg(long)]
    pub(crate) publish: Option<http::Uri>,
}

/// Nanoseconds since the Unix epoch: the stamp every process on this machine agrees on.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct Shared {
    history: Mutex<History>,
    /// Number of the last event produced (0: none yet).
    head: watch::Sender<u64>,
    /// Event streams served: opened ever, and open now.
    streams_opened: AtomicU64,
    streams_open: AtomicU64,
    /// Connections the publisher opened to nchan.
    publish_connections: AtomicU64,
    publish_errors: AtomicU64,
}

/// The last `cap` events; `events[i]` is event `first + i`. A skipped event is an
/// empty entry, a duplicated one holds its bytes twice.
struct History {
    first: u64,
    events: VecDeque<Bytes>,
    cap: usize,
}

impl History {
    fn push(&mut self, wire: Bytes) {
        if self.events.len() == self.cap {
            self.events.pop_front();
            self.first += 1;
        }
        self.events.push_back(wire);
    }

    /// All events after `after`, concatenated, and the new cursor.
    fn after(&self, after: u64) -> (Bytes, u64) {
        let head = self.first + self.events.len() as u64 - 1;
        let from = after.max(self.first - 1);
        let mut out = BytesMut::new();
        for n in from + 1..=head {
            out.extend_from_slice(&self.events[(n - self.first) as usize]);
        }
        (out.freeze(), head.max(after))
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("origin listening addr={}", listener.local_addr()?);
    serve(args, listener).await
}

/// Produces (or publishes) events and serves streams and `/stats` on `listener`.
pub(crate) async fn serve(args: Args, listener: TcpListener) -> anyhow::Result<()> {
    if args.rate < 0.0 || !args.rate.is_finite() {
        bail!("--rate must be a finite number >= 0");
    }
    let shared = Arc::new(Shared {
        history: Mutex::new(History {
            first: 1,
            events: VecDeque::new(),
            cap: args.history.max(1),
        }),
        head: watch::channel(0).0,
        streams_opened: AtomicU64::new(0),
        streams_open: AtomicU64::new(0),
        publish_connections: AtomicU64::new(0),
        publish_errors: AtomicU64::new(0),
    });
    let producer = {
        let shared = Arc::clone(&shared);
        let args = args.clone();
        tokio::spawn(async move {
            match args.publish.clone() {
                Some(url) => publish(args, url, shared).await,
                None => {
                    produce(&args, &shared).await;
                    Ok(())
                }
            }
        })
    };
    let mut serving = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move { accept_loop(listener, shared).await })
    };
    tokio::select! {
        result = producer => {
            result??;
            // Producing ended (--events): keep serving what was produced.
            (&mut serving).await?
        }
        result = &mut serving => result?,
    }
}

// === Producing ===

/// The events due at `elapsed` since start at `rate`, capped by `--events`.
fn due(elapsed: Duration, rate: f64, limit: Option<u64>) -> u64 {
    let due = (elapsed.as_secs_f64() * rate) as u64;
    limit.map_or(due, |l| due.min(l))
}

fn tick_of(rate: f64) -> Duration {
    // tokio's timer has millisecond resolution; faster rates emit several per tick.
    Duration::from_secs_f64(1.0 / rate).max(Duration::from_millis(1))
}

async fn produce(args: &Args, shared: &Shared) {
    if args.rate == 0.0 {
        return std::future::pending().await;
    }
    let start = Instant::now();
    let mut produced = 0u64;
    let mut ticker = tokio::time::interval(tick_of(args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let due = due(start.elapsed(), args.rate, args.events);
        if due == produced {
            if args.events.is_some_and(|l| produced >= l) {
                return;
            }
            continue;
        }
        {
            let sent = now_ns();
            let mut history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
            while produced < due {
                produced += 1;
                let wire = if args.skip.contains(&produced) {
                    Bytes::new()
                } else {
                    let one = wire::origin_event(produced, sent, args.size);
                    if args.dup.contains(&produced) {
                        Bytes::from(one.repeat(2))
                    } else {
                        Bytes::from(one)
                    }
                };
                history.push(wire);
            }
        }
        shared.head.send_replace(produced);
    }
}

/// Publisher mode: one keep-alive connection, one POST per event, pipelined.
///
/// nchan answers a POST only after it has handled the message, and under load
/// that takes tens of milliseconds; waiting for each answer would cap the rate
/// far below what the saturation steps ask. HTTP/1.1 pipelining on one connection
/// keeps the order (nginx handles pipelined requests in sequence) without waiting:
/// a reader task counts the answers.
async fn publish(args: Args, url: http::Uri, shared: Arc<Shared>) -> anyhow::Result<()> {
    let host = url.host().context("--publish needs a host")?.to_owned();
    let port = url.port_u16().unwrap_or(80);
    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    // Connected even when idle, so the upstream count shows the one publisher.
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    shared.publish_connections.fetch_add(1, Ordering::Relaxed);
    if args.rate == 0.0 {
        return std::future::pending().await;
    }
    let (mut reader, mut writer) = tcp.into_split();
    let answers = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move { count_answers(&mut reader, &shared).await })
    };
    let start = Instant::now();
    let mut produced = 0u64;
    let mut ticker = tokio::time::interval(tick_of(args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut batch = Vec::new();
    loop {
        ticker.tick().await;
        if answers.is_finished() {
            bail!("nchan closed the publisher connection");
        }
        let due = due(start.elapsed(), args.rate, args.events);
        let sent = now_ns();
        batch.clear();
        while produced < due {
            produced += 1;
            if args.skip.contains(&produced) {
                continue;
            }
            // nchan frames it as `id: <time>:<tag>\ndata: …\n\n`: about 30 bytes.
            let body = wire::payload(produced, sent, args.size.saturating_sub(30));
            let times = if args.dup.contains(&produced) { 2 } else { 1 };
            for _ in 0..times {
                let _ = write!(
                    batch,
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
        if !batch.is_empty() {
            writer.write_all(&batch).await?;
        }
        shared.head.send_replace(produced);
        if args.events.is_some_and(|l| produced >= l) {
            return std::future::pending().await;
        }
    }
}

/// Reads nchan's answers to the pipelined POSTs, counting any that is not 2xx.
async fn count_answers(reader: &mut OwnedReadHalf, shared: &Shared) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    // Keep the tail of the previous read so a status line split across reads is seen.
    let mut carry = Vec::new();
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        carry.extend_from_slice(&buf[..n]);
        let mut at = 0;
        while let Some(i) = memchr::memmem::find(&carry[at..], b"HTTP/1.1 ") {
            let status = at + i + 9;
            if status + 3 > carry.len() {
                break;
            }
            if carry[status] != b'2' {
                shared.publish_errors.fetch_add(1, Ordering::Relaxed);
            }
            at = status + 3;
        }
        let keep = carry.len().saturating_sub(at).min(12);
        carry.drain(..carry.len() - keep);
    }
}

// === Serving ===

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("origin: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = {
                let shared = Arc::clone(&shared);
                service_fn(move |request| {
                    let response = respond(&request, &shared);
                    async move { Ok::<_, Infallible>(response) }
                })
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn respond(request: &Request<Incoming>, shared: &Arc<Shared>) -> Response<OriginBody> {
    if request.uri().path() == "/stats" {
        let stats = serde_json::json!({
            "streams_opened": shared.streams_opened.load(Ordering::Relaxed),
            "streams_open": shared.streams_open.load(Ordering::Relaxed),
            "publish_connections": shared.publish_connections.load(Ordering::Relaxed),
            "events": *shared.head.borrow(),
            "publish_errors": shared.publish_errors.load(Ordering::Relaxed),
        });
        return Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(OriginBody::Full(Some(Bytes::from(stats.to_string()))))
            .expect("static headers are valid");
    }
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let cursor = last_event_id.unwrap_or_else(|| *shared.head.borrow());
    let (tx, rx) = mpsc::channel(16);
    shared.streams_opened.fetch_add(1, Ordering::Relaxed);
    shared.streams_open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(stream_to(cursor, Arc::clone(shared), tx));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(OriginBody::Stream(rx))
        .expect("static headers are valid")
}

/// Feeds one subscriber: everything after `cursor`, then each new batch as one chunk.
async fn stream_to(cursor: u64, shared: Arc<Shared>, tx: mpsc::Sender<Bytes>) {
    feed(cursor, &shared, tx).await;
    shared.streams_open.fetch_sub(1, Ordering::Relaxed);
}

async fn feed(mut cursor: u64, shared: &Shared, tx: mpsc::Sender<Bytes>) {
    let mut head = shared.head.subscribe();
    // Headers go out at once so the subscriber knows it is connected.
    if tx.send(Bytes::from_static(b": origin\n\n")).await.is_err() {
        return;
    }
    loop {
        let latest = *head.borrow_and_update();
        if latest > cursor {
            let (batch, next) = shared
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .after(cursor);
            cursor = next;
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}

enum OriginBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            // A known length, so `/stats` is a plain body rather than chunked.
            Self::Full(b) => {
                hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Self::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_resumes_after_an_event_and_from_the_oldest_kept() {
        let mut h = History {
            first: 1,
            events: VecDeque::new(),
            cap: 3,
        };
        for n in 1..=5u64 {
            h.push(Bytes::from(format!("{n},")));
        }
        assert_eq!(h.after(3), (Bytes::from_static(b"4,5,"), 5));
        // Event 1 was evicted: start from the oldest kept (3).
        assert_eq!(h.after(1), (Bytes::from_static(b"3,4,5,"), 5));
        assert_eq!(h.after(5), (Bytes::new(), 5));
    }

    #[test]
    fn due_follows_the_clock_and_the_limit() {
        assert_eq!(due(Duration::from_millis(1500), 100.0, None), 150);
        assert_eq!(due(Duration::from_millis(1500), 100.0, Some(20)), 20);
        assert_eq!(tick_of(10_000.0), Duration::from_millis(1));
        assert_eq!(tick_of(10.0), Duration::from_millis(100));
    }
}
