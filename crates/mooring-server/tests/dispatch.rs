//! Agent dispatch end to end over real WebSockets: workers register for a pattern, each user
//! input reaches exactly one of them, and an input whose worker dies before `run.start` goes to
//! another.

mod wire;

use std::time::Duration;

use serde_json::{json, Value};
use wire::{no_rollup, start, Node, Ws};

/// How long a test waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(400);

impl Ws {
    /// Registers as a worker for `patterns`.
    async fn work(&mut self, req: u64, patterns: &[&str], capacity: Option<u32>) {
        let mut frame = json!({"type":"worker","req":req,"patterns":patterns});
        if let Some(capacity) = capacity {
            frame["capacity"] = capacity.into();
        }
        self.send(frame).await;
        let reply = self.next_frame().await;
        assert_eq!(reply["type"], "worker_registered", "{reply}");
        assert_eq!(reply["req"], req);
    }

    /// The next `dispatch` frame (other frames are skipped).
    async fn dispatched(&mut self) -> Value {
        loop {
            let f = self.next_frame().await;
            if f["type"] == "dispatch" {
                return f;
            }
        }
    }

    /// A `dispatch` frame arriving within `QUIET`, if any.
    async fn maybe_dispatched(&mut self) -> Option<Value> {
        tokio::time::timeout(QUIET, self.dispatched()).await.ok()
    }

    /// Publishes a user input; returns its serial.
    async fn ask(&mut self, req: u64, session: &str, text: &str) -> u64 {
        let ack = self
            .publish(req, session, json!([{"name":"user-input","data":text}]))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        ack["results"][0]["serial"].as_u64().expect("a serial")
    }

    /// Publishes `run.start` answering `input`; returns the reply (ack or error).
    async fn start_run(&mut self, req: u64, session: &str, run_id: &str, input: u64) -> Value {
        self.publish(
            req,
            session,
            json!([{"action":"run.start","data":{"run_id":run_id,"input":input}}]),
        )
        .await
    }
}

async fn workers(node: &Node, n: usize, pattern: &str) -> Vec<Ws> {
    let mut all = Vec::new();
    for i in 0..n {
        let mut w = Ws::connect(node, &format!("worker-{i}")).await;
        w.work(1, &[pattern], None).await;
        all.push(w);
    }
    all
}

/// Which workers got a dispatch within `QUIET` (each drained of one).
async fn who_got_one(workers: &mut [Ws]) -> Vec<(usize, Value)> {
    let mut got = Vec::new();
    for (i, w) in workers.iter_mut().enumerate() {
        if let Some(d) = w.maybe_dispatched().await {
            got.push((i, d));
        }
    }
    got
}

#[tokio::test]
async fn one_input_three_workers_exactly_one_run() {
    let node = start(no_rollup()).await;
    let mut pool = workers(&node, 3, "chat:*").await;
    let mut user = Ws::connect(&node, "user").await;
    let input = user.ask(1, "chat:1", "Why is the sky blue?").await;

    let got = who_got_one(&mut pool).await;
    assert_eq!(
        got.len(),
        1,
        "exactly one worker is offered the input: {got:?}"
    );
    let (chosen, dispatch) = &got[0];
    assert_eq!(dispatch["session"], "chat:1");
    assert_eq!(dispatch["attempt"], 1);
    assert_eq!(dispatch["input"]["serial"], input);
    assert_eq!(dispatch["input"]["data"], "Why is the sky blue?");
    assert_eq!(dispatch["input"]["client_id"], "user");

    // Another worker that saw the input some other way may not answer it too.
    let other = (chosen + 1) % 3;
    let refused = pool[other].start_run(2, "chat:1", "r-other", input).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "input_taken");
    let ack = pool[*chosen].start_run(2, "chat:1", "r-1", input).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let late = pool[other].start_run(3, "chat:1", "r-late", input).await;
    assert_eq!(late["code"], "input_taken", "r-1 answers it: {late}");

    let runs: Value = reqwest::get(format!("http://{}/v1/sessions/chat:1/runs", node.addr))
        .await
        .expect("runs")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = runs["runs"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(ids, ["r-1"], "{runs}");
    assert!(who_got_one(&mut pool).await.is_empty(), "no second offer");
}

#[tokio::test]
async fn a_worker_killed_before_run_start_hands_the_input_to_another() {
    let node = start(no_rollup()).await;
    let mut pool = workers(&node, 3, "chat:**").await;
    let mut user = Ws::connect(&node, "user").await;
    let input = user.ask(1, "chat:eu:2", "hello").await;
    let got = who_got_one(&mut pool).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let chosen = got[0].0;

    // Killed: the socket goes without a close frame.
    drop(pool.remove(chosen));
    let mut next = None;
    for (i, w) in pool.iter_mut().enumerate() {
        if let Ok(d) = tokio::time::timeout(Duration::from_secs(5), w.dispatched()).await {
            next = Some((i, d));
            break;
        }
    }
    let (taker, dispatch) = next.expect("another worker is offered the input");
    assert_eq!(dispatch["input"]["serial"], input);
    assert_eq!(dispatch["attempt"], 2);
    let ack = pool[taker].start_run(2, "chat:eu:2", "r-2", input).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(
        who_got_one(&mut pool).await.is_empty(),
        "offered once more, not twice"
    );
}

#[tokio::test]
async fn no_input_is_lost_while_every_worker_is_briefly_gone() {
    let node = start(no_rollup()).await;
    let mut first = workers(&node, 1, "chat:*").await;
    let mut user = Ws::connect(&node, "user").await;
    let a = user.ask(1, "chat:1", "one").await;
    assert_eq!(first[0].dispatched().await["input"]["serial"], a);
    // The only worker goes (restarting, say) before it starts the run; inputs keep coming.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = user.ask(2, "chat:2", "two").await;
    let c = user.ask(3, "chat:1", "three").await;

    let mut back = workers(&node, 1, "chat:*").await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = back[0].dispatched().await;
        seen.push((
            d["session"].as_str().unwrap_or_default().to_owned(),
            d["input"]["serial"].as_u64(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("chat:1".to_owned(), Some(a)),
            ("chat:2".to_owned(), Some(b)),
            ("chat:1".to_owned(), Some(c)),
        ],
        "every input, oldest first"
    );
}

#[tokio::test]
async fn a_released_input_goes_to_another_worker() {
    let node = start(no_rollup()).await;
    let mut pool = workers(&node, 2, "chat:*").await;
    let mut user = Ws::connect(&node, "user").await;
    let input = user.ask(1, "chat:1", "hi").await;
    let got = who_got_one(&mut pool).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let chosen = got[0].0;
    pool[chosen]
        .send(json!({"type":"dispatch_release","session":"chat:1","input":input}))
        .await;
    let other = 1 - chosen;
    let d = pool[other].dispatched().await;
    assert_eq!(
        (d["input"]["serial"].as_u64(), d["attempt"].as_u64()),
        (Some(input), Some(2))
    );
    assert!(
        pool[chosen].maybe_dispatched().await.is_none(),
        "never back to the one that released it"
    );
}

#[tokio::test]
async fn capacity_holds_inputs_until_a_run_ends() {
    let node = start(no_rollup()).await;
    let mut w = Ws::connect(&node, "worker").await;
    w.work(1, &["chat:*"], Some(1)).await;
    let mut user = Ws::connect(&node, "user").await;
    let a = user.ask(1, "chat:1", "a").await;
    let b = user.ask(2, "chat:2", "b").await;
    assert_eq!(w.dispatched().await["input"]["serial"], a);
    assert_eq!(w.start_run(2, "chat:1", "r-a", a).await["type"], "ack");
    assert!(w.maybe_dispatched().await.is_none(), "at capacity");
    let end = w
        .publish(
            3,
            "chat:1",
            json!([{"action":"run.end","data":{"run_id":"r-a","status":"completed"}}]),
        )
        .await;
    assert_eq!(end["type"], "ack", "{end}");
    let d = w.dispatched().await;
    assert_eq!(
        (d["session"].as_str(), d["input"]["serial"].as_u64()),
        (Some("chat:2"), Some(b))
    );
}

#[tokio::test]
async fn a_bad_pattern_is_refused_with_its_code() {
    let node = start(no_rollup()).await;
    let mut w = Ws::connect(&node, "worker").await;
    w.send(json!({"type":"worker","req":9,"patterns":["chat:user-*"]}))
        .await;
    let reply = w.next_frame().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "invalid_pattern");
    assert_eq!(reply["req"], 9);
    // Not a worker: an input is not offered to it.
    let mut user = Ws::connect(&node, "user").await;
    user.ask(1, "chat:1", "anyone?").await;
    assert!(w.maybe_dispatched().await.is_none());
}
