//! A subscription: the items of one attached session, in order, and the messages and members
//! folded from them so far.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use mooring_protocol::presence::{Member, PresenceAction};
use mooring_protocol::session::{Event, MessageView};
use mooring_protocol::Position;
use tokio::sync::{mpsc, oneshot};

use crate::accumulate::Accumulator;
use crate::cursor::ResetReason;
use crate::error::ServerError;
use crate::task::Command;

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionItem {
    /// An event, each serial exactly once and in order (a materialized view's whole messages
    /// arrive as `message.create` events with a `version`).
    Event(Event),
    /// Catch-up is complete up to `serial`; what follows is live. Sent again after each
    /// resume. The session's members start over from none here: a [`SessionItem::Members`]
    /// follows at once if there are any.
    Live { serial: u64 },
    /// Every member of the session, right after `Live` (only when there are any): replaces
    /// the list. Presence is not part of the log; it is as of the attach.
    Members(Vec<Member>),
    /// A member entered, updated (or came back within the grace) or left.
    Presence {
        action: PresenceAction,
        member: Member,
    },
    /// Drop everything held for this session: the materialized view follows. The
    /// subscription's own [`messages`](Subscription::messages) are already cleared.
    Reset(ResetReason),
    /// The last item: the subscription is over and will not resume.
    Ended(EndReason),
}

/// Why a subscription ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The server detached the session and attaching again will not help (for example
    /// `session_closed`).
    Detached(ServerError),
    /// The client was closed.
    ClientClosed,
    /// The client gave up reconnecting, or the server refused it for good.
    Disconnected,
}

/// What the connection task sends a subscription: an item and the resume position after it,
/// when trusted.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) item: SessionItem,
    pub(crate) position: Option<Position>,
}

/// The items of one attached session: a [`Stream`] of [`SessionItem`]s that continues across
/// reconnects with no gap and no duplicate, plus the messages folded from them.
///
/// Dropping it detaches the session.
#[derive(Debug)]
pub struct Subscription {
    session: String,
    items: mpsc::Receiver<Delivery>,
    end: Option<oneshot::Receiver<EndReason>>,
    commands: mpsc::Sender<Command>,
    messages: Accumulator,
    members: BTreeMap<(String, String), Member>,
    position: Option<Position>,
    ended: bool,
}

impl Subscription {
    pub(crate) fn new(
        session: String,
        items: mpsc::Receiver<Delivery>,
        end: oneshot::Receiver<EndReason>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            session,
            items,
            end: Some(end),
            commands,
            messages: Accumulator::new(),
            members: BTreeMap::new(),
            position: None,
            ended: false,
        }
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    /// The next item; `None` after [`SessionItem::Ended`].
    pub async fn next(&mut self) -> Option<SessionItem> {
        futures::StreamExt::next(self).await
    }

    /// The session's live messages folded from every item yielded so far, in serial order:
    /// equal to the server's materialized view as of the last event yielded.
    pub fn messages(&self) -> Vec<MessageView> {
        self.messages.messages()
    }

    /// The message created at `serial`, as folded so far.
    pub fn message(&self, serial: u64) -> Option<&MessageView> {
        self.messages.message(serial)
    }

    /// The session's members as of the last item yielded (the snapshot after `Live`, then
    /// every change), ordered by client id and instance.
    pub fn members(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    /// Where this subscription stands once everything yielded so far forms a prefix of the
    /// log: attaching from here (even from another process) continues with no gap and no
    /// duplicate. `None` while a materialized view is arriving.
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    fn observe(&mut self, delivery: Delivery) -> SessionItem {
        match &delivery.item {
            SessionItem::Event(event) => {
                self.messages.apply(event);
            }
            SessionItem::Reset(_) => self.messages.clear(),
            SessionItem::Live { .. } => self.members.clear(),
            SessionItem::Members(members) => {
                self.members = members
                    .iter()
                    .map(|m| ((m.client_id.clone(), m.instance.clone()), m.clone()))
                    .collect();
            }
            SessionItem::Presence { action, member } => {
                let key = (member.client_id.clone(), member.instance.clone());
                match action {
                    PresenceAction::Leave => {
                        self.members.remove(&key);
                    }
                    PresenceAction::Enter | PresenceAction::Update => {
                        self.members.insert(key, member.clone());
                    }
                }
            }
            SessionItem::Ended(_) => {}
        }
        if delivery.position.is_some() {
            self.position = delivery.position;
        }
        delivery.item
    }
}

impl Stream for Subscription {
    type Item = SessionItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SessionItem>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.items.poll_recv(cx) {
            Poll::Ready(Some(delivery)) => Poll::Ready(Some(self.observe(delivery))),
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // The task sends the reason before it lets go of the items, so it is ready.
                let reason = match self.end.as_mut() {
                    Some(end) => match Pin::new(end).poll(cx) {
                        Poll::Ready(Ok(reason)) => reason,
                        Poll::Ready(Err(_)) | Poll::Pending => EndReason::ClientClosed,
                    },
                    None => EndReason::ClientClosed,
                };
                self.end = None;
                self.ended = true;
                Poll::Ready(Some(SessionItem::Ended(reason)))
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.ended {
            // Closed first, so the task sees the subscriber gone when the command arrives.
            self.items.close();
            // Best effort: if the queue is full the task notices the closed queue later.
            let _ = self.commands.try_send(Command::Detach {
                session: std::mem::take(&mut self.session),
            });
        }
    }
}
