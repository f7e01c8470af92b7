//! `ConfigError`: why a configuration was refused, naming the file, the key path
//! (`routes[2].upstream`) and, where the YAML parser knows it, line and column.
//!
//! This module also turns serde's wording into the operator's: serde says "field",
//! the file has "keys"; serde lists the expected names of an unknown field, we turn
//! that list into a "did you mean" hint. The `Display` of every error is one line,
//! complete on its own, because `main` prints exactly that and exits 2.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

/// How similar (Jaro-Winkler) an unknown key must be to a known one to be suggested.
/// 0.8 catches typos (`heartbeet`, `upstrem`, `gap-event`) without pairing unrelated
/// short words.
const HINT_SIMILARITY: f64 = 0.8;

/// Why a configuration could not be loaded. A config error exits 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    ///
    /// The cause is part of the message rather than a `#[source]`: the edge prints this
    /// error as one line (`error reading gateway.yaml: No such file or directory (os
    /// error 2)`), and a source would print it a second time in a chain.
    #[error("error reading {}: {cause}", file.display())]
    Io { file: PathBuf, cause: io::Error },

    /// The file was read but is not a valid configuration.
    #[error("{}", render_invalid(file, key_path.as_deref(), *location, message))]
    Invalid {
        file: PathBuf,
        /// Where in the document: `routes[2].upstream`; `None` for the document itself.
        key_path: Option<String>,
        /// 1-based line and column, where the YAML parser knows them. Cross-field rules
        /// are checked after parsing and have none.
        location: Option<(usize, usize)>,
        message: String,
    },
}

impl ConfigError {
    /// The key path of the offending value, e.g. `routes[2].upstream`.
    pub fn key_path(&self) -> Option<&str> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Invalid { key_path, .. } => key_path.as_deref(),
        }
    }

    /// 1-based (line, column) of the offending text, where known.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Invalid { location, .. } => *location,
        }
    }

    /// An error found by a cross-field rule in validation: a key path, no position.
    pub(super) fn rule(file: &Path, key_path: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_owned(),
            key_path: key_path.map(str::to_owned),
            location: None,
            message: message.into(),
        }
    }

    /// A file that is not YAML at all. The key path is left out: the parser stopped
    /// before the document had a shape to name a key in.
    pub(super) fn from_yaml_syntax(file: &Path, error: &serde_norway::Error) -> Self {
        let location = error.location().map(|l| (l.line(), l.column()));
        ConfigError::Invalid {
            file: file.to_owned(),
            key_path: None,
            location,
            message: one_line(&format!(
                "invalid YAML: {}",
                bare_message(&error.to_string(), location, &[])
            )),
        }
    }

    /// Translates a deserialization error of well-formed YAML into the operator's terms.
    pub(super) fn from_yaml(
        file: &Path,
        error: serde_path_to_error::Error<serde_norway::Error>,
    ) -> Self {
        let segments: Vec<String> = error.path().iter().map(|s| s.to_string()).collect();
        let yaml = error.into_inner();
        let location = yaml.location().map(|l| (l.line(), l.column()));
        let message = bare_message(&yaml.to_string(), location, &segments);

        let (key_path, message) = if let Some(rest) = message.strip_prefix("unknown field `") {
            // serde_path_to_error's path ends with the unknown key itself; the error
            // belongs to the mapping that holds it, and the key is named in the message.
            let unknown = rest.split('`').next().unwrap_or_default();
            let parent = &segments[..segments.len().saturating_sub(1)];
            (join_path(parent), unknown_key_message(unknown, rest))
        } else {
            // serde's words for struct fields, in the file's words.
            let message = message
                .replacen("missing field `", "missing key `", 1)
                .replacen("duplicate field `", "duplicate key `", 1)
                .replacen("invalid type: unit value", "invalid type: empty value", 1);
            (join_path(&segments), message)
        };
        // The file's own text (an unknown key, which YAML lets span lines) is in the
        // message and the key path: escape it, so the error stays one line.
        ConfigError::Invalid {
            file: file.to_owned(),
            key_path: key_path.as_deref().map(one_line),
            location,
            message: one_line(&message),
        }
    }
}

/// `text` with every control character escaped (`\n`, `\u{1b}`), so text from the file
/// can neither break the one-line error nor forge a line of its own in a log.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn render_invalid(
    file: &Path,
    key_path: Option<&str>,
    location: Option<(usize, usize)>,
    message: &str,
) -> String {
    let mut out = file.display().to_string();
    if let Some((line, column)) = location {
        let _ = write!(out, ":{line}:{column}");
    }
    out.push_str(": ");
    if let Some(key_path) = key_path {
        out.push_str(key_path);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// serde_norway's `Display` decorates the message with its own key path in front and
/// ` at line L column C` behind. We print both ourselves, in our format, so strip them.
fn bare_message(display: &str, location: Option<(usize, usize)>, segments: &[String]) -> String {
    let mut message = display.to_owned();
    if let Some((line, column)) = location {
        let position = format!(" at line {line} column {column}");
        if let Some(at) = message.find(&position) {
            message.replace_range(at..at + position.len(), "");
        }
    }
    // Its key path is the error's path or one of its ancestors, in the same notation.
    for len in (1..=segments.len()).rev() {
        if let Some(path) = join_path(&segments[..len]) {
            if let Some(rest) = message.strip_prefix(&format!("{path}: ")) {
                return rest.to_owned();
            }
        }
    }
    message
}

/// `["routes", "[2]", "upstream"]` → `routes[2].upstream`, as serde_path_to_error
/// prints it; `None` for the root.
fn join_path(segments: &[String]) -> Option<String> {
    let mut path = String::new();
    for segment in segments {
        if !path.is_empty() && !segment.starts_with('[') {
            path.push('.');
        }
        path.push_str(segment);
    }
    (!path.is_empty()).then_some(path)
}

/// `rest` is serde's message after "unknown field `": "x`, expected one of `a`, `b`"
/// (or "expected `a` or `b`", or "there are no fields").
fn unknown_key_message(unknown: &str, rest: &str) -> String {
    let expected: Vec<&str> = rest
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let best = expected
        .iter()
        .map(|&name| (strsim::jaro_winkler(unknown, name), name))
        .filter(|&(score, _)| score >= HINT_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match (best, expected.is_empty()) {
        (Some((_, name)), _) => format!("unknown key `{unknown}` (did you mean `{name}`?)"),
        (None, true) => format!("unknown key `{unknown}`"),
        (None, false) => {
            let known: Vec<String> = expected.iter().map(|name| format!("`{name}`")).collect();
            format!("unknown key `{unknown}` (known keys: {})", known.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_hint_comes_from_the_expected_names() {
        assert_eq!(
            unknown_key_message(
                "heartbeet",
                "heartbeet`, expected one of `listen`, `heartbeat`, `routes`"
            ),
            "unknown key `heartbeet` (did you mean `heartbeat`?)"
        );
        assert_eq!(
            unknown_key_message("zzz", "zzz`, expected `initial` or `max`"),
            "unknown key `zzz` (known keys: `initial`, `max`)"
        );
        assert_eq!(
            unknown_key_message("x", "x`, there are no fields"),
            "unknown key `x`"
        );
    }

    #[test]
    fn an_unknown_key_spanning_lines_is_escaped_to_one_line() {
        // Found by the config_load fuzz target: a plain multi-line key in a flow
        // mapping (`{x\n\n:.}`) came back verbatim, line breaks and all.
        // Reproducer: fuzz/regressions/config_load/crash-bb4b1f0c…-multiline_unknown_key.
        let err = crate::config::Config::parse(
            "{\n\n\nx\n\n\n:.}",
            Path::new("g.yaml"),
            &crate::config::Overrides::default(),
        )
        .unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains('\n'), "{shown:?}");
        assert!(shown.contains("unknown key `x\\n\\n:.`"), "{shown}");
        let err = crate::config::Config::parse(
            "\"a\\nb\\u001b[31m\": 1\n",
            Path::new("g.yaml"),
            &crate::config::Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown key `a\\nb\\u{1b}[31m`"),
            "{err}"
        );
    }

    #[test]
    fn io_error_names_the_file_as_given() {
        let err = ConfigError::Io {
            file: PathBuf::from("gateway.yaml"),
            cause: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            err.to_string(),
            "error reading gateway.yaml: entity not found"
        );
        assert_eq!(err.key_path(), None);
        assert_eq!(err.location(), None);
    }

    #[test]
    fn invalid_prints_only_what_is_known() {
        let err = ConfigError::rule(Path::new("g.yaml"), None, "at least one route");
        assert_eq!(err.to_string(), "g.yaml: at least one route");
        let err = ConfigError::Invalid {
            file: PathBuf::from("g.yaml"),
            key_path: Some("routes[2].upstream".into()),
            location: Some((14, 15)),
            message: "boom".into(),
        };
        assert_eq!(err.to_string(), "g.yaml:14:15: routes[2].upstream: boom");
    }
}
