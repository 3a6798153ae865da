//! Runs: an agent starts, answers and ends them, and hears of cancels and steers sent by
//! another client, including a cancel sent before its run existed.

use std::future::Future;
use std::time::{Duration, Instant};

use mooring_client::{
    Action, CancelReason, Client, ClientOptions, Event, Role, RunStatus, SessionItem, StartAt,
    Subscription,
};
use mooring_server::realtime::RealtimeConfig;
use serde_json::json;

use crate::node::{next, until_live, Node, PROMPT};
use crate::proxy::Proxy;

const GRACE: Duration = Duration::from_millis(500);

fn quick() -> RealtimeConfig {
    RealtimeConfig {
        rollup_window: Duration::ZERO,
        presence_grace: GRACE,
        ..RealtimeConfig::default()
    }
}

async fn prompt<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, work)
        .await
        .expect("happens promptly")
}

/// The next event with `action`, skipping everything else.
async fn next_action(sub: &mut Subscription, action: Action) -> Event {
    loop {
        if let SessionItem::Event(e) = next(sub).await {
            if e.action == action {
                return e;
            }
        }
    }
}

#[tokio::test]
async fn a_cancel_sent_before_the_run_exists_reaches_the_agent_when_it_starts() {
    let node = Node::with(quick()).await;
    let user = node.client("user").await;
    // The agent has no subscription of its own: the client attaches for the run.
    let agent = node.client("agent").await;
    let cancelled = user.cancel("runs:1", Some("r1")).await.expect("cancel");
    let run = agent.start_run("runs:1", "r1", None).await.expect("start");
    let cancel = prompt(run.cancelled()).await;
    assert_eq!(cancel.reason, CancelReason::Held);
    assert_eq!(cancel.by.as_deref(), Some("user"));
    assert!(cancel.serial > Some(run.serial()) && run.serial() > cancelled);
    run.end(
        RunStatus::Cancelled,
        Some("cancelled before it began".into()),
    )
    .await
    .expect("end");
}

#[tokio::test]
async fn cancelling_one_of_two_concurrent_runs_stops_only_that_one() {
    let node = Node::with(quick()).await;
    let user = node.client("user").await;
    let mut watch = user
        .attach("runs:2", StartAt::Beginning)
        .await
        .expect("attach");
    until_live(&mut watch).await;
    // This agent reads the session itself; its runs hear of controls through that.
    let agent = node.client("agent").await;
    let mut own = agent
        .attach("runs:2", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut own).await;
    let input = user
        .create_message("runs:2", "user-input", "two answers, please")
        .await
        .expect("input");
    let mut r1 = agent
        .start_run("runs:2", "r1", Some(input))
        .await
        .expect("r1");
    let mut r2 = agent
        .start_run("runs:2", "r2", Some(input))
        .await
        .expect("r2");
    r1.create_answer("response").await.expect("answer 1");
    r2.create_answer("response").await.expect("answer 2");
    r1.append("one").await.expect("append");
    r2.append("two").await.expect("append");

    let started = Instant::now();
    let ((), (cancel, heard_after)) = tokio::join!(
        async {
            user.cancel("runs:2", Some("r2")).await.expect("cancel");
        },
        async {
            let cancel = prompt(r2.cancelled()).await;
            (cancel, started.elapsed())
        }
    );
    println!("the agent heard of the cancel {heard_after:?} after the user sent it");
    assert_eq!(cancel.reason, CancelReason::Requested);
    assert_eq!(cancel.by.as_deref(), Some("user"));
    assert_eq!(r1.cancel_requested(), None, "r1 goes on");

    r1.append(" more").await.expect("r1 still answers");
    r2.end(RunStatus::Cancelled, Some("asked to".into()))
        .await
        .expect("end r2");
    r1.end(RunStatus::Completed, None).await.expect("end r1");
    let mut ends = Vec::new();
    while ends.len() < 2 {
        let end = next_action(&mut watch, Action::RunEnd).await;
        ends.push((
            end.data["run_id"].as_str().map(str::to_owned),
            end.data["status"].as_str().map(str::to_owned),
        ));
    }
    let owned = |r: &str, s: &str| (Some(r.to_owned()), Some(s.to_owned()));
    assert_eq!(
        ends,
        vec![owned("r2", "cancelled"), owned("r1", "completed")]
    );
    let texts: Vec<_> = watch.messages().iter().map(|m| m.data.clone()).collect();
    assert_eq!(
        texts,
        vec![
            json!("two answers, please"),
            json!("one more"),
            json!("two")
        ]
    );
    drop(own);
}

#[tokio::test]
async fn a_cancel_reaches_the_agent_within_milliseconds() {
    let node = Node::with(quick()).await;
    let user = node.client("user").await;
    let agent = node.client("agent").await;
    let mut latencies = Vec::new();
    for n in 0..20 {
        let run_id = format!("r{n}");
        let run = agent
            .start_run("runs:3", run_id.as_str(), None)
            .await
            .expect("start");
        let sent = Instant::now();
        let (heard, _) = tokio::join!(
            async {
                prompt(run.cancelled()).await;
                sent.elapsed()
            },
            async {
                user.cancel("runs:3", Some(run_id.as_str()))
                    .await
                    .expect("cancel")
            }
        );
        latencies.push(heard);
        run.end(RunStatus::Cancelled, None).await.expect("end");
    }
    latencies.sort();
    println!(
        "cancel sent -> heard by the agent over 20 runs: min {:?}, median {:?}, max {:?}",
        latencies[0], latencies[10], latencies[19]
    );
}

#[tokio::test]
async fn a_steer_reaches_its_run_and_a_cancel_of_every_run_stops_them_all() {
    let node = Node::with(quick()).await;
    let user = node.client("user").await;
    let agent = node.client("agent").await;
    let mut r1 = agent.start_run("runs:4", "r1", None).await.expect("r1");
    let mut r2 = agent.start_run("runs:4", "r2", None).await.expect("r2");
    let serial = user
        .steer("runs:4", "r1", json!({"instruction": "shorter, please"}))
        .await
        .expect("steer");
    let steer = prompt(r1.next_steer()).await.expect("a steer");
    assert_eq!(steer.serial, serial);
    assert_eq!(steer.by.as_deref(), Some("user"));
    assert_eq!(steer.data, json!({"instruction": "shorter, please"}));

    user.cancel("runs:4", None).await.expect("cancel all");
    for run in [&r1, &r2] {
        let cancel = prompt(run.cancelled()).await;
        assert_eq!(cancel.reason, CancelReason::AllRuns);
    }
    assert!(r2.try_next_steer().is_none(), "the steer was for r1 only");
    assert!(r1.try_next_steer().is_none(), "heard once");
}

#[tokio::test]
async fn an_agent_in_presence_keeps_its_runs_across_a_reconnect_within_the_grace() {
    let node = Node::with(quick()).await;
    let proxy = Proxy::start(node.addr).await;
    let watcher = node.client("user").await;
    let mut watch = watcher
        .attach("runs:5", StartAt::Beginning)
        .await
        .expect("attach");
    until_live(&mut watch).await;
    let agent = Client::connect(ClientOptions {
        url: proxy.url(),
        ..node.options("agent")
    })
    .await
    .expect("connect");
    agent
        .enter("runs:5", Role::Agent, "worker-1", json!({}))
        .await
        .expect("enter");
    let mut run = agent.start_run("runs:5", "r1", None).await.expect("start");
    run.create_answer("response").await.expect("answer");

    proxy.cut();
    // The agent comes back (entering presence again) and then says nothing for longer than
    // the grace, as while it waits for a slow tool.
    tokio::time::sleep(GRACE * 3).await;
    assert_eq!(run.cancel_requested(), None);
    run.append("done").await.expect("append");
    run.end(RunStatus::Completed, None).await.expect("end");
    let end = next_action(&mut watch, Action::RunEnd).await;
    assert_eq!(end.data["status"], "completed", "no agent_lost before it");
}

#[tokio::test]
async fn an_agent_away_longer_than_the_grace_hears_that_its_run_ended_agent_lost() {
    let node = Node::with(quick()).await;
    let proxy = Proxy::start(node.addr).await;
    let agent = Client::connect(ClientOptions {
        url: proxy.url(),
        ..node.options("agent")
    })
    .await
    .expect("connect");
    let run = agent.start_run("runs:6", "r1", None).await.expect("start");
    proxy.refuse(true);
    proxy.cut();
    tokio::time::sleep(GRACE * 2).await;
    proxy.refuse(false);
    let cancel = prompt(run.cancelled()).await;
    assert_eq!(cancel.reason, CancelReason::Ended(RunStatus::AgentLost));
    assert_eq!(cancel.by.as_deref(), Some("mooring"));
}

#[tokio::test]
async fn runs_of_a_session_without_subscription_keep_it_attached_until_they_end() {
    let node = Node::with(quick()).await;
    let agent = node.client("agent").await;
    let run = agent.start_run("runs:7", "r1", None).await.expect("start");
    let refused = agent.attach("runs:7", StartAt::Latest).await.err();
    assert_eq!(
        refused.map(|e| e.kind()),
        Some(mooring_client::AttachErrorKind::AlreadyAttached),
        "a subscription started elsewhere could skip the run's controls"
    );
    run.end(RunStatus::Completed, None).await.expect("end");
    // The run's handle is gone: the session is free to attach, and its log is whole.
    let mut sub = agent
        .attach("runs:7", StartAt::Beginning)
        .await
        .expect("attach once the run is over");
    let actions: Vec<_> = until_live(&mut sub)
        .await
        .into_iter()
        .filter_map(|i| match i {
            SessionItem::Event(e) => Some(e.action),
            _ => None,
        })
        .collect();
    assert_eq!(actions, vec![Action::RunStart, Action::RunEnd]);
}

/// An agent asks for approval and waits; a reviewer on another client answers; the agent gets
/// the first answer with who gave it, and the run does not stall meanwhile.
#[tokio::test]
async fn an_agent_waits_for_an_approval_and_gets_the_first_answer() {
    let node = Node::with(RealtimeConfig {
        stall_after: Duration::from_millis(300),
        ..quick()
    })
    .await;
    let reviewer = node.client("reviewer").await;
    let mut watch = reviewer
        .attach("runs:approve", StartAt::Beginning)
        .await
        .expect("attach");
    until_live(&mut watch).await;
    let agent = node.client("agent").await;
    let mut run = agent
        .start_run("runs:approve", "r1", None)
        .await
        .expect("start");
    let asking = tokio::spawn(async move {
        let approval = run
            .request_approval("ap-1", json!({"refund_eur": 40}))
            .await
            .expect("an answer");
        (run, approval)
    });
    let request = prompt(next_action(&mut watch, Action::ApprovalRequest)).await;
    assert_eq!(request.data["approval_id"], "ap-1");
    assert_eq!(request.data["prompt"]["refund_eur"], 40);
    // Longer than stall_after: waiting for a person is not stalling.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let first = reviewer
        .answer_approval(
            "runs:approve",
            "ap-1",
            mooring_client::ApprovalDecision::Approve,
            Some("within policy".into()),
        )
        .await
        .expect("answer");
    reviewer
        .answer_approval(
            "runs:approve",
            "ap-1",
            mooring_client::ApprovalDecision::Deny,
            None,
        )
        .await
        .expect("a second answer is kept in the log");
    let (run, approval) = prompt(asking).await.expect("the agent task");
    assert_eq!(approval.serial, first);
    assert_eq!(approval.decision, mooring_client::ApprovalDecision::Approve);
    assert_eq!(approval.by.as_deref(), Some("reviewer"));
    assert_eq!(approval.reason.as_deref(), Some("within policy"));
    run.end(RunStatus::Completed, None).await.expect("end");
    // Between the request and the end, the server never marked the run stalled.
    let mut stalled = false;
    loop {
        let e = prompt(next_action_any(&mut watch)).await;
        stalled |= e.action == Action::RunStalled;
        if e.action == Action::RunEnd {
            break;
        }
    }
    assert!(!stalled, "the run was marked stalled while it waited");
}

/// The next event, whatever its action.
async fn next_action_any(sub: &mut Subscription) -> Event {
    loop {
        if let SessionItem::Event(e) = next(sub).await {
            return e;
        }
    }
}
