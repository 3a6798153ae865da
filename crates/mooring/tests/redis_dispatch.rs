//! Agent dispatch across nodes (issue 9): real `mooring serve` nodes on one real
//! `redis-server`. A user input written through one node reaches a worker connected to
//! another, exactly one worker at a time; when that worker dies before starting its run, the
//! input goes to a worker on a third node; a stale worker coming back through yet another node
//! cannot start a run for it; and every input is answered by exactly one run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mooring_testkit::protocol::realtime::{ClientFrame, ServerFrame};
use mooring_testkit::protocol::session::{Action, NewEvent};
use mooring_testkit::redis::RedisServer;
use mooring_testkit::ws::{self, RealtimeClient};
use mooring_testkit::{MooringProcess, ServerConfig};
use serde_json::json;

const PROMPT: Duration = Duration::from_secs(15);
/// How long a test waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(1_500);
/// The `mooring` binary cargo built for these tests.
const MOORING: &str = env!("CARGO_BIN_EXE_mooring");

/// Nodes on one Redis that find each other dead after a second (and announce waiting inputs
/// again that often).
async fn nodes(
    redis: &RedisServer,
    n: usize,
) -> anyhow::Result<Vec<(MooringProcess, tempfile::TempDir)>> {
    let mut all = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir()?;
        let config = ServerConfig::new(MOORING, dir.path())
            .engine(&redis.url())
            .arg("--node-expiry-ms")
            .arg("1000");
        all.push((MooringProcess::start(config).await?, dir));
    }
    Ok(all)
}

/// A worker for `chat:**`, one input at a time, connected through `node`.
async fn worker(node: &MooringProcess, client_id: &str) -> anyhow::Result<RealtimeClient> {
    let mut client = RealtimeClient::connect(&node.base_url(), client_id).await?;
    client
        .send(&ClientFrame::Worker {
            req: 1,
            patterns: vec!["chat:**".to_owned()],
            capacity: Some(1),
        })
        .await?;
    match client.recv_frame(PROMPT).await? {
        ServerFrame::WorkerRegistered { .. } => Ok(client),
        other => bail!("registering {client_id}: {other:?}"),
    }
}

/// The next input dispatched to `worker` within `wait`: (session, serial).
async fn dispatched(worker: &mut RealtimeClient, wait: Duration) -> Option<(String, u64)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match worker.recv_frame(left).await {
            Ok(ServerFrame::Dispatch { session, input, .. }) => {
                return Some((session, input.serial))
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Publishes a user input through `user`; answers its serial.
async fn ask(user: &mut RealtimeClient, session: &str, text: &str) -> anyhow::Result<u64> {
    let mut input = ws::create("user-input", text);
    input.id = Some(format!("{session}-{text}"));
    match user.publish(session, vec![input], PROMPT).await? {
        ServerFrame::Ack { results, .. } => Ok(results[0].serial),
        other => bail!("asking: {other:?}"),
    }
}

fn run_event(action: Action, run_id: &str, input: u64) -> NewEvent {
    let data = match action {
        Action::RunEnd => json!({"run_id": run_id, "status": "completed"}),
        _ => json!({"run_id": run_id, "input": input}),
    };
    let mut event = ws::app_event("run", data);
    event.action = action;
    event.name = None;
    event
}

/// Ends run `run_id` through `worker`; it must be acknowledged.
async fn end_run(worker: &mut RealtimeClient, session: &str, run_id: &str) -> anyhow::Result<()> {
    let ended = run_event(Action::RunEnd, run_id, 0);
    match worker.publish(session, vec![ended], PROMPT).await? {
        ServerFrame::Ack { .. } => Ok(()),
        other => bail!("ending run {run_id}: {other:?}"),
    }
}

/// Publishes `run.start` for `input`; answers the error code if refused.
async fn start_run(
    worker: &mut RealtimeClient,
    session: &str,
    run_id: &str,
    input: u64,
) -> anyhow::Result<Option<String>> {
    let start = run_event(Action::RunStart, run_id, input);
    match worker.publish(session, vec![start], PROMPT).await? {
        ServerFrame::Ack { .. } => Ok(None),
        ServerFrame::Error { error, .. } => Ok(Some(format!("{:?}", error.code))),
        other => bail!("starting a run: {other:?}"),
    }
}

/// The `run.start` events of `session` in its log, by the input each answers.
async fn starts(node: &MooringProcess, session: &str) -> anyhow::Result<BTreeMap<u64, usize>> {
    let url = format!("{}/v1/stream/{session}?offset=-1", node.base_url());
    let body = reqwest::get(&url).await?.bytes().await?;
    let events: Vec<serde_json::Value> = serde_json::from_slice(&body).context("the log")?;
    let mut by_input = BTreeMap::new();
    for event in events.iter().filter(|e| e["action"] == "run.start") {
        let input = event["data"]["input"].as_u64().context("run.start input")?;
        *by_input.entry(input).or_default() += 1;
    }
    Ok(by_input)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_goes_to_a_worker_on_another_node_once_and_on_when_it_dies() -> anyhow::Result<()>
{
    let redis = RedisServer::start().context("starting redis-server")?;
    let all = nodes(&redis, 4).await?;
    let [(a, _), (b, _), (c, _), (d, _)] = &all[..] else {
        bail!("four nodes");
    };
    let mut on_b = worker(b, "agent-b").await?;
    let mut on_c = worker(c, "agent-c").await?;
    let mut user = RealtimeClient::connect(&a.base_url(), "user").await?;
    let session = "chat:far";
    let input = ask(&mut user, session, "why").await?;

    // One of the two workers is offered it, the other not.
    let deadline = Instant::now() + PROMPT;
    let (first, chosen, mut second, first_label) = loop {
        ensure!(Instant::now() < deadline, "no worker was offered the input");
        let tick = Duration::from_millis(100);
        if let Some(got) = dispatched(&mut on_b, tick).await {
            break (got, on_b, on_c, "b");
        }
        if let Some(got) = dispatched(&mut on_c, tick).await {
            break (got, on_c, on_b, "c");
        }
    };
    ensure!(first == (session.to_owned(), input), "{first:?}");
    ensure!(
        dispatched(&mut second, QUIET).await.is_none(),
        "the input was offered to both workers: {}\n---\n{}",
        b.output_tail(),
        c.output_tail()
    );

    // The chosen worker dies before starting its run: the other one gets the input.
    chosen.drop_connection();
    let handed = dispatched(&mut second, PROMPT).await;
    ensure!(
        handed == Some((session.to_owned(), input)),
        "not handed on after agent-{first_label} died: {handed:?}"
    );

    // The dead worker's agent comes back through a fourth node and tries to answer anyway;
    // then through the node of the worker that holds it now (refused there by that node's own
    // table, after the store let it through: the store must forget that it did).
    let stale_id = format!("agent-{first_label}");
    let mut stale = RealtimeClient::connect(&d.base_url(), &stale_id).await?;
    let refused = start_run(&mut stale, session, "r-stale", input).await?;
    ensure!(
        refused.as_deref() == Some("InputTaken"),
        "a stale worker started a run: {refused:?}"
    );
    let holder_node = if first_label == "b" { c } else { b };
    let mut stale_there = RealtimeClient::connect(&holder_node.base_url(), &stale_id).await?;
    let refused = start_run(&mut stale_there, session, "r-stale-2", input).await?;
    ensure!(
        refused.as_deref() == Some("InputTaken"),
        "a stale worker started a run through the holder's node: {refused:?}"
    );

    // The holder dies too, before starting: the input goes to a worker on the fourth node.
    let mut third = worker(d, "agent-d").await?;
    second.drop_connection();
    let handed = dispatched(&mut third, PROMPT).await;
    ensure!(
        handed == Some((session.to_owned(), input)),
        "not handed on after the second worker died: {handed:?}"
    );
    ensure!(start_run(&mut third, session, "r-1", input)
        .await?
        .is_none());
    // Once a run answers it, another agent's run is refused through any node.
    let late = start_run(&mut stale, session, "r-late", input).await?;
    ensure!(late.as_deref() == Some("InputTaken"), "{late:?}");
    end_run(&mut third, session, "r-1").await?;
    ensure!(
        starts(a, session).await? == BTreeMap::from([(input, 1)]),
        "exactly one run answers the input"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_comes_later_to_another_node_gets_the_waiting_input() -> anyhow::Result<()> {
    let redis = RedisServer::start().context("starting redis-server")?;
    let all = nodes(&redis, 2).await?;
    let [(a, _), (b, _)] = &all[..] else {
        bail!("two nodes");
    };
    let mut user = RealtimeClient::connect(&a.base_url(), "user").await?;
    let input = ask(&mut user, "chat:early", "anyone?").await?;
    tokio::time::sleep(QUIET).await;
    // Registered after the input was announced: the announcement comes again.
    let mut late = worker(b, "agent-late").await?;
    let got = dispatched(&mut late, PROMPT).await;
    ensure!(got == Some(("chat:early".to_owned(), input)), "{got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_through_every_node_are_each_answered_by_one_run() -> anyhow::Result<()> {
    const INPUTS: usize = 12;
    let redis = RedisServer::start().context("starting redis-server")?;
    let all = nodes(&redis, 3).await?;
    let mut agents = Vec::new();
    for (i, (node, _)) in all.iter().enumerate().skip(1) {
        agents.push(worker(node, &format!("agent-{i}")).await?);
    }
    // Each agent answers what it is offered: a run.start, then its end.
    let mut answering = Vec::new();
    for (i, mut agent) in agents.into_iter().enumerate() {
        answering.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            while let Some((session, input)) = dispatched(&mut agent, Duration::from_secs(5)).await
            {
                let run_id = format!("r-{i}-{session}-{input}");
                match start_run(&mut agent, &session, &run_id, input).await {
                    Ok(None) => answered.push((session.clone(), input)),
                    Ok(Some(code)) => return Err(anyhow::anyhow!("offered and refused: {code}")),
                    Err(e) => return Err(e),
                }
                end_run(&mut agent, &session, &run_id).await?;
            }
            Ok(answered)
        }));
    }
    let mut asked = Vec::new();
    let mut users = Vec::new();
    for (i, (node, _)) in all.iter().enumerate() {
        users.push(RealtimeClient::connect(&node.base_url(), &format!("user-{i}")).await?);
    }
    for n in 0..INPUTS {
        let session = format!("chat:{}", n % 4);
        let from = n % users.len();
        let input = ask(&mut users[from], &session, &format!("q{n}")).await?;
        asked.push((session, input));
    }
    let mut answered = Vec::new();
    for task in answering {
        answered.extend(task.await??);
    }
    answered.sort();
    asked.sort();
    ensure!(
        answered == asked,
        "answered {answered:?} of {asked:?}\n{}",
        all[1].0.output_tail()
    );
    let (first, _) = &all[0];
    for session in (0..4).map(|n| format!("chat:{n}")) {
        let runs = starts(first, &session).await?;
        ensure!(runs.values().all(|n| *n == 1), "{session}: {runs:?}");
    }
    Ok(())
}
