//! The Server-Sent Events codec, with no I/O: upstream bytes in, [`Event`]s out
//! ([`Parser`]), and events, `retry:` hints and comments out as wire bytes
//! ([`Event::encode`], [`encode_retry`], [`encode_comment`]).
//!
//! Sockets, reconnecting and fan-out belong to `upstream`, `hub` and `server`;
//! this module depends on nothing else of ours.
//!
//! Invariant: whatever [`Event::encode`] writes, [`Parser`] reads back as the same
//! event (CR and CRLF inside `data` come back as LF), however the bytes are split
//! into reads.

mod encode;
mod parse;

pub(crate) use encode::{encode_comment, encode_retry};
pub(crate) use parse::{ParseError, Parser};

/// One dispatched event, as the WHATWG "dispatch the event" step produces it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Event {
    /// The `event` field, if the block set a non-empty one; `None` means `message`.
    pub(crate) event: Option<String>,
    /// The data lines joined by LF, without the final LF. May be empty: a block
    /// with a bare `data` line is dispatched with empty data.
    pub(crate) data: String,
    /// `Some` iff this event's own block had a valid (NUL-free) `id` field; the value
    /// may be `""`, which resets the client's last event ID. `None` means the block
    /// said nothing, so the previous last event ID still applies.
    pub(crate) id: Option<String>,
}

impl Event {
    /// An unnamed event without an id carrying `data`.
    #[cfg(test)]
    pub(crate) fn data(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses `wire` fed in pieces cut at `cuts` (indices into `wire`, any order).
    fn parse_in_pieces(wire: &[u8], cuts: &[prop::sample::Index]) -> (Vec<Event>, Parser) {
        let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
        at.push(0);
        at.push(wire.len());
        at.sort_unstable();
        let mut parser = Parser::new(1 << 20);
        let mut out = Vec::new();
        for piece in at.windows(2) {
            parser
                .feed(&wire[piece[0]..piece[1]], &mut out)
                .expect("encoded events stay within the limits");
        }
        (out, parser)
    }

    /// What the parser hands back for an event we encoded.
    fn as_parsed(event: &Event) -> Event {
        Event {
            event: event.event.clone().filter(|name| !name.is_empty()),
            data: event.data.replace("\r\n", "\n").replace('\r', "\n"),
            id: event.id.clone(),
        }
    }

    fn data_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("\n".to_owned()),
            Just("\r".to_owned()),
            Just("\r\n".to_owned()),
            Just(" ".to_owned()),
            Just(":".to_owned()),
            "[^\r\n]{0,8}",
        ];
        prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
    }

    fn event_strategy() -> impl Strategy<Value = Event> {
        (
            prop::option::of("[^\r\n]{0,10}"),
            data_strategy(),
            prop::option::of("[^\0\r\n]{0,10}"),
        )
            .prop_map(|(event, data, id)| Event { event, data, id })
    }

    proptest! {
        #[test]
        fn parse_of_encode_is_identity_for_any_events_and_any_split(
            events in prop::collection::vec(event_strategy(), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let wire: Vec<u8> = events.iter().flat_map(|event| event.encode()).collect();
            let (parsed, parser) = parse_in_pieces(&wire, &cuts);
            let expected: Vec<Event> = events.iter().map(as_parsed).collect();
            prop_assert_eq!(parsed, expected);
            let last_id = events.iter().rev().find_map(|event| event.id.as_deref());
            prop_assert_eq!(parser.last_event_id(), last_id.unwrap_or(""));
        }

        #[test]
        fn heartbeats_and_retry_hints_between_events_change_nothing(
            events in prop::collection::vec(event_strategy(), 0..6),
            comment in data_strategy(),
            retry_ms in any::<u64>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut wire = encode_retry(retry_ms).to_vec();
            for event in &events {
                wire.extend_from_slice(&encode_comment(&comment));
                wire.extend_from_slice(&event.encode());
            }
            let (parsed, parser) = parse_in_pieces(&wire, &cuts);
            prop_assert_eq!(parsed, events.iter().map(as_parsed).collect::<Vec<_>>());
            prop_assert_eq!(parser.retry(), Some(std::time::Duration::from_millis(retry_ms)));
        }
    }

    #[test]
    fn data_constructor_makes_an_unnamed_event_without_id() {
        assert_eq!(
            Event::data("x"),
            Event {
                event: None,
                data: "x".to_owned(),
                id: None
            }
        );
    }
}
