//! The sessions a client is attached to, as the connection task sees them: each one's cursor,
//! its subscriber's queue, and whether an attach is in flight, paused or still to be sent.
//!
//! A subscriber that falls behind never blocks the socket: its session is detached, and
//! attached again from its cursor once the subscriber has read half its buffer. The server answers frames in
//! the order it receives them, so after the client sends `detach`, everything about that
//! session up to the matching `detached` belongs to the old attachment and is ignored.
//!
//! An attachment may also be followed by this client's runs, which hear of their cancels and
//! steers from its events. A session followed only by runs is attached without a subscriber
//! (from its end: nothing is replayed), and stays attached while either remains.
//!
//! Presence frames reach the subscriber only after `live`: the server sends an attachment's
//! member snapshot right behind `live` (when there are members), then changes as they happen.

use std::collections::HashMap;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use mooring_protocol::presence::{Member, PresenceAction};
use mooring_protocol::realtime::{AttachFrom, AttachMode, AttachPoint, ClientFrame};
use mooring_protocol::session::Event;
use tokio::sync::{mpsc, oneshot};

use crate::cursor::{Cursor, Verdict};
use crate::error::{AttachError, AttachErrorKind, ServerError};
use crate::subscription::{Delivery, EndReason, SessionItem};

pub(crate) type AttachReply = oneshot::Sender<Result<(), AttachError>>;

/// A new subscription's request, as the task receives it.
#[derive(Debug)]
pub(crate) struct AttachRequest {
    pub(crate) session: String,
    pub(crate) from: AttachFrom,
    pub(crate) items: mpsc::Sender<Delivery>,
    pub(crate) end: oneshot::Sender<EndReason>,
    pub(crate) reply: AttachReply,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// An attach is to be sent on the next connection.
    Unsent,
    /// An attach was sent on this connection.
    Sent,
    /// The subscriber's queue is full: detached until it has room.
    Paused,
}

#[derive(Debug)]
struct Attachment {
    cursor: Cursor,
    /// The subscriber's queue; `None` for a session only runs follow.
    items: Option<mpsc::Sender<Delivery>>,
    end: Option<oneshot::Sender<EndReason>>,
    /// The first `attached` (or refusal) answers the caller of `attach`.
    reply: Option<AttachReply>,
    state: State,
    /// Runs of this client that hear of their controls through this attachment.
    followers: usize,
    /// Runs waiting for the server to have registered the attachment (its `attached`)
    /// before they publish their start.
    waiters: Vec<AttachReply>,
    /// `live` was delivered on the current attach.
    live: bool,
    /// Nothing else about the session arrived since `live`: a snapshot now is the attach's.
    snapshot_open: bool,
}

impl Attachment {
    fn new(from: AttachFrom, items: Option<mpsc::Sender<Delivery>>) -> Self {
        Self {
            cursor: Cursor::new(from),
            items,
            end: None,
            reply: None,
            state: State::Unsent,
            followers: 0,
            waiters: Vec::new(),
            live: false,
            snapshot_open: false,
        }
    }

    /// Whether a subscriber still holds the subscription.
    fn has_subscriber(&self) -> bool {
        self.items.as_ref().is_some_and(|i| !i.is_closed())
    }
}

/// Every session the client is attached to.
#[derive(Default)]
pub(crate) struct Attachments {
    sessions: HashMap<String, Attachment>,
    /// `detached` answers still owed for detaches sent on this connection.
    detaches: HashMap<String, u32>,
    /// Resolve (with the session's name) when a paused subscriber has room again.
    rooms: FuturesUnordered<BoxFuture<'static, String>>,
    connected: bool,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments")
            .field("sessions", &self.sessions)
            .field("detaches", &self.detaches)
            .field("paused", &self.rooms.len())
            .field("connected", &self.connected)
            .finish()
    }
}

impl Attachments {
    pub(crate) fn add(&mut self, request: AttachRequest, out: &mut Vec<ClientFrame>) {
        let AttachRequest {
            session,
            from,
            items,
            end,
            reply,
        } = request;
        if let Some(existing) = self.sessions.get(&session) {
            if existing.has_subscriber() {
                let _ = reply.send(Err(AttachError::new(
                    AttachErrorKind::AlreadyAttached,
                    format!("this client already has a subscription to {session:?}"),
                )));
                return;
            }
            if existing.followers > 0 {
                // Its cursor is where the runs are; another start could skip their controls.
                let _ = reply.send(Err(AttachError::new(
                    AttachErrorKind::AlreadyAttached,
                    format!(
                        "runs of this client follow {session:?}; attach before starting them, \
                         or once they have ended"
                    ),
                )));
                return;
            }
            self.forget(&session, out);
        }
        let mut attachment = Attachment {
            end: Some(end),
            reply: Some(reply),
            ..Attachment::new(from, Some(items))
        };
        if self.connected {
            out.push(attach_frame(&session, &mut attachment));
        }
        self.sessions.insert(session, attachment);
    }

    /// The subscriber let go of its subscription.
    pub(crate) fn detach(&mut self, session: &str, out: &mut Vec<ClientFrame>) {
        if self
            .sessions
            .get(session)
            .is_some_and(|a| a.items.as_ref().is_some_and(mpsc::Sender::is_closed))
        {
            self.subscriber_gone(session, out);
        }
    }

    /// The subscriber is gone: the session stays attached for the runs that follow it, and
    /// is detached otherwise.
    fn subscriber_gone(&mut self, session: &str, out: &mut Vec<ClientFrame>) {
        let connected = self.connected;
        match self.sessions.get_mut(session) {
            Some(a) if a.followers > 0 => {
                a.items = None;
                a.end = None;
                a.reply = None;
                if a.state == State::Paused {
                    a.state = State::Unsent;
                    if connected {
                        out.push(attach_frame(session, a));
                    }
                }
            }
            Some(_) => self.forget(session, out),
            None => {}
        }
    }

    /// A run follows `session`'s events: attach it (without subscriber) if the client is not
    /// attached yet. `ready` is answered once the server has registered the attachment, so
    /// every event published after that reaches the run.
    pub(crate) fn follow(&mut self, session: &str, ready: AttachReply, out: &mut Vec<ClientFrame>) {
        let connected = self.connected;
        let a = self.sessions.entry(session.to_owned()).or_insert_with(|| {
            // From the end of the log: the run only needs what comes after its start.
            Attachment::new(AttachFrom::Rewind { rewind: 0 }, None)
        });
        a.followers += 1;
        // A resume from a position (or from the start) replays whatever the run publishes
        // meanwhile; an attach from the end must be registered first.
        let replays = matches!(
            a.cursor.attach_from(),
            AttachFrom::Position(_) | AttachFrom::Named(AttachPoint::Start)
        );
        if a.cursor.is_requested() && !replays {
            a.waiters.push(ready);
        } else {
            let _ = ready.send(Ok(()));
        }
        if a.state == State::Unsent && connected {
            out.push(attach_frame(session, a));
        }
    }

    /// A run no longer follows `session`.
    pub(crate) fn unfollow(&mut self, session: &str, out: &mut Vec<ClientFrame>) {
        let Some(a) = self.sessions.get_mut(session) else {
            return;
        };
        a.followers = a.followers.saturating_sub(1);
        if a.followers == 0 && !a.has_subscriber() {
            self.forget(session, out);
        }
    }

    /// Whether `session`'s attach is in flight and its `live` has not arrived.
    pub(crate) fn awaiting_live(&self, session: &str) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|a| a.state == State::Sent && !a.live)
    }

    /// Drops a session whose subscriber is gone, detaching it on the server.
    fn forget(&mut self, session: &str, out: &mut Vec<ClientFrame>) {
        if let Some(a) = self.sessions.remove(session) {
            if a.state == State::Sent && self.connected {
                self.send_detach(session, out);
            }
        }
    }

    fn send_detach(&mut self, session: &str, out: &mut Vec<ClientFrame>) {
        *self.detaches.entry(session.to_owned()).or_default() += 1;
        out.push(ClientFrame::Detach {
            session: session.to_owned(),
        });
    }

    /// A new connection: every session not paused is attached again from its cursor.
    pub(crate) fn on_connected(&mut self, out: &mut Vec<ClientFrame>) {
        self.connected = true;
        for (session, a) in &mut self.sessions {
            if a.state == State::Unsent {
                out.push(attach_frame(session, a));
            }
        }
    }

    pub(crate) fn on_disconnected(&mut self) {
        self.connected = false;
        self.detaches.clear();
        for a in self.sessions.values_mut() {
            a.live = false;
            if a.state == State::Sent {
                a.cursor.interrupt();
                a.state = State::Unsent;
            }
        }
    }

    /// The attachment of `session` that frames are about, unless they belong to an old one.
    fn current(&mut self, session: &str) -> Option<&mut Attachment> {
        if self.detaches.get(session).is_some_and(|n| *n > 0) {
            return None;
        }
        self.sessions
            .get_mut(session)
            .filter(|a| a.state == State::Sent)
    }

    pub(crate) fn on_attached(
        &mut self,
        session: &str,
        epoch: u64,
        mode: AttachMode,
        high_water: u64,
        out: &mut Vec<ClientFrame>,
    ) {
        let Some(a) = self.current(session) else {
            return;
        };
        let reset = a.cursor.on_attached(epoch, mode, high_water);
        for ready in a.waiters.drain(..) {
            let _ = ready.send(Ok(()));
        }
        if let Some(reply) = a.reply.take() {
            if reply.send(Ok(())).is_err() {
                self.subscriber_gone(session, out);
                return;
            }
        }
        if let Some(reason) = reset {
            let before = a.cursor.clone();
            a.cursor.reset_delivered();
            self.deliver(session, before, SessionItem::Reset(reason), out);
        }
    }

    /// An event of `session`; returns whether it is new (each serial is new once), so runs
    /// following the session should hear of it.
    pub(crate) fn on_event(
        &mut self,
        session: &str,
        epoch: u64,
        event: Event,
        out: &mut Vec<ClientFrame>,
    ) -> bool {
        let Some(a) = self.current(session) else {
            return false;
        };
        a.snapshot_open = false;
        let before = a.cursor.clone();
        match a.cursor.on_event(epoch, &event) {
            Verdict::Deliver => {
                self.deliver(session, before, SessionItem::Event(event), out);
                return true;
            }
            Verdict::Duplicate | Verdict::Stale => {
                tracing::trace!(session, serial = event.serial, "event dropped as seen")
            }
            Verdict::Gap => self.reattach_after_gap(session, event.serial, out),
        }
        false
    }

    /// A member of `session` entered, updated or left.
    pub(crate) fn on_presence(
        &mut self,
        session: &str,
        action: PresenceAction,
        member: Member,
        out: &mut Vec<ClientFrame>,
    ) {
        let Some(a) = self.current(session).filter(|a| a.live) else {
            return;
        };
        a.snapshot_open = false;
        let before = a.cursor.clone();
        self.deliver(
            session,
            before,
            SessionItem::Presence { action, member },
            out,
        );
    }

    /// A member snapshot of `session`; returns whether it was the attachment's own (right
    /// behind its `live`), delivered to the subscriber.
    pub(crate) fn on_snapshot(
        &mut self,
        session: &str,
        members: &[Member],
        out: &mut Vec<ClientFrame>,
    ) -> bool {
        let Some(a) = self.current(session).filter(|a| a.live && a.snapshot_open) else {
            return false;
        };
        a.snapshot_open = false;
        let before = a.cursor.clone();
        self.deliver(session, before, SessionItem::Members(members.to_vec()), out);
        true
    }

    pub(crate) fn on_live(&mut self, session: &str, serial: u64, out: &mut Vec<ClientFrame>) {
        let Some(a) = self.current(session) else {
            return;
        };
        let before = a.cursor.clone();
        match a.cursor.on_live(serial) {
            Verdict::Deliver => {
                a.live = true;
                a.snapshot_open = true;
                self.deliver(session, before, SessionItem::Live { serial }, out)
            }
            Verdict::Duplicate | Verdict::Stale => {}
            Verdict::Gap => self.reattach_after_gap(session, serial, out),
        }
    }

    /// The server skipped serials: detach and attach again from the cursor.
    fn reattach_after_gap(&mut self, session: &str, serial: u64, out: &mut Vec<ClientFrame>) {
        tracing::warn!(
            session,
            serial,
            "serials skipped; attaching again from the last seen"
        );
        self.send_detach(session, out);
        if let Some(a) = self.sessions.get_mut(session) {
            a.cursor.interrupt();
            out.push(attach_frame(session, a));
        }
    }

    pub(crate) fn on_detached(
        &mut self,
        session: &str,
        error: Option<ServerError>,
        out: &mut Vec<ClientFrame>,
    ) {
        if let Some(owed) = self.detaches.get_mut(session).filter(|n| **n > 0) {
            *owed -= 1;
            return;
        }
        let Some(a) = self.current(session) else {
            return;
        };
        match error {
            Some(error) if !error.retryable => self.end(session, error),
            retryable => {
                tracing::info!(
                    session,
                    ?retryable,
                    "detached by the server; attaching again"
                );
                a.cursor.interrupt();
                out.push(attach_frame(session, a));
            }
        }
    }

    /// An error about `session` that answers no publish: a refused attach.
    pub(crate) fn on_error(&mut self, session: &str, error: ServerError) {
        let Some(a) = self.current(session) else {
            return;
        };
        if !a.cursor.is_requested() {
            tracing::warn!(session, %error, "error about an attached session");
        } else if a.reply.is_none() && error.retryable {
            // A resumed attach refused for now: try again on the next connection.
            a.state = State::Unsent;
        } else {
            self.end(session, error);
        }
    }

    /// Ends `session`'s subscription (or fails its attach) with `error`.
    fn end(&mut self, session: &str, error: ServerError) {
        let Some(mut a) = self.sessions.remove(session) else {
            return;
        };
        for ready in a.waiters.drain(..) {
            let _ = ready.send(Err(AttachError::server(
                AttachErrorKind::Refused,
                error.clone(),
            )));
        }
        if let Some(reply) = a.reply.take() {
            let _ = reply.send(Err(AttachError::server(AttachErrorKind::Refused, error)));
        } else if let Some(end) = a.end.take() {
            let _ = end.send(EndReason::Detached(error));
        }
    }

    /// Ends every subscription: the client is closing.
    pub(crate) fn end_all(&mut self, reason: &EndReason) {
        for (_, mut a) in self.sessions.drain() {
            for ready in a.waiters.drain(..) {
                let _ = ready.send(Err(AttachError::new(
                    AttachErrorKind::Closed,
                    "the client closed before the session was attached",
                )));
            }
            if let Some(reply) = a.reply.take() {
                let _ = reply.send(Err(AttachError::new(
                    AttachErrorKind::Closed,
                    "the client closed before the session was attached",
                )));
            } else if let Some(end) = a.end.take() {
                let _ = end.send(reason.clone());
            }
        }
    }

    /// Hands `item` to the session's subscriber; if its queue is full, restores the cursor to
    /// `before` and pauses the session.
    fn deliver(
        &mut self,
        session: &str,
        before: Cursor,
        item: SessionItem,
        out: &mut Vec<ClientFrame>,
    ) {
        let Some(a) = self.sessions.get_mut(session) else {
            return;
        };
        let delivery = Delivery {
            item,
            position: a.cursor.position(),
        };
        let sent = match &a.items {
            Some(items) => items.try_send(delivery),
            // Only runs follow the session: they hear of events from the task.
            None => return,
        };
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(session, "subscriber behind; pausing the session");
                a.cursor = before;
                a.cursor.interrupt();
                a.state = State::Paused;
                a.live = false;
                // Resume once half the buffer is free, not at the first free slot, so a
                // subscriber that reads slowly is not detached and attached item by item.
                let Some(items) = a.items.clone() else {
                    return;
                };
                let room = (items.max_capacity() / 2).max(1);
                let name = session.to_owned();
                self.rooms.push(
                    async move {
                        let _ = items.reserve_many(room).await;
                        name
                    }
                    .boxed(),
                );
                if self.connected {
                    self.send_detach(session, out);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.subscriber_gone(session, out),
        }
    }

    /// Whether some paused session waits for its subscriber.
    pub(crate) fn any_paused(&self) -> bool {
        !self.rooms.is_empty()
    }

    /// The next paused session whose subscriber has room (or is gone).
    pub(crate) async fn next_room(&mut self) -> Option<String> {
        self.rooms.next().await
    }

    /// A paused subscriber has room: attach its session again.
    pub(crate) fn on_room(&mut self, session: &str, out: &mut Vec<ClientFrame>) {
        let Some(a) = self.sessions.get_mut(session) else {
            return;
        };
        if !a.has_subscriber() {
            if a.followers > 0 {
                self.subscriber_gone(session, out);
            } else {
                self.sessions.remove(session);
            }
        } else if a.state == State::Paused {
            a.state = State::Unsent;
            if self.connected {
                out.push(attach_frame(session, a));
            }
        }
    }
}

fn attach_frame(session: &str, a: &mut Attachment) -> ClientFrame {
    a.state = State::Sent;
    a.live = false;
    a.snapshot_open = false;
    ClientFrame::Attach {
        session: session.to_owned(),
        from: Some(a.cursor.attach_from()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_protocol::realtime::{AttachPoint, ErrorCode};
    use mooring_protocol::session::{Action, Extras};
    use mooring_protocol::Position;

    struct Sub {
        items: mpsc::Receiver<Delivery>,
        end: oneshot::Receiver<EndReason>,
        reply: oneshot::Receiver<Result<(), AttachError>>,
    }

    impl Sub {
        fn drain(&mut self) -> Vec<SessionItem> {
            std::iter::from_fn(|| self.items.try_recv().ok().map(|d| d.item)).collect()
        }
    }

    fn attach(table: &mut Attachments, from: AttachFrom, buffer: usize) -> (Sub, Vec<ClientFrame>) {
        let (items, items_rx) = mpsc::channel(buffer);
        let (end, end_rx) = oneshot::channel();
        let (reply, reply_rx) = oneshot::channel();
        let mut out = Vec::new();
        let request = AttachRequest {
            session: "s".into(),
            from,
            items,
            end,
            reply,
        };
        table.add(request, &mut out);
        let sub = Sub {
            items: items_rx,
            end: end_rx,
            reply: reply_rx,
        };
        (sub, out)
    }

    fn event(serial: u64) -> Event {
        Event {
            serial,
            action: Action::Event,
            id: None,
            name: None,
            reference: None,
            client_id: None,
            data: serde_json::Value::Null,
            extras: Extras::new(),
            ts: 0,
            version: None,
        }
    }

    fn from_position(serial: u64) -> Option<AttachFrom> {
        Some(AttachFrom::Position(Position { epoch: 0, serial }))
    }

    fn attach_from(frames: &[ClientFrame]) -> Vec<Option<AttachFrom>> {
        frames
            .iter()
            .filter_map(|f| match f {
                ClientFrame::Attach { from, .. } => Some(from.clone()),
                _ => None,
            })
            .collect()
    }

    fn error(code: ErrorCode, retryable: bool) -> ServerError {
        ServerError {
            code,
            message: "m".into(),
            retryable,
        }
    }

    fn connected() -> Attachments {
        let mut table = Attachments::default();
        table.on_connected(&mut Vec::new());
        table
    }

    #[test]
    fn an_attach_waits_for_a_connection_and_resumes_from_the_last_serial() {
        let mut table = Attachments::default();
        let start = AttachFrom::Named(AttachPoint::Start);
        let (mut sub, out) = attach(&mut table, start.clone(), 16);
        assert!(out.is_empty(), "nothing is sent while disconnected");
        let mut out = Vec::new();
        table.on_connected(&mut out);
        assert_eq!(attach_from(&out), vec![Some(start)]);
        table.on_attached("s", 0, AttachMode::Replay, 2, &mut out);
        assert_eq!(sub.reply.try_recv().ok(), Some(Ok(())));
        table.on_event("s", 0, event(1), &mut out);
        table.on_event("s", 0, event(2), &mut out);
        table.on_live("s", 2, &mut out);
        table.on_disconnected();
        let mut out = Vec::new();
        table.on_connected(&mut out);
        assert_eq!(attach_from(&out), vec![from_position(2)]);
        table.on_attached("s", 0, AttachMode::Replay, 3, &mut out);
        table.on_event("s", 0, event(2), &mut out);
        table.on_event("s", 0, event(3), &mut out);
        let serials: Vec<u64> = sub
            .drain()
            .iter()
            .filter_map(|i| match i {
                SessionItem::Event(e) => Some(e.serial),
                _ => None,
            })
            .collect();
        assert_eq!(serials, vec![1, 2, 3]);
    }

    #[test]
    fn a_full_subscriber_pauses_its_session_and_resumes_where_it_stopped() {
        let mut table = connected();
        let (mut sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Start), 2);
        let mut out = Vec::new();
        table.on_attached("s", 0, AttachMode::Replay, 5, &mut out);
        for serial in 1..=3 {
            table.on_event("s", 0, event(serial), &mut out);
        }
        assert_eq!(
            out,
            vec![ClientFrame::Detach {
                session: "s".into()
            }],
            "the third event did not fit: the session is detached"
        );
        assert!(table.any_paused());
        // Frames of the old attachment, up to its `detached`, are ignored.
        out.clear();
        table.on_event("s", 0, event(4), &mut out);
        table.on_detached("s", None, &mut out);
        assert_eq!(sub.drain().len(), 2);
        let room = futures::executor::block_on(table.next_room());
        assert_eq!(room.as_deref(), Some("s"));
        table.on_room("s", &mut out);
        assert_eq!(attach_from(&out), vec![from_position(2)]);
        table.on_attached("s", 0, AttachMode::Replay, 5, &mut out);
        table.on_event("s", 0, event(3), &mut out);
        assert!(matches!(&sub.drain()[..], [SessionItem::Event(e)] if e.serial == 3));
    }

    #[test]
    fn frames_before_the_detached_answer_belong_to_the_old_attachment() {
        let mut table = connected();
        let (mut sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Start), 16);
        let mut out = Vec::new();
        table.on_attached("s", 0, AttachMode::Replay, 9, &mut out);
        table.on_event("s", 0, event(1), &mut out);
        // Serial 2 is skipped: detach and attach again from 1.
        table.on_event("s", 0, event(3), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(attach_from(&out), vec![from_position(1)]);
        table.on_event("s", 0, event(4), &mut out);
        table.on_live("s", 9, &mut out);
        table.on_detached("s", None, &mut out);
        table.on_attached("s", 0, AttachMode::Replay, 9, &mut out);
        table.on_event("s", 0, event(2), &mut out);
        let items = sub.drain();
        let serials: Vec<u64> = items
            .iter()
            .filter_map(|i| match i {
                SessionItem::Event(e) => Some(e.serial),
                _ => None,
            })
            .collect();
        assert_eq!(serials, vec![1, 2]);
    }

    #[test]
    fn a_retryable_detach_attaches_again_and_a_final_one_ends_the_subscription() {
        let mut table = connected();
        let (mut sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Start), 16);
        let mut out = Vec::new();
        table.on_attached("s", 0, AttachMode::Replay, 1, &mut out);
        table.on_event("s", 0, event(1), &mut out);
        let overflow = error(ErrorCode::SeamOverflow, true);
        table.on_detached("s", Some(overflow), &mut out);
        assert_eq!(attach_from(&out), vec![from_position(1)]);
        table.on_attached("s", 0, AttachMode::Replay, 1, &mut out);
        let closed = error(ErrorCode::SessionClosed, false);
        table.on_detached("s", Some(closed.clone()), &mut out);
        assert_eq!(sub.end.try_recv().ok(), Some(EndReason::Detached(closed)));
        assert_eq!(sub.drain().len(), 1);
        assert!(sub.items.try_recv().is_err(), "the queue is closed");
    }

    #[test]
    fn a_refused_attach_answers_its_caller_with_the_code() {
        let mut table = connected();
        let (mut sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Latest), 16);
        table.on_error("s", error(ErrorCode::TooManyAttachments, false));
        let refused = sub.reply.try_recv().ok().and_then(Result::err);
        assert_eq!(
            refused.and_then(|e| e.code()),
            Some(ErrorCode::TooManyAttachments)
        );
    }

    #[test]
    fn a_dropped_subscriber_is_detached_and_its_session_can_be_attached_again() {
        let mut table = connected();
        let (sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Latest), 16);
        let mut out = Vec::new();
        table.on_attached("s", 0, AttachMode::Latest, 0, &mut out);
        drop(sub);
        table.detach("s", &mut out);
        assert_eq!(
            out,
            vec![ClientFrame::Detach {
                session: "s".into()
            }]
        );
        let (mut again, out) = attach(&mut table, AttachFrom::Named(AttachPoint::Latest), 16);
        assert_eq!(out.len(), 1);
        let mut out = Vec::new();
        // The old attachment's `detached` does not end the new one.
        table.on_detached("s", None, &mut out);
        table.on_attached("s", 0, AttachMode::Latest, 0, &mut out);
        assert_eq!(again.reply.try_recv().ok(), Some(Ok(())));
        table.on_live("s", 0, &mut out);
        assert_eq!(again.drain(), vec![SessionItem::Live { serial: 0 }]);
    }

    #[test]
    fn a_view_cut_short_is_reset_and_sent_again() {
        let mut table = connected();
        let (mut sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Latest), 16);
        let mut out = Vec::new();
        table.on_attached("s", 0, AttachMode::Latest, 9, &mut out);
        let mut whole = event(4);
        whole.version = Some(8);
        table.on_event("s", 0, whole.clone(), &mut out);
        table.on_disconnected();
        let mut out = Vec::new();
        table.on_connected(&mut out);
        assert_eq!(
            attach_from(&out),
            vec![Some(AttachFrom::Named(AttachPoint::Latest))]
        );
        table.on_attached("s", 0, AttachMode::Latest, 9, &mut out);
        table.on_event("s", 0, whole.clone(), &mut out);
        assert_eq!(
            sub.drain(),
            vec![
                SessionItem::Event(whole.clone()),
                SessionItem::Reset(crate::ResetReason::ViewInterrupted),
                SessionItem::Event(whole),
            ]
        );
    }

    fn member(client: &str) -> Member {
        Member {
            client_id: client.into(),
            instance: "i".into(),
            connection_id: "c".into(),
            role: mooring_protocol::presence::Role::User,
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_session_only_runs_follow_is_attached_from_its_end_until_they_stop() {
        let mut table = connected();
        let (ready, mut ready_rx) = oneshot::channel();
        let mut out = Vec::new();
        table.follow("s", ready, &mut out);
        assert_eq!(
            attach_from(&out),
            vec![Some(AttachFrom::Rewind { rewind: 0 })]
        );
        assert!(
            ready_rx.try_recv().is_err(),
            "ready once the server registered it"
        );
        table.on_attached("s", 0, AttachMode::Replay, 7, &mut out);
        assert_eq!(ready_rx.try_recv().ok(), Some(Ok(())));
        assert!(
            table.on_event("s", 0, event(8), &mut out),
            "new: runs hear of it"
        );
        assert!(!table.on_event("s", 0, event(8), &mut out), "seen");
        let (second, mut second_rx) = oneshot::channel();
        table.follow("s", second, &mut out);
        assert_eq!(second_rx.try_recv().ok(), Some(Ok(())), "already attached");
        out.clear();
        table.unfollow("s", &mut out);
        assert!(out.is_empty(), "one run still follows");
        table.unfollow("s", &mut out);
        assert_eq!(
            out,
            vec![ClientFrame::Detach {
                session: "s".into()
            }]
        );
    }

    #[test]
    fn a_dropped_subscription_stays_attached_for_the_runs_that_follow_it() {
        let mut table = connected();
        let (sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Start), 16);
        let mut out = Vec::new();
        table.on_attached("s", 0, AttachMode::Replay, 0, &mut out);
        let (ready, _ready_rx) = oneshot::channel();
        table.follow("s", ready, &mut out);
        drop(sub);
        table.detach("s", &mut out);
        assert!(out.is_empty(), "still attached");
        assert!(table.on_event("s", 0, event(1), &mut out));
        let (mut again, frames) = attach(&mut table, AttachFrom::Named(AttachPoint::Latest), 16);
        let refused = again.reply.try_recv().ok().and_then(Result::err);
        assert_eq!(
            refused.map(|e| e.kind()),
            Some(AttachErrorKind::AlreadyAttached),
            "a new start could skip the runs' controls"
        );
        assert!(frames.is_empty());
        table.unfollow("s", &mut out);
        assert_eq!(
            out,
            vec![ClientFrame::Detach {
                session: "s".into()
            }]
        );
    }

    #[test]
    fn presence_reaches_the_subscriber_after_live_and_only_the_snapshot_behind_live_is_its_own() {
        let mut table = connected();
        let (mut sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Latest), 16);
        let mut out = Vec::new();
        table.on_attached("s", 0, AttachMode::Latest, 0, &mut out);
        assert!(table.awaiting_live("s"));
        table.on_presence("s", PresenceAction::Enter, member("early"), &mut out);
        table.on_live("s", 0, &mut out);
        assert!(!table.awaiting_live("s"));
        assert!(table.on_snapshot("s", &[member("a")], &mut out));
        assert!(
            !table.on_snapshot("s", &[member("b")], &mut out),
            "an answer to a get"
        );
        table.on_presence("s", PresenceAction::Leave, member("a"), &mut out);
        assert_eq!(
            sub.drain(),
            vec![
                SessionItem::Live { serial: 0 },
                SessionItem::Members(vec![member("a")]),
                SessionItem::Presence {
                    action: PresenceAction::Leave,
                    member: member("a")
                },
            ]
        );
        // After a reconnect the members start over at the next live.
        table.on_disconnected();
        table.on_connected(&mut out);
        assert!(table.awaiting_live("s"));
    }

    #[test]
    fn closing_answers_every_subscriber() {
        let mut table = connected();
        let (mut sub, _) = attach(&mut table, AttachFrom::Named(AttachPoint::Latest), 16);
        table.end_all(&EndReason::ClientClosed);
        let failed = sub.reply.try_recv().ok().and_then(Result::err);
        assert_eq!(failed.map(|e| e.kind()), Some(AttachErrorKind::Closed));
    }
}
