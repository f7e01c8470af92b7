//! The file as written: optional fields, no defaults, no cross-field rules.
//!
//! Every struct denies unknown keys, and every leaf is a checked type (a unit from
//! [`super::units`], an address, a path template, an upstream target, a header), so a
//! bad value fails *during* deserialization, where serde_norway knows its line:column
//! and serde_path_to_error knows its key path. Defaults and rules that look at more
//! than one field belong to [`super::validate`]. This is the only file that names the
//! YAML crate's types in a signature.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;

use http::{HeaderName, HeaderValue};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::units::{ByteSize, Count, HumanDuration, Limit, NonZeroDuration, NumberOrText};
use super::{OverLimit, Overrides, PathTemplate, UpstreamTarget};

/// Deserializes the whole document. An empty document (or one holding only comments)
/// is `None`, so the caller can say "missing key `routes`" instead of a type error.
pub(super) fn from_str(
    text: &str,
) -> Result<Option<RawConfig>, serde_path_to_error::Error<serde_norway::Error>> {
    serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text))
}

/// The YAML syntax error in `text`, if any, as opposed to YAML of the wrong shape.
///
/// Used only on the error path. serde_norway hands the deserializer the events before
/// a syntax error, so a typed parse of a broken file may fail earlier with a misleading
/// "missing key"; reading the document into `IgnoredAny`, which accepts every shape,
/// fails only where the YAML itself is broken.
pub(super) fn syntax_error(text: &str) -> Option<serde_norway::Error> {
    de::IgnoredAny::deserialize(serde_norway::Deserializer::from_str(text)).err()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of gateway settings")]
pub(super) struct RawConfig {
    pub(super) listen: Option<Vec<RawListener>>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) heartbeat: Option<NonZeroDuration>,
    pub(super) client: Option<RawClient>,
    pub(super) drain: Option<RawDrain>,
    pub(super) replay: Option<RawReplay>,
    pub(super) upstream: Option<RawUpstream>,
    pub(super) limits: Option<RawLimits>,
    /// `Option` so that a missing and an empty `routes` both reach validation, which
    /// words each error for what the operator wrote.
    pub(super) routes: Option<Vec<RawRoute>>,
}

impl RawConfig {
    /// Merges command-line overrides into the file's values, before validation, so a
    /// flag meets the same checks as a key (pingora's `merge_with_opt`).
    pub(super) fn apply(&mut self, overrides: &Overrides) {
        if !overrides.listen.is_empty() {
            // `--listen` replaces the configured listeners with plain-HTTP ones.
            self.listen = Some(
                overrides
                    .listen
                    .iter()
                    .map(|&addr| RawListener {
                        addr: Addr(addr),
                        tls: None,
                    })
                    .collect(),
            );
        }
        if let Some(addr) = overrides.admin {
            self.admin.get_or_insert_with(RawAdmin::default).addr = Some(Addr(addr));
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a listener mapping with `addr` (and optionally `tls`)"
)]
pub(super) struct RawListener {
    pub(super) addr: Addr,
    pub(super) tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `cert` and `key`")]
pub(super) struct RawTls {
    pub(super) cert: FilePath,
    pub(super) key: FilePath,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `addr`")]
pub(super) struct RawAdmin {
    pub(super) addr: Option<Addr>,
}

/// Both the global `client:` and a route's `client:` override.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `queue` and/or `retry`"
)]
pub(super) struct RawClient {
    pub(super) queue: Option<Count>,
    pub(super) retry: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `retry`, `retry_jitter` and/or `deadline`"
)]
pub(super) struct RawDrain {
    pub(super) retry: Option<HumanDuration>,
    pub(super) retry_jitter: Option<HumanDuration>,
    pub(super) deadline: Option<NonZeroDuration>,
}

/// Both the global `replay:` and a route's `replay:` override.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `events` and/or `gap_event`"
)]
pub(super) struct RawReplay {
    pub(super) events: Option<Count>,
    pub(super) gap_event: Option<EventName>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `connect_timeout`, `backoff`, `linger` and/or `max_line`"
)]
pub(super) struct RawUpstream {
    pub(super) connect_timeout: Option<NonZeroDuration>,
    pub(super) backoff: Option<RawBackoff>,
    pub(super) linger: Option<HumanDuration>,
    pub(super) max_line: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `initial` and/or `max`"
)]
pub(super) struct RawBackoff {
    pub(super) initial: Option<NonZeroDuration>,
    pub(super) max: Option<NonZeroDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of limits")]
pub(super) struct RawLimits {
    pub(super) max_clients: Option<Limit>,
    pub(super) max_clients_per_route: Option<Limit>,
    pub(super) max_clients_per_ip: Option<Limit>,
    pub(super) over_limit: Option<OverLimit>,
    pub(super) header_read_timeout: Option<NonZeroDuration>,
    pub(super) max_header_size: Option<ByteSize>,
    pub(super) idle_timeout: Option<NonZeroDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `origins` (and optionally `credentials`)"
)]
pub(super) struct RawCors {
    pub(super) origins: Vec<Origin>,
    pub(super) credentials: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route mapping with `path` and `upstream`"
)]
pub(super) struct RawRoute {
    pub(super) path: PathTemplate,
    pub(super) upstream: UpstreamTarget,
    #[serde(default)]
    pub(super) headers: RawHeaders,
    pub(super) replay: Option<RawReplay>,
    pub(super) heartbeat: Option<NonZeroDuration>,
    pub(super) client: Option<RawClient>,
    pub(super) assign_ids: Option<bool>,
    pub(super) backfill: Option<bool>,
    pub(super) ca: Option<FilePath>,
    pub(super) over_limit: Option<OverLimit>,
    pub(super) cors: Option<RawCors>,
}

// === leaf types ===

/// `IP:PORT`. Host names are not resolved: config never does I/O, and a listener
/// address that changes with DNS would surprise an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Addr(pub(super) SocketAddr);

impl TryFrom<&str> for Addr {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        text.parse().map(Addr).map_err(|_| {
            format!(
                "invalid address {text:?} (expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080; host names are not resolved)"
            )
        })
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_str_via(deserializer, "an address such as 127.0.0.1:8080")
    }
}

/// A file path as written; validation resolves it against the config file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FilePath(pub(super) PathBuf);

impl TryFrom<&str> for FilePath {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("path is empty".to_owned());
        }
        Ok(FilePath(PathBuf::from(text)))
    }
}

impl<'de> Deserialize<'de> for FilePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_str_via(deserializer, "a file path")
    }
}

/// One entry of `cors.origins`: `*`, or an origin as browsers send it in `Origin`
/// (`https://app.example.com`, `http://localhost:3000`): scheme, host and optional
/// port, no path. Kept lowercase, since browsers serialize origins that way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Origin(pub(super) String);

impl TryFrom<&str> for Origin {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Origin(text.to_owned()));
        }
        let invalid = || {
            format!(
                "invalid origin {text:?} (expected `*` or scheme://host[:port] such as https://app.example.com, without a path)"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(invalid)?;
        let scheme_ok = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        let rest_ok = !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@'])
            && rest.parse::<http::uri::Authority>().is_ok();
        if !scheme_ok || !rest_ok {
            return Err(invalid());
        }
        Ok(Origin(text.to_ascii_lowercase()))
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_str_via(
            deserializer,
            "an origin such as https://app.example.com, or *",
        )
    }
}

impl<'de> Deserialize<'de> for OverLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `deserialize_any`: `503` arrives as an integer, `retry` as a string.
        deserializer.deserialize_any(NumberOrText::<OverLimit>::new("`retry` or `503`"))
    }
}

/// The `event:` name of the gap notice. Empty disables the notice. It is written into
/// an `event:` line, so a line break would let the config inject SSE fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EventName(pub(super) String);

impl TryFrom<&str> for EventName {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        if text.chars().any(char::is_control) {
            return Err(format!(
                "event name {text:?} must not contain line breaks or control characters"
            ));
        }
        Ok(EventName(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for EventName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_str_via(deserializer, "an event name")
    }
}

impl<'de> Deserialize<'de> for PathTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_str_via(deserializer, "a path such as /events or /rooms/{room}")
    }
}

impl<'de> Deserialize<'de> for UpstreamTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_str_via(
            deserializer,
            "an upstream such as http://127.0.0.1:9000/events or builtin:clock",
        )
    }
}

/// Headers a route may not set: hop-by-hop headers belong to one connection, and the
/// others are written by the upstream client itself (`host` from the URL,
/// `last-event-id` for resumption). A configured copy would be duplicated or wrong.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "last-event-id",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A route's `headers:` map, in file order. Values are marked sensitive at once, so no
/// `Debug` of the config can print a credential.
#[derive(Debug, Default)]
pub(super) struct RawHeaders(pub(super) Vec<(HeaderName, HeaderValue)>);

impl<'de> Deserialize<'de> for RawHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeadersVisitor)
    }
}

struct HeadersVisitor;

impl<'de> Visitor<'de> for HeadersVisitor {
    type Value = RawHeaders;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a mapping of header name to value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeaders, A::Error> {
        let mut headers = Vec::new();
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            // The name is checked together with the value, inside the value's scalar:
            // that way the error carries the key path `routes[i].headers.<name>`.
            let header = map.next_value_seed(HeaderSeed {
                name: &name,
                seen: &seen,
            })?;
            seen.insert(header.0.clone());
            headers.push(header);
        }
        Ok(RawHeaders(headers))
    }
}

struct HeaderSeed<'a> {
    name: &'a str,
    seen: &'a HashSet<HeaderName>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = (HeaderName, HeaderValue);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = (HeaderName, HeaderValue);

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a header value")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        let name = HeaderName::from_bytes(self.name.as_bytes())
            .map_err(|_| E::custom(format!("invalid header name {:?}", self.name)))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(E::custom(format!(
                "header `{name}` is managed by the gateway and cannot be configured"
            )));
        }
        if self.seen.contains(&name) {
            // Header names are case-insensitive: `Authorization` and `authorization` clash.
            return Err(E::custom(format!("header `{name}` is given twice")));
        }
        // The value is never echoed: it is likely a credential.
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            E::custom(format!(
                "invalid value for header `{name}` (visible ASCII, spaces and tabs only)"
            ))
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

// === deserialization glue ===

/// Deserializes `T` from a YAML scalar through `T: TryFrom<&str>`.
///
/// Why not `#[serde(try_from = "String")]`: serde runs that conversion after the scalar
/// has been consumed, so serde_norway pins its error on the enclosing mapping. Raising
/// the error inside `visit_str` pins it on the scalar itself, at the value's own
/// line:column.
pub(super) fn deserialize_str_via<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: for<'a> TryFrom<&'a str, Error = String>,
{
    deserializer.deserialize_str(StrVisitor {
        expecting,
        target: PhantomData,
    })
}

struct StrVisitor<T> {
    expecting: &'static str,
    target: PhantomData<T>,
}

impl<'de, T> Visitor<'de> for StrVisitor<T>
where
    T: for<'a> TryFrom<&'a str, Error = String>,
{
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        T::try_from(text).map_err(E::custom)
    }
}
