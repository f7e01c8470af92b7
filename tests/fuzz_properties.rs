//! The fuzz targets' properties under proptest, so `cargo test` checks them on every
//! run, with or without `cargo fuzz`. The properties themselves are in
//! `tests/properties/`, shared with `fuzz/fuzz_targets/`; each fuzz target has a twin
//! here (`sse_parse`, `config_load`, `route_match`), and every committed seed and
//! regression input is replayed through its target's check.

#![allow(clippy::unwrap_used)]

mod properties;

use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// Bytes an event stream is made of, weighted towards what the parser branches on.
fn sse_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            &b"data"[..], b"data:", b"data: ", b"id:", b"id: ", b"event:", b"retry:",
            b"retry: 10", b":", b" ", b"\r", b"\n", b"\r\n", b"\0", b"\xEF\xBB\xBF",
            b"\xEF\xBB", b"\xEF", b"\xC3", b"\xA9", b"\xFF", b"7", b"x",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(sse_piece(), 0..48).prop_map(|pieces| pieces.concat())
}

fn yaml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "routes:", "\n  - path: ", "/events", "/rooms/{room}", "/{a}", "{", "}",
            "\n    upstream: ", "http://127.0.0.1:9000/rooms/{room}", "builtin:clock",
            "https://h/{a}?q={a}", "\n    headers:\n      ", "authorization: x",
            "\nheartbeat: ", "15s", "0ms", "99999999999h", "\nclient: { queue: 0 }",
            "\nlisten:\n  - addr: ", "127.0.0.1:0", "\nupstream: { backoff: { initial: 2s, max: 1s } }",
            "\nreplay: { gap_event: \"a\\nb\" }", "\n\"a\\nb\": 1", "\nlimits:", " ", "\n", "\t",
            ":", "- ", "[", "]", "&a", "*a", "!!binary", "'", "\"", "#", "%", "~", "null",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn yaml_text() -> impl Strategy<Value = String> {
    prop::collection::vec(yaml_piece(), 0..24).prop_map(|pieces| pieces.concat())
}

fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "events", "rooms", "lobby", "t", "u", "caf%C3%A9", "café", "x", "", ".", "..",
            "%2e", "%2E%2e", ".%2E", "%2F", "a%2fb", "%00", "%0A", "%7F", "%C2%85", "%FF",
            "%C3", "%", "%zz", "a b", "%20", "?", "#", "\\", "%5C", "~", "-", ";", "=",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn request_path() -> impl Strategy<Value = String> {
    prop::collection::vec(path_segment(), 0..6).prop_map(|segments| {
        let mut path = String::new();
        for segment in segments {
            path.push('/');
            path.push_str(&segment);
        }
        path
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sse_parse_any_bytes_in_any_split_agree_with_one_read_and_whatwg(
        input in prop_oneof![sse_bytes(), prop::collection::vec(any::<u8>(), 0..256)],
        max_line in 1usize..80,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        properties::sse::check(&input, max_line, &cuts);
        properties::sse::check(&input, input.len() + 1, &cuts);
    }

    #[test]
    fn config_load_any_text_never_panics_and_errors_carry_a_message(
        text in prop_oneof![yaml_text(), any::<String>()],
    ) {
        properties::config::check(&text);
    }

    #[test]
    fn route_match_any_path_never_panics_and_values_stay_one_segment(
        path in prop_oneof![request_path(), any::<String>()],
    ) {
        properties::routes::check(&path);
    }
}

/// Every file of `fuzz/<dir>/<target>/`, so seeds and regressions run in `cargo test`.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            files.push((path, bytes));
        }
    }
    files
}

#[test]
fn sse_parse_seeds_and_regressions_hold_every_property() {
    let files = inputs("sse_parse");
    assert!(!files.is_empty(), "no sse_parse seeds found");
    for (path, bytes) in files {
        eprintln!("{}", path.display());
        properties::sse::check_fuzz_input(&bytes);
    }
}

#[test]
fn config_load_seeds_and_regressions_hold_every_property() {
    let files = inputs("config_load");
    assert!(!files.is_empty(), "no config_load seeds found");
    for (path, bytes) in files {
        eprintln!("{}", path.display());
        properties::config::check_fuzz_input(&bytes);
    }
}

#[test]
fn route_match_seeds_and_regressions_hold_every_property() {
    let files = inputs("route_match");
    assert!(!files.is_empty(), "no route_match seeds found");
    for (path, bytes) in files {
        eprintln!("{}", path.display());
        properties::routes::check_fuzz_input(&bytes);
    }
}
