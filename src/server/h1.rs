//! HTTP/1.1 served by hand for the common case, hyper for the rest.
//!
//! A clean `GET` (its head parses, one `Host`, no body, no `Expect`, no upgrade) is
//! answered here, and if it opens a client stream, the stream is written straight
//! from the ring onto the socket: all ready events in one vectored write, each
//! event's bytes the ring's shared `Bytes` behind a chunk header built on the stack,
//! and nothing kept per connection between writes. hyper would hold a read buffer of
//! up to `max_header_size` and a write buffer for the connection's whole life;
//! memory per idle stream is what caps how many clients one instance holds.
//!
//! Anything else (a parse error, a body, HTTP/1.0, another method, the HTTP/2
//! preface on a plain port) goes to hyper together with the bytes already read, so
//! hyper stays the one that answers malformed and unusual requests.
//!
//! A streaming connection ends with its stream: the last chunk, then close.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body::Body;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::debug;

use super::listener::{poll_stall, ConnShared, SEND_TIMEOUT};
use super::stream::{ClientStream, ResponseBody};
use super::{handle, ServerState};
use crate::drain::DrainWatch;

/// What the client sends first to speak HTTP/2 without TLS (h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Headers a request may have; more goes to hyper, which answers 431.
const MAX_HEADERS: usize = 100;
/// The first read's buffer: a browser's EventSource request head fits.
const FIRST_READ: usize = 1024;
/// Events gathered into one write.
const MAX_BATCH: usize = 32;
/// The longest chunk header: 16 hex digits and CRLF.
const CHUNK_HEAD: usize = 18;
const CRLF: &[u8] = b"\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What is left once the hand-served part is done.
pub(super) enum Next<I> {
    /// Nothing: the connection closed, timed out, or its stream ended.
    Closed,
    /// hyper serves the rest; `prefix` was read and must be read again.
    Hyper { io: I, prefix: Bytes, h2: bool },
}

/// Serves requests on `io` until it closes, a stream ends, or one needs hyper.
/// `sniff_h2`: a plain listener, where the client may open with the HTTP/2 preface.
///
/// The task's future is allocated at its largest state for the connection's whole
/// life, so only the streaming state is kept small and inline: reading a head and
/// writing a short answer run in boxed futures that are freed once they are done.
pub(super) async fn serve<I>(
    mut io: I,
    sniff_h2: bool,
    peer: SocketAddr,
    state: &Arc<ServerState>,
    shared: &Arc<ConnShared>,
    drain: &mut DrainWatch,
) -> Next<I>
where
    I: Transport,
{
    let limits = state.limiter.config();
    let mut buf: Vec<u8> = Vec::new();
    let mut sniffing = sniff_h2;
    // The first head must arrive within the header timeout from accept; on a
    // kept-alive connection, each next one within it (or the idle timeout) too.
    let mut wait = limits.header_read_timeout;
    loop {
        let reading = read_head(
            &mut io,
            &mut buf,
            &mut sniffing,
            wait,
            limits.max_header_size,
            drain,
        );
        let (request, close) = match Box::pin(reading).await {
            Got::Request { request, close } => (request, close),
            Got::Closed => return Next::Closed,
            Got::Hyper { h2 } => {
                return Next::Hyper {
                    io,
                    prefix: Bytes::from(buf),
                    h2,
                }
            }
        };
        match answer(request, close, peer, state, shared) {
            Answer::Stream { head, body } => {
                // Anything pipelined behind a stream request is never answered.
                drop(buf);
                let end = StreamOut::new(&mut io, body, head, shared).await;
                if let End::Finished = end {
                    // A clean end: FIN (and close_notify under TLS), briefly bounded.
                    let closing = tokio::time::timeout(Duration::from_secs(1), io.shutdown());
                    let _ = Box::pin(closing).await;
                }
                return Next::Closed;
            }
            Answer::Full { out, close } => {
                // A short answer fits the socket buffer; a peer that won't take even
                // that is dropped after the send timeout.
                let sending = tokio::time::timeout(SEND_TIMEOUT, async {
                    io.write_all(&out).await?;
                    io.flush().await
                });
                let sent = Box::pin(sending).await;
                if !matches!(sent, Ok(Ok(()))) || close {
                    return Next::Closed;
                }
            }
        }
        wait = limits.header_read_timeout.min(limits.idle_timeout);
    }
}

/// What reading a request head came to.
// Handed straight to `answer`; boxing the request would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Got {
    Request {
        request: Request<()>,
        close: bool,
    },
    Closed,
    /// hyper's to serve, from the start of `buf`.
    Hyper {
        h2: bool,
    },
}

/// Reads until `buf` starts with a complete head, which it then takes out of `buf`.
async fn read_head<I>(
    io: &mut I,
    buf: &mut Vec<u8>,
    sniffing: &mut bool,
    wait: Duration,
    max_head: usize,
    drain: &mut DrainWatch,
) -> Got
where
    I: AsyncRead + Unpin,
{
    let mut deadline = pin!(tokio::time::sleep(wait));
    let mut draining = pin!(drain.draining());
    let mut drain_seen = false;
    loop {
        if *sniffing {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                *sniffing = false;
            } else if n == H2_PREFACE.len() {
                return Got::Hyper { h2: true };
            }
        }
        if !*sniffing && !buf.is_empty() {
            match parse(buf) {
                Head::Clean {
                    request,
                    close,
                    len,
                } if len <= max_head => {
                    buf.drain(..len);
                    return Got::Request { request, close };
                }
                Head::Partial if buf.len() <= max_head => {}
                Head::Clean { .. } | Head::Partial | Head::Unusual => {
                    return Got::Hyper { h2: false };
                }
            }
        }
        // Small first, doubling: every connection holds this until its head is in,
        // and freed memory stays resident. One byte past the limit is enough for
        // hyper to answer 431.
        if buf.len() == buf.capacity() {
            let want = if buf.is_empty() {
                FIRST_READ
            } else {
                buf.len()
            };
            buf.reserve_exact((max_head + 1).saturating_sub(buf.len()).clamp(1, want));
        }
        tokio::select! {
            biased;
            read = io.read_buf(buf) => match read {
                Ok(0) => return Got::Closed,
                Ok(_) => {}
                Err(error) => {
                    debug!(error = %error, "read failed");
                    return Got::Closed;
                }
            },
            () = deadline.as_mut() => {
                debug!(timeout = ?wait, "no complete request head in time; connection closed");
                return Got::Closed;
            }
            // An idle connection closes at once; a head already on its way is read
            // to the end (within the header timeout) and answered with the drain hint.
            _ = draining.as_mut(), if !drain_seen => {
                if buf.is_empty() {
                    return Got::Closed;
                }
                drain_seen = true;
            }
        }
    }
}

/// A routed request's response, ready for the wire.
enum Answer {
    Stream {
        head: Vec<u8>,
        body: Box<ClientStream>,
    },
    Full {
        out: Vec<u8>,
        close: bool,
    },
}

fn answer(
    request: Request<()>,
    close: bool,
    peer: SocketAddr,
    state: &Arc<ServerState>,
    shared: &Arc<ConnShared>,
) -> Answer {
    let (parts, body) = handle(request, peer, state, shared).into_parts();
    match body {
        ResponseBody::Stream(mut body) => {
            body.attach(None);
            Answer::Stream {
                head: encode_head(&parts, Framing::Chunked),
                body,
            }
        }
        ResponseBody::Full(body) => {
            let body = body.unwrap_or_default();
            let framing = Framing::Length(body.len());
            let mut out = encode_head(&parts, framing);
            if framing.has_body(parts.status) {
                out.extend_from_slice(&body);
            }
            Answer::Full {
                out,
                close: close || parts.headers.contains_key(CONNECTION),
            }
        }
    }
}

/// One request head, read as far as `buf` goes.
// Lives for one call; boxing the request would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Head {
    Clean {
        request: Request<()>,
        /// The client asked to close after this response.
        close: bool,
        /// Bytes of `buf` the head took.
        len: usize,
    },
    Partial,
    /// Malformed or out of the ordinary: hyper's to answer.
    Unusual,
}

fn parse(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => match clean_request(&head) {
            Some((request, close)) => Head::Clean {
                request,
                close,
                len,
            },
            None => Head::Unusual,
        },
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::Unusual,
    }
}

/// The request, if it is one this module answers: an HTTP/1.1 `GET` in origin
/// form with exactly one `Host` and nothing that implies a body or a protocol
/// switch. `None` sends it to hyper.
fn clean_request(head: &httparse::Request<'_, '_>) -> Option<(Request<()>, bool)> {
    if head.method != Some("GET") || head.version != Some(1) {
        return None;
    }
    let path = head.path?;
    if !path.starts_with('/') {
        return None;
    }
    let uri = Uri::from_maybe_shared(Bytes::copy_from_slice(path.as_bytes())).ok()?;
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let mut hosts = 0;
    let mut close = false;
    let map = request.headers_mut();
    map.reserve(head.headers.len());
    for header in head.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        if name == HOST {
            hosts += 1;
        } else if name == CONTENT_LENGTH {
            if value != "0" {
                return None;
            }
        } else if name == TRANSFER_ENCODING || name == EXPECT || name == UPGRADE {
            return None;
        } else if name == CONNECTION {
            let tokens = value.to_str().ok()?;
            for token in tokens.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        }
        map.append(name, value);
    }
    if hosts != 1 || map.get_all(CONTENT_LENGTH).iter().count() > 1 {
        return None;
    }
    Some((request, close))
}

#[derive(Clone, Copy)]
enum Framing {
    Chunked,
    Length(usize),
}

impl Framing {
    fn has_body(self, status: StatusCode) -> bool {
        !(status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED)
    }
}

/// The status line and headers, with the framing and `date` added.
fn encode_head(parts: &http::response::Parts, framing: Framing) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(CRLF);
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(CRLF);
    }
    if framing.has_body(parts.status) {
        match framing {
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Length(len) => {
                out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
            }
        }
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// How a stream's connection ended.
enum End {
    /// The stream ended and its last chunk went out.
    Finished,
    /// The client closed, or the socket failed.
    Gone,
    /// The client stopped reading and was cut loose.
    Cut,
}

/// Writes one client stream onto the connection until it ends.
struct StreamOut<'a, I> {
    io: &'a mut I,
    body: Box<ClientStream>,
    /// Bytes taken from the body but not yet written, in order. Empty (and
    /// unallocated) unless the socket has pushed back.
    pending: VecDeque<Bytes>,
    /// The body ended; its last chunk is queued or written.
    ended: bool,
    /// Written but maybe still held by the transport (TLS records).
    unflushed: bool,
    shared: &'a ConnShared,
    stall: Option<Pin<Box<Sleep>>>,
    /// The transport holds this task's waker for the client's next bytes.
    read_armed: bool,
}

impl<'a, I: Transport> StreamOut<'a, I> {
    fn new(io: &'a mut I, body: Box<ClientStream>, head: Vec<u8>, shared: &'a ConnShared) -> Self {
        let mut pending = VecDeque::with_capacity(1);
        pending.push_back(Bytes::from(head));
        Self {
            io,
            body,
            pending,
            ended: false,
            unflushed: false,
            shared,
            stall: None,
            read_armed: false,
        }
    }

    /// The socket pushed back: the stall check decides whether to wait.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        self.shared.note_write(true);
        match poll_stall(self.shared, &mut self.stall, cx) {
            Poll::Ready(()) => {
                debug!("client stalled; connection dropped");
                Poll::Ready(End::Cut)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote(&mut self) {
        self.shared.note_write(false);
        self.unflushed = true;
        self.stall = None;
    }

    /// Writes what is queued, once. `Ready(Ok)`: some of it went.
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slices = [IoSlice::new(&[]); MAX_BATCH];
        let mut count = 0;
        for (slot, bytes) in slices.iter_mut().zip(self.pending.iter()) {
            *slot = IoSlice::new(bytes);
            count += 1;
        }
        let written = std::task::ready!(ready(
            Pin::new(&mut *self.io).poll_write_vectored(cx, &slices[..count])
        ))?;
        advance(&mut self.pending, written);
        if self.pending.is_empty() {
            // Give the queue's memory back: most of the time nothing waits.
            self.pending = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Takes every frame the body has ready (up to a batch) and writes them as
    /// chunks in one vectored write. `Pending` with nothing taken: idle.
    fn write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // On the stack, and only what is taken is written or dropped.
        let mut frames: SmallVec<[Bytes; MAX_BATCH]> = SmallVec::new();
        while frames.len() < MAX_BATCH {
            match Pin::new(&mut *self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // An empty chunk would end the response.
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            frames.push(data);
                        }
                    }
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => {
                    self.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if frames.is_empty() && !self.ended {
            return Poll::Pending;
        }
        let mut heads = [[0u8; CHUNK_HEAD]; MAX_BATCH];
        let mut head_lens = [0usize; MAX_BATCH];
        for ((head, len), frame) in heads.iter_mut().zip(&mut head_lens).zip(&frames) {
            *len = chunk_head(head, frame.len());
        }
        let mut slices: SmallVec<[IoSlice<'_>; 3 * MAX_BATCH + 1]> = SmallVec::new();
        for ((head, len), frame) in heads.iter().zip(&head_lens).zip(&frames) {
            slices.push(IoSlice::new(&head[..*len]));
            slices.push(IoSlice::new(frame));
            slices.push(IoSlice::new(CRLF));
        }
        if self.ended {
            slices.push(IoSlice::new(LAST_CHUNK));
        }
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let written = match Pin::new(&mut *self.io).poll_write_vectored(cx, &slices) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => 0,
        };
        if written < total {
            // The socket took part (or none): queue the rest, as shared slices.
            for ((head, len), frame) in heads.iter().zip(&head_lens).zip(&frames) {
                self.pending
                    .push_back(Bytes::copy_from_slice(&head[..*len]));
                self.pending.push_back(frame.clone());
                self.pending.push_back(Bytes::from_static(CRLF));
            }
            if self.ended {
                self.pending.push_back(Bytes::from_static(LAST_CHUNK));
            }
            advance(&mut self.pending, written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: Transport> Future for StreamOut<'_, I> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        if this.io.poll_gone(&mut this.read_armed, cx) {
            return Poll::Ready(End::Gone);
        }
        loop {
            if !this.pending.is_empty() {
                match this.write_pending(cx) {
                    Poll::Ready(Ok(())) => this.wrote(),
                    Poll::Ready(Err(error)) => {
                        debug!(error = %error, "write failed");
                        return Poll::Ready(End::Gone);
                    }
                    Poll::Pending => return this.blocked(cx),
                }
                continue;
            }
            if this.unflushed {
                match Pin::new(&mut *this.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => this.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(End::Gone),
                    Poll::Pending => return this.blocked(cx),
                }
            }
            if this.ended {
                return Poll::Ready(End::Finished);
            }
            match this.write_ready(cx) {
                // Anything the socket didn't take is queued; the loop goes on with it.
                Poll::Ready(Ok(())) if this.pending.is_empty() => this.wrote(),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    debug!(error = %error, "write failed");
                    return Poll::Ready(End::Gone);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A connection's transport, as the stream writer sees it.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Whether the client has closed its side (or the socket failed). Bytes it
    /// sends while streaming are read and dropped: a stream request is the last one
    /// served. `armed`: the transport already holds the task's waker for reads.
    fn poll_gone(&mut self, armed: &mut bool, cx: &mut Context<'_>) -> bool {
        read_peer(self, armed, cx)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {}

impl Transport for TcpStream {
    /// Once armed, the check is a look at tokio's cached readiness: no lock and no
    /// waker registration per event. Readable means the waker was used, so the next
    /// check registers again.
    fn poll_gone(&mut self, armed: &mut bool, cx: &mut Context<'_>) -> bool {
        if *armed {
            let mut scratch = [0u8; 256];
            match self.try_read(&mut scratch) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
                Ok(0) | Err(_) => return true,
                Ok(_) => *armed = false,
            }
        }
        read_peer(self, armed, cx)
    }
}

/// `poll_gone` by reading: registers for the next read when nothing is there.
fn read_peer<I: AsyncRead + Unpin + ?Sized>(
    io: &mut I,
    armed: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    let seen = poll_peer(io, cx);
    *armed = seen == Peer::Quiet;
    seen == Peer::Gone
}

#[derive(PartialEq, Eq)]
enum Peer {
    Gone,
    /// Nothing to read; the task's waker is registered for more.
    Quiet,
    /// Still sending: checked again on the next wake.
    Talking,
}

fn poll_peer<I: AsyncRead + Unpin + ?Sized>(io: &mut I, cx: &mut Context<'_>) -> Peer {
    let mut scratch = [0u8; 256];
    // Bounded, so a client that floods us can't keep its task spinning here.
    for _ in 0..16 {
        let mut read = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return Peer::Gone,
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Peer::Gone,
            Poll::Pending => return Peer::Quiet,
        }
    }
    Peer::Talking
}

/// Drops `n` written bytes from the front of the queue.
fn advance(pending: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = pending.front_mut() else {
            break;
        };
        if n >= front.len() {
            n -= front.len();
            pending.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// Writes `{len:x}\r\n` into `out`; returns its length.
fn chunk_head(out: &mut [u8; CHUNK_HEAD], len: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = ((usize::BITS - len.leading_zeros()).div_ceil(4)).max(1) as usize;
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[(len >> shift) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// `poll_write_vectored`'s result with `Ok(0)` (nothing accepted) as an error.
fn ready(poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    match poll {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_heads_are_lower_hex_with_crlf() {
        let mut out = [0u8; CHUNK_HEAD];
        for (len, want) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (256, "100\r\n"),
            (0xabcdef, "abcdef\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let n = chunk_head(&mut out, len);
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), want);
        }
    }

    #[test]
    fn advance_drops_whole_and_partial_buffers() {
        let mut q: VecDeque<Bytes> = [&b"abc"[..], b"de", b"fgh"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        advance(&mut q, 4);
        assert_eq!(q, [Bytes::from_static(b"e"), Bytes::from_static(b"fgh")]);
        advance(&mut q, 10);
        assert!(q.is_empty());
    }

    fn parsed(raw: &[u8]) -> Head {
        parse(raw)
    }

    #[test]
    fn a_plain_get_is_served_here() {
        let Head::Clean {
            request,
            close,
            len,
        } = parsed(b"GET /e?x=1 HTTP/1.1\r\nHost: gw\r\nLast-Event-ID: 7\r\n\r\nGET /")
        else {
            panic!("not clean");
        };
        assert_eq!(request.uri().path(), "/e");
        assert_eq!(request.uri().query(), Some("x=1"));
        assert_eq!(request.headers()["last-event-id"], "7");
        assert!(!close);
        assert_eq!(len, 51);
        assert!(matches!(
            parsed(b"GET /e HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, close\r\n\r\n"),
            Head::Clean { close: true, .. }
        ));
        assert!(matches!(parsed(b"GET /e HTTP/1.1\r\nHo"), Head::Partial));
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for raw in [
            &b"POST /e HTTP/1.1\r\nHost: gw\r\n\r\n"[..],
            b"HEAD /e HTTP/1.1\r\nHost: gw\r\n\r\n",
            b"GET /e HTTP/1.0\r\nHost: gw\r\n\r\n",
            b"GET http://gw/e HTTP/1.1\r\nHost: gw\r\n\r\n",
            b"GET /e HTTP/1.1\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: gw\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost gw\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        ] {
            assert!(
                matches!(parsed(raw), Head::Unusual),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn heads_carry_framing_and_date() {
        let response = http::Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let head = String::from_utf8(encode_head(&parts, Framing::Length(10))).unwrap();
        assert!(head.starts_with(
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 10\r\ndate: "
        ));
        assert!(head.ends_with(" GMT\r\n\r\n"));
        let (parts, ()) = http::Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(())
            .unwrap()
            .into_parts();
        let head = String::from_utf8(encode_head(&parts, Framing::Length(0))).unwrap();
        assert!(!head.contains("content-length"));
    }
}
