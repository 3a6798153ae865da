//! Dispatch across the nodes of one store (Redis): a user input written through one node can
//! go to a worker connected to any node, and is still answered by one agent.
//!
//! - The node an input is written through announces it while it waits ([`Fleet::announce_input`]),
//!   at once and again every node expiry, until a node holds it or a run answers it. Nodes
//!   with a worker whose pattern matches take it into their own table.
//! - A node offers an input to its worker only once it holds the input's claim in the store
//!   ([`Fleet::claim_input`]); a node that finds it held or answered drops its copy. Hand-ons
//!   between the workers of one node keep the claim; an input that waits again gives it back
//!   and is announced again.
//! - A `run.start` naming an input is checked against the claim before it is written
//!   ([`Fleet::start_input`]): refused if another live node holds the input, and from then on
//!   no node can take it. A claim of a dead node counts for nothing: a node that finds an
//!   input held asks the store whether the holder still beats (a node it never heard of may be
//!   new, so only a holder found dead is passed over).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mooring_core::fleet::{Fleet, InputClaim, InputNotice};
use mooring_core::store::StoreError;

use super::table::Waiting;

/// What dispatch shares with the other nodes.
pub(super) struct Shared {
    pub(super) fleet: Arc<dyn Fleet>,
    /// A node that has not beaten for this long is dead.
    node_expiry_ms: u64,
    /// How long a claim lives in the store: longer than any input waits (twice the hold).
    pub(super) claim_ttl_ms: u64,
    /// A round of announcing waiting inputs again is under way.
    announcing: AtomicBool,
    /// Another live node has workers: only then are inputs announced (an app that does not
    /// use dispatch pays nothing for it). Until the first beat says, assume so.
    others_have_workers: AtomicBool,
    /// What this node last recorded of its own workers.
    recorded_workers: std::sync::Mutex<Option<bool>>,
}

/// A round of announcements; the next may start once it is dropped.
pub(super) struct Round<'a>(&'a AtomicBool);

impl Drop for Round<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Shared {
    pub(super) fn new(fleet: Arc<dyn Fleet>, hold_ms: u64, node_expiry_ms: u64) -> Self {
        Self {
            fleet,
            node_expiry_ms,
            claim_ttl_ms: hold_ms.saturating_mul(2).max(60_000),
            announcing: AtomicBool::new(false),
            others_have_workers: AtomicBool::new(true),
            recorded_workers: std::sync::Mutex::new(None),
        }
    }

    /// Whether announcing inputs can reach a worker.
    pub(super) fn worth_announcing(&self) -> bool {
        self.others_have_workers.load(Ordering::Acquire)
    }

    /// At each beat: records whether this node has workers (when that changed), and learns
    /// whether another of the live nodes `alive` has.
    pub(super) async fn refresh_workers(&self, has_workers: bool, alive: &[String]) {
        let recorded = self.recorded_workers.lock().map(|r| *r).unwrap_or(None);
        if recorded != Some(has_workers) {
            match self.fleet.set_has_workers(has_workers).await {
                Ok(()) => {
                    if let Ok(mut r) = self.recorded_workers.lock() {
                        *r = Some(has_workers);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording whether this node has workers failed")
                }
            }
        }
        match self.fleet.nodes_with_workers().await {
            Ok(nodes) => {
                let others = nodes.iter().any(|n| alive.contains(n));
                self.others_have_workers.store(others, Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "reading which nodes have workers failed"),
        }
    }

    /// Starts a round of announcements, unless one is under way.
    pub(super) fn announcing(&self) -> Option<Round<'_>> {
        let idle = self
            .announcing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        idle.then_some(Round(&self.announcing))
    }

    /// Whether `node` (another node's id) has stopped beating.
    async fn is_dead(&self, node: &str) -> Result<bool, StoreError> {
        Ok(!self.alive().await?.iter().any(|n| n == node))
    }

    /// The other nodes that beat now.
    pub(super) async fn alive(&self) -> Result<Vec<String>, StoreError> {
        self.fleet.alive(self.node_expiry_ms).await
    }

    /// Takes input `serial` of `session` for this node, passing over a holder found dead.
    pub(super) async fn claim(&self, session: &str, serial: u64) -> Result<InputClaim, StoreError> {
        let ttl = self.claim_ttl_ms;
        match self.fleet.claim_input(session, serial, &[], ttl).await? {
            InputClaim::HeldBy(node) if self.is_dead(&node).await? => {
                self.fleet.claim_input(session, serial, &[node], ttl).await
            }
            other => Ok(other),
        }
    }

    /// Marks input `serial` started by a run of `client` through this node: the claim before
    /// (to put back if the run is not written), or `Err(node)` if live `node` holds it or a
    /// run of another client answers it.
    pub(super) async fn start(
        &self,
        session: &str,
        serial: u64,
        client: &str,
    ) -> Result<Result<String, String>, StoreError> {
        let ttl = self.claim_ttl_ms;
        match self
            .fleet
            .start_input(session, serial, client, &[], ttl)
            .await?
        {
            Err(node) if self.is_dead(&node).await? => {
                let dead = [node];
                self.fleet
                    .start_input(session, serial, client, &dead, ttl)
                    .await
            }
            other => Ok(other),
        }
    }

    /// The runs that [`Self::start`] let through were not written: their inputs' claims go
    /// back to what they were.
    pub(super) async fn unstart(&self, session: &str, client: &str, marks: &[(u64, String)]) {
        for (serial, before) in marks {
            let restored = self
                .fleet
                .restore_input(session, *serial, client, before, self.claim_ttl_ms)
                .await;
            if let Err(e) = restored {
                tracing::warn!(%session, input = serial, error = %e, "putting an input's claim back failed; it can be offered again once the claim expires");
            }
        }
    }

    /// Tells the other nodes of `waiting`, if one of them has workers.
    pub(super) async fn announce(&self, waiting: &Waiting) {
        if !self.worth_announcing() {
            return;
        }
        let notice = InputNotice {
            node: self.fleet.node().to_owned(),
            session: waiting.key.0.clone(),
            epoch: waiting.epoch,
            input: waiting.event.clone(),
        };
        if let Err(e) = self.fleet.announce_input(&notice).await {
            tracing::warn!(session = %notice.session, input = waiting.key.1, error = %e, "announcing an input failed; it is announced again while it waits");
        }
    }

    /// Gives back the claim of `waiting`, then tells the other nodes it waits.
    pub(super) async fn give_back(&self, waiting: &Waiting) {
        let (session, serial) = (&waiting.key.0, waiting.key.1);
        if let Err(e) = self.fleet.release_input(session, serial).await {
            tracing::warn!(%session, input = serial, error = %e, "giving back an input's claim failed; other nodes may take it once this node's claim expires");
        }
        self.announce(waiting).await;
    }

    /// Whether `waiting` (written through this node) still needs announcing, with the other
    /// nodes `alive` now: `Some(true)` if nobody live holds it, `Some(false)` if a live node
    /// does, `None` if a run answers it.
    pub(super) async fn still_waits(&self, waiting: &Waiting, alive: &[String]) -> Option<bool> {
        let (session, serial) = (&waiting.key.0, waiting.key.1);
        let state = match self.fleet.input_state(session, serial).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(%session, input = serial, error = %e, "reading an input's claim failed");
                return Some(false);
            }
        };
        match state {
            None => Some(true),
            Some(InputClaim::Started(_)) => None,
            Some(InputClaim::HeldBy(node)) if node == self.fleet.node() => Some(false),
            Some(InputClaim::HeldBy(node)) => Some(!alive.contains(&node)),
            Some(InputClaim::Won) => Some(false),
        }
    }
}
