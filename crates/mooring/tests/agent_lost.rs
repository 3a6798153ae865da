//! An agent that vanishes mid-run, as its own OS process, against the real `mooring` binary:
//! a client watching the session sees the run end `agent_lost`, from the server, once the
//! presence grace is over.
//!
//! - SIGKILL: the kernel closes the agent's socket without a WebSocket close, the server sees
//!   the connection lost at once, and the run ends after the grace (bound: grace + heartbeat).
//! - SIGSTOP: the socket stays open and silent, as when a network cuts without a close; the
//!   server finds the connection dead by heartbeat (`dead_after`, checked at each heartbeat),
//!   and the run ends a grace later. Today the server first waits up to 2 s for the dead
//!   peer's answer to its close frame before it counts the connection lost, so the bound is
//!   dead_after + heartbeat + 2 s + grace (+ a heartbeat of slack).
//!
//! The agent is the client crate's example agent (`examples/agent.rs`), compiled into this
//! test binary and run by re-executing it with `MOORING_TEST_AGENT` set.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mooring_client::{
    Action, Client, ClientOptions, Event, PresenceAction, Role, SessionItem, StartAt, Subscription,
};
use mooring_testkit::{MooringProcess, ServerConfig};

#[path = "../../mooring-client/examples/agent.rs"]
#[allow(dead_code)]
mod agent;

/// Set (to `url session run-id`) in the agent process this test starts.
const AGENT: &str = "MOORING_TEST_AGENT";
const GRACE: Duration = Duration::from_millis(1000);
const HEARTBEAT: Duration = Duration::from_millis(500);
/// The server's `dead_after`: 2.5 heartbeats.
const DEAD_AFTER: Duration = Duration::from_millis(1250);
/// How long the server may spend handing its close frame to a dead peer's socket
/// (`DEAD_PEER_CLOSE_WAIT` in the server's connection loop); it waits for no reply.
const SERVER_CLOSE_WAIT: Duration = Duration::from_millis(100);
const PROMPT: Duration = Duration::from_secs(30);

/// Not a test: the agent process the tests below start. Without `MOORING_TEST_AGENT` it does
/// nothing.
#[test]
fn agent_process() {
    let Ok(spec) = std::env::var(AGENT) else {
        return;
    };
    let args: Vec<&str> = spec.split(' ').collect();
    let [url, session, run_id] = args.as_slice() else {
        panic!("{AGENT} must be `url session run-id`, not {spec:?}");
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let status = runtime
        .block_on(agent::run_agent(url, session, run_id))
        .expect("the agent runs");
    println!("agent ended its run: {status:?}");
}

/// The agent process; killed when dropped, whatever happened.
struct AgentProcess(Child);

impl AgentProcess {
    fn spawn(url: &str, session: &str, run_id: &str) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let child = Command::new(exe)
            .args([
                "agent_process",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(AGENT, format!("{url} {session} {run_id}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the agent");
        Self(child)
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal}");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_node() -> (MooringProcess, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("data directory");
    let config = ServerConfig::new(env!("CARGO_BIN_EXE_mooring"), data.path())
        .engine("memory")
        .arg("--presence-grace-ms")
        .arg(&GRACE.as_millis().to_string())
        .arg("--heartbeat-ms")
        .arg(&HEARTBEAT.as_millis().to_string());
    let node = MooringProcess::start(config).await.expect("mooring serve");
    (node, data)
}

async fn next(sub: &mut Subscription) -> SessionItem {
    tokio::time::timeout(PROMPT, sub.next())
        .await
        .expect("an item arrives promptly")
        .expect("the subscription is open")
}

/// Follows the session until the agent is in presence and has streamed a few tokens.
async fn until_streaming(sub: &mut Subscription) {
    let mut tokens = 0;
    while tokens < 5 || !sub.members().iter().any(|m| m.role == Role::Agent) {
        if let SessionItem::Event(e) = next(sub).await {
            if e.action == Action::MessageAppend {
                tokens += 1;
            }
        }
    }
}

/// The run's end and the agent's leave, in whichever order the server sends them; the time
/// of the run's end.
async fn until_run_end_and_leave(sub: &mut Subscription) -> (Event, Instant) {
    let mut end = None;
    let mut left = false;
    loop {
        match next(sub).await {
            SessionItem::Event(e) if e.action == Action::RunEnd => {
                end = Some((e, Instant::now()));
            }
            SessionItem::Presence {
                action: PresenceAction::Leave,
                member,
            } if member.role == Role::Agent => left = true,
            _ => {}
        }
        if let (Some(end), true) = (&end, left) {
            return end.clone();
        }
    }
}

/// Starts a node, a watcher and the agent, and returns once the agent streams.
async fn agent_streaming(
    session: &str,
) -> (
    MooringProcess,
    tempfile::TempDir,
    Client,
    Subscription,
    AgentProcess,
) {
    let (node, data) = start_node().await;
    let url = format!("ws://127.0.0.1:{}/v1/ws", node.port());
    let watcher = Client::connect(ClientOptions::new(url.as_str()).client_id("watcher"))
        .await
        .expect("connect");
    let mut watch = watcher
        .attach(session, StartAt::Beginning)
        .await
        .expect("attach");
    let agent = AgentProcess::spawn(&url, session, "run-1");
    until_streaming(&mut watch).await;
    (node, data, watcher, watch, agent)
}

fn assert_lost(end: &Event) {
    assert_eq!(end.data["run_id"], "run-1");
    assert_eq!(end.data["status"], "agent_lost", "{end:?}");
    assert_eq!(end.client_id.as_deref(), Some("mooring"));
}

#[tokio::test]
async fn an_agent_killed_mid_run_ends_agent_lost_within_grace_and_heartbeat() {
    let (_node, _data, _watcher, mut watch, agent) = agent_streaming("agents:killed").await;
    let killed = Instant::now();
    agent.signal("-KILL");
    let (end, at) = until_run_end_and_leave(&mut watch).await;
    let took = at.duration_since(killed);
    println!(
        "SIGKILL -> run.end agent_lost after {took:?} (grace {GRACE:?}, heartbeat {HEARTBEAT:?})"
    );
    assert_lost(&end);
    assert!(took >= GRACE, "not before the grace: {took:?}");
    assert!(
        took <= GRACE + HEARTBEAT,
        "within grace + heartbeat: {took:?}"
    );
}

#[tokio::test]
async fn an_agent_frozen_mid_run_is_found_dead_by_heartbeat_then_ends_agent_lost() {
    let (_node, _data, _watcher, mut watch, agent) = agent_streaming("agents:frozen").await;
    // Stopped, the process keeps its socket open and answers nothing: a cut without a close.
    let frozen = Instant::now();
    agent.signal("-STOP");
    let (end, at) = until_run_end_and_leave(&mut watch).await;
    let took = at.duration_since(frozen);
    println!(
        "SIGSTOP -> run.end agent_lost after {took:?} (dead_after {DEAD_AFTER:?}, the server's \
         close wait {SERVER_CLOSE_WAIT:?}, grace {GRACE:?})"
    );
    assert_lost(&end);
    // The server last heard from the agent up to one token (50 ms) before it froze.
    let earliest = DEAD_AFTER + GRACE - agent::EVERY;
    assert!(took >= earliest, "not before {earliest:?}: {took:?}");
    // The dead-peer timer is exact; one heartbeat of slack covers scheduling on a busy machine.
    let bound = DEAD_AFTER + SERVER_CLOSE_WAIT + GRACE + HEARTBEAT;
    assert!(took <= bound, "within {bound:?}: {took:?}");
    agent.signal("-KILL");
}
