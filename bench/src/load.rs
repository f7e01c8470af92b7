//! `load`: N SSE subscribers in one single-threaded process (pin it with `taskset`).
//!
//! One task per connection, each bound to a 127.0.0.x source address before
//! connecting (one loopback source address runs out of ports near 28,000). Every
//! task speaks HTTP/1.1 by hand, decodes chunked framing and scans events with
//! `wire`, and records, per read, the latency of every event in it (receive time
//! minus the origin's stamp) in one shared HDR histogram. A single thread makes the
//! shared counters plain `RefCell`s and keeps the generator off the server's core.
//!
//! A client whose stream ends reconnects with `Last-Event-ID` and keeps its
//! `Tracker`, so a lossy or repeating resumption counts as gaps or duplicates.
//!
//! Timeline: connect everything, report `ready` on stdout, then (with
//! `--wait-start`) wait for `start <epoch ms> <duration ms>` on stdin so several
//! load processes and the runner's CPU samples share one window; otherwise warm up
//! for `--warmup` seconds. Counters reset at the window's start; the window ends
//! with one JSON line on stdout. With `--events K` each client instead stops after
//! K events (for tests: no clock involved).

use std::cell::{Cell, RefCell};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::LocalSet;

use crate::origin::now_ns;
use crate::procfs;
use crate::wire::{Chunked, Dispatch, Framing, Scanner, Seen, Tracker};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    /// Stream URL (plain http), e.g. http://127.0.0.1:8080/events.
    #[arg(long)]
    pub(crate) url: http::Uri,
    #[arg(long, default_value_t = 1000)]
    pub(crate) clients: usize,
    /// First source address; clients are spread over `--src-count` addresses from it.
    #[arg(long, default_value = "127.0.0.2")]
    pub(crate) src_first: Ipv4Addr,
    #[arg(long, default_value_t = 40)]
    pub(crate) src_count: u32,
    /// Seconds between all clients connected and the measured window (ignored with --wait-start).
    #[arg(long, default_value_t = 3.0)]
    pub(crate) warmup: f64,
    /// Length of the measured window in seconds (ignored with --wait-start).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// After `ready`, read `start <epoch ms> <duration ms>` from stdin.
    #[arg(long)]
    pub(crate) wait_start: bool,
    /// Each client stops after this many events (finishing the read that holds the
    /// last one); the summary follows when all have.
    #[arg(long)]
    pub(crate) events: Option<u64>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// Delay before a client whose stream ended reconnects.
    #[arg(long, default_value_t = 250)]
    pub(crate) reconnect_ms: u64,
    /// `Last-Event-ID` of every client's first request (`0` replays the origin's history).
    #[arg(long)]
    pub(crate) last_event_id: Option<String>,
    /// Seconds to wait for every client to connect before going on without them.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) connect_timeout: f64,
}

/// The load generator's one-line result.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) clients: usize,
    /// Clients that got a `200` head at least once.
    pub(crate) ready: usize,
    /// Clients connected at the end of the window.
    pub(crate) connected: usize,
    pub(crate) duration_s: f64,
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) reads: u64,
    pub(crate) gaps: u64,
    pub(crate) dups: u64,
    /// Named events (the gateway's `gap` event, for one).
    pub(crate) named: u64,
    pub(crate) malformed: u64,
    pub(crate) reconnects: u64,
    pub(crate) errors: u64,
    /// CPU seconds this load process used in the window.
    pub(crate) cpu_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    /// Latency histogram in µs as (value, count) pairs, so runs can be merged.
    pub(crate) hist: Vec<(u64, u64)>,
}

impl Summary {
    pub(crate) fn events_per_read(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            self.events as f64 / self.reads as f64
        }
    }

    /// Adds `other` into `self` (same window, another process).
    pub(crate) fn merge(&mut self, other: &Summary) -> anyhow::Result<()> {
        self.clients += other.clients;
        self.ready += other.ready;
        self.connected += other.connected;
        self.duration_s = self.duration_s.max(other.duration_s);
        self.events += other.events;
        self.bytes += other.bytes;
        self.reads += other.reads;
        self.gaps += other.gaps;
        self.dups += other.dups;
        self.named += other.named;
        self.malformed += other.malformed;
        self.reconnects += other.reconnects;
        self.errors += other.errors;
        self.cpu_s += other.cpu_s;
        let mut h = histogram_of(&self.hist)?;
        h.add(histogram_of(&other.hist)?)?;
        self.set_histogram(&h);
        Ok(())
    }

    fn set_histogram(&mut self, h: &Histogram<u64>) {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        self.p50_ms = ms(0.5);
        self.p99_ms = ms(0.99);
        self.p999_ms = ms(0.999);
        self.max_ms = h.max() as f64 / 1000.0;
        self.hist = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

fn histogram_of(pairs: &[(u64, u64)]) -> anyhow::Result<Histogram<u64>> {
    let mut h = new_histogram();
    for &(v, c) in pairs {
        h.record_n(v, c)?;
    }
    Ok(h)
}

/// Counters shared by every client task of this (single-threaded) process.
struct Stats {
    hist: Histogram<u64>,
    s: Summary,
}

struct Plan {
    server: SocketAddr,
    request_head: String,
    src_first: u32,
    src_count: u32,
    reconnect: Duration,
    events: Option<u64>,
    first_last_id: Option<Box<str>>,
    connect: Semaphore,
}

impl Plan {
    fn source(&self, i: usize) -> SocketAddr {
        let host = self.src_first + (i as u32 % self.src_count.max(1));
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(host), 0))
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let summary = measure(args)?;
    emit(&serde_json::to_string(&summary)?)?;
    Ok(())
}

/// Runs the clients and returns what they saw; the client tasks still running at
/// the end of a timed window are dropped with the runtime.
fn measure(args: Args) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&runtime, drive(args))
}

async fn drive(args: Args) -> anyhow::Result<Summary> {
    if args.url.scheme_str() != Some("http") {
        bail!("--url must be http://");
    }
    let host = args.url.host().context("--url needs a host")?;
    let port = args.url.port_u16().unwrap_or(80);
    let server = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .context("--url host does not resolve")?;
    let path = args.url.path_and_query().map_or("/", |p| p.as_str());
    let plan = Rc::new(Plan {
        server,
        request_head: format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        ),
        src_first: u32::from(args.src_first),
        src_count: args.src_count,
        reconnect: Duration::from_millis(args.reconnect_ms),
        events: args.events,
        first_last_id: args.last_event_id.as_deref().map(Box::from),
        connect: Semaphore::new(args.connect_concurrency.max(1)),
    });
    let stats = Rc::new(RefCell::new(Stats {
        hist: new_histogram(),
        s: Summary {
            clients: args.clients,
            ..Summary::default()
        },
    }));
    let scratch = Rc::new(RefCell::new(vec![0u8; 256 * 1024]));
    let connected = Rc::new(Cell::new(0usize));
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        tasks.push(tokio::task::spawn_local(client(
            i,
            Rc::clone(&plan),
            Rc::clone(&stats),
            Rc::clone(&scratch),
            Rc::clone(&connected),
        )));
    }

    let connect_deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    while stats.borrow().s.ready < args.clients && Instant::now() < connect_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = stats.borrow().s.ready;
    eprintln!("load: {ready}/{} clients connected", args.clients);

    if args.events.is_some() {
        // Counted from the first byte, not from a window: a replayed history with a
        // fault early in it must not be reset away.
        let start = Instant::now();
        let cpu = procfs::self_cpu_seconds();
        for t in tasks {
            t.await?;
        }
        return Ok(finish(&stats, &connected, start, cpu));
    }

    let duration = if args.wait_start {
        emit(&format!("ready {ready}"))?;
        let mut line = String::new();
        BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await?;
        let (at_ms, duration_ms) = parse_start(&line)?;
        let now_ms = now_ns() / 1_000_000;
        tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(now_ms))).await;
        Duration::from_millis(duration_ms)
    } else {
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        Duration::from_secs_f64(args.duration)
    };
    let start = Instant::now();
    let cpu = procfs::self_cpu_seconds();
    reset(&stats);
    tokio::time::sleep(duration).await;
    Ok(finish(&stats, &connected, start, cpu))
}

fn parse_start(line: &str) -> anyhow::Result<(u64, u64)> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("start"), Some(at), Some(d)) => Ok((at.parse()?, d.parse()?)),
        _ => bail!("expected `start <epoch ms> <duration ms>` on stdin, got {line:?}"),
    }
}

fn emit(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn reset(stats: &RefCell<Stats>) {
    let mut st = stats.borrow_mut();
    st.hist.reset();
    let s = &mut st.s;
    s.events = 0;
    s.bytes = 0;
    s.reads = 0;
    s.gaps = 0;
    s.dups = 0;
    s.named = 0;
    s.malformed = 0;
    s.reconnects = 0;
    s.errors = 0;
}

fn finish(
    stats: &RefCell<Stats>,
    connected: &Cell<usize>,
    start: Instant,
    cpu_at_start: f64,
) -> Summary {
    let mut st = stats.borrow_mut();
    let hist = st.hist.clone();
    let s = &mut st.s;
    s.duration_s = start.elapsed().as_secs_f64();
    s.cpu_s = procfs::self_cpu_seconds() - cpu_at_start;
    s.connected = connected.get();
    s.set_histogram(&hist);
    s.clone()
}

/// Why a client's session ended.
enum End {
    /// The server closed the stream (lag cut-off, drain, EOF).
    Closed,
    /// `--events` reached.
    Done,
}

/// One subscriber: connect, read until the stream ends, reconnect with the last id.
async fn client(
    i: usize,
    plan: Rc<Plan>,
    stats: Rc<RefCell<Stats>>,
    scratch: Rc<RefCell<Vec<u8>>>,
    connected: Rc<Cell<usize>>,
) {
    let mut tracker = Tracker::default();
    let mut last_id = plan.first_last_id.clone();
    let mut received = 0u64;
    let mut first = true;
    loop {
        let outcome = session(
            i,
            &plan,
            &stats,
            &scratch,
            &connected,
            &mut tracker,
            &mut last_id,
            &mut received,
            &mut first,
        )
        .await;
        match outcome {
            Ok(End::Done) => return,
            Ok(End::Closed) => stats.borrow_mut().s.reconnects += 1,
            Err(_) => stats.borrow_mut().s.errors += 1,
        }
        tokio::time::sleep(plan.reconnect).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    i: usize,
    plan: &Plan,
    stats: &RefCell<Stats>,
    scratch: &RefCell<Vec<u8>>,
    connected: &Cell<usize>,
    tracker: &mut Tracker,
    last_id: &mut Option<Box<str>>,
    received: &mut u64,
    first: &mut bool,
) -> io::Result<End> {
    let (stream, mut framing, leftover) = {
        let _permit = plan.connect.acquire().await.map_err(io::Error::other)?;
        let socket = TcpSocket::new_v4()?;
        socket.bind(plan.source(i))?;
        let mut stream = socket.connect(plan.server).await?;
        stream.set_nodelay(true)?;
        let mut request = plan.request_head.clone();
        if let Some(id) = last_id.as_deref() {
            request.push_str("Last-Event-ID: ");
            request.push_str(id);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let (framing, leftover) = read_head(&stream, scratch).await?;
        (stream, framing, leftover)
    };
    connected.set(connected.get() + 1);
    if std::mem::take(first) {
        stats.borrow_mut().s.ready += 1;
    }
    let _connected = Decrement(connected);
    let mut scanner = Scanner::with_last_id(last_id.take());
    let done = Cell::new(false);
    let mut body = |bytes: &[u8], scanner: &mut Scanner, stats: &mut Stats, now: u64| {
        scanner.feed(bytes, |d| match d {
            Dispatch::Event(e) => {
                stats.s.events += 1;
                *received += 1;
                let latency_us = now.saturating_sub(e.sent_ns) / 1000;
                stats.hist.saturating_record(latency_us.max(1));
                match tracker.observe(e.number) {
                    Seen::InOrder => {}
                    Seen::Gap { missing } => stats.s.gaps += missing,
                    Seen::Duplicate => stats.s.dups += 1,
                }
                if plan.events.is_some_and(|k| *received >= k) {
                    done.set(true);
                }
            }
            Dispatch::Named => stats.s.named += 1,
            Dispatch::Malformed => stats.s.malformed += 1,
        });
    };
    let mut feed = |bytes: &[u8], scanner: &mut Scanner| -> io::Result<bool> {
        let now = now_ns();
        let mut st = stats.borrow_mut();
        st.s.bytes += bytes.len() as u64;
        let ended = match &mut framing {
            Framing::Raw => {
                body(bytes, scanner, &mut st, now);
                false
            }
            Framing::Chunked(c) => c
                .feed(bytes, |b| body(b, scanner, &mut st, now))
                .map_err(|_| io::Error::other("bad chunked encoding"))?,
        };
        Ok(ended)
    };
    let mut ended = !leftover.is_empty() && feed(&leftover, &mut scanner)?;
    while !ended {
        stream.readable().await?;
        loop {
            let mut buf = scratch.borrow_mut();
            match stream.try_read(&mut buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    stats.borrow_mut().s.reads += 1;
                    if feed(&buf[..n], &mut scanner)? {
                        ended = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if done.get() {
            *last_id = scanner.last_id.take();
            return Ok(End::Done);
        }
    }
    *last_id = scanner.last_id.take();
    Ok(End::Closed)
}

struct Decrement<'a>(&'a Cell<usize>);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Reads the response head; returns the body framing and any body bytes that came
/// with it. Anything but `200` is an error.
async fn read_head(
    stream: &TcpStream,
    scratch: &RefCell<Vec<u8>>,
) -> io::Result<(Framing, Vec<u8>)> {
    let mut head: Vec<u8> = Vec::new();
    loop {
        stream.readable().await?;
        {
            let mut buf = scratch.borrow_mut();
            match stream.try_read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            let status_ok = text
                .lines()
                .next()
                .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
            if !status_ok {
                return Err(io::Error::other(format!(
                    "status: {}",
                    text.lines().next().unwrap_or("")
                )));
            }
            let chunked = text.lines().any(|l| {
                l.strip_prefix("transfer-encoding:")
                    .is_some_and(|v| v.contains("chunked"))
            });
            let framing = if chunked {
                Framing::Chunked(Chunked::default())
            } else {
                Framing::Raw
            };
            return Ok((framing, head.split_off(end + 4)));
        }
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("response head too long"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_merge_counts_and_histograms() {
        let mut a = Summary {
            clients: 2,
            events: 10,
            gaps: 1,
            ..Summary::default()
        };
        let mut h = new_histogram();
        h.record_n(1000, 99).unwrap();
        a.set_histogram(&h);
        let mut b = Summary {
            clients: 3,
            events: 5,
            dups: 2,
            ..Summary::default()
        };
        let mut h = new_histogram();
        h.record(500_000).unwrap();
        b.set_histogram(&h);
        a.merge(&b).unwrap();
        assert_eq!((a.clients, a.events, a.gaps, a.dups), (5, 15, 1, 2));
        assert!((a.p50_ms - 1.0).abs() < 0.01, "{}", a.p50_ms);
        assert!(a.max_ms > 499.0, "{}", a.max_ms);
    }

    #[test]
    fn start_line_is_parsed() {
        assert_eq!(parse_start("start 123 4000\n").unwrap(), (123, 4000));
        assert!(parse_start("go\n").is_err());
    }

    #[test]
    fn sources_spread_over_loopback_addresses() {
        let plan = Plan {
            server: "127.0.0.1:1".parse().unwrap(),
            request_head: String::new(),
            src_first: u32::from(Ipv4Addr::new(127, 0, 0, 2)),
            src_count: 3,
            reconnect: Duration::ZERO,
            events: None,
            first_last_id: None,
            connect: Semaphore::new(1),
        };
        let ips: Vec<_> = (0..4).map(|i| plan.source(i).ip().to_string()).collect();
        assert_eq!(ips, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
    }

    #[test]
    fn a_skipped_and_a_repeated_event_are_counted_through_real_sockets() {
        // The origin replays from event 1 (Last-Event-ID 0), so every client sees the
        // injected faults whenever it connects: counting, not timing, decides.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = crate::origin::Args {
            listen: addr,
            rate: 2000.0,
            size: 256,
            history: 1000,
            events: Some(200),
            skip: vec![30],
            dup: vec![40],
            publish: None,
        };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                crate::origin::serve(origin, listener).await
            })
        });
        let summary = measure(Args {
            url: format!("http://{addr}/events").parse().unwrap(),
            clients: 3,
            src_first: Ipv4Addr::new(127, 0, 0, 2),
            src_count: 3,
            warmup: 0.0,
            duration: 0.0,
            wait_start: false,
            events: Some(100),
            connect_concurrency: 3,
            reconnect_ms: 10,
            last_event_id: Some("0".into()),
            connect_timeout: 60.0,
        })
        .unwrap();
        assert_eq!(summary.ready, 3);
        // Each client stops once it has 100 (after the read that holds the 100th).
        assert!(summary.events >= 300, "{}", summary.events);
        assert_eq!((summary.gaps, summary.dups), (3, 3));
        assert_eq!((summary.malformed, summary.errors), (0, 0));
    }
}
