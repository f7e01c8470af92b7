//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the status data
//! (`/status.json`, and `/status/events`, the same as a live event stream) and the
//! status page that shows it (`/`), on its own address and never on the public one.
//! It observes; it changes nothing.
//!
//! It runs outside the drain's tracker, so `/healthz` answers 200 until the process
//! exits while `/readyz` answers 503 from the first moment of a drain.

mod page;
mod status;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::drain::DrainWatch;
use crate::hub::Hub;
use crate::metrics::Metrics;
use status::{AdminBody, StatusStream, View};

pub struct Admin {
    listener: TcpListener,
}

impl Admin {
    /// # Errors
    /// If the admin address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process exits.
    pub fn serve(self, metrics: Arc<Metrics>, drain: DrainWatch, hub: Hub) {
        if let Ok(addr) = self.listener.local_addr() {
            info!(addr = %addr, kind = %"admin", "listening");
        }
        let view = Arc::new(View::new(metrics, drain, hub));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = match self.listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(error = %error, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let view = Arc::clone(&view);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let response = answer(&request, &view);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    if let Err(error) = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await
                    {
                        debug!(error = %error, "admin connection closed with an error");
                    }
                });
            }
        });
    }
}

fn answer<B>(request: &Request<B>, view: &Arc<View>) -> Response<AdminBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if view.is_serving() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/metrics" => full(
            StatusCode::OK,
            Bytes::from(view.metrics_text()),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/" | "/index.html" => page::html(),
        "/status.js" => page::script(),
        "/status.css" => page::style(),
        "/status.svg" => page::icon(),
        "/status.json" => full(StatusCode::OK, Bytes::from(view.json()), "application/json"),
        "/status/events" => {
            let mut response =
                Response::new(AdminBody::Stream(StatusStream::new(Arc::clone(view))));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn full(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<AdminBody> {
    let mut response = Response::new(AdminBody::Full(Full::new(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<AdminBody> {
    full(
        status,
        Bytes::from_static(body.as_bytes()),
        "text/plain; charset=utf-8",
    )
}
