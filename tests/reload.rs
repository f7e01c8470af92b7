#![allow(clippy::unwrap_used)]
//! SIGHUP reloads the configuration without touching what didn't change, and a
//! rolling restart loses no event. Drives the built binary with real signals.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;

fn routes(pairs: &[(&str, &TestUpstream)]) -> String {
    let mut yaml = String::from("drain: { retry: 500ms, retry_jitter: 500ms }\nroutes:\n");
    for (path, up) in pairs {
        yaml.push_str(&format!(
            "  - path: {path}\n    upstream: {}\n",
            up.url(path)
        ));
    }
    yaml
}

#[tokio::test]
async fn sighup_adds_and_removes_routes_and_leaves_the_rest_untouched() {
    let (a, b, c) = (
        TestUpstream::start().await,
        TestUpstream::start().await,
        TestUpstream::start().await,
    );
    let dir = TempDir::new("reload");
    let file = dir.write("gateway.yaml", &routes(&[("/a", &a), ("/b", &b)]));
    let gw = GatewayProcess::start_with(
        &file,
        &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        &[],
    );
    let mut on_a = SseReader::get(&gw.url("/a")).await;
    let mut on_b = SseReader::get(&gw.url("/b")).await;
    eventually!(a.open_streams() == 1 && b.open_streams() == 1, "subscribed");
    a.emit_numbered(1..=2).await;
    assert_eq!(ids(&on_a.take(2).await), ["1", "2"]);
    assert_eq!(get(&gw.url("/c"), "GET").await.status(), 404);

    dir.write("gateway.yaml", &routes(&[("/a", &a), ("/c", &c)]));
    gw.signal("HUP");
    // The removed route's client gets a retry hint and the end of its stream.
    assert_eq!(on_b.rest().await, []);
    let hint = last_retry(&on_b.raw()).unwrap();
    assert!((500..1000).contains(&hint), "{hint}");
    // The added route serves.
    let mut on_c = SseReader::get(&gw.url("/c")).await;
    assert_eq!(on_c.status, 200);
    eventually!(c.open_streams() == 1, "c subscribed");
    c.emit("c1", "new").await;
    assert_eq!(on_c.take(1).await[0].data, "new");
    assert_eq!(get(&gw.url("/b"), "GET").await.status(), 404);
    // The untouched route kept its client and its one upstream connection.
    a.emit_numbered(3..=4).await;
    assert_eq!(ids(&on_a.take(2).await), ["3", "4"]);
    assert_eq!(a.connections(), 1);

    // An invalid file is rejected; the running configuration keeps serving.
    dir.write(
        "gateway.yaml",
        "routes:\n  - path: /a\n    upstream: ftp://nope\n",
    );
    gw.signal("HUP");
    eventually!(
        gw.log_text().contains("reload rejected"),
        "rejection logged"
    );
    assert!(gw.log_text().contains("routes[0].upstream"));
    a.emit_numbered(5..=5).await;
    assert_eq!(ids(&on_a.take(1).await), ["5"]);
    assert_eq!(SseReader::get(&gw.url("/c")).await.status, 200);
    assert_eq!(a.connections(), 1);
    assert!(!on_a.ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_no_event_for_any_client() {
    let upstream = Arc::new(TestUpstream::start().await);
    let dir = TempDir::new("rolling");
    let file = dir.write(
        "gateway.yaml",
        &format!(
            "drain: {{ retry: 300ms, retry_jitter: 700ms, deadline: 5s }}\nroutes:\n  - path: /events\n    upstream: {}\n",
            upstream.url("/events")
        ),
    );
    let args = ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    let mut a = GatewayProcess::start_with(&file, &args, &[]);
    let port = a.addr.port();

    // 50 events per second, numbered from 1, for the whole run.
    let emitter = {
        let upstream = Arc::clone(&upstream);
        tokio::spawn(async move {
            for n in 1u32.. {
                upstream.emit_numbered(n..=n).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let clients: Vec<Reconnecting> = (0..200u32)
        .map(|i| {
            let local = std::net::IpAddr::from([127, 0, 0, 2 + (i % 8) as u8]);
            Reconnecting::start(a.url("/events"), Some(local))
        })
        .collect();
    eventually!(
        clients.iter().all(|c| c.ids().len() >= 10),
        "all clients streaming"
    );

    a.signal("TERM");
    // B takes over the same port as soon as A has let go of it.
    let listen = format!("127.0.0.1:{port}");
    eventually!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "A stopped accepting"
    );
    let b =
        GatewayProcess::start_with(&file, &["--listen", &listen, "--admin", "127.0.0.1:0"], &[]);
    assert_eq!(a.wait_exit(Duration::from_secs(6)).code(), Some(0));

    // Every client comes back by itself and keeps going on B.
    eventually!(
        clients
            .iter()
            .all(|c| c.connects.load(std::sync::atomic::Ordering::SeqCst) >= 2),
        "all reconnected"
    );
    let mark: Vec<usize> = clients.iter().map(|c| c.ids().len()).collect();
    eventually!(
        clients
            .iter()
            .zip(&mark)
            .all(|(c, m)| c.ids().len() >= m + 25),
        "all clients streaming from B"
    );
    emitter.abort();
    for (i, c) in clients.iter().enumerate() {
        let got = c.ids();
        let first = got[0];
        let expected: Vec<u64> = (first..first + got.len() as u64).collect();
        assert_eq!(got, expected, "client {i}: gap or duplicate");
    }
    drop(b);
}
