//! Runs, cancel, agent health and presence, end to end over real WebSockets.

mod wire;

use std::time::{Duration, Instant};

use mooring_server::realtime::RealtimeConfig;
use serde_json::{json, Value};
use wire::{start, Ws};

fn quick() -> RealtimeConfig {
    RealtimeConfig {
        rollup_window: Duration::ZERO,
        presence_grace: Duration::from_millis(300),
        stall_after: Duration::from_millis(300),
        ..RealtimeConfig::default()
    }
}

impl Ws {
    /// Attaches from the start and reads up to `live`.
    async fn follow(&mut self, session: &str) {
        self.send(json!({"type":"attach","session":session,"from":"start"}))
            .await;
        loop {
            if self.next_frame().await["type"] == "live" {
                return;
            }
        }
    }

    /// The next event frame with this action (other frames are skipped).
    async fn next_action(&mut self, action: &str) -> Value {
        loop {
            let f = self.next_frame().await;
            if f["type"] == "event" && f["action"] == action {
                return f;
            }
        }
    }
}

async fn start_run(agent: &mut Ws, session: &str, run_id: &str, req: u64) {
    let ack = agent
        .publish(
            req,
            session,
            json!([{"action":"run.start","data":{"run_id":run_id}}]),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test]
async fn a_cancel_before_the_run_exists_is_applied_when_it_starts() {
    let node = start(quick()).await;
    let mut user = Ws::connect(&node, "user").await;
    let mut agent = Ws::connect(&node, "agent").await;
    agent.follow("c:1").await;
    let ack = user
        .publish(
            1,
            "c:1",
            json!([{"action":"control.cancel","data":{"run_id":"r1"}}]),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    start_run(&mut agent, "c:1", "r1", 1).await;
    let start = agent.next_action("run.start").await;
    let cancel = agent.next_action("control.cancel").await;
    assert!(cancel["serial"].as_u64() > start["serial"].as_u64());
    assert_eq!(cancel["data"]["run_id"], "r1");
    assert_eq!(cancel["data"]["held_from"], "user");
}

#[tokio::test]
async fn cancelling_one_of_two_concurrent_runs_leaves_the_other() {
    let node = start(quick()).await;
    let mut agent = Ws::connect(&node, "agent").await;
    let mut user = Ws::connect(&node, "user").await;
    agent.follow("c:2").await;
    start_run(&mut agent, "c:2", "r1", 1).await;
    start_run(&mut agent, "c:2", "r2", 2).await;
    agent.next_action("run.start").await;
    agent.next_action("run.start").await;
    let sent = Instant::now();
    user.send(json!({"type":"publish","req":9,"session":"c:2","events":[{"action":"control.cancel","data":{"run_id":"r2"}}]}))
        .await;
    let cancel = agent.next_action("control.cancel").await;
    let latency = sent.elapsed();
    println!("cancel reached the agent {latency:?} after the client sent it");
    assert_eq!(cancel["data"]["run_id"], "r2");
    let runs: Value = reqwest::get(format!("http://{}/v1/sessions/c:2/runs", node.addr))
        .await
        .expect("runs")
        .json()
        .await
        .expect("json");
    let by_id = |id: &str| {
        runs["runs"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["run_id"] == id).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_id("r1")["cancel_requested"], false);
    assert_eq!(by_id("r2")["cancel_requested"], true);
}

#[tokio::test]
async fn an_agent_whose_connection_drops_ends_its_runs_agent_lost_after_the_grace() {
    let node = start(quick()).await;
    let mut watcher = Ws::connect(&node, "user").await;
    watcher.follow("c:3").await;
    let mut agent = Ws::connect(&node, "agent").await;
    start_run(&mut agent, "c:3", "r1", 1).await;
    watcher.next_action("run.start").await;
    let dropped = Instant::now();
    drop(agent);
    let end = watcher.next_action("run.end").await;
    println!(
        "agent_lost {:?} after the socket dropped",
        dropped.elapsed()
    );
    assert_eq!(end["data"]["status"], "agent_lost");
    assert_eq!(end["client_id"], "mooring");
    assert!(
        dropped.elapsed() >= Duration::from_millis(300),
        "not before the grace"
    );
}

#[tokio::test]
async fn a_silent_agent_is_found_dead_by_heartbeat_then_its_runs_end() {
    let node = start(RealtimeConfig {
        heartbeat: Duration::from_millis(200),
        ..quick()
    })
    .await;
    let mut watcher = Ws::connect(&node, "user").await;
    watcher.follow("c:4").await;
    let mut agent = Ws::connect(&node, "agent").await;
    start_run(&mut agent, "c:4", "r1", 1).await;
    watcher.next_action("run.start").await;
    // The agent's socket stays open but it never answers again: a cut without a close.
    let silent = Instant::now();
    let end = watcher.next_action("run.end").await;
    println!("silent agent ended agent_lost after {:?}", silent.elapsed());
    assert_eq!(end["data"]["status"], "agent_lost");
    drop(agent);
}

#[tokio::test]
async fn a_run_without_progress_stalls_and_appends_to_its_message_are_progress() {
    let node = start(quick()).await;
    let mut agent = Ws::connect(&node, "agent").await;
    agent.follow("c:5").await;
    start_run(&mut agent, "c:5", "r1", 1).await;
    let ack = agent
        .publish(2, "c:5", json!([{"data":"","extras":{"run_id":"r1"}}]))
        .await;
    let answer = ack["results"][0]["serial"].as_u64().expect("serial");
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        agent
            .publish(
                10 + i,
                "c:5",
                json!([{"action":"message.append","ref":answer,"data":"."}]),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log: Value = reqwest::get(format!("http://{}/v1/stream/c:5?offset=-1", node.addr))
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    eprintln!("LOG {log}");
    let stalled = agent.next_action("run.stalled").await;
    assert_eq!(stalled["data"]["run_id"], "r1");
    let log: Value = reqwest::get(format!("http://{}/v1/stream/c:5?offset=-1", node.addr))
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    let appended_last = log
        .as_array()
        .and_then(|l| {
            l.iter()
                .rev()
                .find(|e| e["action"] == "message.append")
                .cloned()
        })
        .expect("appends");
    assert!(
        stalled["serial"].as_u64() > appended_last["serial"].as_u64(),
        "no stall while the answer was growing"
    );
}

#[tokio::test]
async fn presence_leaves_after_the_grace_unless_the_member_returns() {
    let node = start(quick()).await;
    let mut watcher = Ws::connect(&node, "watcher").await;
    watcher.follow("c:6").await;
    let mut phone = Ws::connect(&node, "alice").await;
    phone
        .send(json!({"type":"presence","session":"c:6","action":"enter","role":"user","instance":"phone","data":{"typing":false}}))
        .await;
    let mut laptop = Ws::connect(&node, "bob").await;
    laptop
        .send(json!({"type":"presence","session":"c:6","action":"enter","instance":"laptop"}))
        .await;
    for _ in 0..2 {
        let f = presence_frame(&mut watcher).await;
        assert_eq!(f["action"], "enter");
    }
    // Both connections are lost; alice comes back in time, bob does not.
    drop(phone);
    drop(laptop);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut phone = Ws::connect(&node, "alice").await;
    phone
        .send(json!({"type":"presence","session":"c:6","action":"enter","instance":"phone"}))
        .await;
    let back = presence_frame(&mut watcher).await;
    assert_eq!(
        (
            back["action"].as_str(),
            back["member"]["client_id"].as_str()
        ),
        (Some("update"), Some("alice"))
    );
    let left = presence_frame(&mut watcher).await;
    assert_eq!(
        (
            left["action"].as_str(),
            left["member"]["client_id"].as_str()
        ),
        (Some("leave"), Some("bob"))
    );
    let mut late = Ws::connect(&node, "late").await;
    late.send(json!({"type":"attach","session":"c:6"})).await;
    let snapshot = loop {
        let f = late.next_frame().await;
        if f["type"] == "presence_snapshot" {
            break f;
        }
    };
    let members = snapshot["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["client_id"], "alice");
}

async fn presence_frame(ws: &mut Ws) -> Value {
    loop {
        let f = ws.next_frame().await;
        if f["type"] == "presence" {
            return f;
        }
    }
}

#[tokio::test]
async fn metrics_count_connections_events_resumes_and_runs() {
    let node = start(quick()).await;
    let mut agent = Ws::connect(&node, "agent").await;
    start_run(&mut agent, "c:7", "r1", 1).await;
    let mut reader = Ws::connect(&node, "reader").await;
    reader
        .send(json!({"type":"attach","session":"c:7","from":{"epoch":0,"serial":0}}))
        .await;
    loop {
        if reader.next_frame().await["type"] == "live" {
            break;
        }
    }
    agent.publish(2, "c:7", json!([{"data":"hi"}])).await;
    reader.next_action("message.create").await;
    let text = reqwest::get(format!("http://{}/metrics", node.addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    for name in [
        "mooring_connections ",
        "mooring_attached_sessions ",
        "mooring_events_published_total ",
        "mooring_events_delivered_total ",
        "mooring_resumes_total ",
        "mooring_active_runs{state=\"active\"} ",
        "mooring_publish_to_deliver_seconds_bucket",
    ] {
        let line = text.lines().find(|l| l.starts_with(name));
        let value = line
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert!(
            value.is_some_and(|v| v >= 1.0) || name.ends_with("_bucket") && line.is_some(),
            "{name} in\n{text}"
        );
    }
}
