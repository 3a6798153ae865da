//! Runs: which agent work is active in a session, held cancels, stalls, and lost agents.
//!
//! Pure: the session task tells it every event it wrote (in serial order) and the time, and
//! publishes the events it asks for. A run starts with `run.start {run_id}` and ends with
//! `run.end {run_id, status}`. Progress of a run is any event carrying `extras.run_id`, and any
//! append, update or delete of a message created with it; so an agent tags the message of its
//! answer once, and its untagged appends (which rollup can merge) keep the run alive.
//!
//! Approvals: an agent publishes `approval.request {run_id, approval_id}` and waits; a person
//! with the `approve` capability answers `approval.answer {approval_id, decision}`. A run
//! waiting for an answer is not stalled (a person may take minutes), and the answer counts as
//! its progress, so the stall clock starts again from it.

use std::collections::{BTreeMap, VecDeque};

use mooring_protocol::session::{Action, Event};
use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    Cancelled,
    Failed,
    AgentLost,
}

/// Cancels held for runs that have not started, at most this many per session.
pub const MAX_HELD_CANCELS: usize = 1024;
/// How long a held cancel waits for its run.
pub const HELD_CANCEL_TTL_MS: u64 = 10 * 60 * 1000;

/// An active run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    pub run_id: String,
    /// The agent that started it.
    pub client_id: Option<String>,
    /// The connection that started it (or last showed progress), if any.
    #[serde(skip)]
    pub connection_id: Option<String>,
    /// Serial of its `run.start`.
    pub serial: u64,
    pub started_ms: u64,
    pub last_progress_ms: u64,
    pub stalled: bool,
    pub cancel_requested: bool,
    /// Approvals it asked for that have no answer yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub awaiting_approval: Vec<String>,
}

/// The answer to an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approve,
    Deny,
}

/// Something the session must publish because of what the table saw.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEffect {
    /// Apply a held cancel to a run that just started.
    Cancel {
        run_id: String,
        by: Option<String>,
    },
    Stalled {
        run_id: String,
    },
    /// The agent is gone: end the run.
    End {
        run_id: String,
        status: RunStatus,
        reason: String,
    },
}

/// The run id an event names in its data.
pub fn run_id_of(event: &Event) -> Option<&str> {
    event.data.get("run_id").and_then(|v| v.as_str())
}

/// The approval id an approval event names in its data.
pub fn approval_id_of(event: &Event) -> Option<&str> {
    event.data.get("approval_id").and_then(|v| v.as_str())
}

/// Checks the shape of a run, control or approval event; `Err(reason)` if malformed. (Who may
/// publish `run.stalled` is the transports' concern: only the server does.)
pub fn validate(action: Action, data: &serde_json::Value) -> Result<(), &'static str> {
    let run_id = data.get("run_id").map(|v| v.as_str());
    let approval_id = data.get("approval_id").and_then(|v| v.as_str());
    match action {
        Action::ApprovalRequest if !matches!(run_id, Some(Some(_))) || approval_id.is_none() => {
            Err("approval.request needs data.run_id and data.approval_id, strings")
        }
        Action::ApprovalAnswer => {
            if approval_id.is_none() {
                return Err("approval.answer needs data.approval_id, a string");
            }
            let decision = data.get("decision").cloned();
            match decision.map(serde_json::from_value::<ApprovalDecision>) {
                Some(Ok(_)) => Ok(()),
                _ => Err("approval.answer needs data.decision: approve or deny"),
            }
        }
        Action::RunStart | Action::ControlSteer | Action::RunStalled
            if !matches!(run_id, Some(Some(_))) =>
        {
            Err("run.start, run.stalled and control.steer need data.run_id, a string")
        }
        Action::RunEnd => {
            if !matches!(run_id, Some(Some(_))) {
                return Err("run.end needs data.run_id, a string");
            }
            let status = data.get("status").cloned();
            match status.map(serde_json::from_value::<RunStatus>) {
                Some(Ok(_)) => Ok(()),
                _ => Err("run.end needs data.status: completed, cancelled, failed or agent_lost"),
            }
        }
        Action::ControlCancel if matches!(run_id, Some(None)) => {
            Err("control.cancel takes data.run_id as a string, or none for every active run")
        }
        _ => Ok(()),
    }
}

/// The runs of one session.
#[derive(Clone, Debug, Default)]
pub struct RunTable {
    active: BTreeMap<String, Run>,
    held: VecDeque<(String, Option<String>, u64)>,
    /// Messages of active runs: message serial -> run id.
    messages: BTreeMap<u64, String>,
}

impl RunTable {
    /// Takes in one written event (in serial order) from `connection_id` (if it came from one).
    pub fn observe(
        &mut self,
        event: &Event,
        connection_id: Option<&str>,
        now_ms: u64,
    ) -> Vec<RunEffect> {
        let mut effects = Vec::new();
        match event.action {
            Action::RunStart => {
                let Some(run_id) = run_id_of(event) else {
                    return effects;
                };
                self.active.insert(
                    run_id.to_owned(),
                    Run {
                        run_id: run_id.to_owned(),
                        client_id: event.client_id.clone(),
                        connection_id: connection_id.map(str::to_owned),
                        serial: event.serial,
                        started_ms: now_ms,
                        last_progress_ms: now_ms,
                        stalled: false,
                        cancel_requested: false,
                        awaiting_approval: Vec::new(),
                    },
                );
                if let Some(i) = self.held.iter().position(|(id, _, _)| id == run_id) {
                    if let Some((run_id, by, _)) = self.held.remove(i) {
                        if let Some(run) = self.active.get_mut(&run_id) {
                            run.cancel_requested = true;
                        }
                        effects.push(RunEffect::Cancel { run_id, by });
                    }
                }
            }
            Action::RunEnd => {
                if let Some(run_id) = run_id_of(event) {
                    self.active.remove(run_id);
                    self.messages.retain(|_, r| r != run_id);
                }
            }
            Action::ControlCancel => match run_id_of(event) {
                None => self
                    .active
                    .values_mut()
                    .for_each(|r| r.cancel_requested = true),
                Some(run_id) => match self.active.get_mut(run_id) {
                    Some(run) => run.cancel_requested = true,
                    None => self.hold(run_id, event.client_id.clone(), now_ms),
                },
            },
            Action::ApprovalRequest => {
                let run = run_id_of(event).and_then(|id| self.active.get_mut(id));
                if let (Some(run), Some(approval_id)) = (run, approval_id_of(event)) {
                    if !run.awaiting_approval.iter().any(|a| a == approval_id) {
                        run.awaiting_approval.push(approval_id.to_owned());
                    }
                    run.last_progress_ms = now_ms;
                    run.stalled = false;
                }
            }
            Action::ApprovalAnswer => {
                // The answer comes from the approver's connection: the run stays bound to its
                // agent's.
                if let Some(approval_id) = approval_id_of(event) {
                    for run in self.active.values_mut() {
                        let before = run.awaiting_approval.len();
                        run.awaiting_approval.retain(|a| a != approval_id);
                        if run.awaiting_approval.len() < before {
                            run.last_progress_ms = now_ms;
                            run.stalled = false;
                        }
                    }
                }
            }
            _ => {}
        }
        let tagged = event.extras.get("run_id").cloned();
        if let (Action::MessageCreate, Some(run_id)) = (event.action, &tagged) {
            if self.active.contains_key(run_id) {
                self.messages.insert(event.serial, run_id.clone());
            }
        }
        let progress_of =
            tagged.or_else(|| event.reference.and_then(|r| self.messages.get(&r).cloned()));
        if let Some(run) = progress_of.and_then(|id| self.active.get_mut(&id)) {
            run.last_progress_ms = now_ms;
            run.stalled = false;
            if let Some(conn) = connection_id {
                run.connection_id = Some(conn.to_owned());
            }
        }
        effects
    }

    fn hold(&mut self, run_id: &str, by: Option<String>, now_ms: u64) {
        self.held
            .retain(|(_, _, at)| now_ms.saturating_sub(*at) < HELD_CANCEL_TTL_MS);
        if self.held.len() >= MAX_HELD_CANCELS {
            self.held.pop_front();
        }
        self.held.push_back((run_id.to_owned(), by, now_ms));
    }

    /// Runs without progress for `stall_after_ms` stall (once each, until they progress);
    /// runs waiting for an approval do not.
    pub fn tick(&mut self, now_ms: u64, stall_after_ms: u64) -> Vec<RunEffect> {
        self.active
            .values_mut()
            .filter(|r| r.awaiting_approval.is_empty())
            .filter(|r| !r.stalled && now_ms.saturating_sub(r.last_progress_ms) >= stall_after_ms)
            .map(|r| {
                r.stalled = true;
                RunEffect::Stalled {
                    run_id: r.run_id.clone(),
                }
            })
            .collect()
    }

    /// The agent behind `connection_id` is gone: its runs end `agent_lost`.
    pub fn connection_gone(&mut self, connection_id: &str) -> Vec<RunEffect> {
        self.active
            .values()
            .filter(|r| r.connection_id.as_deref() == Some(connection_id))
            .map(|r| RunEffect::End {
                run_id: r.run_id.clone(),
                status: RunStatus::AgentLost,
                reason:
                    "the agent's connection was lost and did not come back within the grace period"
                        .into(),
            })
            .collect()
    }

    /// A client showed up again on a new connection: its runs follow it.
    pub fn rebind(&mut self, client_id: &str, connection_id: &str) {
        for run in self.active.values_mut() {
            if run.client_id.as_deref() == Some(client_id) {
                run.connection_id = Some(connection_id.to_owned());
            }
        }
    }

    /// Takes over a run started through another node, now answered for by `connection_id`
    /// (its agent came back here); a run already known is rebound.
    pub fn adopt(&mut self, run_id: &str, client_id: &str, connection_id: &str, now_ms: u64) {
        let run = self.active.entry(run_id.to_owned()).or_insert_with(|| Run {
            run_id: run_id.to_owned(),
            client_id: Some(client_id.to_owned()),
            connection_id: None,
            // Its run.start was written through another node, before this table's time.
            serial: 0,
            started_ms: now_ms,
            last_progress_ms: now_ms,
            stalled: false,
            cancel_requested: false,
            awaiting_approval: Vec::new(),
        });
        run.connection_id = Some(connection_id.to_owned());
    }

    /// Forgets a run another node answers for now: its end is that node's to tell.
    pub fn forget(&mut self, run_id: &str) {
        self.active.remove(run_id);
        self.messages.retain(|_, r| r != run_id);
    }

    /// Whether any active run belongs to `connection_id`.
    pub fn owns(&self, connection_id: &str) -> bool {
        self.active
            .values()
            .any(|r| r.connection_id.as_deref() == Some(connection_id))
    }

    /// The earliest time a run may stall.
    pub fn next_stall(&self, stall_after_ms: u64) -> Option<u64> {
        self.active
            .values()
            .filter(|r| !r.stalled && r.awaiting_approval.is_empty())
            .map(|r| r.last_progress_ms + stall_after_ms)
            .min()
    }

    pub fn active(&self) -> Vec<Run> {
        self.active.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(serial: u64, action: Action, data: serde_json::Value) -> Event {
        Event {
            serial,
            action,
            id: None,
            name: None,
            reference: None,
            client_id: Some("agent".into()),
            data,
            extras: Default::default(),
            ts: 0,
            version: None,
        }
    }

    #[test]
    fn a_cancel_before_the_run_is_held_and_applied_when_it_starts() {
        let mut t = RunTable::default();
        let cancel = event(1, Action::ControlCancel, json!({"run_id":"r1"}));
        assert!(t.observe(&cancel, Some("user-conn"), 0).is_empty());
        let start = event(2, Action::RunStart, json!({"run_id":"r1"}));
        let effects = t.observe(&start, Some("agent-conn"), 5);
        assert_eq!(
            effects,
            [RunEffect::Cancel {
                run_id: "r1".into(),
                by: Some("agent".into())
            }]
        );
        assert!(t.active()[0].cancel_requested);
    }

    #[test]
    fn stalls_once_until_progress_and_ends_with_the_agent() {
        let mut t = RunTable::default();
        t.observe(
            &event(1, Action::RunStart, json!({"run_id":"r"})),
            Some("c"),
            0,
        );
        assert!(t.tick(29_999, 30_000).is_empty());
        assert_eq!(t.tick(30_000, 30_000).len(), 1);
        assert!(t.tick(40_000, 30_000).is_empty(), "stalls once");
        let mut answer = event(2, Action::MessageCreate, json!(""));
        answer.extras.insert("run_id".into(), "r".into());
        t.observe(&answer, Some("c"), 35_000);
        let mut append = event(3, Action::MessageAppend, json!("x"));
        append.reference = Some(2);
        t.observe(&append, Some("c"), 41_000);
        assert_eq!(t.next_stall(30_000), Some(71_000));
        assert_eq!(t.connection_gone("c").len(), 1);
        assert!(t.connection_gone("other").is_empty());
        t.observe(
            &event(
                3,
                Action::RunEnd,
                json!({"run_id":"r","status":"completed"}),
            ),
            None,
            42_000,
        );
        assert!(t.active().is_empty());
    }

    #[test]
    fn run_events_are_validated() {
        assert!(validate(Action::RunStart, &json!({"run_id":"r"})).is_ok());
        assert!(validate(Action::RunStart, &json!({})).is_err());
        assert!(validate(Action::RunEnd, &json!({"run_id":"r","status":"done"})).is_err());
        assert!(validate(Action::RunEnd, &json!({"run_id":"r","status":"failed"})).is_ok());
        assert!(validate(Action::ControlCancel, &json!({})).is_ok());
        assert!(validate(Action::ControlCancel, &json!({"run_id": 3})).is_err());
        assert!(validate(Action::RunStalled, &json!({})).is_err());
    }

    #[test]
    fn approval_events_are_validated() {
        let request = json!({"run_id": "r", "approval_id": "a", "prompt": "rm -rf?"});
        assert!(validate(Action::ApprovalRequest, &request).is_ok());
        assert!(validate(Action::ApprovalRequest, &json!({"run_id": "r"})).is_err());
        assert!(validate(Action::ApprovalRequest, &json!({"approval_id": "a"})).is_err());
        let answer = json!({"approval_id": "a", "decision": "deny", "reason": "no"});
        assert!(validate(Action::ApprovalAnswer, &answer).is_ok());
        assert!(validate(Action::ApprovalAnswer, &json!({"decision": "approve"})).is_err());
        let maybe = json!({"approval_id": "a", "decision": "maybe"});
        assert!(validate(Action::ApprovalAnswer, &maybe).is_err());
    }

    #[test]
    fn a_run_waiting_for_approval_does_not_stall_and_its_answer_is_progress() {
        let mut t = RunTable::default();
        t.observe(
            &event(1, Action::RunStart, json!({"run_id":"r"})),
            Some("agent-conn"),
            0,
        );
        let request = json!({"run_id": "r", "approval_id": "a1"});
        t.observe(
            &event(2, Action::ApprovalRequest, request),
            Some("agent-conn"),
            1_000,
        );
        assert_eq!(t.active()[0].awaiting_approval, ["a1"]);
        assert!(
            t.tick(600_000, 30_000).is_empty(),
            "waiting is not stalling"
        );
        assert_eq!(t.next_stall(30_000), None);
        let mut answer = event(
            3,
            Action::ApprovalAnswer,
            json!({"approval_id": "a1", "decision": "approve"}),
        );
        answer.client_id = Some("reviewer".into());
        t.observe(&answer, Some("reviewer-conn"), 700_000);
        let run = &t.active()[0];
        assert!(run.awaiting_approval.is_empty());
        assert_eq!(run.last_progress_ms, 700_000, "the answer is progress");
        assert_eq!(run.connection_id.as_deref(), Some("agent-conn"));
        assert!(t.tick(729_999, 30_000).is_empty());
        assert_eq!(t.tick(730_000, 30_000).len(), 1);
    }

    #[test]
    fn an_adopted_run_ends_with_its_new_connection_and_a_forgotten_one_not_at_all() {
        let mut t = RunTable::default();
        t.adopt("r1", "agent", "c2", 5);
        assert!(t.owns("c2"));
        let ended = t.connection_gone("c2");
        assert_eq!(ended.len(), 1, "{ended:?}");
        t.observe(
            &event(1, Action::RunStart, json!({"run_id": "r2"})),
            Some("c1"),
            0,
        );
        t.adopt("r2", "agent", "c3", 9);
        assert_eq!(t.active().len(), 2);
        assert!(!t.owns("c1"), "r2 follows its agent to c3");
        t.forget("r2");
        assert!(t.connection_gone("c3").is_empty());
        assert_eq!(t.active().len(), 1);
    }
}
