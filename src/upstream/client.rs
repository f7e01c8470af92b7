//! The HTTP/1.1 client for `http://` and `https://` upstreams: one connection per
//! source, dialed by hand (TCP, then rustls for https, then hyper's handshake) so
//! the connect timeout covers every step and nothing is pooled behind our back.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{ConnectSettings, UpstreamError};
use crate::sse::{Event, Parser};

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Roots for `https://` upstreams: the system's store plus the webpki roots, so a
/// minimal container without ca-certificates still verifies public hosts.
pub(super) fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        debug!(error = %error, "skipping a system certificate");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    debug!(added, "system roots loaded");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Why a route's `ca` file can't be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaError {
    #[error("cannot read CA certificates from {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no usable CA certificate")]
    Empty { path: std::path::PathBuf },
}

/// A client config that trusts only the CA certificates in `path` (a private CA),
/// not the system or webpki roots.
pub(crate) fn tls_config_with_ca(path: &std::path::Path) -> Result<rustls::ClientConfig, CaError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| CaError::Read {
            path: path.to_owned(),
            source,
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(CaError::Empty {
            path: path.to_owned(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

pub(super) struct HttpStream {
    body: Incoming,
    parser: Parser,
    /// hyper's connection, driven by whoever reads the body (see [`send`]).
    conn: Option<Driver>,
    /// How the stream ended, held back while the events before it are handed out.
    end: Option<Result<(), UpstreamError>>,
}

type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

pub(super) async fn connect(
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    last_event_id: &str,
    settings: &ConnectSettings,
) -> Result<HttpStream, UpstreamError> {
    let host = uri.host().ok_or(UpstreamError::NoHost)?;
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // `[::1]` in a URL is `::1` to the resolver.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(UpstreamError::Connect)?;
    let _ = tcp.set_nodelay(true);

    let request = build_request(uri, headers, last_event_id);
    let (response, conn) = if https {
        let name = ServerName::try_from(bare_host.to_owned()).map_err(|_| UpstreamError::NoHost)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&settings.tls))
            .connect(name, tcp)
            .await
            .map_err(UpstreamError::Tls)?;
        send(tls, request).await?
    } else {
        send(tcp, request).await?
    };

    match response.status() {
        StatusCode::OK => {}
        StatusCode::NO_CONTENT => return Err(UpstreamError::NoContent),
        status => return Err(UpstreamError::Status { status }),
    }
    let content_type = response.headers().get(CONTENT_TYPE);
    if !content_type.is_some_and(is_event_stream) {
        return Err(UpstreamError::ContentType {
            found: content_type.cloned(),
        });
    }
    Ok(HttpStream {
        body: response.into_body(),
        parser: Parser::new(settings.max_line).with_last_event_id(last_event_id),
        conn: Some(conn),
        end: None,
    })
}

fn build_request(
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    last_event_id: &str,
) -> Request<Empty<Bytes>> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::get(path)
        .body(Empty::new())
        .expect("a GET with a parsed path is a valid request");
    let h = request.headers_mut();
    if let Some(authority) = uri.authority() {
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            h.insert(HOST, value);
        }
    }
    h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("sse-gateway/", env!("CARGO_PKG_VERSION"))),
    );
    // Configured headers come last so they can override ours.
    for (name, value) in headers {
        h.insert(name.clone(), value.clone());
    }
    if !last_event_id.is_empty() {
        match HeaderValue::from_str(last_event_id) {
            Ok(value) => {
                h.insert(LAST_EVENT_ID, value);
            }
            Err(_) => warn!("last event id is not a valid header value; resuming without it"),
        }
    }
    request
}

/// Sends the request and returns the response with hyper's connection future.
///
/// The connection is driven by the task that reads the body rather than spawned:
/// then one poll of that task decodes every chunk the socket has, instead of one
/// chunk per trip through the scheduler (on a single-threaded runtime a spawned
/// connection task queues behind every client woken by the previous event, so a
/// busy upstream's events would never be read, and written, together).
async fn send<I>(
    io: I,
    request: Request<Empty<Bytes>>,
) -> Result<(http::Response<Incoming>, Driver), UpstreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Handshake)?;
    let mut conn: Driver = Box::pin(conn);
    let mut sending = std::pin::pin!(sender.send_request(request));
    let mut conn_done = false;
    let response = poll_fn(|cx| {
        if !conn_done {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                conn_done = true;
                if let Err(error) = result {
                    return Poll::Ready(Err(error));
                }
            }
        }
        sending.as_mut().poll(cx)
    })
    .await
    .map_err(UpstreamError::Transport)?;
    Ok((response, conn))
}

fn is_event_stream(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
    })
}

impl HttpStream {
    /// Parses every event the upstream has sent so far into `out`: `Ok(true)` with
    /// at least one event, `Ok(false)` once the stream has ended.
    pub(super) async fn next(
        &mut self,
        out: &mut Vec<Event>,
        max_frames: usize,
    ) -> Result<bool, UpstreamError> {
        if let Some(end) = self.end.take() {
            return end.map(|()| false);
        }
        poll_fn(|cx| self.poll_events(cx, out, max_frames)).await
    }

    fn poll_events(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Event>,
        max_frames: usize,
    ) -> Poll<Result<bool, UpstreamError>> {
        for _ in 0..max_frames.max(1) {
            if let Some(conn) = &mut self.conn {
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    if let Err(error) = result {
                        debug!(error = %error, "upstream connection closed");
                    }
                    self.conn = None;
                }
            }
            let end = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending if out.is_empty() => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Ok(true)),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match self.parser.feed(&data, out) {
                        Ok(()) => continue,
                        Err(error) => Err(error.into()),
                    },
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(error))) => Err(UpstreamError::Transport(error)),
                Poll::Ready(None) => Ok(()),
            };
            if out.is_empty() {
                return Poll::Ready(end.map(|()| false));
            }
            // The events before the end go out first.
            self.end = Some(end);
            return Poll::Ready(Ok(true));
        }
        if out.is_empty() {
            // Many frames and no whole event yet: let others run, then go on.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(true))
    }

    pub(super) fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    pub(super) fn retry(&self) -> Option<Duration> {
        self.parser.retry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_content_type_allows_parameters_and_case() {
        for ok in ["text/event-stream", "Text/Event-Stream; charset=utf-8"] {
            assert!(is_event_stream(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in ["text/plain", "text/event-streams", ""] {
            assert!(!is_event_stream(&HeaderValue::from_static(bad)), "{bad}");
        }
    }

    #[test]
    fn request_carries_accept_last_event_id_and_configured_headers() {
        let uri: Uri = "http://example.test:9000/rooms/a%20b?x=1".parse().unwrap();
        let auth = (
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer t"),
        );
        let req = build_request(&uri, &[auth], "41");
        assert_eq!(req.uri(), "/rooms/a%20b?x=1");
        let h = req.headers();
        assert_eq!(h[HOST], "example.test:9000");
        assert_eq!(h[ACCEPT], "text/event-stream");
        assert_eq!(h[LAST_EVENT_ID], "41");
        assert_eq!(h["authorization"], "Bearer t");
        let req = build_request(&uri, &[], "");
        assert!(req.headers().get(LAST_EVENT_ID).is_none());
    }
}
