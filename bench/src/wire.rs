//! The subscriber's view of the wire, with no I/O: the HTTP/1.1 chunked decoder, a
//! minimal event-stream scanner, and the per-client `Tracker` that turns event
//! numbers into gap and duplicate counts.
//!
//! Every bench event carries `data: <number> <send time ns> <padding>`; the number
//! (not the `id`, which nchan rewrites) is what the tracker checks. The scanner is
//! deliberately small (LF or CRLF line ends, `id`, `event`, `data`; comments and
//! `retry` ignored) because both servers we measure emit exactly that, and it must
//! keep up with ~1.6M events/s on one core. It is not a WHATWG parser.

use memchr::memchr;

// === Tracker ===

/// What one event did to a client's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The first event, or the one right after the last.
    InOrder,
    /// `missing` numbers were skipped.
    Gap { missing: u64 },
    /// A number at or below the last one seen: delivered twice (or out of order).
    Duplicate,
}

/// Gap and duplicate detection for one client, by event number.
///
/// The first number seen is taken as the start (a live subscriber joins anywhere).
/// After a reconnect with `Last-Event-ID` the tracker is kept, so a resumption that
/// loses or repeats events shows up here too.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tracker {
    last: Option<u64>,
}

impl Tracker {
    pub(crate) fn observe(&mut self, n: u64) -> Seen {
        let seen = match self.last {
            None => Seen::InOrder,
            Some(last) if n == last + 1 => Seen::InOrder,
            Some(last) if n > last + 1 => Seen::Gap {
                missing: n - last - 1,
            },
            Some(_) => return Seen::Duplicate,
        };
        self.last = Some(n);
        seen
    }
}

// === Chunked decoding ===

/// How the response body is framed.
#[derive(Debug)]
pub(crate) enum Framing {
    /// Everything after the head is body (HTTP/1.0 style, closed by EOF).
    Raw,
    Chunked(Chunked),
}

/// HTTP/1.1 chunked transfer decoding, fed arbitrary splits of the stream.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    #[default]
    Size,
    /// After the size: an extension, up to LF.
    SizeLine,
    /// Inside a chunk's data, `size` bytes left.
    Data,
    /// After the data: CR LF.
    DataEnd,
    /// After the last (zero) chunk: trailers we don't read.
    Done,
}

/// The peer sent something that isn't chunked encoding.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadChunk;

impl Chunked {
    /// Decodes `input`, handing each piece of body to `out` as a slice of `input`.
    /// Returns true once the last chunk was seen.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut out: impl FnMut(&[u8]),
    ) -> Result<bool, BadChunk> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = (b as char).to_digit(16).ok_or(BadChunk)?;
                            self.size = self
                                .size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(digit)))
                                .ok_or(BadChunk)?;
                        }
                        b'\r' | b';' | b' ' | b'\t' => self.state = ChunkState::SizeLine,
                        b'\n' => self.end_size_line(),
                        _ => return Err(BadChunk),
                    }
                }
                ChunkState::SizeLine => match memchr(b'\n', input) {
                    Some(i) => {
                        input = &input[i + 1..];
                        self.end_size_line();
                    }
                    None => input = &[],
                },
                ChunkState::Data => {
                    let take = input
                        .len()
                        .min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    out(&input[..take]);
                    input = &input[take..];
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Err(BadChunk),
                    }
                }
                ChunkState::Done => return Ok(true),
            }
        }
        Ok(self.state == ChunkState::Done)
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data
        };
    }
}

// === Event scanning ===

/// One dispatched bench event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BenchEvent {
    pub(crate) number: u64,
    /// When the origin stamped it, in ns since the Unix epoch.
    pub(crate) sent_ns: u64,
}

/// What the scanner reports at each blank line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dispatch {
    Event(BenchEvent),
    /// A named event other than `message` (the gateway's `gap` event, say).
    Named,
    /// A `message` whose data is not `<number> <ns> ...`.
    Malformed,
}

/// Incremental event-stream scanner. Holds only a partial line between reads, so
/// an idle client costs a few dozen bytes.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    partial: Vec<u8>,
    /// Parsed first `data` line of the event being read, if any.
    data: Option<Option<BenchEvent>>,
    named: bool,
    /// The last `id` field seen, for `Last-Event-ID` on reconnect.
    pub(crate) last_id: Option<Box<str>>,
}

impl Scanner {
    /// A scanner that remembers `last_id` until the stream names a newer one.
    pub(crate) fn with_last_id(last_id: Option<Box<str>>) -> Self {
        Self {
            last_id,
            ..Self::default()
        }
    }

    /// Scans `input`, calling `on` at every dispatched event.
    pub(crate) fn feed(&mut self, mut input: &[u8], mut on: impl FnMut(Dispatch)) {
        while let Some(i) = memchr(b'\n', input) {
            if self.partial.is_empty() {
                self.line(&input[..i], &mut on);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&input[..i]);
                self.line(&line, &mut on);
                line.clear();
                self.partial = line;
            }
            input = &input[i + 1..];
        }
        if !input.is_empty() {
            self.partial.extend_from_slice(input);
        }
        if self.partial.is_empty() && self.partial.capacity() > 0 {
            // Idle clients hold no buffer between events.
            self.partial = Vec::new();
        }
    }

    fn line(&mut self, line: &[u8], on: &mut impl FnMut(Dispatch)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let named = std::mem::take(&mut self.named);
            match self.data.take() {
                None => {}
                Some(_) if named => on(Dispatch::Named),
                Some(Some(event)) => on(Dispatch::Event(event)),
                Some(None) => on(Dispatch::Malformed),
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" if self.data.is_none() => self.data = Some(parse_payload(value)),
            b"id" => self.last_id = std::str::from_utf8(value).ok().map(Box::from),
            b"event" => self.named = !value.is_empty() && value != b"message",
            _ => {}
        }
    }
}

/// `<number> <sent ns> ...` → the event, or `None` if it isn't one of ours.
pub(crate) fn parse_payload(data: &[u8]) -> Option<BenchEvent> {
    let mut words = data.split(|&b| b == b' ');
    let number = parse_u64(words.next()?)?;
    let sent_ns = parse_u64(words.next()?)?;
    Some(BenchEvent { number, sent_ns })
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// The data payload of event `number`: `<number> <sent_ns> <padding>`, padded with
/// `x` to at least `len` bytes.
pub(crate) fn payload(number: u64, sent_ns: u64, len: usize) -> String {
    let mut s = format!("{number} {sent_ns} ");
    while s.len() < len {
        s.push('x');
    }
    s
}

/// A whole event as the origin sends it, `size` bytes long where the number and
/// timestamp leave room: `id: N\ndata: N T xxx…\n\n`.
pub(crate) fn origin_event(number: u64, sent_ns: u64, size: usize) -> String {
    let head = format!("id: {number}\ndata: ");
    let room = size.saturating_sub(head.len() + 2);
    format!("{head}{}\n\n", payload(number, sent_ns, room))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> (Vec<Dispatch>, Option<Box<str>>) {
        let mut s = Scanner::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |d| out.push(d));
        }
        (out, s.last_id)
    }

    /// Runs a client's whole pipeline (scanner → tracker) over a stream and
    /// returns (in order, gaps, duplicates), as the load generator counts them.
    fn count(stream: &str, split: usize) -> (u64, u64, u64) {
        let mut scanner = Scanner::default();
        let mut tracker = Tracker::default();
        let (mut ok, mut gaps, mut dups) = (0, 0, 0);
        for piece in stream.as_bytes().chunks(split) {
            scanner.feed(piece, |d| {
                if let Dispatch::Event(e) = d {
                    match tracker.observe(e.number) {
                        Seen::InOrder => ok += 1,
                        Seen::Gap { missing } => {
                            ok += 1;
                            gaps += missing;
                        }
                        Seen::Duplicate => dups += 1,
                    }
                }
            });
        }
        (ok, gaps, dups)
    }

    fn stream_of(numbers: &[u64]) -> String {
        numbers
            .iter()
            .map(|&n| origin_event(n, 1_700_000_000_000_000_000 + n, 256))
            .collect()
    }

    #[test]
    fn an_unbroken_sequence_has_no_gap_and_no_duplicate() {
        let s = stream_of(&[7, 8, 9, 10, 11]);
        for split in [1, 3, 100, 256, 4096] {
            assert_eq!(count(&s, split), (5, 0, 0), "split {split}");
        }
    }

    #[test]
    fn a_skipped_event_is_a_gap() {
        let s = stream_of(&[1, 2, 4, 5]);
        for split in [1, 7, 256, 4096] {
            assert_eq!(count(&s, split), (4, 1, 0), "split {split}");
        }
    }

    #[test]
    fn a_repeated_event_is_a_duplicate() {
        let s = stream_of(&[1, 2, 3, 3, 4]);
        for split in [1, 7, 256, 4096] {
            assert_eq!(count(&s, split), (4, 0, 1), "split {split}");
        }
    }

    #[test]
    fn an_event_going_backwards_is_a_duplicate_and_does_not_reset_the_sequence() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(10), Seen::InOrder);
        assert_eq!(t.observe(11), Seen::InOrder);
        assert_eq!(t.observe(5), Seen::Duplicate);
        assert_eq!(t.observe(12), Seen::InOrder);
        assert_eq!(t.observe(15), Seen::Gap { missing: 2 });
    }

    #[test]
    fn origin_events_are_exactly_the_requested_size() {
        let e = origin_event(123_456, 1_765_000_000_123_456_789, 256);
        assert_eq!(e.len(), 256);
        assert!(e.starts_with("id: 123456\ndata: 123456 1765000000123456789 xx"));
        assert!(e.ends_with("x\n\n"));
    }

    #[test]
    fn scanner_reads_nchan_style_events_and_ignores_comments_and_retry() {
        let stream = b": hi\n\nretry: 2000\n\nid: 1700000000:0\ndata: 4 99 xx\n\n";
        let (out, last_id) = scan_all(&[stream]);
        assert_eq!(
            out,
            [Dispatch::Event(BenchEvent {
                number: 4,
                sent_ns: 99
            })]
        );
        assert_eq!(last_id.as_deref(), Some("1700000000:0"));
    }

    #[test]
    fn scanner_reports_named_and_malformed_events() {
        let stream = b"event: gap\ndata: {\"last_event_id\":\"1\"}\n\ndata: hello\n\n";
        let (out, _) = scan_all(&[stream]);
        assert_eq!(out, [Dispatch::Named, Dispatch::Malformed]);
    }

    #[test]
    fn scanner_accepts_crlf_split_anywhere() {
        let stream = b"id: 2\r\ndata: 2 5 x\r\n\r\n";
        for split in 1..stream.len() {
            let (a, b) = stream.split_at(split);
            let (out, id) = scan_all(&[a, b]);
            assert_eq!(out.len(), 1, "split {split}");
            assert_eq!(id.as_deref(), Some("2"));
        }
    }

    #[test]
    fn chunked_decoding_survives_every_split() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut c = Chunked::default();
            let mut body = Vec::new();
            let (a, b) = wire.split_at(split);
            let mut done = c.feed(a, |p| body.extend_from_slice(p)).unwrap();
            done |= c.feed(b, |p| body.extend_from_slice(p)).unwrap();
            assert_eq!(body, b"hello, world", "split {split}");
            assert!(done, "split {split}");
        }
    }

    #[test]
    fn chunked_decoding_rejects_garbage() {
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"zz\r\n", |_| {}), Err(BadChunk));
    }
}
