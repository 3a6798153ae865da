//! The nodes that share one store (several `mooring` processes on one Redis): who is alive,
//! the presence of members connected through each of them, and which node's agent
//! connection answers for each active run.
//!
//! Presence is state about connections, and a connection lives on one node. So each node
//! records the members connected through it in the store, tells the other nodes of every
//! change, and beats while it lives. A node that stops beating for `expiry` is dead: the
//! others treat its members as lost connections (they leave after the presence grace unless
//! they come back through another node), and they, not the dead node, tell their clients.
//!
//! Runs the same way: the node whose connection started a run owns it, a node the agent
//! comes back through takes it over, and when the owner dies, a run nobody took over within
//! the grace ends `agent_lost`, published by the nodes that survive (under one event id, so
//! once).
//!
//! And agent dispatch: a user input written through one node is announced to the others, so a
//! worker connected to any node can answer it. A node offers an input to its worker only once
//! it holds the input's claim in the store, and a `run.start` naming an input held by another
//! live node is refused, so each input is still answered by one agent.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use mooring_protocol::session::Event;

use crate::presence::{Member, PresenceAction};
use crate::store::StoreError;

/// A presence change of a member connected through `node`, as the other nodes hear of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceNotice {
    pub node: String,
    pub session: String,
    pub action: PresenceAction,
    pub member: Member,
}

/// A member connected through another node.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteMember {
    pub node: String,
    pub member: Member,
}

/// An active run and the node whose connection answers for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOwner {
    pub run_id: String,
    pub node: String,
    /// The agent's client id ("" if it had none).
    pub client_id: String,
}

/// A user input written through `node`, as the nodes with workers hear of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputNotice {
    pub node: String,
    pub session: String,
    pub epoch: u64,
    pub input: Event,
}

/// What a node's attempt to hold an input for its workers found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputClaim {
    /// This node holds it: it may offer it to one of its workers.
    Won,
    /// Another live node holds it.
    HeldBy(String),
    /// A run answering it was started (through the node named).
    Started(String),
}

/// What a beat learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Beat {
    /// The other nodes alive now (each beat within the expiry).
    pub alive: Vec<String>,
    /// This node had not beaten for longer than the expiry before this beat: the others may
    /// have counted it dead and dropped its members, so it must record them again.
    pub was_dead: bool,
}

/// Presence shared between the nodes of one store. The memory and embedded engines have one
/// process per store and none.
#[async_trait]
pub trait Fleet: Send + Sync + std::fmt::Debug {
    /// This node's id, random per process.
    fn node(&self) -> &str;

    /// Records a change of a member connected through this node and tells the other nodes. A
    /// leave removes the member only if this node still holds it: a member that came back
    /// through another node in the meantime stays.
    async fn announce(
        &self,
        session: &str,
        action: PresenceAction,
        member: &Member,
    ) -> Result<(), StoreError>;

    /// Removes `member` of dead `node` from the store, if that node still holds it; tells no
    /// one (every node finds a dead node by itself).
    async fn forget(&self, session: &str, node: &str, member: &Member) -> Result<(), StoreError>;

    /// The members of `session` connected through other nodes alive within `expiry_ms`.
    async fn members(&self, session: &str, expiry_ms: u64)
        -> Result<Vec<RemoteMember>, StoreError>;

    /// Says this node is alive; answers which others are, within `expiry_ms`.
    async fn beat(&self, expiry_ms: u64) -> Result<Beat, StoreError>;

    /// The other nodes alive within `expiry_ms`, without beating.
    async fn alive(&self, expiry_ms: u64) -> Result<Vec<String>, StoreError>;

    /// Records that this node owns run `run_id` of `session`, started by `client_id`.
    async fn own_run(&self, session: &str, run_id: &str, client_id: &str)
        -> Result<(), StoreError>;

    /// The run ended: nobody owns it.
    async fn end_run(&self, session: &str, run_id: &str) -> Result<(), StoreError>;

    /// `client_id` showed up through this node: this node takes over its runs in `session`
    /// from whichever nodes owned them; answers the runs it took over.
    async fn claim_runs(&self, session: &str, client_id: &str) -> Result<Vec<String>, StoreError>;

    /// The owned runs of `session`.
    async fn runs(&self, session: &str) -> Result<Vec<RunOwner>, StoreError>;

    /// The sessions in which dead `node` owned runs, forgotten as they are read: the nodes
    /// that survive look at each.
    async fn orphaned_sessions(&self, node: &str) -> Result<Vec<String>, StoreError>;

    /// Records whether this node has workers, so the others announce inputs only while some
    /// node does.
    async fn set_has_workers(&self, has_workers: bool) -> Result<(), StoreError>;

    /// The nodes that said they have workers (alive or not; the caller knows who is).
    async fn nodes_with_workers(&self) -> Result<Vec<String>, StoreError>;

    /// Tells the other nodes of a user input that waits for a worker. Best effort: the notice
    /// may be lost, so the node that has the input announces it again while it waits.
    async fn announce_input(&self, notice: &InputNotice) -> Result<(), StoreError>;

    /// Takes input `serial` of `session` for this node's workers, unless another node holds
    /// it (one of `dead`, nodes the caller found dead, does not count) or a run answering it
    /// started; held for `ttl_ms`.
    async fn claim_input(
        &self,
        session: &str,
        serial: u64,
        dead: &[String],
        ttl_ms: u64,
    ) -> Result<InputClaim, StoreError>;

    /// Gives back an input this node holds and did not start, for the other nodes to take.
    async fn release_input(&self, session: &str, serial: u64) -> Result<(), StoreError>;

    /// Who holds input `serial` of `session`: `None` if nobody (never [`InputClaim::Won`]).
    async fn input_state(
        &self,
        session: &str,
        serial: u64,
    ) -> Result<Option<InputClaim>, StoreError>;

    /// A run of `client_id` answering input `serial` is about to be written through this node.
    /// Refused (`Err` with the node) if another node holds the input (one of `dead` does not
    /// count) or a run of another client answers it; otherwise no other node can take it, and
    /// the answer is the claim before (`""` if none), for [`Fleet::restore_input`].
    async fn start_input(
        &self,
        session: &str,
        serial: u64,
        client_id: &str,
        dead: &[String],
        ttl_ms: u64,
    ) -> Result<Result<String, String>, StoreError>;

    /// The run of `client_id` that [`Fleet::start_input`] let through was not written after
    /// all: the input's claim goes back to `before`, unless it changed since.
    async fn restore_input(
        &self,
        session: &str,
        serial: u64,
        client_id: &str,
        before: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError>;
}
