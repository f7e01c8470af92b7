//! The event-stream parser: the bytes of one upstream response body in, dispatched
//! [`Event`]s out, exactly as the WHATWG HTML "event stream interpretation" reads them.
//!
//! It owns the per-connection parsing state: the BOM check, line splitting across
//! reads, the data, event type and last event ID buffers, and the reconnection time.
//! Reading the body, reconnecting and remembering ids across connections are the
//! caller's.
//!
//! Invariant: memory is bounded by `max_line`. A partial line carried between reads
//! never holds more than `max_line` bytes, and one event's data never more than
//! `DATA_LINES_PER_EVENT × max_line`; input that would need more is an error, not growth.

use std::borrow::Cow;
use std::mem;
use std::time::Duration;

use super::Event;

/// U+FEFF encoded as UTF-8.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// How many maximal lines one event's data may add up to. Lines are bounded one at a
/// time, so without this an upstream that never sends a blank line grows the data
/// buffer forever.
const DATA_LINES_PER_EVENT: usize = 16;

/// Why the parser gave up on a stream. The caller drops the connection and reconnects.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// A line, or the data of one event, is longer than the parser may buffer.
    /// For the data bound `limit` is `16 × max_line`.
    #[error("upstream sent a line longer than {limit} bytes")]
    LineTooLong { limit: usize },
}

/// Incremental parser for one upstream connection: feed it the body as it arrives.
#[derive(Debug)]
pub(crate) struct Parser {
    max_line: usize,
    max_data: usize,
    bom: Bom,
    /// The start of a line whose end has not arrived yet. Never longer than `max_line`.
    line: Vec<u8>,
    /// The previous read ended in CR, so an LF opening the next read belongs to it.
    after_cr: bool,
    data: String,
    event_type: String,
    /// The id set by the current block, if any: it becomes the event's `id`.
    block_id: Option<String>,
    /// The last event ID as of the latest blank line (see [`Parser::last_event_id`]).
    last_event_id: String,
    retry: Option<Duration>,
    /// Set by the first error; every later `feed` returns it again.
    failed: Option<ParseError>,
}

/// Where the stream is in skipping its optional leading BOM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bom {
    /// The stream so far consists of the first `n` bytes of a BOM, held back.
    Matching(usize),
    /// Past the start of the stream: a later U+FEFF is ordinary content.
    Done,
}

// === impl Parser ===

impl Parser {
    /// A parser for a new connection that refuses lines longer than `max_line` bytes
    /// (not counting the line end) and events with more than `16 × max_line` bytes of
    /// data.
    pub(crate) fn new(max_line: usize) -> Self {
        Self {
            max_line,
            max_data: max_line.saturating_mul(DATA_LINES_PER_EVENT),
            bom: Bom::Matching(0),
            line: Vec::new(),
            after_cr: false,
            data: String::new(),
            event_type: String::new(),
            block_id: None,
            last_event_id: String::new(),
            retry: None,
            failed: None,
        }
    }

    /// Starts the last event ID at `id` instead of `""`: what a browser does when it
    /// reconnects, so an event without `id` on the new connection still has the old
    /// one and [`Parser::last_event_id`] stays the value to send next time.
    pub(crate) fn with_last_event_id(mut self, id: impl Into<String>) -> Self {
        self.last_event_id = id.into();
        self
    }

    /// Feeds the next chunk of the body, in any split; complete events are appended
    /// to `out` in stream order. An event still open when the body ends is never
    /// dispatched (WHATWG discards it), so there is nothing to flush at the end.
    ///
    /// # Errors
    ///
    /// [`ParseError::LineTooLong`] once a line grows past `max_line` bytes, or the data
    /// of one event past `16 × max_line`. Events completed earlier in the same chunk
    /// are still in `out`. The parser is then finished: every later call returns the
    /// same error, and the caller reconnects with a new one.
    pub(crate) fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.feed_lines(chunk, out);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// The last event ID string as of the latest blank line: the value to send as
    /// `Last-Event-ID` when reconnecting. WHATWG copies the last event ID buffer into
    /// it when a block ends (even one without data, so `id: 7` + blank line counts),
    /// so an `id` in a block the body cut off before its blank line does not count.
    pub(crate) fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The latest valid `retry:` value: the reconnection time the upstream asked for.
    /// An all-digit value too big for `u64` milliseconds saturates; callers clamp it.
    pub(crate) fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Bytes held between reads: the partial line and the data of the open event.
    /// The memory invariant in the module docs is about these two numbers; the fuzz
    /// targets check it after every read.
    pub(crate) fn buffered(&self) -> (usize, usize) {
        (self.line.len(), self.data.len())
    }

    /// The most the data of one event may hold: `16 × max_line`.
    pub(crate) fn max_data(&self) -> usize {
        self.max_data
    }

    fn feed_lines(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        let mut rest = self.skip_bom(chunk);
        if rest.is_empty() {
            // An empty read tells us nothing, not even whether a held CR was a CRLF.
            return Ok(());
        }
        if mem::take(&mut self.after_cr) && rest[0] == b'\n' {
            rest = &rest[1..];
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, line_end, after) = (&rest[..end], rest[end], &rest[end + 1..]);
            if self.line.is_empty() {
                // The whole line is in this chunk: parse it in place, no copy.
                self.check_line_len(line.len())?;
                self.process_line(line, out)?;
            } else {
                self.check_line_len(self.line.len() + line.len())?;
                // Taken out and put back so the buffer keeps its capacity.
                let mut buffered = mem::take(&mut self.line);
                buffered.extend_from_slice(line);
                let processed = self.process_line(&buffered, out);
                buffered.clear();
                self.line = buffered;
                processed?;
            }
            rest = after;
            if line_end == b'\r' {
                // A CR ends the line now (a CR-only stream must not wait for the next
                // byte); an LF right after it is the same line end, even in the next read.
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.check_line_len(self.line.len() + rest.len())?;
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// Drops one leading BOM, which may arrive split over several reads.
    fn skip_bom<'a>(&mut self, mut chunk: &'a [u8]) -> &'a [u8] {
        while let Bom::Matching(seen) = self.bom {
            let Some((&byte, rest)) = chunk.split_first() else {
                break;
            };
            if byte == BOM[seen] {
                chunk = rest;
                self.bom = if seen + 1 == BOM.len() {
                    Bom::Done
                } else {
                    Bom::Matching(seen + 1)
                };
            } else {
                // Not a BOM after all: the bytes held back are the start of the first
                // line. `chunk` still holds `byte`, so the caller checks the length.
                self.line.extend_from_slice(&BOM[..seen]);
                self.bom = Bom::Done;
            }
        }
        chunk
    }

    fn check_line_len(&self, len: usize) -> Result<(), ParseError> {
        if len > self.max_line {
            return Err(ParseError::LineTooLong {
                limit: self.max_line,
            });
        }
        Ok(())
    }

    /// Interprets one line, without its line end.
    fn process_line(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        match line.first() {
            None => {
                self.dispatch(out);
                return Ok(());
            }
            // A comment; checked before decoding, so heartbeats cost nothing.
            Some(b':') => return Ok(()),
            Some(_) => {}
        }
        // Decoded per line, so a character split across reads is whole by now. Borrows
        // when the line is valid UTF-8, so a complete line allocates nothing.
        let line: Cow<'_, str> = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            // WHATWG: one space after the colon is syntax, any further ones are value.
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            // WHATWG: a line without a colon is a field name with an empty value.
            None => (&*line, ""),
        };
        match field {
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_data {
                    return Err(ParseError::LineTooLong {
                        limit: self.max_data,
                    });
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            // WHATWG: an id containing NUL is ignored, as if the line were not there.
            "id" if !value.contains('\0') => self.block_id = Some(value.to_owned()),
            "retry" => {
                if let Some(ms) = parse_retry(value) {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            // Unknown fields (field names are case-sensitive) are ignored.
            _ => {}
        }
        Ok(())
    }

    /// WHATWG "dispatch the event", run at every blank line.
    fn dispatch(&mut self, out: &mut Vec<Event>) {
        let id = self.block_id.take();
        // Step 1 runs even when nothing is dispatched: an id-only block still moves
        // the last event ID. The buffer itself is never reset.
        if let Some(id) = &id {
            self.last_event_id.clone_from(id);
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        // Every data line appended an LF; the last one is not part of the data.
        self.data.pop();
        let event = Some(mem::take(&mut self.event_type)).filter(|name| !name.is_empty());
        out.push(Event {
            event,
            data: mem::take(&mut self.data),
            id,
        });
    }
}

/// A `retry` value counts only if it is non-empty and all ASCII digits.
fn parse_retry(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Saturate rather than ignore a value WHATWG says to accept.
    let ms = value.bytes().fold(0u64, |ms, digit| {
        ms.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    });
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 4096;

    /// Feeds `chunks` in order to a fresh parser; every chunk must be accepted.
    fn parse_chunks(parser: &mut Parser, chunks: &[&[u8]]) -> Vec<Event> {
        let mut out = Vec::new();
        for chunk in chunks {
            parser
                .feed(chunk, &mut out)
                .expect("input within the limits");
        }
        out
    }

    fn parse(input: &[u8]) -> Vec<Event> {
        parse_chunks(&mut Parser::new(LIMIT), &[input])
    }

    fn event(event: Option<&str>, data: &str, id: Option<&str>) -> Event {
        Event {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    // --- stream start ---

    #[test]
    fn leading_bom_is_skipped_once() {
        // The second BOM is part of the first field name, "\u{FEFF}data", which is unknown.
        assert_eq!(
            parse(b"\xEF\xBB\xBFdata: a\n\ndata: b\n\n"),
            [Event::data("a"), Event::data("b")]
        );
        assert_eq!(
            parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"),
            [Event::data("b")]
        );
    }

    #[test]
    fn bom_split_across_reads_is_still_skipped() {
        let mut parser = Parser::new(LIMIT);
        let events = parse_chunks(&mut parser, &[b"\xEF", b"", b"\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(events, [Event::data("a")]);
    }

    #[test]
    fn bom_is_only_skipped_at_stream_start() {
        assert_eq!(
            parse(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"),
            [Event::data("a")]
        );
    }

    #[test]
    fn partial_bom_is_kept_as_line_content() {
        // EF BB then "data" is an invalid UTF-8 prefix on the field name, not a BOM.
        let events = parse_chunks(
            &mut Parser::new(LIMIT),
            &[b"\xEF\xBB", b"data: a\n\ndata: b\n\n"],
        );
        assert_eq!(events, [Event::data("b")]);
        let events = parse_chunks(
            &mut Parser::new(LIMIT),
            &[b"\xEF", b":comment\ndata: a\n\n"],
        );
        assert_eq!(events, [Event::data("a")]);
    }

    // --- line ends ---

    #[test]
    fn lf_crlf_and_cr_all_end_lines() {
        assert_eq!(parse(b"data: a\ndata: b\n\n"), [Event::data("a\nb")]);
        assert_eq!(parse(b"data: a\r\ndata: b\r\n\r\n"), [Event::data("a\nb")]);
        assert_eq!(parse(b"data: a\rdata: b\r\r"), [Event::data("a\nb")]);
        assert_eq!(
            parse(b"data: a\rdata: b\r\ndata: c\n\r\n"),
            [Event::data("a\nb\nc")]
        );
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        let mut parser = Parser::new(LIMIT);
        let mut out = Vec::new();
        assert_eq!(parser.feed(b"data: a\r", &mut out), Ok(()));
        assert_eq!(out, []);
        assert_eq!(parser.feed(b"\ndata: b\n\n", &mut out), Ok(()));
        // A parser that took the LF as a blank line would dispatch "a" and "b" separately.
        assert_eq!(out, [Event::data("a\nb")]);
    }

    #[test]
    fn crlf_split_by_an_empty_read_is_still_one_line_end() {
        let events = parse_chunks(
            &mut Parser::new(LIMIT),
            &[b"data: a\r", b"", b"\ndata: b\n\n"],
        );
        assert_eq!(events, [Event::data("a\nb")]);
    }

    #[test]
    fn cr_at_end_of_read_ends_the_line_without_waiting() {
        let mut parser = Parser::new(LIMIT);
        let mut out = Vec::new();
        assert_eq!(parser.feed(b"data: a\r\r", &mut out), Ok(()));
        // A CR-only upstream must not have its event held back until more bytes arrive.
        assert_eq!(out, [Event::data("a")]);
    }

    #[test]
    fn cr_then_cr_in_the_next_read_is_two_line_ends() {
        let events = parse_chunks(&mut Parser::new(LIMIT), &[b"data: a\r", b"\rdata: b\r\r"]);
        assert_eq!(events, [Event::data("a"), Event::data("b")]);
    }

    // --- decoding ---

    #[test]
    fn multibyte_character_split_across_reads_decodes_whole() {
        // "é" is C3 A9, "€" is E2 82 AC.
        let events = parse_chunks(
            &mut Parser::new(LIMIT),
            &[b"data: \xC3", b"\xA9\xE2", b"\x82", b"\xAC\n\n"],
        );
        assert_eq!(events, [Event::data("é€")]);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(
            parse(b"data: a\xFFb\xC3\n\n"),
            [Event::data("a\u{FFFD}b\u{FFFD}")]
        );
        assert_eq!(
            parse(b"id: \xFF\ndata: x\n\n"),
            [event(None, "x", Some("\u{FFFD}"))]
        );
    }

    // --- dispatch ---

    #[test]
    fn blank_line_with_empty_data_buffer_dispatches_nothing_and_resets_event_type() {
        assert_eq!(parse(b"event: a\n\ndata: x\n\n"), [Event::data("x")]);
        assert_eq!(parse(b"\n\n\r\n\r"), []);
    }

    #[test]
    fn dispatch_strips_exactly_one_trailing_lf() {
        assert_eq!(parse(b"data: a\ndata\n\n"), [Event::data("a\n")]);
        // A bare `data` line makes the buffer "\n", which is not empty: dispatched as "".
        assert_eq!(parse(b"data\n\n"), [Event::data("")]);
    }

    #[test]
    fn dispatch_resets_data_and_event_type_but_not_last_event_id() {
        let mut parser = Parser::new(LIMIT);
        let events = parse_chunks(&mut parser, &[b"event: t\nid: 1\ndata: a\n\ndata: b\n\n"]);
        assert_eq!(events, [event(Some("t"), "a", Some("1")), Event::data("b")]);
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn unterminated_event_at_end_of_stream_is_not_dispatched() {
        assert_eq!(parse(b"data: a\n\ndata: b\n"), [Event::data("a")]);
        assert_eq!(parse(b"data: a\n\ndata: b"), [Event::data("a")]);
    }

    // --- lines and fields ---

    #[test]
    fn line_starting_with_colon_is_a_comment() {
        assert_eq!(parse(b":data: no\ndata: a\n: \n:\n\n"), [Event::data("a")]);
    }

    #[test]
    fn value_loses_one_leading_space_only() {
        assert_eq!(parse(b"data:a\n\n"), [Event::data("a")]);
        assert_eq!(parse(b"data: a\n\n"), [Event::data("a")]);
        assert_eq!(parse(b"data:  a \n\n"), [Event::data(" a ")]);
        assert_eq!(parse(b"data:\ta\n\n"), [Event::data("\ta")]);
    }

    #[test]
    fn field_is_before_the_first_colon() {
        assert_eq!(parse(b"data: a:b: c\n\n"), [Event::data("a:b: c")]);
    }

    #[test]
    fn line_without_colon_is_a_field_with_empty_value() {
        assert_eq!(parse(b"data\ndata\n\n"), [Event::data("\n")]);
        assert_eq!(
            parse(b"id: 1\ndata: a\n\nid\ndata: b\n\n")[1],
            event(None, "b", Some(""))
        );
    }

    #[test]
    fn field_names_are_case_sensitive_and_unknown_ones_are_ignored() {
        assert_eq!(
            parse(b"Data: no\nDATA: no\ndata : no\nfoo: bar\ndata: a\n\n"),
            [Event::data("a")]
        );
    }

    #[test]
    fn event_field_sets_the_type_and_the_last_one_wins() {
        assert_eq!(
            parse(b"event: a\nevent: b\ndata: x\n\n"),
            [event(Some("b"), "x", None)]
        );
    }

    #[test]
    fn empty_event_type_means_message() {
        assert_eq!(parse(b"event: a\nevent\ndata: x\n\n"), [Event::data("x")]);
    }

    #[test]
    fn data_lines_are_joined_with_lf() {
        assert_eq!(
            parse(b"data: a\ndata: b\ndata: c\n\n"),
            [Event::data("a\nb\nc")]
        );
    }

    // --- id ---

    #[test]
    fn id_with_nul_is_ignored() {
        let mut parser = Parser::new(LIMIT);
        let events = parse_chunks(&mut parser, &[b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\n"]);
        assert_eq!(events, [event(None, "a", Some("1")), Event::data("b")]);
        assert_eq!(parser.last_event_id(), "1");
        // Ignoring it does not undo a valid id earlier in the same block.
        assert_eq!(
            parse(b"id: 3\nid: \0\ndata: c\n\n"),
            [event(None, "c", Some("3"))]
        );
    }

    #[test]
    fn empty_id_resets_the_last_event_id() {
        let mut parser = Parser::new(LIMIT);
        let events = parse_chunks(&mut parser, &[b"id: 1\ndata: a\n\nid:\ndata: b\n\n"]);
        assert_eq!(
            events,
            [event(None, "a", Some("1")), event(None, "b", Some(""))]
        );
        assert_eq!(parser.last_event_id(), "");
    }

    #[test]
    fn event_without_id_field_has_no_id_and_keeps_the_last_event_id() {
        let mut parser = Parser::new(LIMIT);
        let events = parse_chunks(&mut parser, &[b"id: 1\ndata: a\n\ndata: b\n\n"]);
        assert_eq!(events[1], Event::data("b"));
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn id_only_block_moves_the_last_event_id_without_dispatching() {
        let mut parser = Parser::new(LIMIT);
        assert_eq!(parse_chunks(&mut parser, &[b"id: 7\n\n"]), []);
        assert_eq!(parser.last_event_id(), "7");
    }

    #[test]
    fn id_in_an_unterminated_block_is_not_committed() {
        let mut parser = Parser::new(LIMIT);
        parse_chunks(&mut parser, &[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"]);
        // WHATWG copies the id buffer into the last event ID only when a block ends.
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn with_last_event_id_carries_the_id_into_a_new_connection() {
        let mut parser = Parser::new(LIMIT).with_last_event_id("9");
        assert_eq!(
            parse_chunks(&mut parser, &[b"data: a\n\n"]),
            [Event::data("a")]
        );
        assert_eq!(parser.last_event_id(), "9");
    }

    // --- retry ---

    #[test]
    fn retry_sets_the_reconnection_time_in_milliseconds() {
        let mut parser = Parser::new(LIMIT);
        assert_eq!(parser.retry(), None);
        // Applied as soon as the line is read, without a blank line.
        parse_chunks(&mut parser, &[b"retry: 2500\n"]);
        assert_eq!(parser.retry(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn retry_must_be_ascii_digits() {
        for bogus in [
            "", " 1", "1 ", "-1", "+1", "1.5", "1e3", "0x10", "1000x", "\u{FF11}",
        ] {
            let mut parser = Parser::new(LIMIT);
            let line = format!("retry: 100\nretry: {bogus}\n");
            parse_chunks(&mut parser, &[line.as_bytes()]);
            assert_eq!(
                parser.retry(),
                Some(Duration::from_millis(100)),
                "retry: {bogus:?}"
            );
        }
    }

    #[test]
    fn retry_too_big_for_u64_saturates() {
        let mut parser = Parser::new(LIMIT);
        parse_chunks(&mut parser, &[b"retry: 99999999999999999999999\n"]);
        assert_eq!(parser.retry(), Some(Duration::from_millis(u64::MAX)));
    }

    // --- bounds ---

    #[test]
    fn line_over_limit_is_an_error_not_growth() {
        let mut parser = Parser::new(8);
        let mut out = Vec::new();
        assert_eq!(parser.feed(b"data: ab", &mut out), Ok(()));
        assert_eq!(
            parser.feed(b"c", &mut out),
            Err(ParseError::LineTooLong { limit: 8 })
        );
        assert!(
            parser.line.len() <= 8,
            "buffered {} bytes",
            parser.line.len()
        );
        assert_eq!(out, []);
    }

    #[test]
    fn complete_line_over_limit_in_one_read_is_an_error() {
        let mut out = Vec::new();
        let result = Parser::new(8).feed(b"data: abc\n\n", &mut out);
        assert_eq!(result, Err(ParseError::LineTooLong { limit: 8 }));
    }

    #[test]
    fn line_at_limit_is_accepted_and_line_end_does_not_count() {
        let mut parser = Parser::new(8);
        let events = parse_chunks(&mut parser, &[b"data: ab\r", b"\n\r\n"]);
        assert_eq!(events, [Event::data("ab")]);
    }

    #[test]
    fn over_long_comment_is_an_error_too() {
        let mut out = Vec::new();
        let result = Parser::new(8).feed(b":123456789", &mut out);
        assert_eq!(result, Err(ParseError::LineTooLong { limit: 8 }));
    }

    #[test]
    fn data_of_one_event_over_sixteen_lines_is_an_error() {
        // Each "data:abc" line (8 bytes, at the line limit) adds "abc\n": 32 fit in 16 × 8.
        let mut parser = Parser::new(8);
        let mut out = Vec::new();
        for _ in 0..32 {
            assert_eq!(parser.feed(b"data:abc\n", &mut out), Ok(()));
        }
        assert_eq!(
            parser.feed(b"data:abc\n", &mut out),
            Err(ParseError::LineTooLong { limit: 128 })
        );
        assert!(parser.data.len() <= 128);
    }

    #[test]
    fn parser_stays_failed_after_an_error() {
        let mut parser = Parser::new(4);
        let mut out = Vec::new();
        let error = Err(ParseError::LineTooLong { limit: 4 });
        assert_eq!(parser.feed(b"data: x\n", &mut out), error);
        assert_eq!(parser.feed(b"\n", &mut out), error);
        assert_eq!(out, []);
    }

    #[test]
    fn events_before_an_error_are_still_returned() {
        let mut out = Vec::new();
        let result = Parser::new(8).feed(b"data: a\n\ndata: too long\n\n", &mut out);
        assert_eq!(result, Err(ParseError::LineTooLong { limit: 8 }));
        assert_eq!(out, [Event::data("a")]);
    }

    #[test]
    fn error_message_names_the_limit() {
        let error = ParseError::LineTooLong { limit: 8 };
        assert_eq!(
            error.to_string(),
            "upstream sent a line longer than 8 bytes"
        );
    }

    // --- any input, any split ---

    /// Everything observable after feeding `chunks`, plus the largest buffers seen.
    fn run(
        input: &[u8],
        cuts: &[usize],
        max_line: usize,
    ) -> (Vec<Event>, Option<ParseError>, String, Option<Duration>) {
        let mut parser = Parser::new(max_line);
        let mut out = Vec::new();
        let mut error = None;
        let mut start = 0;
        for &end in cuts.iter().chain([input.len()].iter()) {
            if let Err(e) = parser.feed(&input[start..end], &mut out) {
                error = Some(e);
                break;
            }
            assert!(
                parser.line.len() <= max_line,
                "line buffer {} > {max_line}",
                parser.line.len()
            );
            assert!(parser.data.len() <= max_line * DATA_LINES_PER_EVENT);
            start = end;
        }
        (
            out,
            error,
            parser.last_event_id().to_owned(),
            parser.retry(),
        )
    }

    /// Bytes that hit every rule often: line ends, colons, field names, BOM, NUL, bad UTF-8.
    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b":".to_vec()),
            Just(b" ".to_vec()),
            Just(b"data".to_vec()),
            Just(b"event".to_vec()),
            Just(b"id".to_vec()),
            Just(b"retry".to_vec()),
            Just(b"12".to_vec()),
            Just(b"\0".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just("é".as_bytes().to_vec()),
            Just(b"\xFF".to_vec()),
            prop::collection::vec(any::<u8>(), 0..6),
        ];
        prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn any_split_of_any_input_parses_like_one_read(
            input in stream_bytes(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            max_line in prop_oneof![Just(6usize), Just(16), Just(LIMIT)],
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(run(&input, &cuts, max_line), run(&input, &[], max_line));
        }

        #[test]
        fn byte_at_a_time_parses_like_one_read(input in stream_bytes()) {
            let cuts: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(run(&input, &cuts, LIMIT), run(&input, &[], LIMIT));
        }
    }

    /// One test per web-platform-tests `eventsource/format-*` case. The body is what
    /// the WPT server script sends: `resources/message.py` appends "\n\n\n" to
    /// `message`, or "\n" with `newline=none`. The `format-mime-*` cases test the
    /// HTTP content type, which `upstream` checks, not the codec, so they are not here.
    mod wpt {
        use super::*;

        /// (data, last event ID) of each event as it is dispatched, fed a byte at a
        /// time, which is what WPT's `e.data` and `e.lastEventId` observe.
        fn observe(parser: &mut Parser, body: &[u8]) -> Vec<(String, String)> {
            let mut seen = Vec::new();
            let mut out = Vec::new();
            for byte in body {
                parser
                    .feed(std::slice::from_ref(byte), &mut out)
                    .expect("WPT bodies are within the limit");
                seen.extend(
                    out.drain(..)
                        .map(|e| (e.data, parser.last_event_id().to_owned())),
                );
            }
            seen
        }

        fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
            expected
                .iter()
                .map(|&(data, id)| (data.to_owned(), id.to_owned()))
                .collect()
        }

        #[test]
        fn format_bom() {
            // WPT: only the first BOM is skipped; "1" and "3" arrive, "2" (after a second BOM) never does.
            let body = "\u{FEFF}data:1\n\n\u{FEFF}data:2\n\ndata:3\n\n\n";
            assert_eq!(parse(body.as_bytes()), [Event::data("1"), Event::data("3")]);
        }

        #[test]
        fn format_bom_2() {
            // WPT: with two leading BOMs the first event is lost; "2" and "3" arrive, "1" does not.
            let body = "\u{FEFF}\u{FEFF}data:1\n\ndata:2\n\ndata:3\n\n\n";
            assert_eq!(parse(body.as_bytes()), [Event::data("2"), Event::data("3")]);
        }

        #[test]
        fn format_comments() {
            // WPT: comments ended by CR, LF and CRLF, with NUL and 2 KiB bodies, leave one event "1\n2\n3\n4".
            let long = "x".repeat(2 * 1024);
            let body = format!(
                "data:1\r:\0\n:\r\ndata:2\n:{long}\rdata:3\n:data:fail\r:{long}\ndata:4\n\n"
            );
            assert_eq!(parse(body.as_bytes()), [Event::data("1\n2\n3\n4")]);
        }

        #[test]
        fn format_data_before_final_empty_line() {
            // WPT: the unterminated "id:test / data:test2" block is never dispatched, and after
            // reconnecting lastEventId is "" (the id never became the last event ID).
            let mut parser = Parser::new(LIMIT);
            let body = b"retry:1000\ndata:test1\n\nid:test\ndata:test2\n";
            assert_eq!(observe(&mut parser, body), pairs(&[("test1", "")]));
            assert_eq!(parser.last_event_id(), "");
            assert_eq!(parser.retry(), Some(Duration::from_millis(1000)));
        }

        #[test]
        fn format_field_data() {
            // WPT: "data:" then blank gives "", two bare "data" lines give "\n", then "test".
            let body = b"data:\n\ndata\ndata\n\ndata:test\n\n\n";
            assert_eq!(
                parse(body),
                [Event::data(""), Event::data("\n"), Event::data("test")]
            );
        }

        #[test]
        fn format_field_event() {
            // WPT: a "test" event fires before the next unnamed one reaches onmessage.
            let body = b"event:test\ndata:x\n\ndata:x\n\n\n";
            assert_eq!(
                parse(body),
                [event(Some("test"), "x", None), Event::data("x")]
            );
        }

        #[test]
        fn format_field_event_empty() {
            // WPT: "event: " (empty after the space) is a plain message with data "data".
            assert_eq!(parse(b"event: \ndata:data\n\n\n"), [Event::data("data")]);
        }

        #[test]
        fn format_field_id() {
            // WPT: "hello" has lastEventId "…"; after reconnecting with it, the echo "…" still has lastEventId "…".
            let mut first = Parser::new(LIMIT);
            let body = "id: …\nretry: 200\ndata: hello\n\n";
            assert_eq!(
                observe(&mut first, body.as_bytes()),
                pairs(&[("hello", "…")])
            );
            let mut again = Parser::new(LIMIT).with_last_event_id(first.last_event_id());
            let echo = format!("data: {}\n\n", first.last_event_id());
            assert_eq!(observe(&mut again, echo.as_bytes()), pairs(&[("…", "…")]));
        }

        #[test]
        fn format_field_id_2() {
            // WPT: as format-field-id, and a second reconnect still sends and reports "…".
            let mut parser = Parser::new(LIMIT);
            let body = "id: …\nretry: 200\ndata: hello\n\n";
            assert_eq!(
                observe(&mut parser, body.as_bytes()),
                pairs(&[("hello", "…")])
            );
            for _ in 0..2 {
                parser = Parser::new(LIMIT).with_last_event_id(parser.last_event_id());
                let echo = format!("data: {}\n\n", parser.last_event_id());
                assert_eq!(observe(&mut parser, echo.as_bytes()), pairs(&[("…", "…")]));
            }
        }

        #[test]
        fn format_field_id_3() {
            // WPT: an event without id keeps the previous lastEventId; "id:" and a bare "id" reset it to "".
            let persists = b"id: 1\ndata: 1\n\ndata: 2\n\nid: 2\ndata:3\n\ndata:4\n\n";
            let seen = observe(&mut Parser::new(LIMIT), persists);
            assert_eq!(
                seen,
                pairs(&[("1", "1"), ("2", "1"), ("3", "2"), ("4", "2")])
            );
            for reset in [
                &b"id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n"[..],
                b"id: 1\ndata: 1\n\nid\ndata:2\n\ndata:3\n\n",
            ] {
                let seen = observe(&mut Parser::new(LIMIT), reset);
                assert_eq!(seen, pairs(&[("1", "1"), ("2", ""), ("3", "")]));
            }
        }

        #[test]
        fn format_field_id_null() {
            // WPT: an id containing U+0000 anywhere is ignored, so "hello" has lastEventId "".
            for id in ["\0\0", "x\0", "\0x", "x\0x", " \0"] {
                let mut parser = Parser::new(LIMIT);
                let body = format!("id: {id}\nretry: 200\ndata: hello\n\n");
                assert_eq!(
                    parse_chunks(&mut parser, &[body.as_bytes()]),
                    [Event::data("hello")],
                    "id {id:?}"
                );
                assert_eq!(parser.last_event_id(), "");
            }
        }

        #[test]
        fn format_field_parsing() {
            // WPT: only exact "data" fields count, one space is stripped, NUL is kept: "\0\n 2\n1\n3\n\n4".
            let body = b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n";
            assert_eq!(parse(body), [Event::data("\0\n 2\n1\n3\n\n4")]);
        }

        #[test]
        fn format_field_retry() {
            // WPT: "retry:03000" is decimal 3000 ms (not octal); reconnect comes after about 3 s.
            let mut parser = Parser::new(LIMIT);
            assert_eq!(
                parse_chunks(&mut parser, &[b"retry:03000\ndata:x\n\n\n"]),
                [Event::data("x")]
            );
            assert_eq!(parser.retry(), Some(Duration::from_millis(3000)));
        }

        #[test]
        fn format_field_retry_bogus() {
            // WPT: "retry:1000x" is ignored, so the earlier 3000 ms stands.
            let mut parser = Parser::new(LIMIT);
            parse_chunks(&mut parser, &[b"retry:3000\nretry:1000x\ndata:x\n\n\n"]);
            assert_eq!(parser.retry(), Some(Duration::from_millis(3000)));
        }

        #[test]
        fn format_field_retry_empty() {
            // WPT: a bare "retry" line is ignored and "test" is still delivered.
            let mut parser = Parser::new(LIMIT);
            assert_eq!(
                parse_chunks(&mut parser, &[b"retry\ndata:test\n\n\n"]),
                [Event::data("test")]
            );
            assert_eq!(parser.retry(), None);
        }

        #[test]
        fn format_field_unknown() {
            // WPT: unknown fields, " data" and text without a colon are ignored; data is "test\n\ntest".
            let body = b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n\n";
            assert_eq!(parse(body), [Event::data("test\n\ntest")]);
        }

        #[test]
        fn format_leading_space() {
            // WPT: a tab after the colon is kept, "data: " is empty, CR ends a line: "\ttest\n\ntest".
            assert_eq!(
                parse(b"data:\ttest\rdata: \ndata:test\n\n\n"),
                [Event::data("\ttest\n\ntest")]
            );
        }

        #[test]
        fn format_newlines() {
            // WPT: CRLF, LF and a final CR + LF (one line end) give one event "test\n\ntest".
            assert_eq!(
                parse(b"data:test\r\ndata\ndata:test\r\n\r\n"),
                [Event::data("test\n\ntest")]
            );
        }

        #[test]
        fn format_null_character() {
            // WPT: a NUL in data is delivered as "\0", not treated as an error.
            assert_eq!(parse(b"data:\0\n\n\n\n\n"), [Event::data("\0")]);
        }

        #[test]
        fn format_utf_8() {
            // WPT: the stream is UTF-8 whatever the charset parameter says: "ok…" (E2 80 A6).
            assert_eq!(parse(b"data:ok\xE2\x80\xA6\n\n\n"), [Event::data("ok…")]);
        }
    }
}
