//! The gateway's configuration: YAML file → validated [`Config`].
//!
//! Owns the types the rest of the gateway reads (`Config`, `RouteConfig`, the path and
//! upstream templates) and the only code that parses the file. Loading happens in three
//! steps: [`raw`] deserializes the file as written, checking every value where it stands
//! (so errors carry line:column); command-line [`Overrides`] are merged into that raw
//! value; [`validate`] fills in defaults and applies the rules that span fields.
//!
//! Invariant: a `Config` is complete and consistent. Every default is filled in, every
//! route's settings are its effective ones, and every `{name}` in a route's upstream is
//! a parameter of its path and the other way round. No other module re-validates.
//!
//! Config never touches a socket; `Config::load` reads the one file and nothing else
//! (TLS files are read by the server when it binds).

mod error;
mod raw;
mod units;
mod validate;

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub use self::error::ConfigError;
use self::units::{format_duration, format_size};

/// Where the public listener binds when the file has no `listen`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Where the admin listener binds when the file has no `admin.addr`.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));
/// How long a client may be idle before it gets a heartbeat comment.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it was loaded from, as given (for messages and reloads).
    pub file: PathBuf,
    /// Public listeners; never empty.
    pub listen: Vec<ListenerConfig>,
    pub admin: AdminConfig,
    /// Global heartbeat interval; each route carries its effective value.
    pub heartbeat: Duration,
    /// Global client settings; each route carries its effective value.
    pub client: ClientConfig,
    pub drain: DrainConfig,
    /// Global replay settings; each route carries its effective value.
    pub replay: ReplayConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    /// In file order; never empty, no two match the same request paths.
    pub routes: Vec<RouteConfig>,
}

/// One public listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// `None`: plain HTTP (HTTP/1.1, and HTTP/2 by prior knowledge).
    pub tls: Option<TlsConfig>,
}

/// PEM files for a TLS listener. Relative paths in the file are resolved against the
/// config file's directory, so the gateway can start from any working directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin listener (`/healthz`, `/readyz`, `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub addr: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: DEFAULT_ADMIN,
        }
    }
}

/// Per-client stream settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Events a client may fall behind before it is disconnected; at least 1.
    pub queue: usize,
    /// The `retry:` sent at the start of every client stream.
    pub retry: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            queue: 1024,
            retry: Duration::from_secs(2),
        }
    }
}

/// The shutdown sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainConfig {
    /// The `retry:` hint sent to every client when draining.
    pub retry: Duration,
    /// Each client's hint is `retry` plus a random share of this.
    pub retry_jitter: Duration,
    /// The whole drain ends by then; greater than zero.
    pub deadline: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            retry: Duration::from_secs(3),
            retry_jitter: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
        }
    }
}

/// Last-Event-ID resumption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Recent events kept per source; at least 1.
    pub events: usize,
    /// The event type of the gap notice; empty disables the notice. Has no line breaks.
    pub gap_event: String,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            events: 1024,
            gap_event: "gap".to_owned(),
        }
    }
}

/// How upstream connections are made and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Greater than zero.
    pub connect_timeout: Duration,
    pub backoff: BackoffConfig,
    /// How long a source (and its replay buffer) outlives its last client.
    pub linger: Duration,
    /// The longest upstream line accepted, in bytes; at least 1.
    pub max_line: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            backoff: BackoffConfig::default(),
            linger: Duration::from_secs(30),
            max_line: 64 * 1024,
        }
    }
}

/// Exponential reconnect backoff with full jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Greater than zero, and at most `max`.
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

/// Caps that keep one client, one route or one address from crowding out the rest,
/// and the connection timeouts of the public listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Client streams open at once, over all routes; `None`: no cap.
    pub max_clients: Option<usize>,
    /// Client streams open at once on one route; `None`: no cap.
    pub max_clients_per_route: Option<usize>,
    /// Client streams open at once from one client IP address; `None`: no cap.
    pub max_clients_per_ip: Option<usize>,
    /// How a subscriber over a cap is answered (a route may override it).
    pub over_limit: OverLimit,
    /// Time allowed for a request head to arrive (slowloris); on HTTP/1.1 it also
    /// bounds the wait for the next request on a kept-alive connection. Non-zero.
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted, in bytes; at
    /// least 8KiB (hyper's smallest read buffer).
    pub max_header_size: usize,
    /// A connection with no request in flight for this long is closed (HTTP/2 gets
    /// GOAWAY). Never applies while a client stream is open. Non-zero.
    pub idle_timeout: Duration,
}

/// The smallest `limits.max_header_size`: hyper's HTTP/1 read buffer can't be smaller.
pub const MIN_HEADER_SIZE: usize = 8 * 1024;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_clients: Some(10_000),
            max_clients_per_route: None,
            max_clients_per_ip: None,
            over_limit: OverLimit::Retry,
            header_read_timeout: Duration::from_secs(10),
            // nginx's header buffers are 8k too; it is also hyper's minimum, and what
            // hyper keeps allocated per connection for reading: a bigger limit costs
            // every idle client that much memory.
            max_header_size: 8 * 1024,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// How a subscriber over a limit is told to come back later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverLimit {
    /// `200`, `text/event-stream`, `retry: <client.retry>`, end of stream. A browser's
    /// `EventSource` gives up for good on any other status, so this is the default.
    Retry,
    /// `503` with `retry-after`, for non-browser clients.
    Unavailable,
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OverLimit::Retry => "retry",
            OverLimit::Unavailable => "503",
        })
    }
}

impl TryFrom<&str> for OverLimit {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        match text {
            "retry" => Ok(OverLimit::Retry),
            "503" => Ok(OverLimit::Unavailable),
            _ => Err(format!("expected `retry` or `503`, got {text:?}")),
        }
    }
}

impl TryFrom<u64> for OverLimit {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, String> {
        match n {
            503 => Ok(OverLimit::Unavailable),
            _ => Err(format!("expected `retry` or `503`, got {n}")),
        }
    }
}

/// Cross-origin access to a route from browsers (`cors:` on a route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    pub origins: CorsOrigins,
    /// Allow cookies and HTTP authentication (`withCredentials`); never with `*`.
    pub credentials: bool,
}

/// The origins a route answers with CORS headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: every origin (without credentials).
    Any,
    /// These exact origins (`https://app.example.com`), lowercase; never empty.
    List(Vec<String>),
}

/// One configured client path and where its events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    pub path: PathTemplate,
    pub upstream: UpstreamTarget,
    /// Sent to the upstream on every (re)connect. Values are marked sensitive, so
    /// `Debug` prints `Sensitive`; never log them.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Effective: the route's `replay:` keys where given, else the global ones.
    pub replay: ReplayConfig,
    /// Effective: the route's `heartbeat` if given, else the global one.
    pub heartbeat: Duration,
    /// Effective: the route's `client:` keys where given, else the global ones.
    pub client: ClientConfig,
    /// Stamp every event with a gateway-assigned id (for upstreams that send none).
    pub assign_ids: bool,
    /// Fetch a resumption's missing events from the upstream when the replay buffer
    /// no longer holds them. Default: true for http(s) upstreams, false for builtins.
    pub backfill: bool,
    /// PEM file of the CA(s) an `https://` upstream's certificate must chain to,
    /// instead of the system and webpki roots (private CAs). Relative to the file.
    pub ca: Option<PathBuf>,
    /// Effective: the route's `over_limit` if given, else `limits.over_limit`.
    pub over_limit: OverLimit,
    /// `None`: no CORS headers, and `OPTIONS` is `405` like any other method.
    pub cors: Option<CorsConfig>,
}

/// Command-line values that replace configured ones; merged before validation.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// If non-empty, replaces `listen` with plain-HTTP listeners on these addresses.
    pub listen: Vec<SocketAddr>,
    /// If set, replaces `admin.addr`.
    pub admin: Option<SocketAddr>,
}

// === impl Config ===

impl Config {
    /// Reads and validates the file. Overrides are merged into the raw value before
    /// validation, so they meet the same rules as the file's keys.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`] if the file cannot be read, [`ConfigError::Invalid`] if it is
    /// not a valid configuration.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Io {
            file: path.to_owned(),
            cause,
        })?;
        Config::parse(&text, path, overrides)
    }

    /// Validates `text` as if it were read from `file`. `file` names the file in errors
    /// and anchors relative TLS paths; it is not read.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if `text` is not a valid configuration.
    pub fn parse(text: &str, file: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw = raw::from_str(text).map_err(|error| match raw::syntax_error(text) {
            Some(syntax) => ConfigError::from_yaml_syntax(file, &syntax),
            None => ConfigError::from_yaml(file, error),
        })?;
        let Some(mut raw) = raw else {
            return Err(ConfigError::rule(
                file,
                None,
                "missing key `routes` (the file is empty; at least one route is required)",
            ));
        };
        raw.apply(overrides);
        validate::build(raw, file)
    }

    /// One-screen, human summary for `--check`: listeners, admin, settings, and each
    /// route with its upstream. Header values are never shown, only their names.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // `write!` to a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(out, "configuration {}", self.file.display());
        for (i, listener) in self.listen.iter().enumerate() {
            let label = if i == 0 { "listen" } else { "" };
            let _ = match &listener.tls {
                None => writeln!(out, "  {label:<10} {} (http)", listener.addr),
                Some(tls) => writeln!(
                    out,
                    "  {label:<10} {} (tls, cert {}, key {})",
                    listener.addr,
                    tls.cert.display(),
                    tls.key.display()
                ),
            };
        }
        let _ = writeln!(out, "  {:<10} {}", "admin", self.admin.addr);
        let _ = writeln!(
            out,
            "  {:<10} {}",
            "heartbeat",
            format_duration(self.heartbeat)
        );
        let _ = writeln!(
            out,
            "  {:<10} queue {}, retry {}",
            "client",
            self.client.queue,
            format_duration(self.client.retry)
        );
        let _ = writeln!(
            out,
            "  {:<10} retry {} + up to {} jitter, deadline {}",
            "drain",
            format_duration(self.drain.retry),
            format_duration(self.drain.retry_jitter),
            format_duration(self.drain.deadline)
        );
        let _ = writeln!(out, "  {:<10} {}", "replay", ReplayLine(&self.replay));
        let _ = writeln!(
            out,
            "  {:<10} connect timeout {}, backoff {}..{}, linger {}, max line {}",
            "upstream",
            format_duration(self.upstream.connect_timeout),
            format_duration(self.upstream.backoff.initial),
            format_duration(self.upstream.backoff.max),
            format_duration(self.upstream.linger),
            format_size(self.upstream.max_line)
        );
        let _ = writeln!(out, "  {:<10} {}", "limits", LimitsLine(&self.limits));
        let _ = writeln!(out, "  routes ({})", self.routes.len());
        let width = self
            .routes
            .iter()
            .map(|r| r.path.as_str().len())
            .max()
            .unwrap_or(0);
        for route in &self.routes {
            let _ = write!(
                out,
                "    {:<width$} -> {}",
                route.path.as_str(),
                route.upstream
            );
            let notes = self.route_notes(route);
            if !notes.is_empty() {
                let _ = write!(out, "  ({})", notes.join("; "));
            }
            out.push('\n');
        }
        out
    }

    /// What sets a route apart from the global settings, for the summary.
    fn route_notes(&self, route: &RouteConfig) -> Vec<String> {
        let mut notes = Vec::new();
        if !route.headers.is_empty() {
            // Names only: values are likely credentials.
            let names: Vec<&str> = route
                .headers
                .iter()
                .map(|(name, _)| name.as_str())
                .collect();
            notes.push(format!("headers: {}", names.join(", ")));
        }
        if route.replay != self.replay {
            notes.push(format!("replay {}", ReplayLine(&route.replay)));
        }
        if route.heartbeat != self.heartbeat {
            notes.push(format!("heartbeat {}", format_duration(route.heartbeat)));
        }
        if route.client != self.client {
            notes.push(format!(
                "client queue {}, retry {}",
                route.client.queue,
                format_duration(route.client.retry)
            ));
        }
        if route.assign_ids {
            notes.push("assign ids".to_owned());
        }
        if !route.backfill && matches!(route.upstream, UpstreamTarget::Http(_)) {
            notes.push("no backfill".to_owned());
        }
        if route.over_limit != self.limits.over_limit {
            notes.push(format!("over limit {}", route.over_limit));
        }
        if let Some(cors) = &route.cors {
            let origins = match &cors.origins {
                CorsOrigins::Any => "*".to_owned(),
                CorsOrigins::List(list) => list.join(" "),
            };
            let credentials = if cors.credentials {
                " with credentials"
            } else {
                ""
            };
            notes.push(format!("cors {origins}{credentials}"));
        }
        notes
    }
}

struct LimitsLine<'a>(&'a LimitsConfig);

impl fmt::Display for LimitsLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cap = |limit: Option<usize>| limit.map_or_else(|| "any".to_owned(), |n| n.to_string());
        let limits = self.0;
        write!(
            f,
            "clients {} (per route {}, per ip {}), over limit {}, header timeout {}, max header {}, idle {}",
            cap(limits.max_clients),
            cap(limits.max_clients_per_route),
            cap(limits.max_clients_per_ip),
            limits.over_limit,
            format_duration(limits.header_read_timeout),
            format_size(limits.max_header_size),
            format_duration(limits.idle_timeout)
        )
    }
}

struct ReplayLine<'a>(&'a ReplayConfig);

impl fmt::Display for ReplayLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.gap_event.is_empty() {
            write!(f, "{} events, gap event off", self.0.events)
        } else {
            write!(
                f,
                "{} events, gap event {:?}",
                self.0.events, self.0.gap_event
            )
        }
    }
}

// === impl PathTemplate ===

/// A route path: `/events`, `/rooms/{room}`. Each `{name}` matches one whole segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
}

/// One `/`-separated piece of a [`PathTemplate`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matched exactly, as written (percent-encoded form).
    Literal(String),
    /// Matches any one segment; the name is an identifier (`[A-Za-z_][A-Za-z0-9_]*`).
    Param(String),
}

impl PathTemplate {
    /// The path as written in the file.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `/rooms/{room}` → `[Literal("rooms"), Param("room")]`; `/` → `[]`. No segment is
    /// empty.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The parameter names, in path order, each once.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Whether both templates match exactly the same request paths: same length, equal
    /// literals and parameters in the same places (names aside).
    fn same_shape(&self, other: &PathTemplate) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }
}

impl TryFrom<&str> for PathTemplate {
    type Error = String;

    fn try_from(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("path is empty (expected something like /events)".to_owned());
        }
        if !raw.starts_with('/') {
            return Err(format!("path {raw:?} must start with /"));
        }
        if raw.contains(['?', '#']) {
            return Err(format!(
                "path {raw:?} must not contain a query string or fragment (the query is not part of the match)"
            ));
        }
        let mut segments = Vec::new();
        if raw != "/" {
            for text in raw[1..].split('/') {
                segments.push(parse_path_segment(raw, text)?);
            }
        }
        let template = PathTemplate {
            raw: raw.to_owned(),
            segments,
        };
        let mut seen = Vec::new();
        for name in template.params() {
            if seen.contains(&name) {
                return Err(format!(
                    "parameter {{{name}}} appears twice in path {raw:?}"
                ));
            }
            seen.push(name);
        }
        Ok(template)
    }
}

fn parse_path_segment(raw: &str, text: &str) -> Result<Segment, String> {
    if text.is_empty() {
        return Err(format!(
            "path {raw:?} has an empty segment (a trailing or doubled /)"
        ));
    }
    if text == "." || text == ".." {
        // Clients normalise these away, so such a route could never match.
        return Err(format!("path {raw:?} must not contain a {text:?} segment"));
    }
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        if !is_param_name(inner) {
            return Err(format!(
                "invalid parameter name {inner:?} in path {raw:?} (letters, digits and _, not starting with a digit)"
            ));
        }
        return Ok(Segment::Param(inner.to_owned()));
    }
    if text.contains(['{', '}']) {
        return Err(format!(
            "in path {raw:?}, {text:?}: a parameter must fill a whole segment, like /rooms/{{room}}"
        ));
    }
    check_path_chars(raw, text)?;
    Ok(Segment::Literal(text.to_owned()))
}

/// RFC 3986 `pchar`: what may appear in a path segment without encoding.
fn check_path_chars(raw: &str, text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!(
                    "path {raw:?} has a % that is not followed by two hex digits"
                ));
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)) {
            let c = text[i..].chars().next().unwrap_or_default();
            return Err(format!(
                "path {raw:?} contains {c:?}, which must be percent-encoded"
            ));
        }
        i += 1;
    }
    Ok(())
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

// === impl UpstreamTarget ===

/// Where a route's events come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamTarget {
    /// An `http://` or `https://` URL, possibly with `{name}` parameters.
    Http(UrlTemplate),
    /// `builtin:NAME`: a source inside the gateway.
    Builtin(Builtin),
}

/// The sources built into the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `builtin:clock`: one event per second, for demos and smoke tests.
    Clock,
}

impl Builtin {
    const ALL: &'static [Builtin] = &[Builtin::Clock];

    /// The name after `builtin:`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Clock => "clock",
        }
    }
}

impl TryFrom<&str> for UpstreamTarget {
    type Error = String;

    fn try_from(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err(
                "upstream is empty (expected http://, https:// or builtin:NAME)".to_owned(),
            );
        }
        if let Some(name) = raw.strip_prefix("builtin:") {
            return match Builtin::ALL.iter().find(|b| b.name() == name) {
                Some(&builtin) => Ok(UpstreamTarget::Builtin(builtin)),
                None => {
                    let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
                    Err(format!(
                        "unknown builtin {name:?} (known: {})",
                        known.join(", ")
                    ))
                }
            };
        }
        let scheme = match raw.split_once("://") {
            Some((scheme, _)) => scheme,
            // `mailto:x`-style: a scheme without `//`. `localhost:9000` is not one.
            None => match raw.split_once(':') {
                Some((scheme, rest))
                    if is_scheme(scheme) && !rest.starts_with(|c: char| c.is_ascii_digit()) =>
                {
                    scheme
                }
                _ => {
                    return Err(format!(
                    "upstream {raw:?} has no scheme (expected http://, https:// or builtin:NAME)"
                ))
                }
            },
        };
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(format!(
                "unsupported scheme {scheme:?} (expected http, https or builtin)"
            ));
        }
        UrlTemplate::parse(raw).map(UpstreamTarget::Http)
    }
}

/// RFC 3986: `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

impl fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamTarget::Http(url) => f.write_str(url.as_str()),
            UpstreamTarget::Builtin(builtin) => write!(f, "builtin:{}", builtin.name()),
        }
    }
}

// === impl UrlTemplate ===

/// Every byte except RFC 3986 unreserved (`A-Z a-z 0-9 - . _ ~`) is encoded, so a
/// parameter value can never add a path segment, a query or a fragment.
const PARAM_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An upstream URL with optional `{name}` parameters in its path and query, e.g.
/// `http://127.0.0.1:9000/rooms/{room}?x=1`. Scheme and host are fixed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UrlTemplate {
    raw: String,
    parts: Vec<UrlPart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum UrlPart {
    Literal(String),
    Param(String),
}

impl UrlTemplate {
    /// The URL as written in the file.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parameter names used, in order of first use, each once.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = Vec::new();
        self.parts.iter().filter_map(move |part| match part {
            UrlPart::Param(name) if !seen.contains(&name.as_str()) => {
                seen.push(name);
                Some(name.as_str())
            }
            _ => None,
        })
    }

    /// Substitutes each `{name}` with the percent-encoded value (every byte except
    /// RFC 3986 unreserved is encoded) and returns the resolved URL string.
    ///
    /// `params` are already percent-decoded and validated by the caller, and name every
    /// parameter of the route's path, which validation made equal to this template's.
    /// A missing name is a caller bug; it resolves to an empty value.
    pub fn resolve(&self, params: &[(&str, &str)]) -> String {
        let mut url = String::with_capacity(self.raw.len());
        for part in &self.parts {
            match part {
                UrlPart::Literal(text) => url.push_str(text),
                UrlPart::Param(name) => {
                    let value = params.iter().find(|(n, _)| n == name).map(|&(_, v)| v);
                    debug_assert!(
                        value.is_some(),
                        "no value for upstream parameter {{{name}}}"
                    );
                    url.extend(utf8_percent_encode(value.unwrap_or_default(), PARAM_VALUE));
                }
            }
        }
        url
    }

    /// Called with a URL whose scheme is already known to be http or https.
    fn parse(raw: &str) -> Result<UrlTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("upstream {raw:?} has a }} without a matching {{"));
            }
            let Some(len) = rest[open..].find('}') else {
                return Err(format!("upstream {raw:?} has a {{ without a matching }}"));
            };
            let name = &rest[open + 1..open + len];
            if !is_param_name(name) {
                return Err(format!(
                    "invalid parameter name {name:?} in upstream {raw:?} (letters, digits and _, not starting with a digit)"
                ));
            }
            if open > 0 {
                parts.push(UrlPart::Literal(rest[..open].to_owned()));
            }
            parts.push(UrlPart::Param(name.to_owned()));
            rest = &rest[open + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(UrlPart::Literal(rest.to_owned()));
        }
        let template = UrlTemplate {
            raw: raw.to_owned(),
            parts,
        };

        if raw.contains('#') {
            return Err(format!("upstream {raw:?} must not have a #fragment"));
        }
        // Parameters stay out of scheme and authority: a client must not be able to
        // choose which host the gateway connects to.
        let after_scheme = raw.find("://").map_or(0, |i| i + 3);
        let authority_end = raw[after_scheme..]
            .find(['/', '?'])
            .map_or(raw.len(), |i| after_scheme + i);
        if raw[..authority_end].contains('{') {
            return Err(format!(
                "upstream {raw:?} has a parameter in its host; parameters may only appear in the path and query"
            ));
        }
        // Validate the URL's syntax with a stand-in for each parameter.
        let sample = template.resolve_each("x");
        let uri: http::Uri = sample
            .parse()
            .map_err(|e| format!("invalid upstream URL {raw:?}: {e}"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("upstream URL {raw:?} has no host"));
        }
        Ok(template)
    }

    /// The URL with every parameter replaced by `value`, unencoded.
    fn resolve_each(&self, value: &str) -> String {
        let mut url = String::with_capacity(self.raw.len());
        for part in &self.parts {
            match part {
                UrlPart::Literal(text) => url.push_str(text),
                UrlPart::Param(_) => url.push_str(value),
            }
        }
        url
    }
}

impl fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap; clippy.toml may not say so yet

    use super::*;

    /// One valid route, for tests about other keys. Three lines.
    const ROUTE: &str = "routes:\n  - path: /events\n    upstream: http://127.0.0.1:9000/events\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("gateway.yaml"), &Overrides::default())
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:#?}"),
            Err(err) => err,
        }
    }

    /// `text` followed by the valid route.
    fn with_route(text: &str) -> String {
        format!("{text}{ROUTE}")
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    // === defaults and the spec's example ===

    #[test]
    fn a_file_with_only_routes_gets_every_default() {
        let config = parse(ROUTE).unwrap();
        assert_eq!(config.file, PathBuf::from("gateway.yaml"));
        assert_eq!(
            config.listen,
            [ListenerConfig {
                addr: addr("127.0.0.1:8080"),
                tls: None
            }]
        );
        assert_eq!(config.admin.addr, addr("127.0.0.1:9090"));
        assert_eq!(config.heartbeat, secs(15));
        assert_eq!(config.client.queue, 1024);
        assert_eq!(config.client.retry, secs(2));
        assert_eq!(config.drain.retry, secs(3));
        assert_eq!(config.drain.retry_jitter, secs(2));
        assert_eq!(config.drain.deadline, secs(30));
        assert_eq!(config.replay.events, 1024);
        assert_eq!(config.replay.gap_event, "gap");
        assert_eq!(config.upstream.connect_timeout, secs(5));
        assert_eq!(config.upstream.backoff.initial, Duration::from_millis(250));
        assert_eq!(config.upstream.backoff.max, secs(30));
        assert_eq!(config.upstream.linger, secs(30));
        assert_eq!(config.upstream.max_line, 64 * 1024);
        let [route] = &config.routes[..] else {
            panic!("one route expected")
        };
        assert_eq!(route.path.as_str(), "/events");
        assert_eq!(route.upstream.to_string(), "http://127.0.0.1:9000/events");
        assert!(route.headers.is_empty());
        assert_eq!(route.replay, config.replay);
        assert_eq!(route.heartbeat, config.heartbeat);
        assert_eq!(route.client, config.client);
        assert!(!route.assign_ids);
    }

    /// Copied verbatim from the spec's Configuration section.
    const SPEC_EXAMPLE: &str = r#"listen:                          # public listeners
  - addr: 0.0.0.0:8080
  - addr: 0.0.0.0:8443
    tls:                         # rustls; PEM files; ALPN offers h2 and http/1.1
      cert: deploy/certs/server.pem
      key: deploy/certs/server-key.pem
admin:
  addr: 127.0.0.1:9090           # /healthz, /readyz, /metrics (never on the public listener)
heartbeat: 15s                   # a comment line is sent to a client idle this long
client:
  queue: 1024                    # events a client may fall behind before it is disconnected
  retry: 2s                      # retry: sent at the start of every client stream
drain:
  retry: 3s                      # retry: hint sent to every client when draining
  retry_jitter: 2s               # each client's hint is retry + a random share of this
  deadline: 30s                  # the whole drain ends by then, whatever is left
replay:
  events: 1024                   # recent events kept per source for Last-Event-ID resumption
upstream:
  connect_timeout: 5s
  backoff: { initial: 250ms, max: 30s }   # exponential, full jitter; upstream retry: sets initial
  linger: 30s                    # keep a source (and its replay buffer) this long after its last client leaves
routes:
  - path: /events                # exact path clients GET
    upstream: http://127.0.0.1:9000/events
  - path: /rooms/{room}          # template: one upstream subscription per distinct room
    upstream: http://127.0.0.1:9000/rooms/{room}
    headers:                     # sent to the upstream on every (re)connect
      authorization: Bearer example-token
    replay: { events: 4096 }     # per-route override of replay, heartbeat, client.queue
  - path: /demo
    upstream: builtin:clock      # embedded demo source: one event per second, no other process needed
"#;

    #[test]
    fn the_spec_example_parses_with_its_values() {
        let config = parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(
            config.listen,
            [
                ListenerConfig {
                    addr: addr("0.0.0.0:8080"),
                    tls: None
                },
                ListenerConfig {
                    addr: addr("0.0.0.0:8443"),
                    tls: Some(TlsConfig {
                        cert: PathBuf::from("deploy/certs/server.pem"),
                        key: PathBuf::from("deploy/certs/server-key.pem"),
                    }),
                },
            ]
        );
        // Apart from listen and routes, the example spells out the defaults.
        let defaults = parse(ROUTE).unwrap();
        assert_eq!(config.admin, defaults.admin);
        assert_eq!(config.heartbeat, defaults.heartbeat);
        assert_eq!(config.client, defaults.client);
        assert_eq!(config.drain, defaults.drain);
        assert_eq!(config.replay, defaults.replay);
        assert_eq!(config.upstream, defaults.upstream);

        let paths: Vec<&str> = config.routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/events", "/rooms/{room}", "/demo"]);
        let rooms = &config.routes[1];
        assert_eq!(
            rooms.path.segments(),
            [
                Segment::Literal("rooms".into()),
                Segment::Param("room".into())
            ]
        );
        let UpstreamTarget::Http(url) = &rooms.upstream else {
            panic!("http upstream expected")
        };
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/rooms/{room}");
        assert_eq!(rooms.headers.len(), 1);
        assert_eq!(rooms.headers[0].0, "authorization");
        assert_eq!(rooms.headers[0].1, "Bearer example-token");
        assert_eq!(rooms.replay.events, 4096);
        assert_eq!(rooms.replay.gap_event, "gap");
        assert_eq!(
            config.routes[2].upstream,
            UpstreamTarget::Builtin(Builtin::Clock)
        );
        assert_eq!(config.routes[0].replay.events, 1024);
    }

    #[test]
    fn route_settings_override_per_key_and_inherit_the_rest() {
        let config = parse(
            "heartbeat: 10s\n\
             client: { queue: 50, retry: 1s }\n\
             replay: { events: 100, gap_event: missed }\n\
             routes:\n\
             \x20 - path: /a\n\
             \x20   upstream: http://u/a\n\
             \x20 - path: /b\n\
             \x20   upstream: http://u/b\n\
             \x20   heartbeat: 5s\n\
             \x20   client: { queue: 7 }\n\
             \x20   replay: { gap_event: \"\" }\n\
             \x20   assign_ids: true\n",
        )
        .unwrap();
        let [a, b] = &config.routes[..] else {
            panic!("two routes expected")
        };
        assert_eq!(a.heartbeat, secs(10));
        assert_eq!(a.client, config.client);
        assert_eq!(a.replay, config.replay);
        assert!(!a.assign_ids);

        assert_eq!(b.heartbeat, secs(5));
        assert_eq!(b.client.queue, 7);
        assert_eq!(b.client.retry, secs(1), "retry is inherited");
        assert_eq!(b.replay.events, 100, "events are inherited");
        assert_eq!(
            b.replay.gap_event, "",
            "an empty gap_event disables the notice"
        );
        assert!(b.assign_ids);
    }

    // === missing and empty ===

    #[test]
    fn an_empty_file_is_missing_routes() {
        for text in ["", "\n", "# only a comment\n"] {
            let err = parse_err(text);
            assert_eq!(
                err.to_string(),
                "gateway.yaml: missing key `routes` (the file is empty; at least one route is required)"
            );
            assert_eq!(err.key_path(), None);
            assert_eq!(err.location(), None);
        }
    }

    #[test]
    fn a_file_without_routes_is_missing_routes() {
        let err = parse_err("heartbeat: 15s\n");
        assert_eq!(
            err.to_string(),
            "gateway.yaml: missing key `routes` (at least one route is required)"
        );
        assert_eq!(err.key_path(), None);
    }

    #[test]
    fn an_empty_route_list_is_rejected() {
        let err = parse_err("routes: []\n");
        assert_eq!(err.key_path(), Some("routes"));
        assert_eq!(err.location(), None);
        assert!(err.to_string().ends_with("at least one route is required"));
    }

    #[test]
    fn a_route_without_upstream_names_the_missing_key() {
        let err = parse_err("routes:\n  - path: /a\n");
        assert_eq!(err.key_path(), Some("routes[0]"));
        assert_eq!(err.location(), Some((2, 5)));
        assert_eq!(
            err.to_string(),
            "gateway.yaml:2:5: routes[0]: missing key `upstream`"
        );
    }

    // === unknown keys ===

    #[test]
    fn unknown_top_level_key_suggests_the_close_one() {
        let err = parse_err(&format!(
            "listen:\n  - addr: 127.0.0.1:1\nheartbeet: 15s\n{ROUTE}"
        ));
        assert_eq!(err.key_path(), None);
        assert_eq!(err.location(), Some((3, 1)));
        assert_eq!(
            err.to_string(),
            "gateway.yaml:3:1: unknown key `heartbeet` (did you mean `heartbeat`?)"
        );
    }

    #[test]
    fn unknown_nested_key_names_its_mapping() {
        let err = parse_err(&with_route("upstream:\n  backoff:\n    initail: 1s\n"));
        assert_eq!(err.key_path(), Some("upstream.backoff"));
        assert_eq!(err.location(), Some((3, 5)));
        assert_eq!(
            err.to_string(),
            "gateway.yaml:3:5: upstream.backoff: unknown key `initail` (did you mean `initial`?)"
        );
    }

    #[test]
    fn unknown_route_key_names_the_route() {
        let err = parse_err("routes:\n  - path: /a\n    upstrem: http://u/a\n");
        assert_eq!(err.key_path(), Some("routes[0]"));
        assert_eq!(err.location(), Some((3, 5)));
        assert!(err
            .to_string()
            .ends_with("unknown key `upstrem` (did you mean `upstream`?)"));
    }

    #[test]
    fn unknown_key_with_nothing_close_lists_the_known_keys() {
        let err = parse_err(&with_route("drain:\n  zzz: 1s\n"));
        assert_eq!(err.key_path(), Some("drain"));
        assert_eq!(err.location(), Some((2, 3)));
        assert!(
            err.to_string()
                .ends_with("unknown key `zzz` (known keys: `retry`, `retry_jitter`, `deadline`)"),
            "{err}"
        );
    }

    #[test]
    fn a_key_given_twice_is_an_error() {
        let err = parse_err(&with_route("heartbeat: 1s\nheartbeat: 2s\n"));
        assert!(
            err.to_string().contains("duplicate key `heartbeat`"),
            "{err}"
        );
    }

    // === YAML shape ===

    #[test]
    fn yaml_syntax_errors_show_line_and_column() {
        // The typed parse alone would stop early with "missing key `upstream`".
        let err = parse_err("routes:\n  - path: /a\n   upstream: [\n");
        assert_eq!(err.key_path(), None);
        assert_eq!(err.location(), Some((3, 4)));
        assert_eq!(
            err.to_string(),
            "gateway.yaml:3:4: invalid YAML: did not find expected '-' indicator, while parsing a block collection at line 2 column 3"
        );
    }

    #[test]
    fn an_oversized_number_is_an_error_at_its_value() {
        let err = parse_err(&with_route("replay: { events: 99999999999999999999999 }\n"));
        assert_eq!(err.key_path(), Some("replay.events"));
        assert_eq!(err.location(), Some((1, 19)));
        assert!(
            err.to_string()
                .ends_with("99999999999999999999999 is too large"),
            "{err}"
        );
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_rejected() {
        let err = parse_err("- path: /a\n");
        assert_eq!(err.key_path(), None);
        assert!(
            err.to_string()
                .ends_with("invalid type: sequence, expected a mapping of gateway settings"),
            "{err}"
        );
    }

    #[test]
    fn a_section_of_the_wrong_type_names_its_key() {
        let err = parse_err(&with_route("client: 5\n"));
        assert_eq!(err.key_path(), Some("client"));
        assert_eq!(err.location(), Some((1, 9)));
        assert!(
            err.to_string().contains("expected a mapping with `queue`"),
            "{err}"
        );
    }

    #[test]
    fn assign_ids_must_be_a_boolean() {
        let err =
            parse_err("routes:\n  - path: /a\n    upstream: http://u/a\n    assign_ids: yes\n");
        assert_eq!(err.key_path(), Some("routes[0].assign_ids"));
        assert_eq!(err.location(), Some((4, 17)));
    }

    // === units ===

    #[test]
    fn a_duration_without_unit_is_rejected_at_its_value() {
        let err = parse_err(&with_route("heartbeat: 15\n"));
        assert_eq!(err.key_path(), Some("heartbeat"));
        assert_eq!(err.location(), Some((1, 12)));
        assert_eq!(
            err.to_string(),
            "gateway.yaml:1:12: heartbeat: duration \"15\" has no unit (accepted units: ms, s, m, h; e.g. 15s)"
        );
    }

    #[test]
    fn a_duration_with_an_unknown_unit_names_the_accepted_units() {
        let err = parse_err(&with_route("client:\n  retry: 2sec\n"));
        assert_eq!(err.key_path(), Some("client.retry"));
        assert_eq!(err.location(), Some((2, 10)));
        assert!(
            err.to_string().ends_with("(accepted units: ms, s, m, h)"),
            "{err}"
        );
    }

    #[test]
    fn a_flow_mapping_value_is_located_exactly() {
        let err = parse_err(&with_route(
            "upstream:\n  backoff: { initial: 250, max: 30s }\n",
        ));
        assert_eq!(err.key_path(), Some("upstream.backoff.initial"));
        assert_eq!(err.location(), Some((2, 23)));
    }

    #[test]
    fn a_zero_drain_deadline_is_rejected() {
        let err = parse_err(&with_route("drain:\n  deadline: 0s\n"));
        assert_eq!(err.key_path(), Some("drain.deadline"));
        assert_eq!(err.location(), Some((2, 13)));
        assert!(err
            .to_string()
            .ends_with("duration must be greater than zero, got \"0s\""));
    }

    #[test]
    fn zero_is_fine_where_it_means_none() {
        let config = parse(&with_route(
            "drain: { retry: 0s, retry_jitter: 0s }\nupstream: { linger: 0s }\nclient: { retry: 0ms }\n",
        ))
        .unwrap();
        assert_eq!(config.drain.retry_jitter, Duration::ZERO);
        assert_eq!(config.upstream.linger, Duration::ZERO);
        assert_eq!(config.client.retry, Duration::ZERO);
    }

    #[test]
    fn a_zero_heartbeat_or_connect_timeout_is_rejected() {
        let err = parse_err(&with_route("heartbeat: 0s\n"));
        assert_eq!(err.key_path(), Some("heartbeat"));
        let err = parse_err(&with_route("upstream:\n  connect_timeout: 0ms\n"));
        assert_eq!(err.key_path(), Some("upstream.connect_timeout"));
        assert_eq!(err.location(), Some((2, 20)));
    }

    #[test]
    fn max_line_takes_binary_units_and_plain_bytes() {
        let config = parse(&with_route("upstream: { max_line: 1MiB }\n")).unwrap();
        assert_eq!(config.upstream.max_line, 1 << 20);
        let config = parse(&with_route("upstream: { max_line: 4096 }\n")).unwrap();
        assert_eq!(config.upstream.max_line, 4096);
    }

    #[test]
    fn max_line_rejects_decimal_units() {
        let err = parse_err(&with_route("upstream:\n  max_line: 64KB\n"));
        assert_eq!(err.key_path(), Some("upstream.max_line"));
        assert_eq!(err.location(), Some((2, 13)));
        assert!(err
            .to_string()
            .ends_with("(accepted: a plain number of bytes, or B, KiB, MiB, GiB)"));
    }

    #[test]
    fn client_queue_must_be_at_least_one() {
        let err = parse_err(&with_route("client:\n  queue: 0\n"));
        assert_eq!(err.key_path(), Some("client.queue"));
        assert_eq!(err.location(), Some((2, 10)));
        assert!(err.to_string().ends_with("must be at least 1, got 0"));
    }

    #[test]
    fn replay_events_must_be_a_positive_whole_number() {
        let err = parse_err(&with_route("replay:\n  events: -3\n"));
        assert_eq!(err.key_path(), Some("replay.events"));
        assert_eq!(err.location(), Some((2, 11)));
        let err = parse_err(&with_route("replay:\n  events: 1.5\n"));
        assert_eq!(err.key_path(), Some("replay.events"));
        let err = parse_err(
            "routes:\n  - path: /a\n    upstream: http://u/a\n    replay: { events: 0 }\n",
        );
        assert_eq!(err.key_path(), Some("routes[0].replay.events"));
        assert_eq!(err.location(), Some((4, 23)));
    }

    #[test]
    fn gap_event_must_not_contain_a_line_break() {
        let err = parse_err(&with_route("replay:\n  gap_event: \"gap\\ndata: x\"\n"));
        assert_eq!(err.key_path(), Some("replay.gap_event"));
        assert_eq!(err.location(), Some((2, 14)));
    }

    #[test]
    fn backoff_initial_must_not_exceed_max() {
        // Only `initial` is given: it is compared with the default max.
        let err = parse_err(&with_route("upstream:\n  backoff: { initial: 1m }\n"));
        assert_eq!(err.key_path(), Some("upstream.backoff"));
        assert_eq!(err.location(), None);
        assert_eq!(
            err.to_string(),
            "gateway.yaml: upstream.backoff: initial (1m) must not be greater than max (30s)"
        );
        let config = parse(&with_route(
            "upstream:\n  backoff: { initial: 5s, max: 5s }\n",
        ))
        .unwrap();
        assert_eq!(config.upstream.backoff.initial, config.upstream.backoff.max);
    }

    // === addresses and listeners ===

    #[test]
    fn a_listen_address_must_be_ip_and_port() {
        let err = parse_err(&with_route("listen:\n  - addr: localhost:8080\n"));
        assert_eq!(err.key_path(), Some("listen[0].addr"));
        assert_eq!(err.location(), Some((2, 11)));
        assert!(err.to_string().contains(
            "invalid address \"localhost:8080\" (expected IP:PORT such as 127.0.0.1:8080"
        ));
    }

    #[test]
    fn an_admin_address_must_be_ip_and_port() {
        let err = parse_err(&with_route("admin:\n  addr: 9090\n"));
        assert_eq!(err.key_path(), Some("admin.addr"));
        assert_eq!(err.location(), Some((2, 9)));
    }

    #[test]
    fn listen_addresses_must_be_unique() {
        let err = parse_err(&with_route(
            "listen:\n  - addr: 0.0.0.0:8080\n  - addr: 0.0.0.0:8080\n",
        ));
        assert_eq!(err.key_path(), Some("listen[1].addr"));
        assert_eq!(err.location(), None);
        assert_eq!(
            err.to_string(),
            "gateway.yaml: listen[1].addr: address 0.0.0.0:8080 is already used by listen[0]"
        );
    }

    #[test]
    fn port_zero_listeners_never_clash() {
        let config = parse(&with_route(
            "listen:\n  - addr: 127.0.0.1:0\n  - addr: 127.0.0.1:0\nadmin: { addr: 127.0.0.1:0 }\n",
        ))
        .unwrap();
        assert_eq!(config.listen.len(), 2);
    }

    #[test]
    fn the_admin_address_must_differ_from_every_listener() {
        let err = parse_err(&with_route("listen:\n  - addr: 127.0.0.1:9090\n"));
        assert_eq!(err.key_path(), Some("admin.addr"));
        assert_eq!(err.location(), None);
    }

    #[test]
    fn an_empty_listen_list_is_rejected() {
        let err = parse_err(&with_route("listen: []\n"));
        assert_eq!(err.key_path(), Some("listen"));
        assert_eq!(err.location(), None);
    }

    #[test]
    fn tls_paths_are_resolved_against_the_config_directory() {
        let text = with_route(
            "listen:\n  - addr: 0.0.0.0:8443\n    tls: { cert: certs/a.pem, key: /etc/gw/key.pem }\n",
        );
        let config = Config::parse(
            &text,
            Path::new("deploy/gateway.yaml"),
            &Overrides::default(),
        )
        .unwrap();
        let tls = config.listen[0].tls.as_ref().unwrap();
        assert_eq!(tls.cert, PathBuf::from("deploy/certs/a.pem"));
        assert_eq!(tls.key, PathBuf::from("/etc/gw/key.pem"));
    }

    #[test]
    fn tls_needs_both_cert_and_key() {
        let err = parse_err(&with_route(
            "listen:\n  - addr: 0.0.0.0:8443\n    tls:\n      cert: a.pem\n",
        ));
        assert_eq!(err.key_path(), Some("listen[0].tls"));
        assert_eq!(err.location(), Some((4, 7)));
        assert!(err.to_string().ends_with("missing key `key`"), "{err}");
    }

    // === limits ===

    #[test]
    fn limits_default_to_ten_thousand_clients_and_retry() {
        let limits = parse(ROUTE).unwrap().limits;
        assert_eq!(limits, LimitsConfig::default());
        assert_eq!(limits.max_clients, Some(10_000));
        assert_eq!(limits.max_clients_per_route, None);
        assert_eq!(limits.over_limit, OverLimit::Retry);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_zero_limit_means_no_limit() {
        let config = parse(&with_route(
            "limits: { max_clients: 0, max_clients_per_route: 5, max_clients_per_ip: \"2\" }\n",
        ))
        .unwrap();
        assert_eq!(config.limits.max_clients, None);
        assert_eq!(config.limits.max_clients_per_route, Some(5));
        assert_eq!(config.limits.max_clients_per_ip, Some(2));
    }

    #[test]
    fn over_limit_is_retry_or_503_and_routes_inherit_it() {
        let config = parse(
            "limits: { over_limit: 503 }\nroutes:\n  - path: /a\n    upstream: http://u/a\n  - path: /b\n    upstream: http://u/b\n    over_limit: retry\n",
        )
        .unwrap();
        assert_eq!(config.limits.over_limit, OverLimit::Unavailable);
        assert_eq!(config.routes[0].over_limit, OverLimit::Unavailable);
        assert_eq!(config.routes[1].over_limit, OverLimit::Retry);
        let err = parse_err(&with_route("limits: { over_limit: 429 }\n"));
        assert_eq!(err.key_path(), Some("limits.over_limit"));
        assert!(
            err.to_string()
                .ends_with("expected `retry` or `503`, got 429"),
            "{err}"
        );
    }

    #[test]
    fn max_header_size_must_fit_hypers_smallest_buffer() {
        let err = parse_err(&with_route("limits: { max_header_size: 4KiB }\n"));
        assert_eq!(err.key_path(), Some("limits.max_header_size"));
        assert!(
            err.to_string()
                .ends_with("must be at least 8KiB (got 4KiB)"),
            "{err}"
        );
        let config = parse(&with_route("limits: { max_header_size: 32KiB }\n")).unwrap();
        assert_eq!(config.limits.max_header_size, 32 * 1024);
    }

    #[test]
    fn a_zero_header_read_timeout_is_rejected() {
        let err = parse_err(&with_route("limits: { header_read_timeout: 0s }\n"));
        assert_eq!(err.key_path(), Some("limits.header_read_timeout"));
    }

    // === cors ===

    fn route_with(extra: &str) -> String {
        format!("routes:\n  - path: /a\n    upstream: http://u/a\n{extra}")
    }

    #[test]
    fn cors_origins_are_kept_lowercase() {
        let config = parse(&route_with(
            "    cors: { origins: [\"https://App.example.com\", \"http://localhost:3000\"], credentials: true }\n",
        ))
        .unwrap();
        assert_eq!(
            config.routes[0].cors,
            Some(CorsConfig {
                origins: CorsOrigins::List(vec![
                    "https://app.example.com".into(),
                    "http://localhost:3000".into()
                ]),
                credentials: true,
            })
        );
    }

    #[test]
    fn cors_star_is_any_origin_without_credentials() {
        let config = parse(&route_with("    cors: { origins: [\"*\"] }\n")).unwrap();
        let cors = config.routes[0].cors.clone().unwrap();
        assert_eq!(cors.origins, CorsOrigins::Any);
        assert!(!cors.credentials);
        let err = parse_err(&route_with(
            "    cors: { origins: [\"*\"], credentials: true }\n",
        ));
        assert_eq!(err.key_path(), Some("routes[0].cors"));
        let err = parse_err(&route_with(
            "    cors: { origins: [\"*\", \"https://a.example\"] }\n",
        ));
        assert_eq!(err.key_path(), Some("routes[0].cors.origins"));
    }

    #[test]
    fn a_cors_origin_has_no_path_and_an_empty_list_is_rejected() {
        let err = parse_err(&route_with(
            "    cors:\n      origins: [\"https://a.example/app\"]\n",
        ));
        assert_eq!(err.key_path(), Some("routes[0].cors.origins[0]"));
        assert_eq!(err.location(), Some((5, 17)));
        let err = parse_err(&route_with("    cors: { origins: [\"a.example\"] }\n"));
        assert!(err.to_string().contains("invalid origin"), "{err}");
        let err = parse_err(&route_with("    cors: { origins: [] }\n"));
        assert_eq!(err.key_path(), Some("routes[0].cors.origins"));
    }

    // === overrides ===

    #[test]
    fn listen_override_replaces_every_configured_listener() {
        let overrides = Overrides {
            listen: vec![addr("127.0.0.1:0"), addr("[::1]:0")],
            admin: Some(addr("127.0.0.1:0")),
        };
        let config = Config::parse(SPEC_EXAMPLE, Path::new("gateway.yaml"), &overrides).unwrap();
        assert_eq!(
            config.listen,
            [
                ListenerConfig {
                    addr: addr("127.0.0.1:0"),
                    tls: None
                },
                ListenerConfig {
                    addr: addr("[::1]:0"),
                    tls: None
                },
            ]
        );
        assert_eq!(config.admin.addr, addr("127.0.0.1:0"));
    }

    #[test]
    fn admin_override_applies_without_an_admin_section() {
        let overrides = Overrides {
            listen: Vec::new(),
            admin: Some(addr("127.0.0.1:9999")),
        };
        let config = Config::parse(ROUTE, Path::new("gateway.yaml"), &overrides).unwrap();
        assert_eq!(config.admin.addr, addr("127.0.0.1:9999"));
        assert_eq!(config.listen[0].addr, DEFAULT_LISTEN, "listen is untouched");
    }

    #[test]
    fn overrides_meet_the_same_rules_as_keys() {
        let overrides = Overrides {
            listen: vec![addr("127.0.0.1:7000"), addr("127.0.0.1:7000")],
            admin: None,
        };
        let err = Config::parse(ROUTE, Path::new("gateway.yaml"), &overrides).unwrap_err();
        assert_eq!(err.key_path(), Some("listen[1].addr"));
    }

    // === route paths ===

    #[test]
    fn a_path_must_start_with_a_slash() {
        let err = parse_err("routes:\n  - path: events\n    upstream: http://u/a\n");
        assert_eq!(err.key_path(), Some("routes[0].path"));
        assert_eq!(err.location(), Some((2, 11)));
        assert!(err
            .to_string()
            .ends_with("path \"events\" must start with /"));
    }

    #[test]
    fn a_path_must_not_carry_a_query() {
        let err = parse_err("routes:\n  - path: /a?x=1\n    upstream: http://u/a\n");
        assert_eq!(err.key_path(), Some("routes[0].path"));
        assert!(err.to_string().contains("must not contain a query string"));
    }

    #[test]
    fn a_parameter_must_fill_its_segment() {
        let err = parse_err("routes:\n  - path: /room-{id}\n    upstream: http://u/{id}\n");
        assert_eq!(err.key_path(), Some("routes[0].path"));
        assert!(err
            .to_string()
            .contains("a parameter must fill a whole segment"));
    }

    #[test]
    fn a_parameter_name_is_an_identifier() {
        for path in ["/{1st}", "/{}", "/{a-b}"] {
            let err = parse_err(&format!(
                "routes:\n  - path: \"{path}\"\n    upstream: http://u/a\n"
            ));
            assert_eq!(err.key_path(), Some("routes[0].path"), "{path}");
            assert!(err.to_string().contains("invalid parameter name"), "{err}");
        }
        let config =
            parse("routes:\n  - path: /{_Room9}\n    upstream: http://u/{_Room9}\n").unwrap();
        assert_eq!(
            config.routes[0].path.params().collect::<Vec<_>>(),
            ["_Room9"]
        );
    }

    #[test]
    fn a_parameter_name_may_appear_once() {
        let err = parse_err("routes:\n  - path: /{a}/{a}\n    upstream: http://u/{a}\n");
        assert!(err
            .to_string()
            .ends_with("parameter {a} appears twice in path \"/{a}/{a}\""));
    }

    #[test]
    fn a_path_has_no_empty_or_dot_segments() {
        for path in ["/a//b", "/a/", "/a/../b"] {
            let err = parse_err(&format!(
                "routes:\n  - path: {path}\n    upstream: http://u/a\n"
            ));
            assert_eq!(err.key_path(), Some("routes[0].path"), "{path}");
        }
    }

    #[test]
    fn a_path_literal_allows_pchars_only() {
        let err = parse_err("routes:\n  - path: /a b\n    upstream: http://u/a\n");
        assert!(
            err.to_string().contains("which must be percent-encoded"),
            "{err}"
        );
        let err = parse_err("routes:\n  - path: /a%zz\n    upstream: http://u/a\n");
        assert!(err.to_string().contains("two hex digits"), "{err}");
        parse("routes:\n  - path: \"/v1/a%20b/@me:x;y=1\"\n    upstream: http://u/a\n").unwrap();
    }

    #[test]
    fn the_root_path_has_no_segments() {
        let config = parse("routes:\n  - path: /\n    upstream: http://u/\n").unwrap();
        assert_eq!(config.routes[0].path.segments(), []);
    }

    #[test]
    fn duplicate_paths_name_both_routes() {
        let err = parse_err(
            "routes:\n  - path: /a\n    upstream: http://u/a\n  - path: /a\n    upstream: http://u/b\n",
        );
        assert_eq!(err.key_path(), Some("routes[1].path"));
        assert_eq!(err.location(), None);
        assert_eq!(
            err.to_string(),
            "gateway.yaml: routes[1].path: duplicate path \"/a\" (also routes[0])"
        );
    }

    #[test]
    fn templates_of_the_same_shape_clash() {
        let err = parse_err(
            "routes:\n  - path: /rooms/{room}\n    upstream: http://u/{room}\n  - path: /rooms/{id}\n    upstream: http://v/{id}\n",
        );
        assert_eq!(err.key_path(), Some("routes[1].path"));
        assert!(err.to_string().ends_with(
            "path \"/rooms/{id}\" matches the same requests as routes[0] \"/rooms/{room}\""
        ));
    }

    #[test]
    fn a_literal_beside_a_template_is_not_a_clash() {
        let config = parse(
            "routes:\n  - path: /rooms/{room}\n    upstream: http://u/{room}\n  - path: /rooms/lobby\n    upstream: http://u/lobby\n",
        )
        .unwrap();
        assert_eq!(config.routes.len(), 2);
    }

    // === upstreams ===

    #[test]
    fn an_unsupported_scheme_is_rejected_at_its_value() {
        let err = parse_err("routes:\n  - path: /a\n    upstream: ftp://x\n");
        assert_eq!(err.key_path(), Some("routes[0].upstream"));
        assert_eq!(err.location(), Some((3, 15)));
        assert_eq!(
            err.to_string(),
            "gateway.yaml:3:15: routes[0].upstream: unsupported scheme \"ftp\" (expected http, https or builtin)"
        );
    }

    #[test]
    fn an_upstream_without_scheme_says_which_are_accepted() {
        let err = parse_err("routes:\n  - path: /a\n    upstream: 127.0.0.1:9000/a\n");
        assert_eq!(err.key_path(), Some("routes[0].upstream"));
        assert!(err.to_string().ends_with(
            "upstream \"127.0.0.1:9000/a\" has no scheme (expected http://, https:// or builtin:NAME)"
        ));
    }

    #[test]
    fn an_upstream_needs_a_host() {
        let err = parse_err("routes:\n  - path: /a\n    upstream: http:///a\n");
        assert_eq!(err.key_path(), Some("routes[0].upstream"));
        assert_eq!(err.location(), Some((3, 15)));
    }

    #[test]
    fn https_upstreams_with_queries_are_accepted() {
        let config = parse(
            "routes:\n  - path: /r/{room}\n    upstream: https://example.com:8443/r/{room}?x=1&room={room}\n",
        )
        .unwrap();
        let UpstreamTarget::Http(url) = &config.routes[0].upstream else {
            panic!("http upstream expected")
        };
        assert_eq!(url.params().collect::<Vec<_>>(), ["room"]);
    }

    #[test]
    fn an_unknown_builtin_lists_the_known_ones() {
        let err = parse_err("routes:\n  - path: /a\n    upstream: builtin:calendar\n");
        assert_eq!(err.key_path(), Some("routes[0].upstream"));
        assert_eq!(err.location(), Some((3, 15)));
        assert!(err
            .to_string()
            .ends_with("unknown builtin \"calendar\" (known: clock)"));
    }

    #[test]
    fn a_builtin_takes_no_path_parameters() {
        let err = parse_err("routes:\n  - path: /clock/{tz}\n    upstream: builtin:clock\n");
        assert_eq!(err.key_path(), Some("routes[0].upstream"));
        assert_eq!(err.location(), None);
        assert!(err
            .to_string()
            .ends_with("builtin:clock takes no parameters, but path \"/clock/{tz}\" has {tz}"));
    }

    #[test]
    fn an_upstream_parameter_must_come_from_the_path() {
        let err = parse_err(
            "routes:\n  - path: /ok\n    upstream: http://u/ok\n  - path: /rooms/{room}\n    upstream: http://u/{room}/{user}\n",
        );
        assert_eq!(err.key_path(), Some("routes[1].upstream"));
        assert_eq!(err.location(), None);
        assert!(err
            .to_string()
            .ends_with("{user} is not a parameter of path \"/rooms/{room}\""));
    }

    #[test]
    fn every_path_parameter_must_reach_the_upstream() {
        let err = parse_err("routes:\n  - path: /rooms/{room}\n    upstream: http://u/all\n");
        assert_eq!(err.key_path(), Some("routes[0].upstream"));
        assert_eq!(err.location(), None);
        assert!(err
            .to_string()
            .contains("path parameter {room} is not used"));
    }

    #[test]
    fn an_upstream_parameter_may_not_choose_the_host() {
        let err = parse_err("routes:\n  - path: /{host}\n    upstream: http://{host}/events\n");
        assert_eq!(err.key_path(), Some("routes[0].upstream"));
        assert!(err.to_string().contains("parameter in its host"), "{err}");
    }

    #[test]
    fn unbalanced_braces_in_an_upstream_are_rejected() {
        for upstream in ["http://u/{a", "http://u/a}"] {
            let err = parse_err(&format!(
                "routes:\n  - path: /a\n    upstream: \"{upstream}\"\n"
            ));
            assert_eq!(err.key_path(), Some("routes[0].upstream"), "{upstream}");
        }
    }

    #[test]
    fn resolve_percent_encodes_all_but_unreserved() {
        let url = UrlTemplate::parse("http://127.0.0.1:9000/rooms/{room}?x=1").unwrap();
        assert_eq!(
            url.resolve(&[("room", "a b/c")]),
            "http://127.0.0.1:9000/rooms/a%20b%2Fc?x=1"
        );
        assert_eq!(
            url.resolve(&[("room", "Az09-._~?#&=%é")]),
            "http://127.0.0.1:9000/rooms/Az09-._~%3F%23%26%3D%25%C3%A9?x=1"
        );
    }

    #[test]
    fn resolve_fills_every_occurrence_of_every_parameter() {
        let url = UrlTemplate::parse("http://u/{a}/{b}?again={a}").unwrap();
        assert_eq!(
            url.resolve(&[("b", "2"), ("a", "1")]),
            "http://u/1/2?again=1"
        );
        assert_eq!(url.params().collect::<Vec<_>>(), ["a", "b"]);
    }

    // === headers ===

    #[test]
    fn an_invalid_header_name_names_its_key() {
        let err = parse_err(
            "routes:\n  - path: /a\n    upstream: http://u/a\n    headers:\n      \"bad name\": x\n",
        );
        assert_eq!(err.key_path(), Some("routes[0].headers.bad name"));
        assert_eq!(err.location(), Some((5, 19)));
        assert!(err
            .to_string()
            .ends_with("invalid header name \"bad name\""));
    }

    #[test]
    fn an_invalid_header_value_names_its_key_but_not_the_value() {
        let err = parse_err(
            "routes:\n  - path: /a\n    upstream: http://u/a\n    headers:\n      x-token: \"se\\x01cret\"\n",
        );
        assert_eq!(err.key_path(), Some("routes[0].headers.x-token"));
        assert_eq!(err.location(), Some((5, 16)));
        assert!(!err.to_string().contains("cret"), "{err}");
    }

    #[test]
    fn headers_the_gateway_manages_cannot_be_configured() {
        let err = parse_err(
            "routes:\n  - path: /a\n    upstream: http://u/a\n    headers:\n      Last-Event-ID: \"5\"\n",
        );
        assert_eq!(err.key_path(), Some("routes[0].headers.Last-Event-ID"));
        assert!(err.to_string().ends_with(
            "header `last-event-id` is managed by the gateway and cannot be configured"
        ));
    }

    #[test]
    fn a_header_given_twice_in_any_case_is_rejected() {
        let err = parse_err(
            "routes:\n  - path: /a\n    upstream: http://u/a\n    headers:\n      authorization: a\n      Authorization: b\n",
        );
        assert_eq!(err.key_path(), Some("routes[0].headers.Authorization"));
        assert_eq!(err.location(), Some((6, 22)));
    }

    #[test]
    fn header_values_are_sensitive_and_never_printed() {
        let config = parse(SPEC_EXAMPLE).unwrap();
        let (name, value) = &config.routes[1].headers[0];
        assert!(value.is_sensitive());
        let debug = format!("{config:?}");
        assert!(!debug.contains("example-token"), "{debug}");
        let summary = config.summary();
        assert!(!summary.contains("example-token"), "{summary}");
        assert!(summary.contains(name.as_str()), "{summary}");
    }

    // === summary, load ===

    #[test]
    fn the_summary_shows_listeners_settings_and_routes() {
        let summary = parse(SPEC_EXAMPLE).unwrap().summary();
        for expected in [
            "configuration gateway.yaml",
            "0.0.0.0:8080 (http)",
            "0.0.0.0:8443 (tls, cert deploy/certs/server.pem, key deploy/certs/server-key.pem)",
            "admin      127.0.0.1:9090",
            "heartbeat  15s",
            "backoff 250ms..30s",
            "max line 64KiB",
            "limits     clients 10000 (per route any, per ip any), over limit retry, header timeout 10s, max header 8KiB, idle 1m",
            "routes (3)",
            "/rooms/{room} -> http://127.0.0.1:9000/rooms/{room}  (headers: authorization; replay 4096 events, gap event \"gap\")",
            "/demo         -> builtin:clock\n",
        ] {
            assert!(summary.contains(expected), "missing {expected:?} in\n{summary}");
        }
        assert!(summary.lines().count() < 24, "one screen:\n{summary}");
    }

    #[test]
    fn load_names_an_unreadable_file_as_given() {
        let path = Path::new("does/not/exist/gateway.yaml");
        let err = Config::load(path, &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(
            err.to_string()
                .starts_with("error reading does/not/exist/gateway.yaml: "),
            "{err}"
        );
        assert_eq!(err.key_path(), None);
        assert_eq!(err.location(), None);
    }

    #[test]
    fn load_reads_and_validates_the_file() {
        let dir = std::env::temp_dir().join(format!("sse-gateway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, ROUTE).unwrap();
        let config = Config::load(&path, &Overrides::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(config.file, path);
        assert_eq!(config.routes.len(), 1);
    }
}
