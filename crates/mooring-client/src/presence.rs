//! Presence on the client's side: what this client has entered (entered again on every new
//! connection, with the same instance, so a brief drop does not show as a leave), and
//! `presence_get` requests awaiting their snapshot.
//!
//! The server answers `presence_get` with a `presence_snapshot` that carries no request id,
//! and also sends one right after an attachment's `live` when the session has members. So a
//! `presence_get` for a session whose attach is in flight is held back until its `live`: then
//! the attachment's own snapshot (sent by the server together with `live`) comes first, and
//! any later snapshot for the session answers the oldest request sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use mooring_protocol::presence::{Member, PresenceAction, Role};
use mooring_protocol::realtime::ClientFrame;
use tokio::sync::oneshot;

pub(crate) type GetReply = oneshot::Sender<Vec<Member>>;

#[derive(Debug)]
struct Entered {
    role: Role,
    data: serde_json::Value,
}

#[derive(Debug)]
struct Get {
    reply: GetReply,
    /// Sent on the current connection.
    sent: bool,
}

/// What a client wants of presence: `(session, instance)` keys what it entered.
#[derive(Debug, Default)]
pub(crate) struct Presences {
    entered: BTreeMap<(String, String), Entered>,
    /// Left while disconnected: said on the next connection, so the member does not wait out
    /// the grace.
    leaves: BTreeSet<(String, String)>,
    gets: HashMap<String, VecDeque<Get>>,
    connected: bool,
}

fn frame(
    session: &str,
    action: PresenceAction,
    instance: &str,
    entered: Option<&Entered>,
) -> ClientFrame {
    ClientFrame::Presence {
        session: session.to_owned(),
        action,
        role: entered.map(|e| e.role),
        instance: Some(instance.to_owned()),
        data: entered.map(|e| e.data.clone()).unwrap_or_default(),
    }
}

impl Presences {
    /// Enters (or enters again with new role and data).
    pub(crate) fn enter(
        &mut self,
        session: String,
        instance: String,
        role: Role,
        data: serde_json::Value,
        out: &mut Vec<ClientFrame>,
    ) {
        let key = (session, instance);
        self.leaves.remove(&key);
        let entered = Entered { role, data };
        if self.connected {
            out.push(frame(&key.0, PresenceAction::Enter, &key.1, Some(&entered)));
        }
        self.entered.insert(key, entered);
    }

    /// Replaces the data of an entered instance; false if it is not entered.
    pub(crate) fn update(
        &mut self,
        session: String,
        instance: String,
        data: serde_json::Value,
        out: &mut Vec<ClientFrame>,
    ) -> bool {
        let key = (session, instance);
        let Some(entered) = self.entered.get_mut(&key) else {
            return false;
        };
        entered.data = data;
        if self.connected {
            out.push(frame(&key.0, PresenceAction::Update, &key.1, Some(entered)));
        }
        true
    }

    /// Leaves (said now, or on the next connection).
    pub(crate) fn leave(&mut self, session: String, instance: String, out: &mut Vec<ClientFrame>) {
        let key = (session, instance);
        self.entered.remove(&key);
        if self.connected {
            out.push(frame(&key.0, PresenceAction::Leave, &key.1, None));
        } else {
            self.leaves.insert(key);
        }
    }

    /// Asks for `session`'s members; the frame goes out with the next [`Presences::flush`].
    pub(crate) fn get(&mut self, session: String, reply: GetReply) {
        self.gets
            .entry(session)
            .or_default()
            .push_back(Get { reply, sent: false });
    }

    /// Sends the `presence_get`s not sent yet, except for sessions whose attach awaits its
    /// `live`.
    pub(crate) fn flush(
        &mut self,
        awaiting_live: impl Fn(&str) -> bool,
        out: &mut Vec<ClientFrame>,
    ) {
        if !self.connected || self.gets.is_empty() {
            return;
        }
        for (session, gets) in &mut self.gets {
            if awaiting_live(session) {
                continue;
            }
            for get in gets.iter_mut().filter(|g| !g.sent) {
                get.sent = true;
                out.push(ClientFrame::PresenceGet {
                    session: session.clone(),
                });
            }
        }
    }

    /// A snapshot of `session`: it answers the oldest `presence_get` sent.
    pub(crate) fn on_snapshot(&mut self, session: &str, members: Vec<Member>) {
        let Some(gets) = self.gets.get_mut(session) else {
            return;
        };
        let Some(i) = gets.iter().position(|g| g.sent) else {
            return;
        };
        if let Some(get) = gets.remove(i) {
            let _ = get.reply.send(members);
        }
        if gets.is_empty() {
            self.gets.remove(session);
        }
    }

    /// A new connection: leave what was left while away, enter everything entered again (the
    /// server keeps the member if it comes back within the grace), and ask again what was
    /// asked (with [`Presences::flush`]).
    pub(crate) fn on_connected(&mut self, out: &mut Vec<ClientFrame>) {
        self.connected = true;
        for (session, instance) in std::mem::take(&mut self.leaves) {
            out.push(frame(&session, PresenceAction::Leave, &instance, None));
        }
        for ((session, instance), entered) in &self.entered {
            out.push(frame(
                session,
                PresenceAction::Enter,
                instance,
                Some(entered),
            ));
        }
        self.gets.retain(|_, gets| {
            gets.retain(|g| !g.reply.is_closed());
            !gets.is_empty()
        });
    }

    /// The connection is lost: answers to requests sent on it will not come.
    pub(crate) fn on_disconnected(&mut self) {
        self.connected = false;
        for get in self.gets.values_mut().flatten() {
            get.sent = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn actions(out: &[ClientFrame]) -> Vec<String> {
        out.iter()
            .map(|f| match f {
                ClientFrame::Presence {
                    action, instance, ..
                } => format!("{action:?}:{}", instance.as_deref().unwrap_or("")),
                ClientFrame::PresenceGet { session } => format!("get:{session}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn what_was_entered_is_entered_again_on_each_connection() {
        let mut p = Presences::default();
        let mut out = Vec::new();
        p.enter(
            "s".into(),
            "tab".into(),
            Role::Agent,
            json!({"a":1}),
            &mut out,
        );
        assert!(out.is_empty(), "nothing is sent while disconnected");
        p.on_connected(&mut out);
        assert_eq!(actions(&out), vec!["Enter:tab"]);
        out.clear();
        assert!(p.update("s".into(), "tab".into(), json!({"a":2}), &mut out));
        assert!(!p.update("s".into(), "other".into(), json!(null), &mut out));
        let ClientFrame::Presence { role, data, .. } = &out[0] else {
            panic!("{out:?}");
        };
        assert_eq!((role, data), (&Some(Role::Agent), &json!({"a":2})));
        p.on_disconnected();
        out.clear();
        p.on_connected(&mut out);
        let ClientFrame::Presence { data, .. } = &out[0] else {
            panic!("{out:?}");
        };
        assert_eq!(data, &json!({"a":2}), "entered again with the latest data");
    }

    #[test]
    fn a_leave_while_away_is_said_on_the_next_connection() {
        let mut p = Presences::default();
        let mut out = Vec::new();
        p.on_connected(&mut out);
        p.enter("s".into(), "tab".into(), Role::User, json!(null), &mut out);
        p.on_disconnected();
        out.clear();
        p.leave("s".into(), "tab".into(), &mut out);
        assert!(out.is_empty());
        p.on_connected(&mut out);
        assert_eq!(actions(&out), vec!["Leave:tab"]);
    }

    #[test]
    fn gets_wait_for_live_and_are_answered_oldest_first_and_asked_again_after_a_drop() {
        let mut p = Presences::default();
        let mut out = Vec::new();
        p.on_connected(&mut out);
        let (first, mut first_rx) = oneshot::channel();
        let (second, mut second_rx) = oneshot::channel();
        p.get("s".into(), first);
        p.flush(|_| true, &mut out);
        assert!(out.is_empty(), "held back while the attach awaits live");
        // A snapshot before any get was sent answers nothing.
        p.on_snapshot("s", Vec::new());
        p.flush(|_| false, &mut out);
        assert_eq!(actions(&out), vec!["get:s"]);
        p.get("s".into(), second);
        p.on_disconnected();
        out.clear();
        p.on_connected(&mut out);
        p.flush(|_| false, &mut out);
        assert_eq!(actions(&out), vec!["get:s", "get:s"], "both asked again");
        p.on_snapshot("s", Vec::new());
        assert_eq!(first_rx.try_recv().ok(), Some(Vec::new()));
        assert!(second_rx.try_recv().is_err());
    }
}
