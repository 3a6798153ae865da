//! Presence: who is in a session, with which role, and when a lost connection counts as gone.
//!
//! Pure: the session task feeds it commands and the time, and sends out the changes it returns.
//! A member is keyed by its client id and its *instance* (a stable id of one tab or process,
//! or the connection id when the client gives none), so a client that reconnects within the
//! grace period keeps its place instead of leaving and entering again.
//!
//! On a store shared by several nodes, the table also holds the members connected through the
//! other nodes (see [`crate::fleet`]), each with its node: a member that reconnects through
//! another node moves there, and only its node's word (or that node's death) makes it leave.

use std::collections::BTreeMap;

pub use mooring_protocol::presence::{Member, PresenceAction, Role};

#[derive(Clone, Debug, PartialEq)]
pub struct PresenceChange {
    pub action: PresenceAction,
    pub member: Member,
}

#[derive(Clone, Debug)]
struct Entry {
    member: Member,
    /// The node it is connected through; `None` for this one.
    node: Option<String>,
    /// Set when the member's connection was lost: it leaves at this time unless it returns.
    leaving_at_ms: Option<u64>,
}

/// A member that left, and the node it was connected through (`None`: this one).
#[derive(Clone, Debug, PartialEq)]
pub struct Departure {
    pub change: PresenceChange,
    pub node: Option<String>,
}

/// The members of one session.
#[derive(Clone, Debug, Default)]
pub struct PresenceTable {
    members: BTreeMap<(String, String), Entry>,
}

impl PresenceTable {
    /// Enters (or, for a present member, updates and rebinds to the given connection).
    pub fn enter(&mut self, member: Member) -> PresenceChange {
        self.insert(None, member)
    }

    /// A member connected through `node` entered or changed (it may have been here before).
    pub fn enter_remote(&mut self, node: &str, member: Member) -> PresenceChange {
        self.insert(Some(node.to_owned()), member)
    }

    fn insert(&mut self, node: Option<String>, member: Member) -> PresenceChange {
        let key = (member.client_id.clone(), member.instance.clone());
        let existed = self.members.contains_key(&key);
        self.members.insert(
            key,
            Entry {
                member: member.clone(),
                node,
                leaving_at_ms: None,
            },
        );
        let action = if existed {
            PresenceAction::Update
        } else {
            PresenceAction::Enter
        };
        PresenceChange { action, member }
    }

    /// Leaves at once; `None` if not present.
    pub fn leave(&mut self, client_id: &str, instance: &str) -> Option<PresenceChange> {
        let entry = self
            .members
            .remove(&(client_id.to_owned(), instance.to_owned()))?;
        Some(PresenceChange {
            action: PresenceAction::Leave,
            member: entry.member,
        })
    }

    /// A member of `node` left, if `node` still holds it (it may have moved here since).
    pub fn leave_remote(
        &mut self,
        node: &str,
        client_id: &str,
        instance: &str,
    ) -> Option<PresenceChange> {
        let key = (client_id.to_owned(), instance.to_owned());
        if self.members.get(&key)?.node.as_deref() != Some(node) {
            return None;
        }
        self.members.remove(&key).map(|entry| PresenceChange {
            action: PresenceAction::Leave,
            member: entry.member,
        })
    }

    /// `node` died: its members are lost connections, leaving after `grace_ms` unless they
    /// come back (through another node) first.
    pub fn node_lost(&mut self, node: &str, now_ms: u64, grace_ms: u64) {
        for entry in self.members.values_mut() {
            if entry.node.as_deref() == Some(node) && entry.leaving_at_ms.is_none() {
                entry.leaving_at_ms = Some(now_ms + grace_ms);
            }
        }
    }

    /// Sets the members of other nodes to `remote` (as read from the store after notices may
    /// have been lost); returns the changes that makes. Members of this node stay.
    pub fn replace_remote(&mut self, remote: Vec<(String, Member)>) -> Vec<PresenceChange> {
        let mut changes = Vec::new();
        let listed: std::collections::BTreeSet<(String, String)> = remote
            .iter()
            .map(|(_, m)| (m.client_id.clone(), m.instance.clone()))
            .collect();
        let gone: Vec<_> = self
            .members
            .iter()
            .filter(|(key, e)| e.node.is_some() && !listed.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            if let Some(entry) = self.members.remove(&key) {
                changes.push(PresenceChange {
                    action: PresenceAction::Leave,
                    member: entry.member,
                });
            }
        }
        for (node, member) in remote {
            let key = (member.client_id.clone(), member.instance.clone());
            let same = self
                .members
                .get(&key)
                .is_some_and(|e| e.node.as_deref() == Some(&node) && e.member == member);
            if !same {
                changes.push(self.enter_remote(&node, member));
            }
        }
        changes
    }

    /// The members connected through this node.
    pub fn local_members(&self) -> Vec<Member> {
        self.members
            .values()
            .filter(|e| e.node.is_none())
            .map(|e| e.member.clone())
            .collect()
    }

    /// A connection ended. A clean close leaves its members now; a lost one leaves them after
    /// `grace_ms` unless they come back first.
    pub fn connection_ended(
        &mut self,
        connection_id: &str,
        clean: bool,
        now_ms: u64,
        grace_ms: u64,
    ) -> Vec<PresenceChange> {
        let keys: Vec<_> = self
            .members
            .iter()
            .filter(|(_, e)| e.node.is_none() && e.member.connection_id == connection_id)
            .map(|(k, _)| k.clone())
            .collect();
        let mut changes = Vec::new();
        for key in keys {
            if clean {
                if let Some(entry) = self.members.remove(&key) {
                    changes.push(PresenceChange {
                        action: PresenceAction::Leave,
                        member: entry.member,
                    });
                }
            } else if let Some(entry) = self.members.get_mut(&key) {
                entry.leaving_at_ms = Some(now_ms + grace_ms);
            }
        }
        changes
    }

    /// A member's instance showed up again on `connection_id`: it stays.
    pub fn returned(&mut self, client_id: &str, instance: &str, connection_id: &str) -> bool {
        match self
            .members
            .get_mut(&(client_id.to_owned(), instance.to_owned()))
        {
            Some(entry) => {
                entry.leaving_at_ms = None;
                entry.node = None;
                entry.member.connection_id = connection_id.to_owned();
                true
            }
            None => false,
        }
    }

    /// Members whose grace ran out leave.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Departure> {
        let due: Vec<_> = self
            .members
            .iter()
            .filter(|(_, e)| e.leaving_at_ms.is_some_and(|t| t <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|key| self.members.remove(&key))
            .map(|entry| Departure {
                change: PresenceChange {
                    action: PresenceAction::Leave,
                    member: entry.member,
                },
                node: entry.node,
            })
            .collect()
    }

    /// The earliest time a lost member is due to leave.
    pub fn next_expiry(&self) -> Option<u64> {
        self.members.values().filter_map(|e| e.leaving_at_ms).min()
    }

    pub fn members(&self) -> Vec<Member> {
        self.members.values().map(|e| e.member.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: &str, instance: &str, conn: &str) -> Member {
        Member {
            client_id: client.into(),
            instance: instance.into(),
            connection_id: conn.into(),
            role: Role::User,
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn enter_then_enter_again_is_an_update() {
        let mut t = PresenceTable::default();
        assert_eq!(
            t.enter(member("a", "tab1", "c1")).action,
            PresenceAction::Enter
        );
        assert_eq!(
            t.enter(member("a", "tab1", "c1")).action,
            PresenceAction::Update
        );
        assert_eq!(
            t.enter(member("a", "tab2", "c2")).action,
            PresenceAction::Enter
        );
        assert_eq!(t.members().len(), 2);
    }

    #[test]
    fn a_clean_close_leaves_at_once() {
        let mut t = PresenceTable::default();
        t.enter(member("a", "tab1", "c1"));
        let changes = t.connection_ended("c1", true, 0, 15_000);
        assert_eq!(changes.len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_lost_connection_leaves_after_the_grace_unless_it_returns() {
        let mut t = PresenceTable::default();
        t.enter(member("a", "tab1", "c1"));
        t.enter(member("b", "tab1", "c2"));
        assert!(t.connection_ended("c1", false, 1_000, 15_000).is_empty());
        assert!(t.connection_ended("c2", false, 1_000, 15_000).is_empty());
        assert_eq!(t.next_expiry(), Some(16_000));
        assert!(t.returned("b", "tab1", "c3"));
        assert!(t.expire(15_999).is_empty());
        let gone = t.expire(16_000);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].change.member.client_id, "a");
        assert_eq!(t.members()[0].connection_id, "c3");
    }

    #[test]
    fn a_member_of_another_node_leaves_only_by_that_nodes_word() {
        let mut t = PresenceTable::default();
        t.enter_remote("n1", member("a", "tab1", "c1"));
        // The same connection id on this node is another connection.
        assert!(t.connection_ended("c1", true, 0, 0).is_empty());
        assert_eq!(t.leave_remote("n2", "a", "tab1"), None, "not n2's member");
        // It reconnects through this node: it is ours now, and n1's late leave is ignored.
        assert_eq!(
            t.enter(member("a", "tab1", "c9")).action,
            PresenceAction::Update
        );
        assert_eq!(t.leave_remote("n1", "a", "tab1"), None);
        assert_eq!(t.local_members().len(), 1);
        t.enter_remote("n2", member("b", "tab1", "c1"));
        let left = t.leave_remote("n2", "b", "tab1").expect("b leaves");
        assert_eq!(left.action, PresenceAction::Leave);
    }

    #[test]
    fn the_members_of_a_dead_node_leave_after_the_grace_unless_they_come_back() {
        let mut t = PresenceTable::default();
        t.enter_remote("n1", member("a", "tab1", "c1"));
        t.enter_remote("n1", member("b", "tab1", "c2"));
        t.enter_remote("n2", member("c", "tab1", "c1"));
        t.node_lost("n1", 1_000, 500);
        assert_eq!(t.next_expiry(), Some(1_500));
        // b reconnected through n2 before the grace ran out.
        t.enter_remote("n2", member("b", "tab1", "c7"));
        assert!(t.expire(1_499).is_empty());
        let gone = t.expire(1_500);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].change.member.client_id, "a");
        assert_eq!(gone[0].node.as_deref(), Some("n1"));
        assert_eq!(t.members().len(), 2);
    }

    #[test]
    fn replacing_the_remote_members_reports_the_difference_and_keeps_our_own() {
        let mut t = PresenceTable::default();
        t.enter(member("me", "tab1", "c1"));
        t.enter_remote("n1", member("a", "tab1", "c1"));
        t.enter_remote("n1", member("b", "tab1", "c2"));
        let changes = t.replace_remote(vec![
            ("n1".into(), member("a", "tab1", "c1")),
            ("n2".into(), member("d", "tab1", "c4")),
        ]);
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.action, c.member.client_id.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![(PresenceAction::Leave, "b"), (PresenceAction::Enter, "d")]
        );
        assert_eq!(t.members().len(), 3);
        assert_eq!(t.local_members().len(), 1);
    }
}
