//! Request paths against a fixed route table.
//!
//! Properties, each checked by [`check`]:
//! 1. no path makes matching panic;
//! 2. a matched template value is non-empty and has no `/`, no control character,
//!    and is not a dot segment (`.` or `..`, which the upstream would resolve away);
//! 3. a matched path always resolves to a valid upstream URL (the request never
//!    gets a 502 for its values), with the route's scheme, host and literal segments,
//!    exactly one path segment per template parameter, which decodes back to the
//!    value: a client chooses values, never hosts or segments.

use std::path::Path;
use std::sync::OnceLock;

use percent_encoding::percent_decode_str;
use sse_gateway::config::{Config, Overrides};
use sse_gateway::fuzzing::{RouteMatch, Routes};

/// Exact and template routes, a literal beside a template, two parameters plus one
/// repeated in the query, a percent-encoded literal, and the root.
pub const TABLE: &str = "routes:
  - path: /events
    upstream: http://127.0.0.1:9000/events
  - path: /rooms/{room}
    upstream: http://127.0.0.1:9000/rooms/{room}/stream
  - path: /rooms/lobby
    upstream: http://127.0.0.1:9000/lobby
  - path: /t/{tenant}/u/{user}
    upstream: https://upstream.example:8443/tenants/{tenant}/users/{user}?again={tenant}
  - path: /caf%C3%A9/{x}
    upstream: http://127.0.0.1:9000/cafe/{x}
  - path: /
    upstream: builtin:clock
";

/// The table and its configuration, built once per process.
pub fn table() -> &'static (Config, Routes) {
    static TABLE_ONCE: OnceLock<(Config, Routes)> = OnceLock::new();
    TABLE_ONCE.get_or_init(|| {
        let config = Config::parse(TABLE, Path::new("routes.yaml"), &Overrides::default())
            .expect("the fixed table is valid");
        let routes = Routes::new(&config);
        (config, routes)
    })
}

/// Every property for one request path.
pub fn check(path: &str) {
    let (config, routes) = table();
    let (route, values, source) = match routes.find(path) {
        RouteMatch::NotFound => return,
        RouteMatch::BadValue { name } => {
            assert!(["room", "tenant", "user", "x"].contains(&name.as_str()));
            return;
        }
        RouteMatch::Matched {
            route,
            values,
            source,
        } => (route, values, source),
    };
    for (name, value) in &values {
        assert!(!value.is_empty(), "{{{name}}} is empty for {path:?}");
        assert!(!value.contains('/'), "{{{name}}} = {value:?} has a /");
        assert!(
            !value.contains(char::is_control),
            "{{{name}}} = {value:?} has a control character"
        );
        assert!(
            value != "." && value != "..",
            "{{{name}}} = {value:?} is a dot segment (path {path:?})"
        );
    }
    let source = source.unwrap_or_else(|error| panic!("{path:?} matched {route} but {error}"));
    let upstream = config
        .routes
        .iter()
        .find(|r| r.path.as_str() == route)
        .expect("the matched route is configured")
        .upstream
        .to_string();
    if upstream.starts_with("builtin:") {
        assert_eq!(source, upstream);
        return;
    }
    check_resolved(&upstream, &source, &values);
}

/// `source` is `template` with each `{name}` filled: same scheme, authority and
/// literal segments, and each parameter segment decodes to its value.
fn check_resolved(template: &str, source: &str, values: &[(String, String)]) {
    let template: http::Uri = template
        .replace(['{', '}'], "")
        .parse()
        .expect("template is a URL");
    let resolved: http::Uri = source.parse().expect("the source key is a valid URI");
    assert_eq!(resolved.scheme(), template.scheme(), "{source}");
    assert_eq!(resolved.authority(), template.authority(), "{source}");
    let template_segments: Vec<&str> = template.path().split('/').collect();
    let resolved_segments: Vec<&str> = resolved.path().split('/').collect();
    assert_eq!(
        template_segments.len(),
        resolved_segments.len(),
        "a value added or removed a path segment: {source}"
    );
    for (want, got) in template_segments.iter().zip(&resolved_segments) {
        assert!(*got != "." && *got != "..", "dot segment in {source}");
        match values.iter().find(|(name, _)| name == want) {
            Some((_, value)) => {
                let decoded = percent_decode_str(got).decode_utf8_lossy();
                assert_eq!(&decoded, value, "{source}");
            }
            None => assert_eq!(want, got, "{source}"),
        }
    }
    // Query parameters are pairs; a value can add none.
    let pairs = |uri: &http::Uri| uri.query().map_or(0, |q| q.split('&').count());
    assert_eq!(pairs(&resolved), pairs(&template), "{source}");
}

/// libFuzzer hands us bytes. hyper only ever hands the router an ASCII path, but the
/// router takes any `&str`, so invalid UTF-8 is replaced rather than skipped.
pub fn check_fuzz_input(bytes: &[u8]) {
    check(&String::from_utf8_lossy(bytes));
}
