//! Presence: who is in a session, with which role, and when a lost connection counts as gone.
//!
//! Pure: the session task feeds it commands and the time, and sends out the changes it returns.
//! A member is keyed by its client id and its *instance* (a stable id of one tab or process,
//! or the connection id when the client gives none), so a client that reconnects within the
//! grace period keeps its place instead of leaving and entering again.

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
    /// Set when the member's connection was lost: it leaves at this time unless it returns.
    leaving_at_ms: Option<u64>,
}

/// The members of one session.
#[derive(Clone, Debug, Default)]
pub struct PresenceTable {
    members: BTreeMap<(String, String), Entry>,
}

impl PresenceTable {
    /// Enters (or, for a present member, updates and rebinds to the given connection).
    pub fn enter(&mut self, member: Member) -> PresenceChange {
        let key = (member.client_id.clone(), member.instance.clone());
        let existed = self.members.contains_key(&key);
        self.members.insert(
            key,
            Entry {
                member: member.clone(),
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
            .filter(|(_, e)| e.member.connection_id == connection_id)
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
                entry.member.connection_id = connection_id.to_owned();
                true
            }
            None => false,
        }
    }

    /// Members whose grace ran out leave.
    pub fn expire(&mut self, now_ms: u64) -> Vec<PresenceChange> {
        let due: Vec<_> = self
            .members
            .iter()
            .filter(|(_, e)| e.leaving_at_ms.is_some_and(|t| t <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|key| self.members.remove(&key))
            .map(|entry| PresenceChange {
                action: PresenceAction::Leave,
                member: entry.member,
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
        assert_eq!(gone[0].member.client_id, "a");
        assert_eq!(t.members()[0].connection_id, "c3");
    }
}
