//! The event-stream encoder: [`Event`]s, `retry:` hints and comments as wire bytes.
//!
//! It owns the bytes the gateway writes to clients; when and to whom they are written
//! is the hub's and the server's business. Every event is encoded once and the same
//! `Bytes` is shared by all clients.
//!
//! Invariant: each function writes whole blocks, ending in a blank line, that
//! [`Parser`](super::Parser) reads back to the same value, into a buffer sized
//! exactly up front, so each call allocates once.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::Event;

impl Event {
    /// Serializes the event once into wire form:
    /// `id: …\nevent: …\ndata: …\n(data: …\n)*\n`.
    ///
    /// - `id:` is written when `id` is `Some`, even `Some("")`, which resets the
    ///   client's last event ID.
    /// - `event:` is written only for a non-empty type; `None` and `""` both mean
    ///   `message`.
    /// - `data` is split at CRLF, CR and LF into one `data:` line each, so CR and CRLF
    ///   come back as LF. Empty data writes one `data: ` line, which a parser
    ///   dispatches as an event with empty data (WPT `format-field-data`).
    /// - Every field gets exactly one space after the colon, so a value that starts
    ///   with a space keeps it.
    ///
    /// `event` and `id` are single-line by construction (the parser splits lines before
    /// it sees fields). A CR or LF in them would start a new field on the wire, so only
    /// the part before the first one is written. An `id` containing NUL is written as
    /// is, but a parser ignores it; the parser never produces one.
    pub(crate) fn encode(&self) -> Bytes {
        let id = self.id.as_deref().map(first_line);
        let event = self
            .event
            .as_deref()
            .map(first_line)
            .filter(|name| !name.is_empty());
        let len = id.map_or(0, |id| field_len("id", id))
            + event.map_or(0, |name| field_len("event", name))
            + lines(&self.data)
                .map(|line| field_len("data", line))
                .sum::<usize>()
            + 1;
        let mut buf = BytesMut::with_capacity(len);
        if let Some(id) = id {
            put_field(&mut buf, "id", id);
        }
        if let Some(name) = event {
            put_field(&mut buf, "event", name);
        }
        for line in lines(&self.data) {
            put_field(&mut buf, "data", line);
        }
        buf.put_u8(b'\n');
        debug_assert_eq!(buf.len(), len, "the buffer is sized exactly up front");
        buf.freeze()
    }
}

/// A `retry:` hint on its own: `retry: 2000\n\n`.
pub(crate) fn encode_retry(retry_ms: u64) -> Bytes {
    // "retry: " + at most 20 digits (u64::MAX) + "\n\n".
    let mut buf = BytesMut::with_capacity("retry: ".len() + 20 + 2);
    writeln!(buf, "retry: {retry_ms}\n").expect("writing to a BytesMut never fails");
    buf.freeze()
}

/// A comment block, as used for heartbeats: `: text\n\n`. Text spanning several lines
/// (CR, LF or CRLF) becomes one comment line per line, so it can never start a field.
pub(crate) fn encode_comment(text: &str) -> Bytes {
    // On the wire a comment is a line with an empty field name: ":" + " " + text.
    let len = lines(text).map(|line| field_len("", line)).sum::<usize>() + 1;
    let mut buf = BytesMut::with_capacity(len);
    for line in lines(text) {
        put_field(&mut buf, "", line);
    }
    buf.put_u8(b'\n');
    debug_assert_eq!(buf.len(), len, "the buffer is sized exactly up front");
    buf.freeze()
}

/// Bytes taken by `name: value\n`.
fn field_len(name: &str, value: &str) -> usize {
    name.len() + ": ".len() + value.len() + 1
}

fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

/// The lines of `text` split at CRLF, CR and LF, as a parser would split them. Always
/// yields at least one (possibly empty) line: `""` is one line, `"a\n"` is two.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(end) => {
                let line_end = if text[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&text[end + line_end..]);
                Some(&text[..end])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// `value` up to its first CR or LF.
fn first_line(value: &str) -> &str {
    value.find(['\r', '\n']).map_or(value, |end| &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: Option<&str>, data: &str, id: Option<&str>) -> Event {
        Event {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn writes_id_then_event_then_data_then_a_blank_line() {
        let wire = event(Some("tick"), "42", Some("7")).encode();
        assert_eq!(&wire[..], b"id: 7\nevent: tick\ndata: 42\n\n");
    }

    #[test]
    fn message_event_without_id_is_data_only() {
        assert_eq!(&Event::data("hi").encode()[..], b"data: hi\n\n");
    }

    #[test]
    fn empty_event_type_is_not_written() {
        assert_eq!(&event(Some(""), "x", None).encode()[..], b"data: x\n\n");
    }

    #[test]
    fn empty_id_is_written_so_it_resets_the_client() {
        assert_eq!(
            &event(None, "x", Some("")).encode()[..],
            b"id: \ndata: x\n\n"
        );
    }

    #[test]
    fn each_data_line_gets_its_own_field_and_cr_crlf_become_lf() {
        let wire = Event::data("a\nb\r\nc\rd").encode();
        assert_eq!(&wire[..], b"data: a\ndata: b\ndata: c\ndata: d\n\n");
        let wire = Event::data("\r\n\n").encode();
        assert_eq!(&wire[..], b"data: \ndata: \ndata: \n\n");
    }

    #[test]
    fn empty_data_writes_one_empty_data_line() {
        // Parses back as an event with data "" (the data buffer is "\n", not empty).
        assert_eq!(&Event::data("").encode()[..], b"data: \n\n");
    }

    #[test]
    fn values_get_exactly_one_space_after_the_colon() {
        let wire = event(Some(" t"), " a", Some(" 1")).encode();
        assert_eq!(&wire[..], b"id:  1\nevent:  t\ndata:  a\n\n");
    }

    #[test]
    fn line_ends_in_event_type_or_id_cannot_start_a_field() {
        let wire = event(Some("t\ndata: forged"), "x", Some("1\rretry: 1")).encode();
        assert_eq!(&wire[..], b"id: 1\nevent: t\ndata: x\n\n");
    }

    #[test]
    fn retry_hint_is_milliseconds_and_a_blank_line() {
        assert_eq!(&encode_retry(2000)[..], b"retry: 2000\n\n");
        assert_eq!(&encode_retry(0)[..], b"retry: 0\n\n");
        assert_eq!(
            &encode_retry(u64::MAX)[..],
            b"retry: 18446744073709551615\n\n"
        );
    }

    #[test]
    fn comment_is_one_line_and_a_blank_line() {
        assert_eq!(&encode_comment("heartbeat")[..], b": heartbeat\n\n");
        assert_eq!(&encode_comment("")[..], b": \n\n");
    }

    #[test]
    fn multi_line_comment_becomes_several_comment_lines() {
        let wire = encode_comment("a\r\ndata: forged\rb\n");
        assert_eq!(&wire[..], b": a\n: data: forged\n: b\n: \n\n");
    }
}
