//! The safe default, against the real binary: without credentials a node serves loopback only,
//! says so at start, and refuses any other address unless `--insecure` is given.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mooring(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mooring"));
    command
        .args(args)
        .env_remove("MOORING_KEYS")
        .env_remove("MOORING_JWT_SECRET")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Starts `mooring serve` with `args` and waits for its "listening" line; returns the lines
/// logged until then. Panics if it exits first.
fn starts(args: &[&str]) -> Vec<String> {
    let mut child = mooring(args).spawn().expect("spawn mooring");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("read stderr");
        let listening = line.contains("mooring is listening");
        lines.push(line);
        if listening || Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("mooring is listening")),
        "did not start: {lines:?}"
    );
    lines
}

#[test]
fn without_keys_a_non_loopback_address_is_refused() {
    let output = mooring(&["serve", "--engine", "memory", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run mooring");
    assert!(!output.status.success(), "it started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
}

#[test]
fn without_keys_insecure_starts_on_any_address_and_warns() {
    let lines = starts(&[
        "serve",
        "--engine",
        "memory",
        "--listen",
        "0.0.0.0:0",
        "--insecure",
    ]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("AUTH IS OFF ON A NON-LOOPBACK")),
        "{lines:?}"
    );
}

#[test]
fn without_keys_loopback_starts_and_says_auth_is_off() {
    let lines = starts(&["serve", "--engine", "memory", "--listen", "127.0.0.1:0"]);
    assert!(lines.iter().any(|l| l.contains("AUTH IS OFF")), "{lines:?}");
}

#[test]
fn with_keys_a_non_loopback_address_starts() {
    starts(&[
        "serve",
        "--engine",
        "memory",
        "--listen",
        "0.0.0.0:0",
        "--keys",
        "backend:0123456789abcdef",
    ]);
}

#[test]
fn mooring_token_prints_a_token() {
    let output = mooring(&[
        "token",
        "--secret",
        "0123456789abcdef0123456789abcdef",
        "--client-id",
        "alice",
        "--cap",
        "chat:*=subscribe,publish",
        "--ttl",
        "60",
    ])
    .stdout(Stdio::piped())
    .output()
    .expect("run mooring token");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8_lossy(&output.stdout);
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
}
