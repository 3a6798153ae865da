//! A session's messages accumulated on the client: the same fold the server uses, applied to
//! the events a subscription delivers, so the result equals the server's materialized view.

use std::collections::BTreeMap;

use mooring_core::session::{fold, fold_target};
use mooring_protocol::session::{Event, MessageView};

/// Messages folded from delivered events, keyed by the serial of their `message.create`.
///
/// Deleted messages are kept (so a later event about them is refused as the server refuses
/// it) but not listed by [`Accumulator::messages`].
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    messages: BTreeMap<u64, MessageView>,
}

/// What [`Accumulator::apply`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The event changed a message.
    Folded,
    /// The event touches no message (`action: "event"`).
    NotAMessage,
    /// The message already includes this event (its `version` is at or past the serial).
    AlreadyFolded,
    /// The event could not be folded (for example an append to a message created before a
    /// `rewind` window); the messages are unchanged.
    Unfoldable,
}

impl Accumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds `event` into the messages.
    ///
    /// An event with a `version` is a whole message from a materialized view and replaces
    /// whatever is held for that serial.
    pub fn apply(&mut self, event: &Event) -> Applied {
        if let Some(version) = event.version {
            return match fold(None, event) {
                Ok(Some(mut view)) => {
                    view.version = version;
                    self.messages.insert(view.serial, view);
                    Applied::Folded
                }
                Ok(None) => Applied::NotAMessage,
                Err(_) => Applied::Unfoldable,
            };
        }
        let target = fold_target(event);
        let current = self.messages.get(&target);
        if current.is_some_and(|m| m.version >= event.serial) {
            return Applied::AlreadyFolded;
        }
        match fold(current, event) {
            Ok(Some(view)) => {
                self.messages.insert(target, view);
                Applied::Folded
            }
            Ok(None) => Applied::NotAMessage,
            Err(error) => {
                tracing::debug!(serial = event.serial, ?error, "event not folded");
                Applied::Unfoldable
            }
        }
    }

    /// Forgets everything: a materialized view follows.
    pub fn clear(&mut self) {
        self.messages.clear();
    }

    /// The live (not deleted) messages in serial order.
    pub fn messages(&self) -> Vec<MessageView> {
        self.messages
            .values()
            .filter(|m| !m.deleted)
            .cloned()
            .collect()
    }

    /// The message created at `serial`, unless it was deleted.
    pub fn message(&self, serial: u64) -> Option<&MessageView> {
        self.messages.get(&serial).filter(|m| !m.deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_protocol::session::{Action, Extras};

    fn event(serial: u64, action: Action, reference: Option<u64>, data: &str) -> Event {
        Event {
            serial,
            action,
            id: None,
            name: Some("response".into()),
            reference,
            client_id: Some("agent".into()),
            data: data.into(),
            extras: Extras::new(),
            ts: 1000 + serial,
            version: None,
        }
    }

    /// The server's own fold over the whole log: what `store.snapshot` would list.
    fn server_view(log: &[Event]) -> Vec<MessageView> {
        let mut views: BTreeMap<u64, MessageView> = BTreeMap::new();
        for e in log {
            let target = fold_target(e);
            if let Ok(Some(v)) = fold(views.get(&target), e) {
                views.insert(target, v);
            }
        }
        views.into_values().filter(|v| !v.deleted).collect()
    }

    fn log() -> Vec<Event> {
        vec![
            event(1, Action::MessageCreate, None, "Why?"),
            event(2, Action::MessageCreate, None, ""),
            event(3, Action::MessageAppend, Some(2), "Rayleigh"),
            event(4, Action::Event, None, "tool-call"),
            event(5, Action::MessageAppend, Some(2), " scattering"),
            event(6, Action::MessageCreate, None, "oops"),
            event(7, Action::MessageDelete, Some(6), ""),
            event(8, Action::MessageUpdate, Some(1), "Why is the sky blue?"),
        ]
    }

    #[test]
    fn folding_the_log_equals_the_server_view() {
        let mut acc = Accumulator::new();
        for e in log() {
            acc.apply(&e);
        }
        assert_eq!(acc.messages(), server_view(&log()));
        assert_eq!(
            acc.message(2).map(|m| m.data.clone()),
            Some("Rayleigh scattering".into())
        );
        assert_eq!(acc.message(6), None);
    }

    #[test]
    fn a_view_then_live_appends_equals_the_server_view() {
        let log = log();
        let (history, live) = log.split_at(4);
        let mut acc = Accumulator::new();
        for message in server_view(history) {
            assert_eq!(acc.apply(&message.as_event()), Applied::Folded);
        }
        for e in live {
            acc.apply(e);
        }
        assert_eq!(acc.messages(), server_view(&log));
    }

    #[test]
    fn events_already_in_a_message_are_not_folded_twice() {
        let log = log();
        let mut acc = Accumulator::new();
        for message in server_view(&log[..5]) {
            acc.apply(&message.as_event());
        }
        // Serial 5 was folded into message 2 by the view; seeing it again changes nothing.
        assert_eq!(acc.apply(&log[4]), Applied::AlreadyFolded);
        assert_eq!(acc.apply(&log[2]), Applied::AlreadyFolded);
        assert_eq!(acc.messages(), server_view(&log[..5]));
    }

    #[test]
    fn unfoldable_events_leave_the_messages_alone() {
        let mut acc = Accumulator::new();
        // A rewind window that starts after the message's create.
        assert_eq!(
            acc.apply(&event(3, Action::MessageAppend, Some(2), "x")),
            Applied::Unfoldable
        );
        assert_eq!(acc.apply(&log()[3]), Applied::NotAMessage);
        assert!(acc.messages().is_empty());
    }

    #[test]
    fn clear_forgets_everything() {
        let mut acc = Accumulator::new();
        acc.apply(&log()[0]);
        acc.clear();
        assert!(acc.messages().is_empty());
    }
}
