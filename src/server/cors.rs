//! Per-route CORS (`cors:` on a route): which browser origins may read a route's
//! stream, the answer to a preflight, and the headers every answer of the route
//! carries.
//!
//! An origin on the list (or any, with `*`) gets `access-control-allow-origin` (and
//! `-credentials` where configured) on every answer of the route, errors included,
//! so the page can read why. Any other origin gets no CORS headers, and the browser
//! keeps the answer from the page. `vary: origin` is on every answer of a CORS
//! route, since what it carries depends on the origin. Routes without `cors:` are
//! untouched: no headers, and `OPTIONS` stays `405`.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ALLOW,
    ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::stream::ResponseBody;
use crate::config::{CorsConfig, CorsOrigins};

/// Request headers a page may send: what `EventSource` sends on a reconnect, and what
/// fetch-based SSE clients commonly add.
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("last-event-id, cache-control, accept");
/// How long a browser may cache a preflight answer; Chromium caps it at 2 hours.
const MAX_AGE: HeaderValue = HeaderValue::from_static("7200");

/// The answer to `OPTIONS` on a CORS route: `204`, plus the preflight allowances
/// when it is a preflight (`access-control-request-method`) from an allowed origin.
pub(crate) fn preflight(cors: &CorsConfig, request: &HeaderMap) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    if request.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        && allowed(cors, request.get(ORIGIN)).is_some()
    {
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD"),
        );
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        headers.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    }
    response
}

/// Adds the route's CORS headers for the request's `origin` to an answer.
pub(crate) fn apply(cors: &CorsConfig, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
    response.append(VARY, HeaderValue::from_static("origin"));
    if let Some(allow) = allowed(cors, origin) {
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if cors.credentials {
            response.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The `access-control-allow-origin` value for `origin`, if it is allowed.
fn allowed(cors: &CorsConfig, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    let origin = origin?;
    match &cors.origins {
        // Validation keeps credentials away from `*`, so `*` itself is the answer.
        CorsOrigins::Any => Some(HeaderValue::from_static("*")),
        CorsOrigins::List(list) => {
            let text = origin.to_str().ok()?;
            // The list is lowercase; browsers send origins lowercase too, but a
            // hand-written client may not.
            list.iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(text))
                .then(|| origin.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: CorsOrigins, credentials: bool) -> CorsConfig {
        CorsConfig {
            origins,
            credentials,
        }
    }

    fn headers_for(cors: &CorsConfig, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        apply(cors, origin.as_ref(), &mut headers);
        headers
    }

    #[test]
    fn a_listed_origin_is_echoed_with_credentials_and_others_get_nothing() {
        let c = cors(CorsOrigins::List(vec!["https://a.example".into()]), true);
        let h = headers_for(&c, Some("https://A.example"));
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://A.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[VARY], "origin");
        for origin in [
            Some("https://b.example"),
            Some("https://a.example:8443"),
            None,
        ] {
            let h = headers_for(&c, origin);
            assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN), "{origin:?}");
            assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        }
    }

    #[test]
    fn star_answers_star_without_credentials() {
        let h = headers_for(&cors(CorsOrigins::Any, false), Some("https://x.example"));
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn a_plain_options_gets_204_and_allow_without_preflight_allowances() {
        let c = cors(CorsOrigins::Any, false);
        let r = preflight(&c, &HeaderMap::new());
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD, OPTIONS");
        assert!(!r.headers().contains_key(ACCESS_CONTROL_ALLOW_METHODS));
    }
}
