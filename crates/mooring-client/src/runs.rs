//! Runs: an agent's side ([`RunHandle`]: start, answer, end, and hear of cancels and steers)
//! and the table the connection task uses to route control events to the runs they target.
//!
//! A run's handle learns of controls from the session's events as this client receives them:
//! through the caller's own subscription of the session if it has one, otherwise through an
//! attachment the client makes for the run (from the session's end, so nothing is replayed).
//! Controls count from the run's own `run.start` on, recognized by its event `id`: a cancel
//! with no `run_id` sent before the run started does not cancel it, and a cancel held by the
//! server for a run that did not exist yet arrives re-published right after that `run.start`.
//! Approval answers reach every run of the session from its `run.start` on; a run waiting for
//! one keeps the first answer with its `approval_id` and ignores the rest.

use std::collections::HashMap;
use std::future::Future;

use mooring_protocol::session::{Action, Event};
use tokio::sync::{mpsc, watch};

use crate::client::Client;
use crate::error::{PublishError, PublishErrorKind};
use crate::event;

pub use mooring_core::runs::{ApprovalDecision, RunStatus};

/// Steers a run buffers before newer ones are dropped (with a warning).
pub const STEER_BUFFER: usize = 64;
/// Approval answers a run buffers before newer ones are dropped (with a warning).
pub const APPROVAL_BUFFER: usize = 64;

/// Why a run should stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// A `control.cancel` named this run.
    Requested,
    /// A `control.cancel` without `run_id`: every active run of the session.
    AllRuns,
    /// A cancel sent before the run existed, held by the server and re-published right after
    /// the run's `run.start`.
    Held,
    /// The run was ended by someone else: for example by the server with `agent_lost`, after
    /// this client was away longer than the presence grace. Whatever the agent still
    /// publishes for it is no longer part of a run.
    Ended(RunStatus),
    /// The client closed: nothing more will be heard about the run.
    ClientClosed,
}

/// A request to stop a run, as the agent hears of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancel {
    /// Serial of the `control.cancel` (or `run.end`) event; `None` when the client closed.
    pub serial: Option<u64>,
    /// Who asked: the client that published the cancel (for a held cancel, the client that
    /// sent it before the run started).
    pub by: Option<String>,
    pub reason: CancelReason,
}

/// A redirection of a run (`control.steer`).
#[derive(Clone, Debug, PartialEq)]
pub struct Steer {
    pub serial: u64,
    /// The client that published it.
    pub by: Option<String>,
    pub data: serde_json::Value,
}

/// An answer to an approval a run asked for (`approval.answer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub serial: u64,
    pub approval_id: String,
    pub decision: ApprovalDecision,
    /// Who answered: the verified identity of the client that published the answer.
    pub by: Option<String>,
    pub reason: Option<String>,
}

/// A run this client follows on the task's side: where to send what it hears.
#[derive(Debug)]
pub(crate) struct RunWatch {
    pub(crate) id: u64,
    pub(crate) session: String,
    pub(crate) run_id: String,
    /// The `id` of the run's `run.start` event: controls count from that event on.
    pub(crate) start_id: String,
    pub(crate) cancel: watch::Sender<Option<Cancel>>,
    pub(crate) steers: mpsc::Sender<Steer>,
    pub(crate) approvals: mpsc::Sender<Approval>,
}

#[derive(Debug)]
struct Watching {
    watch: RunWatch,
    /// Its `run.start` has been seen.
    armed: bool,
    /// The last serial looked at; anything at or before it was already handled.
    last_serial: u64,
}

/// Every run of this client, by session.
#[derive(Debug, Default)]
pub(crate) struct RunWatches {
    sessions: HashMap<String, Vec<Watching>>,
}

impl RunWatches {
    pub(crate) fn add(&mut self, watch: RunWatch) {
        self.sessions
            .entry(watch.session.clone())
            .or_default()
            .push(Watching {
                watch,
                armed: false,
                last_serial: 0,
            });
    }

    /// Forgets run watch `id`; returns its session.
    pub(crate) fn remove(&mut self, id: u64) -> Option<String> {
        let (session, list) = self
            .sessions
            .iter_mut()
            .find(|(_, list)| list.iter().any(|w| w.watch.id == id))?;
        let session = session.clone();
        list.retain(|w| w.watch.id != id);
        if list.is_empty() {
            self.sessions.remove(&session);
        }
        Some(session)
    }

    /// Whether some run follows `session`.
    pub(crate) fn watches(&self, session: &str) -> bool {
        self.sessions.contains_key(session)
    }

    /// Routes one event of `session` (each serial once, in order) to the runs it targets.
    /// Returns the ids of watches whose handle is gone, for the caller to remove.
    pub(crate) fn on_event(&mut self, session: &str, event: &Event) -> Vec<u64> {
        let Some(list) = self.sessions.get_mut(session) else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for w in list.iter_mut() {
            if w.watch.cancel.is_closed() {
                gone.push(w.watch.id);
                continue;
            }
            if event.serial <= w.last_serial {
                continue;
            }
            w.last_serial = event.serial;
            if !w.armed {
                w.armed = event.action == Action::RunStart
                    && event.id.as_deref() == Some(w.watch.start_id.as_str());
                continue;
            }
            route(&w.watch, event);
        }
        gone
    }
}

fn route(watch: &RunWatch, event: &Event) {
    let target = event.data.get("run_id").and_then(|v| v.as_str());
    let mine = target == Some(watch.run_id.as_str());
    match event.action {
        Action::ControlCancel if mine || target.is_none() => {
            let held_from = event
                .data
                .get("held_from")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let reason = if event.data.get("held_from").is_some() {
                CancelReason::Held
            } else if target.is_none() {
                CancelReason::AllRuns
            } else {
                CancelReason::Requested
            };
            let cancel = Cancel {
                serial: Some(event.serial),
                by: held_from.or_else(|| event.client_id.clone()),
                reason,
            };
            stop(watch, cancel);
        }
        Action::ControlSteer if mine => {
            let steer = Steer {
                serial: event.serial,
                by: event.client_id.clone(),
                data: event.data.get("data").cloned().unwrap_or_default(),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = watch.steers.try_send(steer) {
                tracing::warn!(
                    run_id = %watch.run_id,
                    serial = event.serial,
                    "steer dropped: the run has {STEER_BUFFER} steers it has not read"
                );
            }
        }
        Action::ApprovalAnswer => {
            let approval = (|| {
                Some(Approval {
                    serial: event.serial,
                    approval_id: event.data.get("approval_id")?.as_str()?.to_owned(),
                    decision: serde_json::from_value(event.data.get("decision")?.clone()).ok()?,
                    by: event.client_id.clone(),
                    reason: event
                        .data
                        .get("reason")
                        .and_then(|r| r.as_str())
                        .map(str::to_owned),
                })
            })();
            let sent = approval.map(|a| watch.approvals.try_send(a));
            if let Some(Err(mpsc::error::TrySendError::Full(_))) = sent {
                tracing::warn!(
                    run_id = %watch.run_id,
                    serial = event.serial,
                    "approval answer dropped: the run has {APPROVAL_BUFFER} it has not read"
                );
            }
        }
        Action::RunEnd if mine => {
            let status = event
                .data
                .get("status")
                .cloned()
                .and_then(|s| serde_json::from_value(s).ok())
                .unwrap_or(RunStatus::Failed);
            let cancel = Cancel {
                serial: Some(event.serial),
                by: event.client_id.clone(),
                reason: CancelReason::Ended(status),
            };
            stop(watch, cancel);
        }
        _ => {}
    }
}

/// Records the first reason to stop; later ones change nothing.
fn stop(watch: &RunWatch, cancel: Cancel) {
    watch.cancel.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(cancel);
        true
    });
}

/// An agent's run in a session, from [`Client::start_run`]: publish its answer, hear of a
/// cancel or a steer as soon as this client receives it, and end it.
///
/// Dropping it without [`end`](Self::end) leaves the run active on the server (it ends
/// `agent_lost` when this client goes away, or shows `run.stalled`), and stops listening for
/// its controls.
#[derive(Debug)]
pub struct RunHandle {
    pub(crate) client: Client,
    pub(crate) session: String,
    pub(crate) run_id: String,
    pub(crate) serial: u64,
    pub(crate) answer: Option<u64>,
    pub(crate) cancel: watch::Receiver<Option<Cancel>>,
    pub(crate) steers: mpsc::Receiver<Steer>,
    pub(crate) approvals: mpsc::Receiver<Approval>,
    pub(crate) watch_id: u64,
}

impl RunHandle {
    pub fn session(&self) -> &str {
        &self.session
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Serial of the run's `run.start`.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Serial of the answer message, once [`create_answer`](Self::create_answer) made it.
    pub fn answer(&self) -> Option<u64> {
        self.answer
    }

    /// Creates the run's answer: a message named `name`, tagged with `extras.run_id` so its
    /// appends count as the run's progress. Returns its serial. Calling it again starts a new
    /// answer, which later appends go to.
    pub async fn create_answer(&mut self, name: impl Into<String>) -> Result<u64, PublishError> {
        let mut create = event::create(name, "");
        create.extras.insert("run_id".into(), self.run_id.clone());
        let serial = self
            .client
            .publish_one(self.session.clone(), create)
            .await?;
        self.answer = Some(serial);
        Ok(serial)
    }

    /// Appends `text` to the answer; returns the serial of the log event holding it.
    pub async fn append(&self, text: impl Into<String>) -> Result<u64, PublishError> {
        let Some(answer) = self.answer else {
            return Err(PublishError::new(
                PublishErrorKind::NoAnswer,
                "append before create_answer: the run has no answer message yet",
            ));
        };
        self.client.append(self.session.clone(), answer, text).await
    }

    /// The reason to stop, if one has arrived.
    pub fn cancel_requested(&self) -> Option<Cancel> {
        self.cancel.borrow().clone()
    }

    /// Resolves as soon as a cancel for this run arrives (at once if one already has), or
    /// the run was ended by someone else, or the client closed. The future does not borrow
    /// the handle, so it can wait in a `select!` next to [`next_steer`](Self::next_steer) or
    /// [`append`](Self::append); it is cancel-safe.
    pub fn cancelled(&self) -> impl Future<Output = Cancel> + Send + 'static {
        let mut cancel = self.cancel.clone();
        async move {
            let arrived = cancel
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|current| current.clone());
            // The task gone first: a cancel it set before is still worth reporting.
            arrived
                .or_else(|| cancel.borrow().clone())
                .unwrap_or_else(closed)
        }
    }

    /// The next steer for this run, in the order they were published; `None` once the client
    /// closed. Cancel-safe.
    pub async fn next_steer(&mut self) -> Option<Steer> {
        self.steers.recv().await
    }

    /// A steer that has already arrived, without waiting.
    pub fn try_next_steer(&mut self) -> Option<Steer> {
        self.steers.try_recv().ok()
    }

    /// Asks for approval `approval_id` (unique within the session), showing `prompt` to
    /// whoever answers, and waits for the first answer. Waiting is not stalling: the server
    /// does not mark the run `run.stalled` meanwhile. To stop waiting on a cancel, put it in a
    /// `select!` with [`cancelled`](Self::cancelled).
    pub async fn request_approval(
        &mut self,
        approval_id: &str,
        prompt: impl Into<serde_json::Value>,
    ) -> Result<Approval, PublishError> {
        let request = event::approval_request(&self.run_id, approval_id, prompt);
        self.client
            .publish_one(self.session.clone(), request)
            .await?;
        while let Some(approval) = self.approvals.recv().await {
            if approval.approval_id == approval_id {
                return Ok(approval);
            }
        }
        Err(PublishError::new(
            PublishErrorKind::Closed,
            "the client closed before the approval was answered",
        ))
    }

    /// Ends the run with `status` (and a reason people can read); returns the serial of its
    /// `run.end`.
    pub async fn end(self, status: RunStatus, reason: Option<String>) -> Result<u64, PublishError> {
        let end = event::run_end(&self.run_id, status, reason);
        self.client.publish_one(self.session.clone(), end).await
    }
}

fn closed() -> Cancel {
    Cancel {
        serial: None,
        by: None,
        reason: CancelReason::ClientClosed,
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        self.client.unwatch_run(self.watch_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_protocol::session::Extras;
    use serde_json::json;

    fn event(serial: u64, action: Action, data: serde_json::Value) -> Event {
        Event {
            serial,
            action,
            id: None,
            name: None,
            reference: None,
            client_id: Some("user".into()),
            data,
            extras: Extras::new(),
            ts: 0,
            version: None,
        }
    }

    struct Run {
        cancel: watch::Receiver<Option<Cancel>>,
        steers: mpsc::Receiver<Steer>,
        approvals: mpsc::Receiver<Approval>,
    }

    fn watch_run(table: &mut RunWatches, id: u64, run_id: &str) -> Run {
        let (cancel_tx, cancel) = watch::channel(None);
        let (steer_tx, steers) = mpsc::channel(2);
        let (approval_tx, approvals) = mpsc::channel(2);
        table.add(RunWatch {
            id,
            session: "s".into(),
            run_id: run_id.into(),
            start_id: format!("start-{run_id}"),
            cancel: cancel_tx,
            steers: steer_tx,
            approvals: approval_tx,
        });
        Run {
            cancel,
            steers,
            approvals,
        }
    }

    #[test]
    fn approval_answers_reach_a_run_from_its_start_with_who_answered() {
        let mut table = RunWatches::default();
        let mut run = watch_run(&mut table, 1, "r1");
        let answer = |serial, id: &str| {
            let mut e = event(
                serial,
                Action::ApprovalAnswer,
                json!({"approval_id": id, "decision": "deny", "reason": "no"}),
            );
            e.client_id = Some("reviewer".into());
            e
        };
        table.on_event("s", &answer(1, "before"));
        table.on_event("s", &start(2, "r1"));
        table.on_event("s", &answer(3, "a1"));
        table.on_event(
            "s",
            &event(4, Action::ApprovalAnswer, json!({"approval_id": "a2"})),
        );
        assert_eq!(
            run.approvals.try_recv().ok(),
            Some(Approval {
                serial: 3,
                approval_id: "a1".into(),
                decision: ApprovalDecision::Deny,
                by: Some("reviewer".into()),
                reason: Some("no".into()),
            })
        );
        assert!(
            run.approvals.try_recv().is_err(),
            "malformed and early ones are not routed"
        );
    }

    fn start(serial: u64, run_id: &str) -> Event {
        let mut e = event(serial, Action::RunStart, json!({ "run_id": run_id }));
        e.id = Some(format!("start-{run_id}"));
        e
    }

    #[test]
    fn controls_count_from_the_run_start_on() {
        let mut table = RunWatches::default();
        let run = watch_run(&mut table, 1, "r1");
        // A cancel of every run, before this one started, is not for it.
        table.on_event("s", &event(1, Action::ControlCancel, json!({})));
        table.on_event("s", &start(2, "r1"));
        assert_eq!(*run.cancel.borrow(), None);
        let mut held = event(
            3,
            Action::ControlCancel,
            json!({"run_id":"r1","held_from":"alice"}),
        );
        held.client_id = Some("mooring".into());
        table.on_event("s", &held);
        assert_eq!(
            *run.cancel.borrow(),
            Some(Cancel {
                serial: Some(3),
                by: Some("alice".into()),
                reason: CancelReason::Held,
            })
        );
    }

    #[test]
    fn a_cancel_of_another_run_is_ignored_and_one_of_every_run_is_not() {
        let mut table = RunWatches::default();
        let r1 = watch_run(&mut table, 1, "r1");
        let r2 = watch_run(&mut table, 2, "r2");
        table.on_event("s", &start(1, "r1"));
        table.on_event("s", &start(2, "r2"));
        table.on_event(
            "s",
            &event(3, Action::ControlCancel, json!({"run_id":"r2"})),
        );
        assert_eq!(*r1.cancel.borrow(), None);
        assert_eq!(
            r2.cancel.borrow().as_ref().map(|c| c.reason.clone()),
            Some(CancelReason::Requested)
        );
        table.on_event("s", &event(4, Action::ControlCancel, json!({})));
        assert_eq!(
            r1.cancel.borrow().as_ref().map(|c| c.reason.clone()),
            Some(CancelReason::AllRuns)
        );
        assert_eq!(
            r2.cancel.borrow().as_ref().and_then(|c| c.serial),
            Some(3),
            "the first reason to stop is kept"
        );
    }

    #[test]
    fn steers_arrive_in_order_once_and_a_server_end_stops_the_run() {
        let mut table = RunWatches::default();
        let mut run = watch_run(&mut table, 1, "r1");
        table.on_event("s", &start(1, "r1"));
        let steer = |serial, n| {
            event(
                serial,
                Action::ControlSteer,
                json!({"run_id":"r1","data":{"n":n}}),
            )
        };
        table.on_event("s", &steer(2, 1));
        table.on_event("s", &steer(2, 1));
        table.on_event("s", &steer(3, 2));
        table.on_event("s", &steer(4, 3));
        let got: Vec<_> = std::iter::from_fn(|| run.steers.try_recv().ok())
            .map(|s| s.data["n"].as_u64())
            .collect();
        assert_eq!(
            got,
            vec![Some(1), Some(2)],
            "a replayed serial is skipped; a full queue drops"
        );
        let mut lost = event(
            5,
            Action::RunEnd,
            json!({"run_id":"r1","status":"agent_lost"}),
        );
        lost.client_id = Some("mooring".into());
        table.on_event("s", &lost);
        assert_eq!(
            run.cancel.borrow().as_ref().map(|c| c.reason.clone()),
            Some(CancelReason::Ended(RunStatus::AgentLost))
        );
    }

    #[test]
    fn a_dropped_handle_is_reported_gone_and_removed() {
        let mut table = RunWatches::default();
        let run = watch_run(&mut table, 7, "r1");
        assert!(table.watches("s"));
        drop(run);
        assert_eq!(table.on_event("s", &start(1, "r1")), vec![7]);
        assert_eq!(table.remove(7).as_deref(), Some("s"));
        assert!(!table.watches("s"));
        assert_eq!(table.remove(7), None);
    }
}
