//! The durable-appends scenario and the binary, against a stub Durable Streams server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::Router;
use mooring_bench::durable_appends::{self, Config};
use mooring_bench::target::Target;

#[derive(Default)]
struct Seen {
    created: Vec<String>,
    appends: BTreeMap<String, u64>,
}

type Shared = Arc<Mutex<Seen>>;

/// A server that creates streams and acknowledges appends as the protocol says, failing appends
/// to streams whose name contains "fail".
async fn stub() -> (SocketAddr, Shared) {
    let seen = Shared::default();
    let app = Router::new()
        .route(
            "/v1/stream/{*name}",
            put(
                |State(seen): State<Shared>, Path(name): Path<String>, headers: HeaderMap| async move {
                    if headers.get("content-type").map(|v| v.as_bytes())
                        != Some(b"application/octet-stream")
                    {
                        return StatusCode::BAD_REQUEST;
                    }
                    if let Ok(mut s) = seen.lock() {
                        s.created.push(name);
                    }
                    StatusCode::CREATED
                },
            )
            .post(
                |State(seen): State<Shared>, Path(name): Path<String>, body: axum::body::Bytes| async move {
                    if name.contains("fail") {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    if body.len() != 256 {
                        return StatusCode::BAD_REQUEST;
                    }
                    if let Ok(mut s) = seen.lock() {
                        *s.appends.entry(name).or_default() += 1;
                    }
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn config(addr: SocketAddr, prefix: &str) -> Config {
    Config {
        target: Target::parse(&format!("http://{addr}"), "/v1/stream/").expect("target"),
        producers: 3,
        streams: 5,
        size: 256,
        duration: Duration::from_millis(1_000),
        warmup: Duration::from_millis(200),
        name_prefix: prefix.to_owned(),
        label: "stub".to_owned(),
        progress: false,
    }
}

#[tokio::test]
async fn creates_the_streams_then_appends_round_robin() {
    let (addr, seen) = stub().await;
    let report = durable_appends::run(config(addr, "ok")).await.expect("run");
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert!(report.appends > 0);
    assert_eq!(report.latency.count, report.appends);
    assert_eq!(report.appends_per_sec, report.appends as f64);
    assert_eq!(report.producers, 3);
    assert_eq!(report.timeline.len(), 1);

    let seen = seen.lock().expect("lock");
    let mut created = seen.created.clone();
    created.sort();
    assert_eq!(
        created,
        ["ok-0000", "ok-0001", "ok-0002", "ok-0003", "ok-0004"]
    );
    // Every stream got appends, and about as many each (warm-up appends included).
    assert_eq!(seen.appends.len(), 5);
    let counts: Vec<u64> = seen.appends.values().copied().collect();
    let (min, max) = (counts.iter().min(), counts.iter().max());
    if let (Some(&min), Some(&max)) = (min, max) {
        assert!(max - min <= 3, "uneven spread over the streams: {counts:?}");
    }
    let total: u64 = counts.iter().sum();
    assert!(total >= report.appends);
}

#[tokio::test]
async fn counts_failed_appends_as_errors() {
    let (addr, _) = stub().await;
    let report = durable_appends::run(config(addr, "fail"))
        .await
        .expect("run");
    assert_eq!(report.appends, 0);
    assert!(report.errors > 0);
    assert_eq!(report.errors_by_kind.get("http 500"), Some(&report.errors));
    assert!(!report.error_samples.is_empty());
}

#[tokio::test]
async fn a_server_that_is_not_there_fails_the_run() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    assert!(durable_appends::run(config(addr, "x")).await.is_err());
}

#[tokio::test]
async fn the_binary_writes_json_results() {
    let (addr, _) = stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("nested/out.json");
    let bin = env!("CARGO_BIN_EXE_mooring-bench");
    let url = format!("http://{addr}");
    let json_arg = json.display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args([
                "durable-appends",
                "--url",
                &url,
                "--producers",
                "2",
                "--streams",
                "2",
            ])
            .args([
                "--duration-secs",
                "1",
                "--warmup-secs",
                "0",
                "--label",
                "stub",
            ])
            .args(["--json", &json_arg])
            .output()
    })
    .await
    .expect("join")
    .expect("run the binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("the JSON file");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(value["scenario"], "durable-appends");
    assert_eq!(value["label"], "stub");
    assert_eq!(value["errors"], 0);
    assert!(value["appends"].as_u64().unwrap_or(0) > 0);
    assert!(value["latency"]["p99_us"].as_u64().is_some());
}

#[test]
fn the_binary_refuses_bad_input_without_panicking() {
    let bin = env!("CARGO_BIN_EXE_mooring-bench");
    for args in [
        vec!["durable-appends", "--url", "https://127.0.0.1:1"],
        vec!["durable-appends", "--url", "nonsense"],
        vec!["durable-appends", "--producers", "0"],
        vec!["durable-appends", "--size", "lots"],
        vec!["fsync-limit", "--dir", "/nonexistent/mooring-bench"],
        vec!["fsync-limit", "--dir", "/tmp", "--batch", "0"],
    ] {
        let output = Command::new(bin)
            .args(&args)
            .output()
            .expect("run the binary");
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
