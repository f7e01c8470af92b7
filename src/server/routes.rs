//! The route table: exact paths and `{name}` templates, matched against a request
//! path. Exact paths win over templates; templates are tried in config order.
//! A template value is percent-decoded and must be non-empty UTF-8 with no `/`, no
//! control characters, and not a dot segment (`.` or `..`).
//!
//! Invariant: a value accepted here becomes exactly one path segment of the upstream
//! URL, whatever the client sent; it can never choose another upstream path.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;

use crate::config::{RouteConfig, Segment};

/// One configured route, with what every request on it shares.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) config: RouteConfig,
    pub(crate) headers: Arc<[(HeaderName, HeaderValue)]>,
}

#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, usize>,
    templates: Vec<usize>,
}

/// A path matched a template but one of its values is not acceptable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("path value for {{{name}}} is not valid")]
pub(crate) struct BadPathValue {
    pub(crate) name: String,
}

/// A matched route and its decoded path values, in template order.
pub(crate) type Matched<'a> = (&'a Route, Vec<(&'a str, String)>);

impl RouteTable {
    pub(crate) fn new(configs: &[RouteConfig]) -> Self {
        let mut table = Self::default();
        for config in configs {
            let index = table.routes.len();
            let is_exact = config
                .path
                .segments()
                .iter()
                .all(|s| matches!(s, Segment::Literal(_)));
            if is_exact {
                table.exact.insert(config.path.as_str().to_owned(), index);
            } else {
                table.templates.push(index);
            }
            table.routes.push(Route {
                headers: config.headers.iter().cloned().collect(),
                config: config.clone(),
            });
        }
        table
    }

    /// Finds the route for `path` (no query string).
    ///
    /// # Errors
    /// `BadPathValue` when a template matches but a value is unacceptable.
    pub(crate) fn find(&self, path: &str) -> Result<Option<Matched<'_>>, BadPathValue> {
        if let Some(&i) = self.exact.get(path) {
            return Ok(Some((&self.routes[i], Vec::new())));
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Ok(None);
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for &i in &self.templates {
            let route = &self.routes[i];
            let segments = route.config.path.segments();
            if segments.len() != parts.len() {
                continue;
            }
            let literals_match = segments.iter().zip(&parts).all(|(s, p)| match s {
                // Both sides decoded: a literal is stored as written in the config,
                // which may itself be percent-encoded (`/caf%C3%A9/{x}`).
                Segment::Literal(lit) => percent_decode_str(p).eq(percent_decode_str(lit)),
                Segment::Param(_) => !p.is_empty(),
            });
            if !literals_match {
                continue;
            }
            let mut params = Vec::new();
            for (segment, part) in segments.iter().zip(&parts) {
                if let Segment::Param(name) = segment {
                    let value =
                        decode_value(part).ok_or_else(|| BadPathValue { name: name.clone() })?;
                    params.push((name.as_str(), value));
                }
            }
            return Ok(Some((route, params)));
        }
        Ok(None)
    }
}

fn decode_value(raw: &str) -> Option<String> {
    let value = percent_decode_str(raw).decode_utf8().ok()?;
    let ok = !value.is_empty()
        && !value.contains('/')
        && !value.chars().any(char::is_control)
        // `.` and `..` are unreserved, so they reach the upstream URL unencoded, where
        // `/rooms/..` resolves to `/`: a client would choose another upstream path.
        && value != "."
        && value != "..";
    ok.then(|| value.into_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, Overrides};

    fn table(yaml: &str) -> RouteTable {
        let config = Config::parse(yaml, Path::new("t.yaml"), &Overrides::default()).unwrap();
        RouteTable::new(&config.routes)
    }

    fn lookup(t: &RouteTable, path: &str) -> Option<(String, Vec<(String, String)>)> {
        t.find(path).unwrap().map(|(r, p)| {
            (
                r.config.path.as_str().to_owned(),
                p.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
            )
        })
    }

    const ROUTES: &str = "routes:
  - path: /events
    upstream: http://127.0.0.1:9/events
  - path: /rooms/{room}
    upstream: http://127.0.0.1:9/rooms/{room}
  - path: /rooms/lobby
    upstream: http://127.0.0.1:9/lobby
";

    #[test]
    fn exact_path_matches_and_wins_over_a_template() {
        let t = table(ROUTES);
        assert_eq!(lookup(&t, "/events").unwrap().0, "/events");
        assert_eq!(lookup(&t, "/rooms/lobby").unwrap().0, "/rooms/lobby");
    }

    #[test]
    fn template_value_is_percent_decoded() {
        let t = table(ROUTES);
        let (path, params) = lookup(&t, "/rooms/a%20b").unwrap();
        assert_eq!(path, "/rooms/{room}");
        assert_eq!(params, [("room".to_owned(), "a b".to_owned())]);
    }

    #[test]
    fn unknown_paths_and_extra_segments_do_not_match() {
        let t = table(ROUTES);
        for path in [
            "/",
            "/event",
            "/events/",
            "/rooms",
            "/rooms/",
            "/rooms/a/b",
            "rooms/a",
        ] {
            assert!(lookup(&t, path).is_none(), "{path}");
        }
    }

    #[test]
    fn dot_segment_values_are_rejected_plain_or_encoded() {
        // Found by the route_match fuzz target: `/rooms/..` resolved the upstream to
        // `http://…/rooms/..`, which the upstream reads as `/`.
        // Reproducers: fuzz/regressions/route_match/crash-*-dot_segment_value.
        let t = table(ROUTES);
        for path in [
            "/rooms/.",
            "/rooms/..",
            "/rooms/%2E",
            "/rooms/%2e%2E",
            "/rooms/.%2e",
        ] {
            assert_eq!(
                t.find(path).unwrap_err(),
                BadPathValue {
                    name: "room".into()
                },
                "{path}"
            );
        }
        // Dots inside a value are fine.
        assert_eq!(lookup(&t, "/rooms/...").unwrap().1[0].1, "...");
        assert_eq!(lookup(&t, "/rooms/a..b").unwrap().1[0].1, "a..b");
    }

    #[test]
    fn percent_encoded_literal_in_a_template_matches_encoded_and_decoded_requests() {
        let t = table("routes:\n  - path: /caf%C3%A9/{x}\n    upstream: http://127.0.0.1:9/{x}\n");
        for path in ["/caf%C3%A9/1", "/caf%c3%a9/1", "/café/1"] {
            assert_eq!(lookup(&t, path).unwrap().0, "/caf%C3%A9/{x}", "{path}");
        }
        assert!(lookup(&t, "/cafe/1").is_none());
    }

    #[test]
    fn encoded_slash_or_control_character_in_a_value_is_rejected() {
        let t = table(ROUTES);
        for path in ["/rooms/a%2Fb", "/rooms/a%0Ab", "/rooms/%FF"] {
            assert_eq!(
                t.find(path).unwrap_err(),
                BadPathValue {
                    name: "room".into()
                },
                "{path}"
            );
        }
    }
}
