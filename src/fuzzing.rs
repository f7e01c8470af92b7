//! Entry points for the fuzz targets in `fuzz/` and for the property tests that
//! mirror them in `tests/fuzz_properties.rs`.
//!
//! **Not a stable API.** This module is hidden from the docs and exists only because
//! those two drivers live outside the crate while the code they exercise is
//! `pub(crate)`. Every item is a thin wrapper that calls exactly what the gateway runs
//! (the SSE [`Parser`](crate::sse::Parser), the route table, the upstream resolution)
//! and adds no behaviour of its own; it changes whenever they do.
//!
//! The configuration needs no wrapper: `config::Config::parse` is public already.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::hub::SourceSpec;
use crate::server::routes::RouteTable;
use crate::sse::{Event, Parser};

// === SSE parser ===

/// One dispatched event, as [`Parser`](crate::sse::Parser) produces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// `None` means `message`.
    pub event: Option<String>,
    pub data: String,
    /// `Some` iff the event's own block set a valid id.
    pub id: Option<String>,
}

impl From<Event> for SseEvent {
    fn from(event: Event) -> Self {
        Self {
            event: event.event,
            data: event.data,
            id: event.id,
        }
    }
}

/// The gateway's incremental SSE parser for one upstream connection.
#[derive(Debug)]
pub struct SseParser(Parser);

impl SseParser {
    /// Refuses lines over `max_line` bytes and event data over `16 × max_line`.
    pub fn new(max_line: usize) -> Self {
        Self(Parser::new(max_line))
    }

    /// Feeds one read; completed events are appended to `out`.
    ///
    /// # Errors
    ///
    /// The parser's error message once a bound is exceeded (then on every later call).
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        let mut events = Vec::new();
        let result = self.0.feed(chunk, &mut events);
        out.extend(events.into_iter().map(SseEvent::from));
        result.map_err(|error| error.to_string())
    }

    /// The value to send as `Last-Event-ID` on reconnect.
    pub fn last_event_id(&self) -> &str {
        self.0.last_event_id()
    }

    /// The latest valid `retry:`.
    pub fn retry(&self) -> Option<Duration> {
        self.0.retry()
    }

    /// Bytes held between reads: (partial line, open event's data).
    pub fn buffered(&self) -> (usize, usize) {
        self.0.buffered()
    }

    /// The bound on one event's data.
    pub fn max_data(&self) -> usize {
        self.0.max_data()
    }
}

// === routes ===

/// What the public listener does with a request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteMatch {
    /// `404`.
    NotFound,
    /// `400`: a template matched but the value for `{name}` is not acceptable.
    BadValue { name: String },
    /// A route matched.
    Matched {
        /// The route's configured path.
        route: String,
        /// Decoded template values, in path order.
        values: Vec<(String, String)>,
        /// The source key (resolved upstream URL, or `builtin:NAME`), or why it could
        /// not be resolved (the request would get `502`).
        source: Result<String, String>,
    },
}

/// The route table of a configuration, as the server builds it.
#[derive(Debug)]
pub struct Routes {
    table: RouteTable,
}

impl Routes {
    pub fn new(config: &Config) -> Self {
        Self {
            table: RouteTable::new(&config.routes),
        }
    }

    /// Matches `path` (no query string) and resolves the upstream, as a `GET` would.
    pub fn find(&self, path: &str) -> RouteMatch {
        let (route, values) = match self.table.find(path) {
            Ok(None) => return RouteMatch::NotFound,
            Err(bad) => return RouteMatch::BadValue { name: bad.name },
            Ok(Some(matched)) => matched,
        };
        let params: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let source = SourceSpec::for_route(&route.config, Arc::clone(&route.headers), &params)
            .map(|spec| spec.key.as_str().to_owned())
            .map_err(|error| error.to_string());
        RouteMatch::Matched {
            route: route.config.path.as_str().to_owned(),
            values: values
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
            source,
        }
    }
}
