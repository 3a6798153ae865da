//! Rollup: folding appends that arrive within a window into one log event.
//!
//! The pending list keeps arrival order. A mergeable append (one `message.append` without an
//! `id`) joins the latest pending append of the same message from the same client, unless some
//! other request was queued after that append: then order would change, so it starts a new entry.
//! Every entry keeps the replies of the requests it holds, so each is acknowledged with the serial
//! of the event that carried it.

use mooring_core::session::{PublishError, PublishGroup, PublishOutcome};
use mooring_protocol::session::{Action, NewEvent};
use tokio::sync::oneshot;

/// Where a request's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<PublishOutcome, PublishError>>;

/// A request waiting for the next flush.
#[derive(Debug)]
enum Pending {
    /// Appends to one message, folded into one event.
    Merged {
        client_id: Option<String>,
        reference: u64,
        text: String,
        replies: Vec<Reply>,
    },
    /// A request written as it came.
    Group { group: PublishGroup, reply: Reply },
}

/// Requests waiting to be written, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Rollup {
    pending: Vec<Pending>,
}

/// A batch ready for the store, and where each group's outcome goes.
#[derive(Debug)]
pub(crate) struct Flush {
    pub(crate) groups: Vec<PublishGroup>,
    pub(crate) replies: Vec<Vec<Reply>>,
}

/// The text of a request that can be merged, if it can.
fn mergeable(group: &PublishGroup) -> Option<(u64, &str)> {
    match group.events.as_slice() {
        [NewEvent {
            id: None,
            action: Action::MessageAppend,
            name: None,
            reference: Some(reference),
            data: serde_json::Value::String(text),
            extras,
        }] if extras.is_empty() => Some((*reference, text.as_str())),
        _ => None,
    }
}

impl Rollup {
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queues a request. Returns whether it must be written without waiting for the window
    /// (it is not an append, so it flushes the appends before it).
    pub(crate) fn push(&mut self, group: PublishGroup, reply: Reply, merge: bool) -> bool {
        let Some((reference, text)) = mergeable(&group).filter(|_| merge) else {
            self.pending.push(Pending::Group { group, reply });
            return true;
        };
        for entry in self.pending.iter_mut().rev() {
            match entry {
                Pending::Merged {
                    client_id,
                    reference: r,
                    text: acc,
                    replies,
                } if *r == reference && *client_id == group.client_id => {
                    acc.push_str(text);
                    replies.push(reply);
                    return false;
                }
                Pending::Merged { .. } => continue,
                Pending::Group { .. } => break,
            }
        }
        self.pending.push(Pending::Merged {
            client_id: group.client_id.clone(),
            reference,
            text: text.to_owned(),
            replies: vec![reply],
        });
        false
    }

    /// Takes everything pending, as groups for one store call.
    pub(crate) fn take(&mut self) -> Flush {
        let mut flush = Flush {
            groups: Vec::with_capacity(self.pending.len()),
            replies: Vec::with_capacity(self.pending.len()),
        };
        for entry in self.pending.drain(..) {
            match entry {
                Pending::Merged {
                    client_id,
                    reference,
                    text,
                    replies,
                } => {
                    flush.groups.push(PublishGroup {
                        client_id,
                        events: vec![NewEvent {
                            id: None,
                            action: Action::MessageAppend,
                            name: None,
                            reference: Some(reference),
                            data: text.into(),
                            extras: Default::default(),
                        }],
                    });
                    flush.replies.push(replies);
                }
                Pending::Group { group, reply } => {
                    flush.groups.push(group);
                    flush.replies.push(vec![reply]);
                }
            }
        }
        flush
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(client: &str, reference: u64, text: &str) -> PublishGroup {
        PublishGroup {
            client_id: Some(client.into()),
            events: vec![NewEvent {
                id: None,
                action: Action::MessageAppend,
                name: None,
                reference: Some(reference),
                data: text.into(),
                extras: Default::default(),
            }],
        }
    }

    fn create(client: &str) -> PublishGroup {
        PublishGroup {
            client_id: Some(client.into()),
            events: vec![NewEvent {
                id: None,
                action: Action::MessageCreate,
                name: None,
                reference: None,
                data: "".into(),
                extras: Default::default(),
            }],
        }
    }

    fn reply() -> Reply {
        oneshot::channel().0
    }

    fn texts(flush: &Flush) -> Vec<String> {
        flush
            .groups
            .iter()
            .map(|g| match g.events[0].data.as_str() {
                Some(t) => format!("{}:{t}", g.events[0].reference.unwrap_or(0)),
                None => "other".into(),
            })
            .collect()
    }

    #[test]
    fn appends_to_one_message_merge_in_order() {
        let mut r = Rollup::default();
        assert!(!r.push(append("a", 1, "He"), reply(), true));
        assert!(!r.push(append("a", 2, "x"), reply(), true));
        assert!(!r.push(append("a", 1, "llo"), reply(), true));
        let flush = r.take();
        assert_eq!(texts(&flush), ["1:Hello", "2:x"]);
        assert_eq!(flush.replies[0].len(), 2);
        assert!(r.is_empty());
    }

    #[test]
    fn another_request_is_a_barrier_and_flushes_at_once() {
        let mut r = Rollup::default();
        r.push(append("a", 1, "a"), reply(), true);
        assert!(r.push(create("a"), reply(), true));
        r.push(append("a", 1, "b"), reply(), true);
        assert_eq!(texts(&r.take()), ["1:a", "0:", "1:b"]);
    }

    #[test]
    fn different_clients_and_ids_never_merge() {
        let mut r = Rollup::default();
        r.push(append("a", 1, "a"), reply(), true);
        r.push(append("b", 1, "b"), reply(), true);
        let mut with_id = append("a", 1, "c");
        with_id.events[0].id = Some("k".into());
        assert!(r.push(with_id, reply(), true));
        assert_eq!(r.take().groups.len(), 3);
    }

    #[test]
    fn without_rollup_nothing_merges() {
        let mut r = Rollup::default();
        assert!(r.push(append("a", 1, "a"), reply(), false));
        assert!(r.push(append("a", 1, "b"), reply(), false));
        assert_eq!(r.take().groups.len(), 2);
    }
}
