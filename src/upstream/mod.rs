//! Dials and reads one upstream: an `http(s)://` event stream or a built-in source.
//!
//! [`connect`] returns an [`Upstream`] that yields parsed events; it knows nothing of
//! clients or rings. Reconnecting, backoff policy and what to do with events belong
//! to the hub's source task; [`Backoff`] computes the delays.

mod backoff;
mod builtin;
mod client;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode, Uri};

pub(crate) use backoff::Backoff;
pub(crate) use client::{tls_config_with_ca, CaError};

use crate::config::Builtin;
use crate::sse::{Event, ParseError};

/// Where a source's events come from.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Http(Uri),
    Builtin(Builtin),
}

/// Dial settings shared by every source.
#[derive(Clone)]
pub(crate) struct ConnectSettings {
    /// Bounds TCP connect, TLS handshake and the response head together.
    pub(crate) connect_timeout: Duration,
    pub(crate) max_line: usize,
    tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ConnectSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectSettings")
            .field("connect_timeout", &self.connect_timeout)
            .field("max_line", &self.max_line)
            .finish_non_exhaustive()
    }
}

impl ConnectSettings {
    pub(crate) fn new(connect_timeout: Duration, max_line: usize) -> Self {
        Self {
            connect_timeout,
            max_line,
            tls: Arc::new(client::tls_config()),
        }
    }

    /// The same settings, trusting `tls`'s roots instead (a route's `ca`).
    pub(crate) fn with_tls(&self, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls,
            ..self.clone()
        }
    }
}

/// Why one upstream connection ended or never started. The source retries every
/// variant with backoff except `NoContent`, which ends the source (HTTP 204).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect timed out after {timeout:?}")]
    ConnectTimeout { timeout: Duration },
    #[error("upstream url has no host")]
    NoHost,
    #[error("tcp connect failed")]
    Connect(#[source] std::io::Error),
    #[error("tls handshake failed")]
    Tls(#[source] std::io::Error),
    #[error("http handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("upstream answered {status}")]
    Status { status: StatusCode },
    #[error("upstream content-type is {found:?}, not text/event-stream")]
    ContentType { found: Option<HeaderValue> },
    #[error("upstream answered 204; source closed")]
    NoContent,
    #[error("route ca unusable")]
    Ca(#[source] CaError),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("upstream connection failed")]
    Transport(#[source] hyper::Error),
}

/// One open upstream stream.
pub(crate) struct Upstream {
    inner: Inner,
}

enum Inner {
    Http(Box<client::HttpStream>),
    Clock {
        clock: builtin::Clock,
        last_id: String,
    },
}

/// Opens `target`, asking it to resume after `last_event_id` (empty: from now).
///
/// # Errors
/// Any failure to get a `200 text/event-stream` answer; `NoContent` for 204.
pub(crate) async fn connect(
    target: &Target,
    headers: &[(HeaderName, HeaderValue)],
    last_event_id: &str,
    settings: &ConnectSettings,
) -> Result<Upstream, UpstreamError> {
    let inner = match target {
        Target::Http(uri) => {
            let connecting = client::connect(uri, headers, last_event_id, settings);
            match tokio::time::timeout(settings.connect_timeout, connecting).await {
                Ok(stream) => Inner::Http(Box::new(stream?)),
                Err(_) => {
                    return Err(UpstreamError::ConnectTimeout {
                        timeout: settings.connect_timeout,
                    })
                }
            }
        }
        Target::Builtin(Builtin::Clock) => Inner::Clock {
            clock: builtin::Clock::new(),
            last_id: last_event_id.to_owned(),
        },
    };
    Ok(Upstream { inner })
}

impl Upstream {
    /// Waits for the next piece of the stream and appends its events to `out`
    /// (possibly none): everything already received, up to `max_frames` reads'
    /// worth. `Ok(false)` when the upstream ended the stream.
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled call loses no parsed event.
    pub(crate) async fn next(
        &mut self,
        out: &mut Vec<Event>,
        max_frames: usize,
    ) -> Result<bool, UpstreamError> {
        match &mut self.inner {
            Inner::Http(stream) => stream.next(out, max_frames).await,
            Inner::Clock { clock, last_id } => {
                let event = clock.next().await;
                if let Some(id) = &event.id {
                    id.clone_into(last_id);
                }
                out.push(event);
                Ok(true)
            }
        }
    }

    /// The last event id the upstream set, or what the connection resumed from.
    pub(crate) fn last_event_id(&self) -> &str {
        match &self.inner {
            Inner::Http(stream) => stream.last_event_id(),
            Inner::Clock { last_id, .. } => last_id,
        }
    }

    /// The upstream's latest `retry:`, if it sent one.
    pub(crate) fn retry(&self) -> Option<Duration> {
        match &self.inner {
            Inner::Http(stream) => stream.retry(),
            Inner::Clock { .. } => None,
        }
    }
}
