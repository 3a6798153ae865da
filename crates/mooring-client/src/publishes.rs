//! Publishes awaiting their `ack`: matched by `req`, and on a lost connection either kept for
//! a resend (every event has an `id`, so the server drops a duplicate) or failed as
//! interrupted.

use std::collections::BTreeMap;
use std::time::Duration;

use mooring_protocol::realtime::{ClientFrame, ErrorCode, Published};
use mooring_protocol::session::NewEvent;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{PublishError, PublishErrorKind, ServerError};

pub(crate) type PublishReply = oneshot::Sender<Result<Vec<Published>, PublishError>>;

#[derive(Debug)]
struct Pending {
    session: String,
    events: Vec<NewEvent>,
    reply: PublishReply,
    /// When it was first sent; a resend is only safe inside the server's dedupe window.
    first_sent: Option<Instant>,
}

impl Pending {
    fn frame(&self, req: u64) -> ClientFrame {
        ClientFrame::Publish {
            req,
            session: self.session.clone(),
            events: self.events.clone(),
        }
    }
}

/// The publishes of one client not yet answered, in request order.
#[derive(Debug)]
pub(crate) struct Publishes {
    next_req: u64,
    pending: BTreeMap<u64, Pending>,
    connected: bool,
    /// How long after its first send a publish may still be resent.
    resend_within: Duration,
}

impl Publishes {
    pub(crate) fn new(resend_within: Duration) -> Self {
        Self {
            next_req: 0,
            pending: BTreeMap::new(),
            connected: false,
            resend_within,
        }
    }

    /// Records a publish; returns its frame to send now if connected.
    pub(crate) fn add(
        &mut self,
        session: String,
        events: Vec<NewEvent>,
        reply: PublishReply,
        now: Instant,
    ) -> Option<ClientFrame> {
        self.next_req += 1;
        let req = self.next_req;
        let pending = Pending {
            session,
            events,
            reply,
            first_sent: self.connected.then_some(now),
        };
        let frame = self.connected.then(|| pending.frame(req));
        self.pending.insert(req, pending);
        frame
    }

    pub(crate) fn on_ack(&mut self, req: u64, results: Vec<Published>) {
        match self.pending.remove(&req) {
            Some(p) => {
                let _ = p.reply.send(Ok(results));
            }
            None => tracing::debug!(req, "ack for no pending publish"),
        }
    }

    /// A refusal. A node shutting down refuses what it did not write; a publish whose events
    /// all have ids then waits for the next connection, as if the connection had been lost.
    pub(crate) fn on_error(&mut self, req: u64, error: ServerError) {
        let Some(p) = self.pending.get(&req) else {
            tracing::debug!(req, ?error, "error for no pending publish");
            return;
        };
        if error.code == ErrorCode::ShuttingDown && p.events.iter().all(|e| e.id.is_some()) {
            tracing::debug!(
                req,
                "node shutting down; the publish waits for the next connection"
            );
            return;
        }
        if let Some(p) = self.pending.remove(&req) {
            let _ = p
                .reply
                .send(Err(PublishError::server(PublishErrorKind::Refused, error)));
        }
    }

    /// The connection is up: every pending publish is (re)sent, in request order, except
    /// those nobody waits for any more (their caller timed out and was told the outcome is
    /// unknown) and those first sent too long ago for the server to recognize a retry.
    pub(crate) fn on_connected(&mut self, now: Instant) -> Vec<ClientFrame> {
        self.connected = true;
        self.pending.retain(|_, p| !p.reply.is_closed());
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.first_sent
                    .is_some_and(|t| now.duration_since(t) >= self.resend_within)
            })
            .map(|(req, _)| *req)
            .collect();
        for req in expired {
            if let Some(p) = self.pending.remove(&req) {
                let _ = p.reply.send(Err(PublishError::new(
                    PublishErrorKind::Interrupted,
                    "the connection was lost before the ack, and the publish is too old to be \
                     resent inside the server's dedupe window",
                )));
            }
        }
        let mut frames = Vec::with_capacity(self.pending.len());
        for (req, p) in &mut self.pending {
            p.first_sent.get_or_insert(now);
            frames.push(p.frame(*req));
        }
        frames
    }

    /// The connection is lost: publishes whose events all have ids wait for the next
    /// connection; the others fail, since resending them could publish them twice.
    pub(crate) fn on_disconnected(&mut self) {
        self.connected = false;
        let interrupted: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.events.iter().any(|e| e.id.is_none()))
            .map(|(req, _)| *req)
            .collect();
        for req in interrupted {
            if let Some(p) = self.pending.remove(&req) {
                let _ = p.reply.send(Err(PublishError::new(
                    PublishErrorKind::Interrupted,
                    "the connection was lost before the ack, and an event without an id cannot \
                     be resent safely",
                )));
            }
        }
    }

    /// The client is closing: every pending publish fails.
    pub(crate) fn fail_all(&mut self, message: &str) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p
                .reply
                .send(Err(PublishError::new(PublishErrorKind::Closed, message)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>) -> NewEvent {
        NewEvent {
            id: id.map(Into::into),
            action: mooring_protocol::session::Action::MessageCreate,
            name: None,
            reference: None,
            data: "hi".into(),
            extras: Default::default(),
        }
    }

    type Answer = oneshot::Receiver<Result<Vec<Published>, PublishError>>;

    fn add(table: &mut Publishes, ids: &[Option<&str>]) -> (Option<ClientFrame>, Answer) {
        let (tx, rx) = oneshot::channel();
        let events = ids.iter().map(|id| event(*id)).collect();
        (table.add("s".into(), events, tx, Instant::now()), rx)
    }

    fn table() -> Publishes {
        Publishes::new(Duration::from_secs(100))
    }

    fn req(frame: &ClientFrame) -> u64 {
        match frame {
            ClientFrame::Publish { req, .. } => *req,
            _ => 0,
        }
    }

    #[test]
    fn acks_and_errors_answer_their_own_request() {
        let mut table = table();
        table.on_connected(Instant::now());
        let (first, mut first_rx) = add(&mut table, &[Some("a")]);
        let (second, mut second_rx) = add(&mut table, &[Some("b")]);
        let (first, second) = (first.map(|f| req(&f)), second.map(|f| req(&f)));
        assert_eq!((first, second), (Some(1), Some(2)));
        table.on_error(
            2,
            ServerError {
                code: ErrorCode::MessageNotFound,
                message: "no".into(),
                retryable: false,
            },
        );
        table.on_ack(
            1,
            vec![Published {
                serial: 4,
                duplicate: false,
            }],
        );
        let acked = first_rx.try_recv().ok().and_then(Result::ok);
        assert_eq!(acked.map(|r| r[0].serial), Some(4));
        let refused = second_rx.try_recv().ok().and_then(Result::err);
        assert_eq!(
            refused.and_then(|e| e.code()),
            Some(ErrorCode::MessageNotFound)
        );
    }

    #[test]
    fn publishes_with_ids_are_resent_after_a_reconnect_and_others_fail() {
        let mut table = table();
        let (queued, _queued_rx) = add(&mut table, &[Some("a")]);
        assert!(queued.is_none(), "nothing is sent while disconnected");
        assert_eq!(table.on_connected(Instant::now()).len(), 1);
        let (_, mut unsafe_rx) = add(&mut table, &[Some("b"), None]);
        let (_, _safe_rx) = add(&mut table, &[Some("c")]);
        table.on_disconnected();
        let failed = unsafe_rx.try_recv().ok().and_then(Result::err);
        assert_eq!(
            failed.map(|e| e.kind()),
            Some(PublishErrorKind::Interrupted)
        );
        let resent: Vec<u64> = table.on_connected(Instant::now()).iter().map(req).collect();
        assert_eq!(resent, vec![1, 3]);
    }

    #[test]
    fn publishes_nobody_waits_for_or_too_old_to_dedupe_are_not_resent() {
        let mut table = table();
        let start = Instant::now();
        table.on_connected(start);
        let (_, abandoned) = add(&mut table, &[Some("a")]);
        drop(abandoned);
        let (_, mut old_rx) = add(&mut table, &[Some("b")]);
        table.on_disconnected();
        let (_, _fresh_rx) = add(&mut table, &[Some("c")]);
        let resent = table.on_connected(start + Duration::from_secs(101));
        assert_eq!(resent.iter().map(req).collect::<Vec<_>>(), vec![3]);
        let failed = old_rx.try_recv().ok().and_then(Result::err);
        assert_eq!(
            failed.map(|e| e.kind()),
            Some(PublishErrorKind::Interrupted)
        );
    }

    #[test]
    fn a_publish_refused_by_a_node_shutting_down_waits_for_the_next_connection() {
        let mut table = table();
        table.on_connected(Instant::now());
        let (_, mut with_id) = add(&mut table, &[Some("a")]);
        let (_, mut without_id) = add(&mut table, &[None]);
        for req in [1, 2] {
            table.on_error(
                req,
                ServerError {
                    code: ErrorCode::ShuttingDown,
                    message: "stopping".into(),
                    retryable: true,
                },
            );
        }
        assert!(with_id.try_recv().is_err(), "still waiting");
        let refused = without_id.try_recv().ok().and_then(Result::err);
        assert_eq!(
            refused.and_then(|e| e.code()),
            Some(ErrorCode::ShuttingDown)
        );
        table.on_disconnected();
        let resent: Vec<u64> = table.on_connected(Instant::now()).iter().map(req).collect();
        assert_eq!(resent, vec![1]);
    }

    #[test]
    fn closing_fails_everything_pending() {
        let mut table = table();
        let (_, mut rx) = add(&mut table, &[Some("a")]);
        table.fail_all("closed");
        let failed = rx.try_recv().ok().and_then(Result::err);
        assert_eq!(failed.map(|e| e.kind()), Some(PublishErrorKind::Closed));
    }
}
