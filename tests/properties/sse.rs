//! The SSE parser on arbitrary bytes in arbitrary splits.
//!
//! Properties, each checked by [`check`]:
//! 1. no input and no split makes it panic;
//! 2. after every accepted read it holds at most `max_line` bytes of partial line and
//!    `16 × max_line` bytes of event data, and every event it hands out is within
//!    those bounds and well formed (no line break in a name or id, no CR in data, no
//!    NUL in an id);
//! 3. fed in any split it reports exactly what it reports for the whole input in one
//!    read: the same events, the same error, the same last event ID and `retry`;
//! 4. within its bounds it agrees with a plain, unbounded, one-shot reading of the
//!    WHATWG "event stream interpretation" ([`whatwg`]); past them, the events it
//!    dispatched before giving up are a prefix of that reading's.

use std::time::Duration;

use sse_gateway::fuzzing::{SseEvent, SseParser};

/// What one run of the parser over the whole input reported.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub events: Vec<SseEvent>,
    pub error: Option<String>,
    pub last_event_id: String,
    pub retry: Option<Duration>,
}

/// Every property, for `input` read in the pieces that `cuts` (offsets, any order,
/// out-of-range ones ignored) make, under a line bound of `max_line`.
pub fn check(input: &[u8], max_line: usize, cuts: &[usize]) {
    let max_line = max_line.max(1);
    let whole = run(input, max_line, &[]);
    let split = run(input, max_line, cuts);
    assert_eq!(
        split, whole,
        "split at {cuts:?} (max_line {max_line}) differs from one read"
    );

    let reference = whatwg(input);
    match &whole.error {
        None => {
            assert_eq!(whole.events, reference.events, "events differ from WHATWG");
            assert_eq!(
                whole.last_event_id, reference.last_event_id,
                "last event ID differs from WHATWG"
            );
            assert_eq!(whole.retry, reference.retry, "retry differs from WHATWG");
        }
        Some(_) => assert!(
            reference.events.starts_with(&whole.events),
            "events before the error are not a prefix of WHATWG's"
        ),
    }
}

/// [`check`] with the choices derived from the input itself, for libFuzzer: a small
/// line bound (to reach the error paths), byte-at-a-time reads (every CR at a read's
/// end), a few random splits, and a bound the input cannot reach (so the WHATWG
/// comparison covers everything).
pub fn check_fuzz_input(input: &[u8]) {
    let mut rng = super::Rng::new(super::fnv1a(input));
    let small = 1 + rng.below(64);
    let every_byte: Vec<usize> = (1..input.len()).collect();
    check(input, small, &every_byte);
    let random: Vec<usize> = (0..1 + rng.below(8))
        .map(|_| rng.below(input.len() + 1))
        .collect();
    check(input, small, &random);
    check(input, input.len() + 1, &random);
}

/// Feeds `input` in the pieces `cuts` make, checking the bounds after every read.
pub fn run(input: &[u8], max_line: usize, cuts: &[usize]) -> Outcome {
    let mut at: Vec<usize> = cuts.iter().copied().filter(|&c| c <= input.len()).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.dedup();

    let mut parser = SseParser::new(max_line);
    let max_data = parser.max_data();
    let mut events = Vec::new();
    let mut error = None;
    for piece in at.windows(2) {
        let result = parser.feed(&input[piece[0]..piece[1]], &mut events);
        if let Err(message) = result {
            assert!(!message.is_empty(), "an error without a message");
            // The parser is finished: every later read answers the same.
            assert_eq!(
                parser.feed(b"data: more\n\n", &mut Vec::new()),
                Err(message.clone())
            );
            error = Some(message);
            break;
        }
        let (line, data) = parser.buffered();
        assert!(
            line <= max_line,
            "holds {line} bytes of line, bound {max_line}"
        );
        assert!(
            data <= max_data,
            "holds {data} bytes of data, bound {max_data}"
        );
    }
    for event in &events {
        assert!(event.data.len() < max_data, "event data over the bound");
        assert!(!event.data.contains('\r'), "CR in data: {event:?}");
        if let Some(name) = &event.event {
            assert!(!name.is_empty(), "an empty event type must be None");
            assert!(!name.contains(['\r', '\n']), "line break in event type");
        }
        if let Some(id) = &event.id {
            assert!(!id.contains(['\r', '\n', '\0']), "bad id {id:?}");
        }
    }
    Outcome {
        events,
        error,
        last_event_id: parser.last_event_id().to_owned(),
        retry: parser.retry(),
    }
}

/// The WHATWG algorithm read literally: decode the whole stream (one leading BOM
/// dropped, invalid UTF-8 replaced), split it into lines, and interpret each line, with
/// no bound and no incremental state. `error` is always `None`.
pub fn whatwg(input: &[u8]) -> Outcome {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let text = String::from_utf8_lossy(input);

    let mut lines = Vec::new();
    let mut rest = &*text;
    // A line needs its end; whatever follows the last line end is never processed.
    while let Some(end) = rest.find(['\r', '\n']) {
        lines.push(&rest[..end]);
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }

    let mut out = Outcome {
        events: Vec::new(),
        error: None,
        last_event_id: String::new(),
        retry: None,
    };
    let (mut data, mut event_type, mut id_buffer) = (String::new(), String::new(), String::new());
    // Whether this block set the ID buffer: the gateway forwards `id:` only then.
    let mut block_set_id = false;
    for line in lines {
        if line.is_empty() {
            // Dispatch.
            out.last_event_id.clone_from(&id_buffer);
            let id = block_set_id.then(|| id_buffer.clone());
            block_set_id = false;
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            out.events.push(SseEvent {
                event: Some(std::mem::take(&mut event_type)).filter(|t| !t.is_empty()),
                data: std::mem::take(&mut data),
                id,
            });
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => {
                id_buffer = value.to_owned();
                block_set_id = true;
            }
            // WPT format-field-retry-empty: an empty value is not a number. Values too
            // big for u64 milliseconds saturate, as the gateway documents.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                let ms = value.bytes().fold(0u64, |ms, d| {
                    ms.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                out.retry = Some(Duration::from_millis(ms));
            }
            _ => {}
        }
    }
    out
}
