//! Configuration loading on arbitrary text.
//!
//! Properties, each checked by [`check`]:
//! 1. no text makes `Config::parse` panic;
//! 2. a refusal names the file and carries a message: its `Display` is one
//!    non-empty line after `FILE[:line:col]: [key.path: ]`, and a line:column, where
//!    given, lies inside the text;
//! 3. an accepted configuration keeps the invariants `Config` documents (defaults
//!    filled, bounds held, every route's upstream parameters equal to its path's, no two
//!    routes with the same path), and the server can build its route table and the
//!    `--check` summary from it.

use std::collections::BTreeSet;
use std::path::Path;

use sse_gateway::config::{Config, ConfigError, Overrides, UpstreamTarget};
use sse_gateway::fuzzing::Routes;

const FILE: &str = "fuzz.yaml";

/// Every property for one text.
pub fn check(text: &str) {
    match Config::parse(text, Path::new(FILE), &Overrides::default()) {
        Ok(config) => check_accepted(&config),
        Err(error) => check_refused(text, &error),
    }
}

/// libFuzzer hands us bytes; the gateway reads the file with `read_to_string`, which
/// refuses invalid UTF-8 before YAML sees it, so only valid text reaches the parser.
pub fn check_fuzz_input(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        check(text);
    }
}

fn check_refused(text: &str, error: &ConfigError) {
    let shown = error.to_string();
    assert!(!shown.contains(['\n', '\r']), "not one line: {shown:?}");
    let ConfigError::Invalid {
        file,
        key_path,
        location,
        message,
    } = error
    else {
        panic!("parse never reads a file, yet: {error:?}");
    };
    assert_eq!(file, Path::new(FILE));
    assert!(!message.trim().is_empty(), "no message: {shown:?}");
    assert!(shown.starts_with(FILE), "file not named first: {shown:?}");
    assert!(shown.ends_with(message.as_str()), "{shown:?}");
    if let Some(key_path) = key_path {
        assert!(!key_path.is_empty(), "empty key path: {shown:?}");
        assert!(shown.contains(key_path.as_str()), "{shown:?}");
    }
    if let Some((line, column)) = *location {
        // Line and column are 1-based. libyaml counts CR, LF, CRLF, NEL, LS and PS as
        // line breaks, and at the end of the input it may point a line or two past
        // the last one (seen: `[[\r\t` is refused at 3:1); never further.
        let breaks = text
            .replace("\r\n", "\n")
            .matches(['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}'])
            .count();
        assert!(line >= 1 && column >= 1, "location {line}:{column}");
        assert!(
            line <= breaks + 3,
            "line {line} of {breaks} breaks: {shown:?}"
        );
    }
}

fn check_accepted(config: &Config) {
    assert!(!config.listen.is_empty(), "no listener");
    assert!(!config.routes.is_empty(), "no route");
    assert!(config.client.queue >= 1 && config.replay.events >= 1);
    assert!(config.upstream.max_line >= 1);
    assert!(!config.upstream.connect_timeout.is_zero());
    assert!(!config.drain.deadline.is_zero());
    assert!(!config.heartbeat.is_zero());
    let backoff = &config.upstream.backoff;
    assert!(!backoff.initial.is_zero() && backoff.initial <= backoff.max);

    let mut paths = BTreeSet::new();
    for route in &config.routes {
        assert!(
            paths.insert(route.path.as_str()),
            "duplicate path {}",
            route.path
        );
        assert!(route.client.queue >= 1 && route.replay.events >= 1);
        assert!(!route.heartbeat.is_zero());
        assert!(!route.replay.gap_event.contains(char::is_control));
        let path_params: BTreeSet<&str> = route.path.params().collect();
        match &route.upstream {
            UpstreamTarget::Http(url) => {
                let url_params: BTreeSet<&str> = url.params().collect();
                assert_eq!(path_params, url_params, "route {}", route.path);
            }
            UpstreamTarget::Builtin(_) => assert!(path_params.is_empty()),
        }
    }
    let _ = config.summary();
    let _ = Routes::new(config);
}
