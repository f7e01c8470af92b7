//! The status page: one HTML file with its script, stylesheet and icon, built into
//! the binary (no CDN, no build step). It renders what `/status/events` streams.
//!
//! The page, script and style are separate files so the content security policy
//! can forbid every inline script and style: the page loads only from its own
//! origin, talks only to its own origin, and cannot be framed.

use bytes::Bytes;
use http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderValue, Response, StatusCode};

use super::full;
use super::status::AdminBody;

const HTML: &str = include_str!("status.html");
const SCRIPT: &str = include_str!("status.js");
const STYLE: &str = include_str!("status.css");
const ICON: &str = include_str!("status.svg");

/// Same origin for everything; nothing inline; no plugins, forms, frames or base
/// rewriting. `connect-src` covers the page's `EventSource`.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub(super) fn html() -> Response<AdminBody> {
    asset(HTML, "text/html; charset=utf-8")
}

pub(super) fn script() -> Response<AdminBody> {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(super) fn style() -> Response<AdminBody> {
    asset(STYLE, "text/css; charset=utf-8")
}

pub(super) fn icon() -> Response<AdminBody> {
    asset(ICON, "image/svg+xml")
}

fn asset(body: &'static str, content_type: &'static str) -> Response<AdminBody> {
    let mut response = full(
        StatusCode::OK,
        Bytes::from_static(body.as_bytes()),
        content_type,
    );
    let headers = response.headers_mut();
    let static_headers: [(HeaderName, &'static str); 4] = [
        (CONTENT_SECURITY_POLICY, POLICY),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        // Revalidate every time, so an upgraded gateway never shows an old page.
        (CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in static_headers {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
