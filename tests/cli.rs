//! The binary as a child process: `--check`, errors and exit codes, the demo.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn check(yaml: &str) -> (i32, String, String) {
    let dir = TempDir::new("check");
    let path = dir.write("gateway.yaml", yaml);
    let out = Command::new(binary())
        .arg("--check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_good_config_and_prints_a_summary() {
    let (code, stdout, stderr) = check(
        "routes:\n  - path: /rooms/{room}\n    upstream: http://127.0.0.1:9000/rooms/{room}\n    headers:\n      authorization: Bearer secret-token\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("/rooms/{room}"), "{stdout}");
    assert!(
        stdout.contains("http://127.0.0.1:9000/rooms/{room}"),
        "{stdout}"
    );
    // Header names may be shown, values never.
    assert!(!stdout.contains("secret-token"), "{stdout}");
}

#[test]
fn check_accepts_the_repository_config() {
    let out = Command::new(binary())
        .args([
            "--check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/demo"));
}

#[test]
fn bad_scheme_names_file_key_line_and_column_and_exits_2() {
    let (code, _, stderr) = check("routes:\n  - path: /a\n    upstream: ftp://x/y\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("gateway.yaml:3:15"), "{stderr}");
    assert!(stderr.contains("routes[0].upstream"), "{stderr}");
    assert!(stderr.contains("ftp"), "{stderr}");
}

#[test]
fn unknown_key_is_an_error_with_a_hint() {
    let (code, _, stderr) =
        check("heartbeet: 5s\nroutes:\n  - path: /a\n    upstream: builtin:clock\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("gateway.yaml:1:1"), "{stderr}");
    assert!(stderr.contains("did you mean `heartbeat`"), "{stderr}");
}

#[test]
fn bad_duration_names_the_nested_key() {
    let (code, _, stderr) = check(
        "upstream:\n  backoff: { initial: 250, max: 30s }\nroutes:\n  - path: /a\n    upstream: builtin:clock\n",
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("upstream.backoff.initial"), "{stderr}");
}

#[test]
fn missing_routes_and_missing_file_exit_2() {
    let (code, _, stderr) = check("heartbeat: 5s\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("routes"), "{stderr}");

    let out = Command::new(binary())
        .args(["--check", "-c", "/nonexistent/gateway.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gateway.yaml"));
}

#[test]
fn bad_config_never_starts_a_listener() {
    let dir = TempDir::new("bad");
    let path = dir.write(
        "gateway.yaml",
        "routes:\n  - path: nope\n    upstream: builtin:clock\n",
    );
    let out = Command::new(binary())
        .arg("-c")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(stderr.contains("routes[0].path"), "{stderr}");
}

#[test]
fn help_and_version_work() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--admin", "--log-format", "--check"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let out = Command::new(binary()).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn repository_config_streams_the_demo_with_no_other_process() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml");
    // On one worker thread: the other process tests run the default, one per CPU.
    let gw = GatewayProcess::start_with(
        std::path::Path::new(config),
        &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        &["--workers", "1"],
    );
    let mut r = SseReader::get(&gw.url("/demo")).await;
    let ticks = r.take(2).await;
    assert!(ticks.iter().all(|t| t.event == "tick"));
    let (a, b): (u64, u64) = (ticks[0].id.parse().unwrap(), ticks[1].id.parse().unwrap());
    assert_eq!(b, a + 1, "one tick per second");
    assert!(ticks[0].data.contains("\"unix\""));
}

#[tokio::test]
async fn json_logs_are_one_json_object_per_line_with_span_fields() {
    let dir = TempDir::new("json");
    let config = dir.write(
        "gateway.yaml",
        "routes:\n  - path: /demo\n    upstream: builtin:clock\n",
    );
    let gw = GatewayProcess::start_env(
        &config,
        &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        &["--log-format", "json"],
        &[("RUST_LOG", "debug")],
    );
    let mut r = SseReader::get(&gw.url("/demo")).await;
    r.take(1).await;
    drop(r);
    eventually!(
        gw.log_text().contains("client left"),
        "stream closed and logged"
    );
    let log = gw.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines
        .iter()
        .all(|v| v.get("level").is_some() && v.get("fields").is_some()));
    let find = |message: &str| {
        lines
            .iter()
            .find(|v| v["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {log}"))
    };
    let listening = find("listening");
    assert!(listening["fields"]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // A client's lines carry its connection's and its stream's span fields.
    let subscribed = find("client subscribed");
    let spans = subscribed["spans"].as_array().unwrap();
    let conn = spans
        .iter()
        .find(|s| s["name"] == "conn")
        .expect("conn span");
    assert!(conn["conn.id"].is_u64());
    assert!(conn["client.addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // The event's own span is the stream; its ancestors are listed in `spans`.
    let stream = &subscribed["span"];
    assert_eq!(stream["name"], "stream");
    assert_eq!(stream["route"], "/demo");
    assert_eq!(stream["source.key"], "builtin:clock");
    assert_eq!(stream["protocol"], "HTTP/1.1");
    let connected = find("upstream connected");
    assert_eq!(connected["span"]["source.key"], "builtin:clock");
}

#[tokio::test]
async fn sigterm_drains_streams_with_a_retry_hint_and_exits_0() {
    let mut gw = GatewayProcess::start(
        "drain: { retry: 1s, retry_jitter: 500ms, deadline: 5s }\nroutes:\n  - path: /demo\n    upstream: builtin:clock\n",
        &[],
    );
    let mut r = SseReader::get(&gw.url("/demo")).await;
    r.take(1).await;
    gw.signal("TERM");
    assert_eq!(r.rest().await.len(), 0, "no event after the drain hint");
    let raw = r.raw();
    let hint = raw
        .rsplit("retry: ")
        .next()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no final retry hint in {raw:?}"));
    assert!((1000..1500).contains(&hint), "hint {hint}");
    let status = gw.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    // New connections are refused once the listener is closed.
    assert!(std::net::TcpStream::connect(gw.addr).is_err());
}
