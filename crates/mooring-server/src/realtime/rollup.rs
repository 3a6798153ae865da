//! Rollup: folding appends that arrive within a window into one log event.
//!
//! The pending list keeps arrival order. A mergeable request (one text `message.append`) joins
//! the latest pending append of the same message from the same client, unless some other request
//! was queued after that append: then order would change, so it starts a new entry. A merged
//! entry goes to the store as one coalescing group: the store drops retried ids, folds the rest
//! into one event, and remembers every id for it. Each request keeps its own reply and result.

use mooring_core::session::{PublishError, PublishGroup, PublishOutcome};
use mooring_protocol::session::{Action, NewEvent};
use tokio::sync::oneshot;

/// Where a request's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<PublishOutcome, PublishError>>;

/// A reply and which of its group's results are its own.
pub(crate) type Waiter = (Reply, std::ops::Range<usize>);

/// A request waiting for the next flush.
#[derive(Debug)]
enum Pending {
    /// Appends to one message, folded into one event.
    Merged {
        client_id: Option<String>,
        reference: u64,
        appends: Vec<NewEvent>,
        replies: Vec<Reply>,
    },
    /// A request written as it came, with the connection it came from (runs bind to it).
    Group {
        group: PublishGroup,
        reply: Reply,
        connection: Option<String>,
    },
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
    pub(crate) waiters: Vec<Vec<Waiter>>,
    /// The connection each group came from, if known.
    pub(crate) connections: Vec<Option<String>>,
}

/// The message a request appends text to, if it can be merged.
fn mergeable(group: &PublishGroup) -> Option<u64> {
    match group.events.as_slice() {
        [NewEvent {
            action: Action::MessageAppend,
            name: None,
            reference: Some(reference),
            data: serde_json::Value::String(_),
            extras,
            ..
        }] if extras.is_empty() => Some(*reference),
        _ => None,
    }
}

impl Rollup {
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queues a request. Returns whether it must be written without waiting for the window
    /// (it is not an append, so it flushes the appends before it).
    pub(crate) fn push(
        &mut self,
        group: PublishGroup,
        reply: Reply,
        merge: bool,
        connection: Option<String>,
    ) -> bool {
        let Some(reference) = mergeable(&group).filter(|_| merge) else {
            self.pending.push(Pending::Group {
                group,
                reply,
                connection,
            });
            return true;
        };
        let PublishGroup {
            client_id,
            mut events,
            ..
        } = group;
        for entry in self.pending.iter_mut().rev() {
            match entry {
                Pending::Merged {
                    client_id: c,
                    reference: r,
                    appends,
                    replies,
                } if *r == reference && *c == client_id => {
                    appends.append(&mut events);
                    replies.push(reply);
                    return false;
                }
                Pending::Merged { .. } => continue,
                Pending::Group { .. } => break,
            }
        }
        self.pending.push(Pending::Merged {
            client_id,
            reference,
            appends: events,
            replies: vec![reply],
        });
        false
    }

    /// Takes everything pending, as groups for one store call.
    pub(crate) fn take(&mut self) -> Flush {
        let mut flush = Flush {
            groups: Vec::with_capacity(self.pending.len()),
            waiters: Vec::with_capacity(self.pending.len()),
            connections: Vec::with_capacity(self.pending.len()),
        };
        for entry in self.pending.drain(..) {
            match entry {
                Pending::Merged {
                    client_id,
                    appends,
                    replies,
                    ..
                } => {
                    // One append per request, so request i owns result i.
                    let waiters = replies.into_iter().enumerate().map(|(i, r)| (r, i..i + 1));
                    flush.waiters.push(waiters.collect());
                    flush.groups.push(PublishGroup {
                        client_id,
                        events: appends,
                        coalesce: true,
                    });
                    flush.connections.push(None);
                }
                Pending::Group {
                    group,
                    reply,
                    connection,
                } => {
                    let all = 0..group.events.len();
                    flush.groups.push(group);
                    flush.waiters.push(vec![(reply, all)]);
                    flush.connections.push(connection);
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
        PublishGroup::new(
            Some(client.into()),
            vec![NewEvent {
                id: None,
                action: Action::MessageAppend,
                name: None,
                reference: Some(reference),
                data: text.into(),
                extras: Default::default(),
            }],
        )
    }

    fn create(client: &str) -> PublishGroup {
        PublishGroup::new(
            Some(client.into()),
            vec![NewEvent {
                id: None,
                action: Action::MessageCreate,
                name: None,
                reference: None,
                data: "".into(),
                extras: Default::default(),
            }],
        )
    }

    fn reply() -> Reply {
        oneshot::channel().0
    }

    fn texts(flush: &Flush) -> Vec<String> {
        flush
            .groups
            .iter()
            .map(|g| {
                let text: String = g.events.iter().filter_map(|e| e.data.as_str()).collect();
                format!("{}:{text}", g.events[0].reference.unwrap_or(0))
            })
            .collect()
    }

    #[test]
    fn appends_to_one_message_merge_in_order() {
        let mut r = Rollup::default();
        assert!(!r.push(append("a", 1, "He"), reply(), true, None));
        assert!(!r.push(append("a", 2, "x"), reply(), true, None));
        assert!(!r.push(append("a", 1, "llo"), reply(), true, None));
        let flush = r.take();
        assert_eq!(texts(&flush), ["1:Hello", "2:x"]);
        assert!(flush.groups[0].coalesce);
        let ranges: Vec<_> = flush.waiters[0].iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(ranges, [0..1, 1..2]);
        assert!(r.is_empty());
    }

    #[test]
    fn another_request_is_a_barrier_and_flushes_at_once() {
        let mut r = Rollup::default();
        r.push(append("a", 1, "a"), reply(), true, None);
        assert!(r.push(create("a"), reply(), true, None));
        r.push(append("a", 1, "b"), reply(), true, None);
        assert_eq!(texts(&r.take()), ["1:a", "0:", "1:b"]);
    }

    #[test]
    fn different_clients_never_merge_but_ids_do() {
        let mut r = Rollup::default();
        r.push(append("a", 1, "a"), reply(), true, None);
        r.push(append("b", 1, "b"), reply(), true, None);
        let mut with_id = append("a", 1, "c");
        with_id.events[0].id = Some("k".into());
        assert!(!r.push(with_id, reply(), true, None));
        let flush = r.take();
        assert_eq!(texts(&flush), ["1:ac", "1:b"]);
        assert_eq!(flush.groups[0].events[1].id.as_deref(), Some("k"));
    }

    #[test]
    fn without_rollup_nothing_merges() {
        let mut r = Rollup::default();
        assert!(r.push(append("a", 1, "a"), reply(), false, None));
        assert!(r.push(append("a", 1, "b"), reply(), false, None));
        assert_eq!(r.take().groups.len(), 2);
    }
}
