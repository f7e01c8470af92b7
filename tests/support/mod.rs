//! Vocabulary for the integration tests: a real upstream (`TestUpstream`), a real
//! gateway in-process (`spawn_gateway`) or as a child process (`GatewayProcess`),
//! and a client that reads event streams with an independent parser (`SseReader`).
//! Everything runs on real sockets on ports the OS picks.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;

use sse_gateway::admin::Admin;
use sse_gateway::config::{Config, Overrides};
use sse_gateway::drain::Drain;
use sse_gateway::hub::Hub;
use sse_gateway::metrics::Metrics;
use sse_gateway::server::{Server, TlsReload};

/// Generous patience for anything a test waits on.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds or `PATIENCE` runs out.
#[macro_export]
macro_rules! eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let start = tokio::time::Instant::now();
        loop {
            if $cond { break; }
            if start.elapsed() > $crate::support::PATIENCE {
                panic!("not eventually: {}", format!($($msg)+));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

pub mod browser;
pub mod tls;

// === TestUpstream ===

/// How the test upstream answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200 text/event-stream, replaying history after Last-Event-ID, then live.
    Normal,
    /// This status with a plain body.
    Status(u16),
    /// 200 with this content type.
    ContentType(&'static str),
    /// 200 text/event-stream, then these raw bytes, then the connection stays open.
    Raw(Vec<u8>),
    /// 200 text/event-stream, then nothing, forever.
    Stall,
    /// 200 text/event-stream, live events only: Last-Event-ID is ignored.
    LiveOnly,
}

#[derive(Default)]
struct UpstreamState {
    history: Vec<(String, Bytes)>,
    streams: Vec<mpsc::Sender<Bytes>>,
    last_event_ids: Vec<Option<String>>,
    mode: Option<Mode>,
}

/// A real hyper SSE server on 127.0.0.1. Counts connections, records each
/// request's Last-Event-ID, honours it from its history, and can be stopped and
/// restarted on the same port.
pub struct TestUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<UpstreamState>>,
    connections: Arc<AtomicUsize>,
    hold: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    /// Serves https with this config when set.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl TestUpstream {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), None).await
    }

    /// An https upstream presenting `config`'s certificate.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        Self::start_on("127.0.0.1:0".parse().unwrap(), Some(acceptor)).await
    }

    async fn start_on(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Self {
            addr,
            state: Arc::new(Mutex::new(UpstreamState {
                mode: Some(Mode::Normal),
                ..Default::default()
            })),
            connections: Arc::new(AtomicUsize::new(0)),
            hold: tokio::sync::watch::Sender::new(false),
            tasks: Mutex::new(JoinSet::new()),
            tls,
        };
        up.serve(listener);
        up
    }

    fn serve(&self, listener: TcpListener) {
        let state = Arc::clone(&self.state);
        let connections = Arc::clone(&self.connections);
        let hold = self.hold.subscribe();
        let tls = self.tls.clone();
        self.tasks.lock().unwrap().spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let state = Arc::clone(&state);
                let connections = Arc::clone(&connections);
                let hold = hold.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let io: Box<dyn UpstreamIo> = match tls {
                        None => Box::new(tcp),
                        // A failed handshake (the gateway refusing our certificate)
                        // just ends this connection.
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(stream) => Box::new(stream),
                            Err(_) => return,
                        },
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        connections.fetch_add(1, Ordering::SeqCst);
                        let state = Arc::clone(&state);
                        let mut hold = hold.clone();
                        async move {
                            let _ = hold.wait_for(|held| !held).await;
                            Ok::<_, Infallible>(answer(&req, &state))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
                        .await;
                });
            }
        });
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests that reached the stream handler so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.streams.retain(|tx| !tx.is_closed());
        s.streams.len()
    }

    /// The Last-Event-ID of each request, in order.
    pub fn last_event_ids(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().last_event_ids.clone()
    }

    /// While held, requests are counted but not answered.
    pub fn hold(&self, held: bool) {
        self.hold.send_replace(held);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// Sends one event with this id to every open stream and keeps it in history.
    pub async fn emit(&self, id: &str, data: &str) {
        let wire = Bytes::from(format!("id: {id}\ndata: {data}\n\n"));
        self.emit_raw_kept(id, wire).await;
    }

    /// Events `id: n`, `data: event n` for each n.
    pub async fn emit_numbered(&self, ids: impl IntoIterator<Item = u32>) {
        for n in ids {
            self.emit(&n.to_string(), &format!("event {n}")).await;
        }
    }

    /// Events `id: n` with the same `data` each.
    pub async fn emit_numbered_with(&self, ids: impl IntoIterator<Item = u32>, data: &str) {
        for n in ids {
            self.emit(&n.to_string(), data).await;
        }
    }

    async fn emit_raw_kept(&self, id: &str, wire: Bytes) {
        let streams = {
            let mut s = self.state.lock().unwrap();
            s.history.push((id.to_owned(), wire.clone()));
            s.streams.retain(|tx| !tx.is_closed());
            s.streams.clone()
        };
        for tx in streams {
            let _ = tx.send(wire.clone()).await;
        }
    }

    /// Raw bytes to every open stream, not kept in history.
    pub async fn send_raw(&self, bytes: &[u8]) {
        let streams = self.state.lock().unwrap().streams.clone();
        for tx in streams {
            let _ = tx.send(Bytes::copy_from_slice(bytes)).await;
        }
    }

    /// Kills the server and every connection, as a crash would.
    pub fn stop(&self) {
        self.tasks.lock().unwrap().abort_all();
        self.state.lock().unwrap().streams.clear();
    }

    /// Listens again on the same port, with the same history.
    pub async fn restart(&self) {
        self.stop();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the test upstream serves on: TCP, or TLS over it.
trait UpstreamIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> UpstreamIo for T {}

fn answer(req: &Request<Incoming>, state: &Arc<Mutex<UpstreamState>>) -> Response<UpBody> {
    let last_id = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut s = state.lock().unwrap();
    s.last_event_ids.push(last_id.clone());
    let mode = s.mode.clone().unwrap_or(Mode::Normal);
    let (tx, rx) = mpsc::channel::<Bytes>(4096);
    let content_type = match &mode {
        Mode::Status(code) => {
            let body = http_body_util::Full::new(Bytes::from_static(b"no\n"))
                .map_err(|e| match e {})
                .boxed();
            let mut r = Response::new(body);
            *r.status_mut() = StatusCode::from_u16(*code).unwrap();
            return r;
        }
        Mode::ContentType(ct) => *ct,
        _ => "text/event-stream",
    };
    match &mode {
        Mode::Normal => {
            let start = last_id
                .as_ref()
                .and_then(|id| s.history.iter().rposition(|(i, _)| i == id))
                .map_or(
                    if last_id.is_some() {
                        0
                    } else {
                        s.history.len()
                    },
                    |i| i + 1,
                );
            for (_, wire) in &s.history[start..] {
                tx.try_send(wire.clone()).unwrap();
            }
            s.streams.push(tx);
        }
        Mode::Raw(bytes) => {
            tx.try_send(Bytes::from(bytes.clone())).unwrap();
            s.streams.push(tx);
        }
        Mode::Stall => {
            // Never sends a byte: dropped at once, so emits don't reach it.
            drop(tx);
            return stalled_response();
        }
        Mode::LiveOnly | Mode::ContentType(_) => s.streams.push(tx),
        Mode::Status(_) => unreachable!(),
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

/// 200 text/event-stream with a body that never yields.
fn stalled_response() -> Response<UpBody> {
    let body = StreamBody::new(futures_util::stream::pending::<
        Result<Frame<Bytes>, Infallible>,
    >());
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

// === in-process gateway ===

/// A gateway running in this test's runtime, on ports the OS picked.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub hub: Hub,
    pub drain: Drain,
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Starts a gateway from YAML (`listen` is forced to 127.0.0.1:0).
pub async fn spawn_gateway(yaml: &str) -> TestGateway {
    let overrides = Overrides {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        admin: Some("127.0.0.1:0".parse().unwrap()),
    };
    let config = Config::parse(yaml, Path::new("test.yaml"), &overrides).unwrap();
    start(&config).await.0
}

/// A gateway as configured by `yaml` read as if from `file` (whose directory anchors
/// relative TLS paths), with no listener overrides: give it `127.0.0.1:0` listeners.
/// `addrs` holds every public listener's bound address, in config order.
pub async fn spawn_gateway_file(
    yaml: &str,
    file: &Path,
) -> (TestGateway, Vec<SocketAddr>, TlsReload) {
    let overrides = Overrides {
        listen: Vec::new(),
        admin: Some("127.0.0.1:0".parse().unwrap()),
    };
    let config = Config::parse(yaml, file, &overrides).unwrap();
    start(&config).await
}

/// Wires a gateway as `main` does, in this test's runtime.
async fn start(config: &Config) -> (TestGateway, Vec<SocketAddr>, TlsReload) {
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(&config.upstream, Arc::clone(&metrics));
    let drain = Drain::new();
    let bound = Server::bind(config).await.unwrap();
    let addrs = bound.local_addrs();
    let reload = bound.tls_reload();
    let admin = Admin::bind(config.admin.addr).await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    admin.serve(Arc::clone(&metrics), drain.watch(), hub.clone());
    bound.serve(
        config,
        hub.clone(),
        Arc::clone(&metrics),
        drain.watch(),
        &drain.tracker(),
    );
    let gw = TestGateway {
        addr: addrs[0],
        admin: admin_addr,
        metrics,
        hub,
        drain,
    };
    (gw, addrs, reload)
}

/// A config with one route from `path` to `upstream`, plus extra top-level YAML.
pub fn one_route(path: &str, upstream: &str, extra: &str) -> String {
    format!("{extra}\nroutes:\n  - path: {path}\n    upstream: {upstream}\n")
}

// === SseReader ===

/// One event as an independent parser (eventsource-stream) saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub event: String,
    pub data: String,
    pub id: String,
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Option<Seen>> + Send>>;

/// A client of one event stream: status, headers, raw bytes and parsed events.
pub struct SseReader {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    raw: Arc<Mutex<Vec<u8>>>,
    events: EventStream,
    ended: bool,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for SseReader {
    /// Dropping a reader closes its connection, as a browser tab closing would.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl SseReader {
    pub async fn get(url: &str) -> Self {
        Self::request(url, &[]).await
    }

    pub async fn resume(url: &str, last_event_id: &str) -> Self {
        Self::request(url, &[("last-event-id", last_event_id)]).await
    }

    /// `resume`, owning its arguments, for `tokio::spawn`.
    pub async fn resume_owned(url: String, last_event_id: &'static str) -> Self {
        Self::resume(&url, last_event_id).await
    }

    pub async fn request(url: &str, headers: &[(&str, &str)]) -> Self {
        Self::request_from(url, headers, None).await
    }

    /// As `request`, from a given local address (many-client tests spread over
    /// 127.0.0.x so one source address doesn't run out of ports).
    pub async fn request_from(
        url: &str,
        headers: &[(&str, &str)],
        local: Option<std::net::IpAddr>,
    ) -> Self {
        Self::try_request(url, headers, local).await.unwrap()
    }

    /// As `request_from`, but a refused or broken connection is an `Err`.
    pub async fn try_request(
        url: &str,
        headers: &[(&str, &str)],
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, String> {
        let uri: http::Uri = url.parse().unwrap();
        let addr: SocketAddr = uri.authority().unwrap().as_str().parse().unwrap();
        let tcp = match local {
            None => TcpStream::connect(addr).await.map_err(|e| e.to_string())?,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(ip, 0)).unwrap();
                socket.connect(addr).await.map_err(|e| e.to_string())?
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let mut req = Request::get(uri.path_and_query().unwrap().as_str())
            .header("host", addr.to_string())
            .header("accept", "text/event-stream");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = timeout(
            PATIENCE,
            sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
        )
        .await
        .map_err(|_| "no response head in time".to_owned())?
        .map_err(|e| e.to_string())?;
        Ok(Self::from_response(resp, vec![conn.abort_handle()]))
    }

    /// Reads the body of a response that arrived on any connection (TLS, HTTP/2).
    /// `tasks` are aborted when the reader is dropped.
    pub fn from_response(
        resp: Response<Incoming>,
        mut tasks: Vec<tokio::task::AbortHandle>,
    ) -> Self {
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = Arc::new(Mutex::new(Vec::new()));
        // A task reads the body as it comes, so `raw()` shows what the gateway sent
        // even while the test is not asking for events.
        let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, hyper::Error>>();
        let tee = Arc::clone(&raw);
        let mut body = resp.into_body();
        let reader = tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Ok(bytes) = frame.into_data() {
                            tee.lock().unwrap().extend_from_slice(&bytes);
                            if tx.send(Ok(bytes)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let chunks =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
            );
        let events = chunks
            .eventsource()
            .map(|e| {
                e.ok().map(|e| Seen {
                    event: e.event,
                    data: e.data,
                    id: e.id,
                })
            })
            .boxed();
        tasks.push(reader.abort_handle());
        Self {
            status,
            headers,
            raw,
            events,
            ended: false,
            tasks,
        }
    }

    /// The next event, `None` at the end of the stream. Panics after `PATIENCE`.
    pub async fn next(&mut self) -> Option<Seen> {
        self.next_within(PATIENCE)
            .await
            .expect("an event or the end in time")
    }

    /// `Err(())` if nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<Seen>, ()> {
        if self.ended {
            return Ok(None);
        }
        match timeout(wait, self.events.next()).await {
            Err(_) => Err(()),
            Ok(Some(Some(seen))) => Ok(Some(seen)),
            Ok(_) => {
                self.ended = true;
                Ok(None)
            }
        }
    }

    /// The next `n` events; panics if the stream ends first.
    pub async fn take(&mut self, n: usize) -> Vec<Seen> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next().await {
                Some(e) => out.push(e),
                None => panic!("stream ended after {} of {n} events: {out:?}", out.len()),
            }
        }
        out
    }

    /// Everything until the end of the stream.
    pub async fn rest(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }

    /// Every byte received so far, as text.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().unwrap()).into_owned()
    }

    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// The last `retry:` value in a raw stream, in ms.
pub fn last_retry(raw: &str) -> Option<u64> {
    raw.rsplit("retry: ")
        .next()?
        .split('\n')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A client that behaves like a browser's EventSource: on the end of a stream or a
/// refused connection it waits the last `retry:` it was given and reconnects with
/// `Last-Event-ID`. Every event it ever received is kept, in order.
pub struct Reconnecting {
    pub events: Arc<Mutex<Vec<Seen>>>,
    pub connects: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Reconnecting {
    pub fn start(url: String, local: Option<std::net::IpAddr>) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let connects = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (Arc::clone(&events), Arc::clone(&connects));
        let task = tokio::spawn(async move {
            let mut retry = Duration::from_millis(500);
            loop {
                let last: Option<String> = seen.lock().unwrap().last().map(|e: &Seen| e.id.clone());
                let headers: Vec<(&str, &str)> = last
                    .iter()
                    .map(|id| ("last-event-id", id.as_str()))
                    .collect();
                if let Ok(mut r) = SseReader::try_request(&url, &headers, local).await {
                    if r.status == 200 {
                        count.fetch_add(1, Ordering::SeqCst);
                        while let Ok(Some(e)) = r.next_within(Duration::from_secs(3600)).await {
                            // A gap would be a lost event: record it so the test fails.
                            seen.lock().unwrap().push(e);
                        }
                        if let Some(ms) = last_retry(&r.raw()) {
                            retry = Duration::from_millis(ms);
                        }
                    }
                }
                tokio::time::sleep(retry).await;
            }
        });
        Self {
            events,
            connects,
            task,
        }
    }

    /// Every id received, in order; a `gap` event shows as `u64::MAX`.
    pub fn ids(&self) -> Vec<u64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.id.parse().unwrap_or(u64::MAX))
            .collect()
    }
}

impl Drop for Reconnecting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn ids(events: &[Seen]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// A plain GET, for status codes and headers.
pub async fn get(url: &str, method: &str) -> Response<Bytes> {
    let uri: http::Uri = url.parse().unwrap();
    let addr: SocketAddr = uri.authority().unwrap().as_str().parse().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str())
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = timeout(PATIENCE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = timeout(PATIENCE, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    Response::from_parts(parts, body)
}

// === HTTP/2 ===

/// One HTTP/2 connection (h2c prior knowledge, or over TLS) many streams share.
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
    authority: String,
}

impl H2Client {
    /// Cleartext HTTP/2 by prior knowledge.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Self::handshake(tcp, addr.to_string()).await
    }

    /// HTTP/2 over an established stream, e.g. TLS after ALPN chose h2. The client's
    /// stream window is 64 KiB, as the h2 default, and its connection window large, as
    /// browsers' are, so one stream that stops reading can't starve its siblings.
    pub async fn handshake<IO>(io: IO, authority: String) -> Self
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(16 * 1024 * 1024)
                .handshake(TokioIo::new(io))
                .await
                .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Self {
            sender,
            conn,
            authority,
        }
    }

    /// Sends a GET on a new stream and waits for the response head.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        let mut req = Request::get(format!("http://{}{path}", self.authority))
            .header("accept", "text/event-stream");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let mut sender = self.sender.clone();
        timeout(
            PATIENCE,
            sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
        )
        .await
        .expect("response head in time")
        .unwrap()
    }

    /// An event stream on a new stream of this connection.
    pub async fn sse(&self, path: &str) -> SseReader {
        SseReader::from_response(self.get(path, &[]).await, Vec::new())
    }

    pub fn is_closed(&self) -> bool {
        self.conn.is_finished()
    }
}

impl Drop for H2Client {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

// === GatewayProcess ===

/// The built `sse-gateway` binary as a child process.
pub struct GatewayProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub log: Arc<Mutex<VecDeque<String>>>,
    _dir: Option<TempDir>,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sse-gateway-test-{tag}-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sse-gateway")
}

impl GatewayProcess {
    /// Runs the binary on `yaml` with `--listen 127.0.0.1:0 --admin 127.0.0.1:0`
    /// and waits for its `listening` lines.
    pub fn start(yaml: &str, extra_args: &[&str]) -> Self {
        let dir = TempDir::new("gw");
        let config = dir.write("gateway.yaml", yaml);
        let mut gw = Self::start_with(
            &config,
            &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
            extra_args,
        );
        gw._dir = Some(dir);
        gw
    }

    pub fn start_with(config: &Path, base_args: &[&str], extra_args: &[&str]) -> Self {
        Self::start_env(config, base_args, extra_args, &[])
    }

    /// As `start_with`, with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_env(
        config: &Path,
        base_args: &[&str],
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(binary())
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config)
            .args(base_args)
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push_back(line);
            }
        });
        let (mut addr, mut admin) = (None, None);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no listening line; log: {:?}", log.lock().unwrap()));
            if let Some(a) = listening_addr(&line) {
                if line.contains("kind=public") || line.contains("\"kind\":\"public\"") {
                    addr = Some(a);
                } else {
                    admin = Some(a);
                }
            }
        }
        Self {
            child,
            addr: addr.unwrap(),
            admin,
            log,
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; panics after `wait`.
    pub fn wait_exit(&mut self, wait: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway did not exit within {wait:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One unlabelled series from the admin listener's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let admin = self.admin.expect("admin listener");
        let body = get(&format!("http://{admin}/metrics"), "GET")
            .await
            .into_body();
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{text}"))
    }

    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr")? + 4..];
    let rest = rest.trim_start_matches(['=', '"', ':']);
    let end = rest.find([' ', '"', ',']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The value of one unlabelled series in the gateway's exposition.
pub fn metric(metrics: &Metrics, name: &str) -> f64 {
    let text = metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

// === Prometheus text, read strictly ===

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses Prometheus/OpenMetrics text strictly: every line is a HELP, TYPE or UNIT
/// comment, a sample of a declared family, or the final `# EOF`. Panics on anything
/// else, naming the line.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut families: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "content after # EOF: {line:?}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (
                parts.next().unwrap(),
                parts.next().expect("comment names a family"),
            );
            assert!(valid_name(name), "bad family name in {line:?}");
            match kind {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    let ty = parts.next().expect("TYPE has a type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown"
                        ]
                        .contains(&ty),
                        "bad type in {line:?}"
                    );
                    families.push((name.to_owned(), ty.to_owned()));
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (head, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match head.split_once('{') {
            None => (head, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels = Vec::new();
                for pair in split_labels(body) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(valid_name(k), "bad label name in {line:?}");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
                    labels.push((k.to_owned(), v.to_owned()));
                }
                (name, labels)
            }
        };
        assert!(valid_name(name), "bad sample name in {line:?}");
        let declared = families.iter().any(|(family, ty)| {
            let suffixes: &[&str] = match ty.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                _ => &[""],
            };
            suffixes.iter().any(|s| name == format!("{family}{s}"))
        });
        assert!(declared, "sample of an undeclared family: {line:?}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    assert!(saw_eof, "no # EOF at the end");
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Splits `a="x",b="y,z"` on the commas between pairs.
fn split_labels(body: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        out.push(&body[start..]);
    }
    out
}

/// The value of the sample with this name and these labels (all of them).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}

/// GET the admin listener's /metrics and parse it strictly.
pub async fn scrape(admin: SocketAddr) -> Vec<Sample> {
    let resp = get(&format!("http://{admin}/metrics"), "GET").await;
    assert_eq!(resp.status(), 200);
    parse_exposition(&String::from_utf8_lossy(resp.body()))
}
