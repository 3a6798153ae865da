//! The nodes of one Redis (see [`mooring_core::fleet`]): their beats, presence across them,
//! and which node owns each active run.
//!
//! Each session's members live in one hash next to its log (`keys::members`, same slot), one
//! field per member holding the node it is connected through and the member. A change is
//! written and announced on [`keys::PRESENCE`] by one script (`presence.lua`), so a node that
//! reads the hash after subscribing misses nothing but what a lost message loses (and then the
//! notice feed says `Lost`, and the node reads the hash again). Nodes beat into one sorted set
//! (`beat.lua`) timed by Redis's clock. A session's active runs live in another hash next to
//! its log (`keys::runs`: run id -> owning node and client), which `claim.lua` rewrites when
//! the client shows up through another node; each node also lists the sessions it owns runs
//! in (`keys::node_runs`), for the nodes that survive it.

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, PubsubInterface, SetsInterface};
use fred::types::scripts::Script;
use fred::types::Value;
use mooring_core::fleet::{
    Beat, Fleet, InputClaim, InputNotice, PresenceNotice, RemoteMember, RunOwner,
};
use mooring_core::presence::{Member, PresenceAction};
use mooring_core::store::StoreError;

use super::{keys, redis_error};

const ANNOUNCE: &str = include_str!("presence.lua");
const BEAT: &str = include_str!("beat.lua");
const CLAIM: &str = include_str!("claim.lua");
const INPUT: &str = include_str!("input.lua");

/// The presence of one node on a Redis it shares with others.
#[derive(Debug)]
pub(super) struct RedisFleet {
    client: Client,
    node: String,
    announce: Script,
    beat: Script,
    claim: Script,
    input: Script,
}

/// A member's field in its session's hash: its client id and instance, as a JSON array, which
/// no two members share.
fn field(member: &Member) -> String {
    serde_json::json!([member.client_id, member.instance]).to_string()
}

/// A field's value read back: the node and the member; `None` if unreadable.
fn held(value: &str) -> Option<(&str, Member)> {
    let (node, member) = value.split_once('\n')?;
    Some((node, serde_json::from_str(member).ok()?))
}

impl RedisFleet {
    /// Loads the scripts through `client`; `node` is this node's id.
    pub(super) async fn new(client: Client, node: String) -> Result<Self, StoreError> {
        let (announce, beat) = (Script::from_lua(ANNOUNCE), Script::from_lua(BEAT));
        let (claim, input) = (Script::from_lua(CLAIM), Script::from_lua(INPUT));
        for script in [&announce, &beat, &claim, &input] {
            script
                .load(&client)
                .await
                .map_err(|e| redis_error("loading the fleet scripts", e))?;
        }
        Ok(Self {
            client,
            node,
            announce,
            beat,
            claim,
            input,
        })
    }

    /// Runs `input.lua` for input `serial` of `session`; answers its verdict and detail.
    async fn input_op(
        &self,
        op: &str,
        (session, serial): (&str, u64),
        (client, before): (&str, &str),
        dead: &[String],
        ttl_ms: u64,
    ) -> Result<(String, String), StoreError> {
        let mut args: Vec<Value> = vec![
            op.into(),
            self.node.as_str().into(),
            Value::from(i64::try_from(ttl_ms).unwrap_or(i64::MAX)),
            client.into(),
            before.into(),
        ];
        args.extend(dead.iter().map(|n| Value::from(n.as_str())));
        self.input
            .evalsha_with_reload(&self.client, vec![keys::input_claim(session, serial)], args)
            .await
            .map_err(|e| redis_error("claiming an input for dispatch", e))
    }

    async fn change(
        &self,
        session: &str,
        op: &str,
        node: &str,
        member: &Member,
        message: String,
    ) -> Result<(), StoreError> {
        let encoded = serde_json::to_string(member)
            .map_err(|e| StoreError::Io(format!("encoding a member: {e}")))?;
        let args: Vec<Value> = vec![
            op.into(),
            field(member).into(),
            node.into(),
            encoded.into(),
            keys::PRESENCE.into(),
            message.into(),
        ];
        let _: i64 = self
            .announce
            .evalsha_with_reload(&self.client, vec![keys::members(session)], args)
            .await
            .map_err(|e| redis_error("recording presence", e))?;
        Ok(())
    }

    /// Takes `session` off `node`'s list of sessions with runs once `node` owns none there, so
    /// the list does not grow with every session the node ever served.
    async fn unlist_if_none(&self, session: &str, node: &str) -> Result<(), StoreError> {
        let unlist = |e| redis_error("updating a node's sessions with runs", e);
        let owners: Vec<String> = self
            .client
            .hvals(keys::runs(session))
            .await
            .map_err(unlist)?;
        let prefix = format!("{node}\n");
        if !owners.iter().any(|o| o.starts_with(&prefix)) {
            let () = self
                .client
                .srem(keys::node_runs(node), session)
                .await
                .map_err(unlist)?;
        }
        Ok(())
    }

    /// Beats as `node` ('' only asks) and answers which other nodes are alive.
    async fn beat_as(&self, node: &str, expiry_ms: u64) -> Result<Beat, StoreError> {
        let args: Vec<Value> = vec![node.into(), Value::from(expiry_ms as i64)];
        let (was_dead, alive): (i64, Vec<String>) = self
            .beat
            .evalsha_with_reload(&self.client, vec![keys::NODES.to_owned()], args)
            .await
            .map_err(|e| redis_error("beating", e))?;
        Ok(Beat {
            alive: alive.into_iter().filter(|n| *n != self.node).collect(),
            was_dead: was_dead == 1,
        })
    }
}

#[async_trait]
impl Fleet for RedisFleet {
    fn node(&self) -> &str {
        &self.node
    }

    async fn announce(
        &self,
        session: &str,
        action: PresenceAction,
        member: &Member,
    ) -> Result<(), StoreError> {
        let notice = PresenceNotice {
            node: self.node.clone(),
            session: session.to_owned(),
            action,
            member: member.clone(),
        };
        let message = serde_json::to_string(&notice)
            .map_err(|e| StoreError::Io(format!("encoding a presence notice: {e}")))?;
        let op = match action {
            PresenceAction::Enter | PresenceAction::Update => "set",
            PresenceAction::Leave => "del",
        };
        self.change(session, op, &self.node, member, message).await
    }

    async fn forget(&self, session: &str, node: &str, member: &Member) -> Result<(), StoreError> {
        self.change(session, "del", node, member, String::new())
            .await
    }

    async fn members(
        &self,
        session: &str,
        expiry_ms: u64,
    ) -> Result<Vec<RemoteMember>, StoreError> {
        let alive = self.beat_as("", expiry_ms).await?.alive;
        let fields: std::collections::HashMap<String, String> = self
            .client
            .hgetall(keys::members(session))
            .await
            .map_err(|e| redis_error("reading presence", e))?;
        let mut members = Vec::new();
        for value in fields.values() {
            let Some((node, member)) = held(value) else {
                tracing::warn!(session, value, "unreadable presence entry; ignored");
                continue;
            };
            if node == self.node {
                continue;
            }
            if alive.iter().any(|n| n == node) {
                members.push(RemoteMember {
                    node: node.to_owned(),
                    member,
                });
            } else {
                // Left behind by a node that died: nobody else will remove it.
                self.forget(session, node, &member).await?;
            }
        }
        Ok(members)
    }

    async fn beat(&self, expiry_ms: u64) -> Result<Beat, StoreError> {
        self.beat_as(&self.node, expiry_ms).await
    }

    async fn alive(&self, expiry_ms: u64) -> Result<Vec<String>, StoreError> {
        Ok(self.beat_as("", expiry_ms).await?.alive)
    }

    async fn own_run(
        &self,
        session: &str,
        run_id: &str,
        client_id: &str,
    ) -> Result<(), StoreError> {
        let owner = format!("{}\n{client_id}", self.node);
        let () = self
            .client
            .hset(keys::runs(session), (run_id, owner))
            .await
            .map_err(|e| redis_error("recording a run's owner", e))?;
        let () = self
            .client
            .sadd(keys::node_runs(&self.node), session)
            .await
            .map_err(|e| redis_error("recording a run's owner", e))?;
        Ok(())
    }

    async fn end_run(&self, session: &str, run_id: &str) -> Result<(), StoreError> {
        let () = self
            .client
            .hdel(keys::runs(session), run_id)
            .await
            .map_err(|e| redis_error("forgetting a run's owner", e))?;
        // One task per session records its runs, in order, so no run of this node can start
        // in between.
        self.unlist_if_none(session, &self.node).await
    }

    async fn claim_runs(&self, session: &str, client_id: &str) -> Result<Vec<String>, StoreError> {
        let args: Vec<Value> = vec![self.node.as_str().into(), client_id.into()];
        let answer: Vec<String> = self
            .claim
            .evalsha_with_reload(&self.client, vec![keys::runs(session)], args)
            .await
            .map_err(|e| redis_error("taking over runs", e))?;
        let (mut claimed, mut before) = (Vec::new(), std::collections::BTreeSet::new());
        for pair in answer.chunks_exact(2) {
            claimed.push(pair[0].clone());
            before.insert(pair[1].clone());
        }
        if !claimed.is_empty() {
            let () = self
                .client
                .sadd(keys::node_runs(&self.node), session)
                .await
                .map_err(|e| redis_error("recording a run's owner", e))?;
        }
        for node in before {
            self.unlist_if_none(session, &node).await?;
        }
        Ok(claimed)
    }

    async fn runs(&self, session: &str) -> Result<Vec<RunOwner>, StoreError> {
        let fields: std::collections::HashMap<String, String> = self
            .client
            .hgetall(keys::runs(session))
            .await
            .map_err(|e| redis_error("reading run owners", e))?;
        Ok(fields
            .into_iter()
            .filter_map(|(run_id, value)| {
                let (node, client_id) = value.split_once('\n')?;
                Some(RunOwner {
                    run_id,
                    node: node.to_owned(),
                    client_id: client_id.to_owned(),
                })
            })
            .collect())
    }

    async fn orphaned_sessions(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let key = keys::node_runs(node);
        let sessions: Vec<String> = self
            .client
            .smembers(&key)
            .await
            .map_err(|e| redis_error("reading a dead node's sessions", e))?;
        let _: i64 = self
            .client
            .del(&key)
            .await
            .map_err(|e| redis_error("forgetting a dead node's sessions", e))?;
        Ok(sessions)
    }

    async fn set_has_workers(&self, has_workers: bool) -> Result<(), StoreError> {
        let what = |e| redis_error("recording whether this node has workers", e);
        let _: i64 = if has_workers {
            self.client
                .sadd(keys::WORKER_NODES, self.node.as_str())
                .await
        } else {
            self.client
                .srem(keys::WORKER_NODES, self.node.as_str())
                .await
        }
        .map_err(what)?;
        Ok(())
    }

    async fn nodes_with_workers(&self) -> Result<Vec<String>, StoreError> {
        self.client
            .smembers(keys::WORKER_NODES)
            .await
            .map_err(|e| redis_error("reading which nodes have workers", e))
    }

    async fn announce_input(&self, notice: &InputNotice) -> Result<(), StoreError> {
        let message = serde_json::to_string(notice)
            .map_err(|e| StoreError::Io(format!("encoding an input notice: {e}")))?;
        let _: i64 = self
            .client
            .publish(keys::INPUTS, message)
            .await
            .map_err(|e| redis_error("announcing an input", e))?;
        Ok(())
    }

    async fn claim_input(
        &self,
        session: &str,
        serial: u64,
        dead: &[String],
        ttl_ms: u64,
    ) -> Result<InputClaim, StoreError> {
        let (verdict, node) = self
            .input_op("claim", (session, serial), ("", ""), dead, ttl_ms)
            .await?;
        Ok(match verdict.as_str() {
            "ok" => InputClaim::Won,
            "held" => InputClaim::HeldBy(node),
            _ => InputClaim::Started(node),
        })
    }

    async fn release_input(&self, session: &str, serial: u64) -> Result<(), StoreError> {
        self.input_op("release", (session, serial), ("", ""), &[], 0)
            .await?;
        Ok(())
    }

    async fn input_state(
        &self,
        session: &str,
        serial: u64,
    ) -> Result<Option<InputClaim>, StoreError> {
        let (state, node) = self
            .input_op("peek", (session, serial), ("", ""), &[], 0)
            .await?;
        Ok(match state.as_str() {
            "held" => Some(InputClaim::HeldBy(node)),
            "started" => Some(InputClaim::Started(node)),
            _ => None,
        })
    }

    async fn start_input(
        &self,
        session: &str,
        serial: u64,
        client_id: &str,
        dead: &[String],
        ttl_ms: u64,
    ) -> Result<Result<String, String>, StoreError> {
        let (verdict, detail) = self
            .input_op("start", (session, serial), (client_id, ""), dead, ttl_ms)
            .await?;
        Ok(if verdict == "ok" {
            Ok(detail)
        } else {
            Err(detail)
        })
    }

    async fn restore_input(
        &self,
        session: &str,
        serial: u64,
        client_id: &str,
        before: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        self.input_op(
            "restore",
            (session, serial),
            (client_id, before),
            &[],
            ttl_ms,
        )
        .await?;
        Ok(())
    }
}

/// The notice in a message on [`keys::INPUTS`]; `None` if unreadable.
pub(super) fn decode_input(message: &str) -> Option<InputNotice> {
    serde_json::from_str(message).ok()
}

/// The notice in a message on [`keys::PRESENCE`]; `None` if unreadable.
pub(super) fn decode(message: &str) -> Option<PresenceNotice> {
    serde_json::from_str(message).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_core::presence::Role;

    #[test]
    fn a_field_names_one_member_and_a_value_reads_back() {
        let member = Member {
            client_id: "a\"b".into(),
            instance: "tab\n1".into(),
            connection_id: "c1".into(),
            role: Role::Agent,
            data: serde_json::json!({"x": 1}),
        };
        assert_eq!(field(&member), r#"["a\"b","tab\n1"]"#);
        let value = format!("n1\n{}", serde_json::to_string(&member).expect("json"));
        assert_eq!(held(&value), Some(("n1", member)));
        assert_eq!(held("no newline"), None);
    }
}
