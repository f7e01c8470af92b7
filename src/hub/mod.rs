//! Sources, replay and fan-out.
//!
//! The `Hub` maps each [`SourceKey`] (the resolved upstream URL) to one running
//! [`Source`]: created by its first subscriber, kept for `upstream.linger` after its
//! last one leaves. A source's upstream task pushes each event, encoded once, into
//! its [`ReplayRing`]; every [`Subscription`] is a cursor into that ring. The hub
//! knows nothing of HTTP servers: it hands out subscriptions and closes them.

mod backfill;
mod replay;
mod source;
mod subscription;

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use std::time::SystemTime;

use dashmap::DashMap;
use http::{HeaderName, HeaderValue};

use crate::config::{Builtin, Config, RouteConfig, UpstreamConfig, UpstreamTarget};
use crate::metrics::Metrics;
use crate::upstream;

pub(crate) use replay::Read;
use source::Source;
pub use source::UpstreamState;
pub(crate) use subscription::{LagProbe, Subscription};

/// One upstream subscription's identity: the upstream URL after template
/// substitution (or `builtin:NAME`). Equal keys share one upstream connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey(Arc<str>);

impl SourceKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event id as the upstream (or `assign_ids`) wrote it: opaque, compared, never
/// parsed. Never converted to or from a [`Seq`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EventId(Arc<str>);

impl EventId {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for EventId {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

/// Our own position in a source's ring: dense, increasing, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Seq(pub(crate) u64);

/// Why a source's ring was closed; what its clients are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The upstream answered 204: clients' streams end and new subscribers get 204.
    Ended,
    /// Drain or reload: clients get `retry: retry + random share of jitter`, then
    /// their stream ends, so they come back to whoever serves next.
    Removed { retry: Duration, jitter: Duration },
}

/// Everything a source needs to run, resolved from a route and its path values.
#[derive(Clone, Debug)]
pub(crate) struct SourceSpec {
    pub(crate) key: SourceKey,
    pub(crate) target: upstream::Target,
    pub(crate) headers: Arc<[(HeaderName, HeaderValue)]>,
    pub(crate) replay_events: usize,
    pub(crate) assign_ids: bool,
    /// Fetch missing events from the upstream for resumptions the ring can't serve.
    pub(crate) backfill: bool,
    /// The route's upstream as configured (`http://…/{room}`); reload keeps a
    /// source only while some route still has this upstream and these settings.
    pub(crate) template: Arc<str>,
    /// The path of the route that started the source, for status and metrics.
    pub(crate) route: Arc<str>,
    /// The route's `ca`: the upstream's certificate must chain to these roots.
    pub(crate) ca: Option<Arc<Path>>,
}

impl SourceSpec {
    /// Whether a reload must restart this source: anything that shapes its
    /// upstream connection or its ring.
    fn same_source_as(&self, other: &SourceSpec) -> bool {
        self.template == other.template
            && self.headers == other.headers
            && self.replay_events == other.replay_events
            && self.assign_ids == other.assign_ids
            && self.ca == other.ca
    }
}

/// A route's upstream could not be resolved with the given values.
#[derive(Debug, thiserror::Error)]
#[error("upstream url {url:?} is not valid")]
pub(crate) struct InvalidUpstream {
    url: String,
    #[source]
    source: http::uri::InvalidUri,
}

impl SourceSpec {
    /// Resolves `route`'s upstream with the (decoded, validated) path values.
    pub(crate) fn for_route(
        route: &RouteConfig,
        headers: Arc<[(HeaderName, HeaderValue)]>,
        params: &[(&str, &str)],
    ) -> Result<Self, InvalidUpstream> {
        let template: Arc<str> = Arc::from(route.upstream.to_string());
        let (key, target) = match &route.upstream {
            UpstreamTarget::Http(template) => {
                let url = template.resolve(params);
                let uri = url.parse::<http::Uri>().map_err(|source| InvalidUpstream {
                    url: url.clone(),
                    source,
                })?;
                (SourceKey(Arc::from(url)), upstream::Target::Http(uri))
            }
            UpstreamTarget::Builtin(builtin) => {
                let name = match builtin {
                    Builtin::Clock => "builtin:clock",
                };
                (
                    SourceKey(Arc::from(name)),
                    upstream::Target::Builtin(*builtin),
                )
            }
        };
        // Stamped ids are ours: the upstream can't resume from them.
        let backfill =
            route.backfill && !route.assign_ids && matches!(target, upstream::Target::Http(_));
        Ok(Self {
            key,
            target,
            headers,
            replay_events: route.replay.events,
            assign_ids: route.assign_ids,
            backfill,
            template,
            route: Arc::from(route.path.as_str()),
            ca: route.ca.as_deref().map(Arc::from),
        })
    }
}

/// How one client subscribes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubscribeOptions<'a> {
    /// `Last-Event-ID` (or `?lastEventId=`), if the client sent one.
    pub(crate) last_event_id: Option<&'a str>,
    /// Name of the event sent when the id is not kept; empty disables it.
    pub(crate) gap_event: &'a str,
    /// How many events the client may fall behind before it is cut.
    pub(crate) queue: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    /// The upstream ended this source with 204.
    #[error("source ended by upstream (204)")]
    Ended,
}

/// Sources by key. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    sources: DashMap<SourceKey, Arc<Source>>,
    /// The newest upstream failures, for the status page.
    recent: Mutex<VecDeque<Failure>>,
    /// Configured routes, for the status page.
    routes: RwLock<Vec<RouteStatus>>,
    /// Client configs for routes' `ca` files, read once; a reload reads them again.
    ca_tls: DashMap<Arc<Path>, Arc<rustls::ClientConfig>>,
    /// Read when a source starts; a reload replaces it for sources started later.
    upstream: RwLock<UpstreamSettings>,
    metrics: Arc<Metrics>,
}

/// What every source's upstream task needs, from `upstream:` in the config.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamSettings {
    pub(crate) connect: upstream::ConnectSettings,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) linger: Duration,
}

impl Hub {
    pub fn new(config: &UpstreamConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(HubInner {
                sources: DashMap::new(),
                recent: Mutex::new(VecDeque::new()),
                routes: RwLock::new(Vec::new()),
                ca_tls: DashMap::new(),
                upstream: RwLock::new(UpstreamSettings::from_config(config)),
                metrics,
            }),
        }
    }

    /// Applies a reloaded configuration: sources no route produces any more (or
    /// whose route changed its upstream, headers, replay size or id stamping) are
    /// closed, and their clients get `retry` + jitter and an end of stream. Every
    /// other source keeps its upstream connection, ring and clients. New upstream
    /// settings apply to sources started from now on.
    pub fn reconfigure(&self, config: &Config, retry: Duration, jitter: Duration) -> usize {
        self.set_routes(&config.routes);
        self.inner.ca_tls.clear();
        *self
            .inner
            .upstream
            .write()
            .unwrap_or_else(|e| e.into_inner()) = UpstreamSettings::from_config(&config.upstream);
        let wanted: Vec<SourceSpec> = config
            .routes
            .iter()
            .filter_map(|route| {
                // Values don't matter for the comparison: template, headers and
                // settings do. Fill every `{name}` with a placeholder.
                let params: Vec<(&str, &str)> = route.path.params().map(|p| (p, "x")).collect();
                SourceSpec::for_route(route, route.headers.iter().cloned().collect(), &params).ok()
            })
            .collect();
        self.close_where(
            |source| !wanted.iter().any(|w| w.same_source_as(&source.spec)),
            retry,
            jitter,
        )
    }

    /// Subscribes a client to the source `spec` names, starting that source if it
    /// is not running.
    ///
    /// # Errors
    /// `Ended` if the upstream ended the source with 204 (answer the client 204).
    pub(crate) fn subscribe(
        &self,
        spec: &SourceSpec,
        options: SubscribeOptions<'_>,
    ) -> Result<Subscription, SubscribeError> {
        // The count goes up while the map's shard lock is held, so a lingering
        // source can never be removed between lookup and increment.
        let source = {
            let entry = self
                .inner
                .sources
                .entry(spec.key.clone())
                .or_insert_with(|| Source::spawn(spec.clone(), &self.inner));
            if entry.ring.closed() == Some(CloseReason::Ended) {
                return Err(SubscribeError::Ended);
            }
            entry.acquire();
            Arc::clone(entry.value())
        };
        let backfill = match options.last_event_id {
            Some(id) if spec.backfill && !source.ring.holds(id) => {
                // A `ca` that can't be read makes the backfill fail like any
                // upstream failure: the client gets the gap.
                match self.inner.connect_settings(spec) {
                    Ok(connect) => source.backfills.join(&source, spec, id, &connect),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        Ok(Subscription::new(
            source,
            options,
            backfill,
            &self.inner.metrics,
        ))
    }

    /// Closes every source: clients get what is queued, then the retry hint and
    /// the end of their stream. Used when draining.
    pub(crate) fn close_all(&self, retry: Duration, jitter: Duration) -> usize {
        self.close_where(|_| true, retry, jitter)
    }

    /// Closes the sources that match, as [`Hub::close_all`] does.
    fn close_where(
        &self,
        mut matches: impl FnMut(&Source) -> bool,
        retry: Duration,
        jitter: Duration,
    ) -> usize {
        let mut closed = Vec::new();
        self.inner.sources.retain(|_, source| {
            if matches(source) {
                closed.push(Arc::clone(source));
                false
            } else {
                true
            }
        });
        for source in &closed {
            source.close(CloseReason::Removed { retry, jitter });
        }
        closed.len()
    }

    /// Number of sources running or lingering now.
    pub fn source_count(&self) -> usize {
        self.inner.sources.len()
    }

    /// Records the configured routes, for [`Hub::snapshot`].
    pub fn set_routes(&self, routes: &[RouteConfig]) {
        *self.inner.routes.write().unwrap_or_else(|e| e.into_inner()) = routes
            .iter()
            .map(|r| RouteStatus {
                path: r.path.as_str().to_owned(),
                upstream: r.upstream.to_string(),
                clients: 0,
            })
            .collect();
    }

    /// What the status page shows: routes, sources and recent upstream failures.
    pub fn snapshot(&self) -> Snapshot {
        let mut sources: Vec<SourceStatus> = self
            .inner
            .sources
            .iter()
            .map(|entry| {
                let s = entry.value();
                let (buffered, capacity) = s.ring.fill();
                SourceStatus {
                    key: s.key.to_string(),
                    route: s.spec.route.to_string(),
                    state: s.status.state(),
                    clients: s.clients(),
                    last_event_id: s.ring.newest_id().map(|id| id.as_str().to_owned()),
                    buffered,
                    capacity,
                    events_received: s.status.received.load(std::sync::atomic::Ordering::Relaxed),
                    reconnects: s
                        .status
                        .reconnects
                        .load(std::sync::atomic::Ordering::Relaxed),
                    last_error: s
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                }
            })
            .collect();
        sources.sort_by(|a, b| a.key.cmp(&b.key));
        let mut routes = self
            .inner
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for route in &mut routes {
            route.clients = sources
                .iter()
                .filter(|s| s.route == route.path)
                .map(|s| s.clients)
                .sum();
        }
        let recent = self
            .inner
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect();
        Snapshot {
            routes,
            sources,
            recent_failures: recent,
        }
    }
}

impl UpstreamSettings {
    fn from_config(config: &UpstreamConfig) -> Self {
        Self {
            connect: upstream::ConnectSettings::new(config.connect_timeout, config.max_line),
            backoff_initial: config.backoff.initial,
            backoff_max: config.backoff.max,
            linger: config.linger,
        }
    }
}

/// How many upstream failures the status page remembers.
const RECENT_FAILURES: usize = 32;

impl HubInner {
    pub(super) fn record_failure(&self, key: &SourceKey, reason: &str) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_FAILURES {
            recent.pop_front();
        }
        recent.push_back(Failure {
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            source: key.to_string(),
            reason: reason.to_owned(),
        });
    }

    /// Dial settings for `spec`: the shared ones, or with the route's `ca` roots.
    pub(super) fn connect_settings(
        &self,
        spec: &SourceSpec,
    ) -> Result<upstream::ConnectSettings, upstream::CaError> {
        let settings = self.settings().connect;
        let Some(ca) = &spec.ca else {
            return Ok(settings);
        };
        if let Some(tls) = self.ca_tls.get(ca) {
            return Ok(settings.with_tls(Arc::clone(&tls)));
        }
        let tls = Arc::new(upstream::tls_config_with_ca(ca)?);
        self.ca_tls.insert(Arc::clone(ca), Arc::clone(&tls));
        Ok(settings.with_tls(tls))
    }

    pub(super) fn settings(&self) -> UpstreamSettings {
        self.upstream
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes `source` if it is still the one under its key and has no clients.
    fn remove_if_idle(&self, source: &Arc<Source>) -> bool {
        self.sources
            .remove_if(&source.key, |_, s| Arc::ptr_eq(s, source) && s.is_idle())
            .is_some()
    }
}

/// `retry: <ms>` as its own frame, for the start and end of client streams.
pub(crate) fn retry_frame(retry: Duration) -> bytes::Bytes {
    crate::sse::encode_retry(u64::try_from(retry.as_millis()).unwrap_or(u64::MAX))
}

/// The heartbeat comment sent to an idle client; every parser ignores it.
pub(crate) fn heartbeat_frame() -> bytes::Bytes {
    crate::sse::encode_comment("heartbeat")
}

/// The hub as the status page shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Snapshot {
    pub routes: Vec<RouteStatus>,
    pub sources: Vec<SourceStatus>,
    /// Newest first.
    pub recent_failures: Vec<Failure>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RouteStatus {
    pub path: String,
    pub upstream: String,
    pub clients: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceStatus {
    pub key: String,
    pub route: String,
    pub state: UpstreamState,
    pub clients: usize,
    pub last_event_id: Option<String>,
    pub buffered: usize,
    pub capacity: usize,
    pub events_received: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// One upstream disconnect or failed connect.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Failure {
    pub at: String,
    pub source: String,
    pub reason: String,
}

/// A route's `ca` file can't be used; names the route.
#[derive(Debug, thiserror::Error)]
#[error("routes[{index}].ca: {source}")]
pub struct CaCheckError {
    index: usize,
    #[source]
    source: upstream::CaError,
}

/// Reads every route's `ca` file, so a bad one stops the start (exit 2) instead of
/// failing each connect later.
///
/// # Errors
/// The first route whose `ca` can't be read or holds no certificate.
pub fn check_upstream_tls(routes: &[RouteConfig]) -> Result<(), CaCheckError> {
    for (index, route) in routes.iter().enumerate() {
        if let Some(ca) = &route.ca {
            upstream::tls_config_with_ca(ca).map_err(|source| CaCheckError { index, source })?;
        }
    }
    Ok(())
}
