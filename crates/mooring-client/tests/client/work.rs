//! Agent dispatch from the worker's side: registration, inputs handed out once, handed on
//! when a worker leaves before starting, and registration kept across reconnects.

use std::time::Duration;

use mooring_client::{ErrorCode, RunStatus, Work, WorkErrorKind};

use crate::node::{connection_id, reconnected, Node, PROMPT};

async fn within<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, work).await.expect("in time")
}

/// Whether `work` is offered anything within a short wait.
async fn offered(work: &mut Work) -> bool {
    tokio::time::timeout(Duration::from_millis(300), work.next())
        .await
        .is_ok()
}

#[tokio::test]
async fn an_input_reaches_one_worker_and_moves_on_when_that_worker_leaves() {
    let node = Node::start().await;
    let (a, b) = (node.client("worker-a").await, node.client("worker-b").await);
    let mut work_a = a.work(["chat:*"], None).await.expect("a registers");
    let mut work_b = b.work(["chat:*"], Some(4)).await.expect("b registers");
    let user = node.client("user").await;
    let input = user
        .create_message("chat:7", "user-input", "hello")
        .await
        .expect("input");

    let (first, chosen, mut other, other_client) = tokio::select! {
        Some(d) = work_a.next() => (d, a, work_b, b),
        Some(d) = work_b.next() => (d, b, work_a, a),
    };
    assert_eq!(
        (first.session.as_str(), first.input.serial, first.attempt),
        ("chat:7", input, 1)
    );
    assert_eq!(first.input.data, "hello");
    assert!(!offered(&mut other).await, "one worker only");

    // The chosen one goes away before it starts the run.
    chosen.close().await;
    let again = within(other.next()).await.expect("handed on");
    assert_eq!((again.input.serial, again.attempt), (input, 2));
    let mut run = other_client
        .start_run("chat:7", "r-1", Some(again.input.serial))
        .await
        .expect("the new holder starts the run");
    run.create_answer("response").await.expect("answer");
    run.append("hi!").await.expect("append");
    run.end(RunStatus::Completed, None).await.expect("end");
}

#[tokio::test]
async fn a_worker_registers_again_after_its_connection_is_cut() {
    let mut node = Node::start().await;
    let worker = node.client("worker").await;
    let mut work = worker.work(["jobs:**"], Some(2)).await.expect("registers");
    let before = connection_id(&worker);
    node.stop().await;
    node.resume().await;
    reconnected(&worker, &before).await;
    // An input that waits for a worker reaches this one once it has registered again.
    let user = node.client("user").await;
    let serial = user
        .create_message("jobs:eu:1", "user-input", "after the cut")
        .await
        .expect("input");
    let dispatch = within(work.next()).await.expect("offered again");
    assert_eq!(dispatch.session, "jobs:eu:1");
    assert_eq!(dispatch.input.serial, serial);
    assert_eq!(dispatch.input.client_id.as_deref(), Some("user"));
}

#[tokio::test]
async fn a_malformed_pattern_is_refused() {
    let node = Node::start().await;
    let worker = node.client("worker").await;
    let err = worker
        .work(["chat:user-*"], None)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), WorkErrorKind::Refused);
    assert_eq!(err.code(), Some(ErrorCode::InvalidPattern));
}
