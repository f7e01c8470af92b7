//! Accepts and routes: binds the public listeners, serves HTTP/1.1 and HTTP/2 on
//! them, matches each request to a route and answers it with a client stream from
//! the hub, or with 404, 405, 400 or 204 as the contract says.
//!
//! Around that: `tls` (certificates, ALPN, handshake, reload), `listener` (accept
//! loops, connection timeouts, the HTTP/1.1 stall check), `h2` (the per-stream stall
//! check of HTTP/2), `limits` (client caps and the over-limit answer) and `cors`.

mod cors;
mod h1;
mod h2;
mod limits;
mod listener;
pub(crate) mod routes;
mod stream;
mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{debug, debug_span, error, info};

use crate::config::{Config, ListenerConfig};
use crate::drain::DrainWatch;
use crate::hub::{self, Hub, SourceSpec, SubscribeError, SubscribeOptions};
use crate::metrics::Metrics;
use limits::Limiter;
use listener::ConnShared;
use routes::RouteTable;
use stream::{jittered, ClientStream, ResponseBody};
pub use tls::{check as check_tls, TlsError, TlsReload};
use tls::{Reloadable, TlsAcceptor};

/// Longest `Last-Event-ID` accepted; longer ones are refused with 400.
const MAX_LAST_EVENT_ID: usize = 1024;
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Which listener a connection came in on, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Public,
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerKind::Public => "public",
        })
    }
}

/// Why the public listeners could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A TLS listener's certificate or key can't be used: a config error.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl BindError {
    /// Whether the configuration is at fault (exit 2) rather than the system.
    pub fn is_config(&self) -> bool {
        matches!(self, BindError::Tls(_))
    }
}

/// What every connection reads: the routes and drain hints (swapped whole on
/// reload) and the hub.
pub(crate) struct ServerState {
    current: RwLock<Arc<Current>>,
    hub: Hub,
    metrics: Arc<Metrics>,
    limiter: Arc<Limiter>,
    drain: DrainWatch,
}

/// The part of the configuration a reload replaces.
struct Current {
    routes: RouteTable,
    drain_retry: Duration,
    drain_jitter: Duration,
    listen: Vec<ListenerConfig>,
}

impl Current {
    fn new(config: &Config) -> Self {
        Self {
            routes: RouteTable::new(&config.routes),
            drain_retry: config.drain.retry,
            drain_jitter: config.drain.retry_jitter,
            listen: config.listen.clone(),
        }
    }
}

impl ServerState {
    fn current(&self) -> Arc<Current> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The running server, for reloads.
#[derive(Clone)]
pub struct Serving {
    state: Arc<ServerState>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Sources closed because no route produces them any more (or their route's
    /// upstream, headers, replay size or id stamping changed).
    pub sources_closed: usize,
    /// The new file asks for different listeners; they were kept as they are.
    pub listeners_kept: bool,
    /// The new file asks for different `limits:`; they apply after a restart.
    pub limits_kept: bool,
}

impl Serving {
    /// Applies a new, already validated configuration. New and changed routes
    /// apply to new subscribers; clients of removed sources are drained with a
    /// retry hint; everything else is untouched. Listener changes are not applied
    /// (they need a restart) and are reported.
    pub fn reload(&self, config: &Config) -> Reloaded {
        let old = self.state.current();
        let listeners_kept = old.listen != config.listen;
        let mut next = Current::new(config);
        if listeners_kept {
            next.listen = old.listen.clone();
        }
        *self
            .state
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        let sources_closed =
            self.state
                .hub
                .reconfigure(config, config.drain.retry, config.drain.retry_jitter);
        Reloaded {
            sources_closed,
            listeners_kept,
            limits_kept: self.state.limiter.config() != &config.limits,
        }
    }
}

/// The public listeners, bound but not yet serving.
pub struct Bound {
    listeners: Vec<(TcpListener, ListenerKind, Option<TlsAcceptor>)>,
    tls: TlsReload,
}

pub struct Server;

impl Server {
    /// Binds every configured public listener.
    ///
    /// # Errors
    /// The first address that cannot be bound, or the first TLS listener whose
    /// certificate or key can't be used.
    pub async fn bind(config: &Config) -> Result<Bound, BindError> {
        let mut listeners = Vec::new();
        let mut reloadable = Vec::new();
        for (index, listen) in config.listen.iter().enumerate() {
            // Certificates first: a bad file fails before any port is taken.
            let tls = match &listen.tls {
                Some(files) => {
                    let acceptor = TlsAcceptor::new(tls::server_config(index, files)?);
                    reloadable.push(Reloadable::new(
                        index,
                        listen.addr,
                        files.clone(),
                        acceptor.clone(),
                    ));
                    Some(acceptor)
                }
                None => None,
            };
            let listener =
                TcpListener::bind(listen.addr)
                    .await
                    .map_err(|source| BindError::Io {
                        addr: listen.addr,
                        source,
                    })?;
            listeners.push((listener, ListenerKind::Public, tls));
        }
        Ok(Bound {
            listeners,
            tls: TlsReload::new(reloadable),
        })
    }
}

impl Bound {
    /// The real bound addresses (port 0 resolved), in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _, _)| l.local_addr().ok())
            .collect()
    }

    /// The handle that re-reads the TLS listeners' certificates (on SIGHUP); it
    /// stays valid while the listeners serve.
    pub fn tls_reload(&self) -> TlsReload {
        self.tls.clone()
    }

    /// Serves until the drain starts. Every connection task is spawned on
    /// `tracker`, so the drain can wait for them. When the drain starts, the
    /// listeners close and every source is closed, which ends every client stream
    /// with its retry hint.
    pub fn serve(
        self,
        config: &Config,
        hub: Hub,
        metrics: Arc<Metrics>,
        drain: DrainWatch,
        tracker: &TaskTracker,
    ) -> Serving {
        hub.set_routes(&config.routes);
        let state = Arc::new(ServerState {
            current: RwLock::new(Arc::new(Current::new(config))),
            hub: hub.clone(),
            metrics,
            limiter: Limiter::new(config.limits.clone()),
            drain: drain.clone(),
        });
        for (listener, kind, tls) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(addr = %addr, kind = %kind, tls = tls.is_some(), "listening");
            }
            tracker.spawn(listener::accept_loop(
                listener,
                kind,
                tls,
                Arc::clone(&state),
                drain.clone(),
                tracker.clone(),
            ));
        }
        let mut watch = drain;
        let serving = Serving {
            state: Arc::clone(&state),
        };
        tokio::spawn(async move {
            watch.draining().await;
            state.metrics.set_draining();
            let current = state.current();
            let sources = hub.close_all(current.drain_retry, current.drain_jitter);
            info!(sources, "draining client streams");
        });
        serving
    }
}

/// Answers one request on the public listener.
fn handle<B>(
    request: Request<B>,
    peer: SocketAddr,
    state: &ServerState,
    conn: &Arc<ConnShared>,
) -> Response<ResponseBody> {
    // RFC 9112 section 3.2: an HTTP/1.1 request without exactly one Host is a 400.
    if request.version() == http::Version::HTTP_11
        && request.headers().get_all(http::header::HOST).iter().count() != 1
    {
        // A client this confused gets no second request on the connection.
        let mut response = plain(
            StatusCode::BAD_REQUEST,
            "exactly one host header required\n",
        );
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let current = state.current();
    let matched = match current.routes.find(request.uri().path()) {
        Ok(Some(matched)) => matched,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "not found\n"),
        Err(error) => {
            debug!(error = %error, "bad path value");
            return plain(StatusCode::BAD_REQUEST, "bad path value\n");
        }
    };
    let (route, params) = matched;
    let Some(cors) = &route.config.cors else {
        return handle_route(request, route, &params, peer, state, conn);
    };
    let origin = request.headers().get(http::header::ORIGIN).cloned();
    let mut response = if request.method() == Method::OPTIONS {
        cors::preflight(cors, request.headers())
    } else {
        handle_route(request, route, &params, peer, state, conn)
    };
    cors::apply(cors, origin.as_ref(), response.headers_mut());
    response
}

/// Answers a request for a matched route.
fn handle_route<B>(
    request: Request<B>,
    route: &routes::Route,
    params: &[(&str, String)],
    peer: SocketAddr,
    state: &ServerState,
    conn: &Arc<ConnShared>,
) -> Response<ResponseBody> {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = if route.config.cors.is_some() {
            "GET, HEAD, OPTIONS"
        } else {
            "GET, HEAD"
        };
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return response;
    }
    let last_event_id = match last_event_id(&request) {
        Ok(id) => id,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    if !state.drain.is_serving() {
        // Draining: tell the client to come back (to whoever serves next).
        let current = state.current();
        let hint = hub::retry_frame(current.drain_retry + jittered(current.drain_jitter));
        return event_stream(ResponseBody::Full(Some(hint)));
    }
    let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let spec = match SourceSpec::for_route(&route.config, Arc::clone(&route.headers), &params) {
        Ok(spec) => spec,
        Err(err) => {
            error!(error = %err, route = %route.config.path.as_str(), "route resolved to an invalid upstream");
            return plain(StatusCode::BAD_GATEWAY, "invalid upstream\n");
        }
    };
    if method == Method::HEAD {
        return event_stream(ResponseBody::empty());
    }
    let permit = match state.limiter.acquire(route.config.path.as_str(), peer.ip()) {
        Ok(permit) => permit,
        Err(exceeded) => {
            state.metrics.limit_rejected(exceeded.name());
            debug!(client.addr = %peer, route = %route.config.path.as_str(), limit = %exceeded, "client over limit");
            return limits::over_limit(route.config.over_limit, route.config.client.retry);
        }
    };
    let options = SubscribeOptions {
        last_event_id: last_event_id.as_deref(),
        gap_event: &route.config.replay.gap_event,
        queue: route.config.client.queue,
    };
    match state.hub.subscribe(&spec, options) {
        Ok(subscription) => {
            // One span per client stream; a disabled level makes it free.
            let span = debug_span!(
                "stream",
                route = %route.config.path.as_str(),
                source.key = %subscription.key(),
                protocol = ?request.version(),
            );
            debug!(parent: &span, client.addr = %peer, last_event_id = ?last_event_id, "client subscribed");
            let mut stream = ClientStream::new(
                subscription,
                route.config.client.retry,
                route.config.heartbeat,
                Arc::clone(&state.metrics),
                Arc::clone(conn),
                request.version() == http::Version::HTTP_2,
                span,
            );
            stream.hold(permit);
            event_stream(ResponseBody::Stream(Box::new(stream)))
        }
        Err(SubscribeError::Ended) => {
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
    }
}

/// `Last-Event-ID` from the header, or `?lastEventId=` for clients that cannot
/// set headers. Empty means none.
fn last_event_id<B>(request: &Request<B>) -> Result<Option<String>, &'static str> {
    let raw = if let Some(value) = request.headers().get(LAST_EVENT_ID) {
        match value.to_str() {
            Ok(v) => Some(v.to_owned()),
            Err(_) => Some(
                String::from_utf8(value.as_bytes().to_vec())
                    .map_err(|_| "last-event-id is not utf-8\n")?,
            ),
        }
    } else {
        request.uri().query().and_then(|query| {
            query.split('&').find_map(|pair| {
                let value = pair.strip_prefix("lastEventId=")?;
                let value = value.replace('+', " ");
                Some(percent_decode_str(&value).decode_utf8_lossy().into_owned())
            })
        })
    };
    match raw {
        None => Ok(None),
        Some(id) if id.is_empty() => Ok(None),
        Some(id) if id.len() > MAX_LAST_EVENT_ID => Err("last-event-id too long\n"),
        Some(id) if id.chars().any(|c| c.is_control()) => {
            Err("last-event-id contains control characters\n")
        }
        Some(id) => Ok(Some(id)),
    }
}

fn event_stream(body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Some(Bytes::from_static(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, header: Option<&str>) -> Request<()> {
        let mut b = Request::get(uri);
        if let Some(h) = header {
            b = b.header("last-event-id", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn last_event_id_comes_from_header_then_query() {
        assert_eq!(
            last_event_id(&request("/e", Some("7"))).unwrap().as_deref(),
            Some("7")
        );
        assert_eq!(
            last_event_id(&request("/e?a=1&lastEventId=a%20b", None))
                .unwrap()
                .as_deref(),
            Some("a b")
        );
        assert_eq!(
            last_event_id(&request("/e?lastEventId=q", Some("h")))
                .unwrap()
                .as_deref(),
            Some("h")
        );
        assert_eq!(last_event_id(&request("/e", None)).unwrap(), None);
        assert_eq!(
            last_event_id(&request("/e?lastEventId=", None)).unwrap(),
            None
        );
    }

    #[test]
    fn over_long_or_control_character_ids_are_refused() {
        let long = "x".repeat(MAX_LAST_EVENT_ID + 1);
        assert!(last_event_id(&request("/e", Some(&long))).is_err());
        assert!(last_event_id(&request("/e?lastEventId=a%00b", None)).is_err());
    }
}
