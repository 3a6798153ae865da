//! One session task's part in the fleet (the nodes sharing a store, see
//! [`mooring_core::fleet`]): it records the presence changes of members connected here and
//! the runs this node owns, takes runs over when their agent shows up here, and finds the runs
//! a dead node left behind.
//!
//! The task calls the queueing methods from its synchronous command handling, then
//! [`FleetLink::sync`] once per turn, so the store sees the changes in order and the task's
//! commands never wait on it one by one.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use mooring_core::fleet::Fleet;
use mooring_core::presence::{Member, PresenceAction, PresenceChange, PresenceTable};
use mooring_core::runs::{RunEffect, RunStatus, RunTable};

/// A run this node started or saw end.
#[derive(Debug)]
enum RunRecord {
    Own { run_id: String, client_id: String },
    End { run_id: String },
}

/// Why a dead node's run ended, as its `run.end` says.
pub(crate) const NODE_LOST_REASON: &str =
    "the node the agent was connected through stopped, and the agent did not come back within the grace period";

/// Connections remembered as having claimed their runs, per session task.
const MAX_CLAIMED_CONNECTIONS: usize = 4096;

#[derive(Debug)]
pub(crate) struct FleetLink {
    fleet: Arc<dyn Fleet>,
    session: String,
    expiry_ms: u64,
    grace_ms: u64,
    to_announce: Vec<(PresenceAction, Member)>,
    /// The other nodes' members are to be read afresh.
    resync: bool,
    runs: Vec<RunRecord>,
    /// Clients that showed up here, with their connection, whose runs this node takes over.
    to_claim: Vec<(String, String)>,
    /// Connections whose runs were claimed already (once per connection is enough: a run
    /// taken over stays here until its agent shows up elsewhere).
    claimed: HashSet<String>,
    /// Dead nodes, and when the runs they owned here end unless taken over.
    orphans: Vec<(String, u64)>,
}

impl FleetLink {
    /// Links session `session` to `fleet`: reads the other nodes' members into `presence`, and
    /// finds runs owned by nodes that are dead now.
    pub(crate) async fn start(
        fleet: Arc<dyn Fleet>,
        session: &str,
        expiry_ms: u64,
        grace_ms: u64,
        now_ms: u64,
        presence: &mut PresenceTable,
    ) -> Self {
        let mut link = Self {
            fleet,
            session: session.to_owned(),
            expiry_ms,
            grace_ms,
            to_announce: Vec::new(),
            resync: false,
            runs: Vec::new(),
            to_claim: Vec::new(),
            claimed: HashSet::new(),
            orphans: Vec::new(),
        };
        // Nobody is attached yet: the changes this makes are for no one.
        link.read_members(presence).await;
        // Runs of nodes that died while nobody here watched this session.
        let dead = async {
            let me = link.fleet.node();
            let others: BTreeSet<String> = link
                .fleet
                .runs(session)
                .await?
                .into_iter()
                .map(|r| r.node)
                .filter(|n| n != me)
                .collect();
            // Most sessions have no run of another node: no need to ask who is alive.
            if others.is_empty() {
                return Ok(others);
            }
            let alive = link.fleet.alive(expiry_ms).await?;
            Ok::<_, mooring_core::store::StoreError>(
                others.into_iter().filter(|n| !alive.contains(n)).collect(),
            )
        };
        match dead.await {
            Ok(dead) => {
                for node in dead {
                    link.node_lost(&node, now_ms);
                }
            }
            Err(e) => {
                tracing::warn!(session, error = %e, "reading the session's run owners failed");
            }
        }
        link
    }

    /// A change of a member connected here, for the other nodes.
    pub(crate) fn announce(&mut self, change: &PresenceChange) {
        self.to_announce
            .push((change.action, change.member.clone()));
    }

    /// Records `members` (this node's) again and reads the others' afresh at the next sync.
    pub(crate) fn resync(&mut self, members: Vec<Member>) {
        for member in members {
            self.to_announce.push((PresenceAction::Enter, member));
        }
        self.resync = true;
    }

    /// This node wrote a `run.start` from one of its connections: it owns the run.
    pub(crate) fn own(&mut self, run_id: &str, client_id: &str) {
        self.runs.push(RunRecord::Own {
            run_id: run_id.to_owned(),
            client_id: client_id.to_owned(),
        });
    }

    /// This node wrote a `run.end`.
    pub(crate) fn ended(&mut self, run_id: &str) {
        self.runs.push(RunRecord::End {
            run_id: run_id.to_owned(),
        });
    }

    /// `client_id` shows up here on `connection_id` (it attached or published): its runs,
    /// wherever they were started, are answered for here now.
    pub(crate) fn seen(&mut self, client_id: &str, connection_id: &str) {
        if self.claimed.len() >= MAX_CLAIMED_CONNECTIONS {
            // Connections that only attached are never said to have ended here; forgetting
            // them all costs each at most one more claim.
            self.claimed.clear();
        }
        if self.claimed.insert(connection_id.to_owned()) {
            self.to_claim
                .push((client_id.to_owned(), connection_id.to_owned()));
        }
    }

    pub(crate) fn connection_ended(&mut self, connection_id: &str) {
        self.claimed.remove(connection_id);
    }

    /// `node` died: the runs it owns here end after the grace unless their agents come back.
    pub(crate) fn node_lost(&mut self, node: &str, now_ms: u64) {
        if !self.orphans.iter().any(|(n, _)| n == node) {
            self.orphans.push((node.to_owned(), now_ms + self.grace_ms));
        }
    }

    /// When the runs of a dead node are next due to end.
    pub(crate) fn next_orphan_check(&self) -> Option<u64> {
        self.orphans.iter().map(|(_, at)| *at).min()
    }

    /// Whether something still needs this task (a dead node's runs to end).
    pub(crate) fn is_idle(&self) -> bool {
        self.orphans.is_empty()
    }

    /// Tells the store what was queued, in order; returns the presence changes that reading
    /// the other nodes' members afresh made.
    pub(crate) async fn sync(
        &mut self,
        presence: &mut PresenceTable,
        runs: &mut RunTable,
        now_ms: u64,
    ) -> Vec<PresenceChange> {
        let session = self.session.clone();
        for (action, member) in std::mem::take(&mut self.to_announce) {
            if let Err(e) = self.fleet.announce(&session, action, &member).await {
                tracing::warn!(%session, error = %e, "recording a presence change for other nodes failed");
            }
        }
        self.sync_runs().await;
        for (client_id, connection_id) in std::mem::take(&mut self.to_claim) {
            match self.fleet.claim_runs(&session, &client_id).await {
                Ok(claimed) => {
                    for run_id in claimed {
                        tracing::debug!(%session, run_id, client_id, "took over a run from another node");
                        runs.adopt(&run_id, &client_id, &connection_id, now_ms);
                    }
                }
                Err(e) => {
                    tracing::warn!(%session, error = %e, "taking over a client's runs failed");
                }
            }
        }
        if !std::mem::take(&mut self.resync) {
            return Vec::new();
        }
        self.read_members(presence).await
    }

    /// Reads the other nodes' members into `presence`; returns the changes that makes.
    async fn read_members(&self, presence: &mut PresenceTable) -> Vec<PresenceChange> {
        match self.fleet.members(&self.session, self.expiry_ms).await {
            Ok(remote) => {
                presence.replace_remote(remote.into_iter().map(|r| (r.node, r.member)).collect())
            }
            Err(e) => {
                tracing::warn!(session = %self.session, error = %e, "reading other nodes' members failed; they show up as they change");
                Vec::new()
            }
        }
    }

    /// Tells the store which runs this node started or ended since the last call.
    pub(crate) async fn sync_runs(&mut self) {
        for record in std::mem::take(&mut self.runs) {
            let done = match &record {
                RunRecord::Own { run_id, client_id } => {
                    self.fleet.own_run(&self.session, run_id, client_id).await
                }
                RunRecord::End { run_id } => self.fleet.end_run(&self.session, run_id).await,
            };
            if let Err(e) = done {
                tracing::warn!(session = %self.session, ?record, error = %e, "recording a run's owner failed");
            }
        }
    }

    /// Removes a member of dead `node` from the store (it cannot say so itself).
    pub(crate) async fn forget_member(&self, node: &str, member: &Member) {
        if let Err(e) = self.fleet.forget(&self.session, node, member).await {
            tracing::warn!(session = %self.session, error = %e, "removing a dead node's member failed");
        }
    }

    /// The runs of dead nodes whose grace is over and that no node took over: they end
    /// `agent_lost`.
    pub(crate) async fn due_orphans(&mut self, now_ms: u64) -> Vec<String> {
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.orphans.drain(..).partition(|(_, at)| *at <= now_ms);
        self.orphans = waiting;
        if due.is_empty() {
            return Vec::new();
        }
        match self.fleet.runs(&self.session).await {
            Ok(owners) => owners
                .into_iter()
                .filter(|o| due.iter().any(|(node, _)| *node == o.node))
                .map(|o| o.run_id)
                .collect(),
            Err(e) => {
                tracing::warn!(session = %self.session, error = %e, "reading a dead node's runs failed; trying again later");
                self.orphans
                    .extend(due.into_iter().map(|(n, at)| (n, at + self.grace_ms)));
                Vec::new()
            }
        }
    }

    /// Keeps the `agent_lost` ends of runs this node still owns; a run another node took
    /// over (its agent came back there) is forgotten here instead, and one nobody owns ended
    /// already.
    pub(crate) async fn keep_owned(
        &self,
        effects: Vec<RunEffect>,
        runs: &mut RunTable,
    ) -> Vec<RunEffect> {
        let lost = |e: &RunEffect| {
            matches!(
                e,
                RunEffect::End {
                    status: RunStatus::AgentLost,
                    ..
                }
            )
        };
        if !effects.iter().any(lost) {
            return effects;
        }
        let owners = match self.fleet.runs(&self.session).await {
            Ok(owners) => owners,
            Err(e) => {
                // Not knowing, the run ends: a run left open forever is worse than one
                // ended while its agent works through another node (which may start again).
                tracing::warn!(session = %self.session, error = %e, "reading run owners failed");
                return effects;
            }
        };
        let me = self.fleet.node();
        effects
            .into_iter()
            .filter(|e| {
                let RunEffect::End { run_id, .. } = e else {
                    return true;
                };
                if !lost(e) {
                    return true;
                }
                let mine = owners.iter().any(|o| o.run_id == *run_id && o.node == me);
                if !mine {
                    runs.forget(run_id);
                }
                mine
            })
            .collect()
    }
}
