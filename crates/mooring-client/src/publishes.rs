//! Publishes awaiting their `ack`: matched by `req`, and on a lost connection either kept for
//! a resend (every event has an `id`, so the server drops a duplicate) or failed as
//! interrupted.

use std::collections::BTreeMap;

use mooring_protocol::realtime::{ClientFrame, Published};
use mooring_protocol::session::NewEvent;
use tokio::sync::oneshot;

use crate::error::{PublishError, PublishErrorKind, ServerError};

pub(crate) type PublishReply = oneshot::Sender<Result<Vec<Published>, PublishError>>;

#[derive(Debug)]
struct Pending {
    session: String,
    events: Vec<NewEvent>,
    reply: PublishReply,
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
#[derive(Debug, Default)]
pub(crate) struct Publishes {
    next_req: u64,
    pending: BTreeMap<u64, Pending>,
    connected: bool,
}

impl Publishes {
    /// Records a publish; returns its frame to send now if connected.
    pub(crate) fn add(
        &mut self,
        session: String,
        events: Vec<NewEvent>,
        reply: PublishReply,
    ) -> Option<ClientFrame> {
        self.next_req += 1;
        let req = self.next_req;
        let pending = Pending {
            session,
            events,
            reply,
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

    pub(crate) fn on_error(&mut self, req: u64, error: ServerError) {
        match self.pending.remove(&req) {
            Some(p) => {
                let _ = p
                    .reply
                    .send(Err(PublishError::server(PublishErrorKind::Refused, error)));
            }
            None => tracing::debug!(req, ?error, "error for no pending publish"),
        }
    }

    /// The connection is up: every pending publish is (re)sent, in request order.
    pub(crate) fn on_connected(&mut self) -> Vec<ClientFrame> {
        self.connected = true;
        self.pending.iter().map(|(req, p)| p.frame(*req)).collect()
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
    use mooring_protocol::realtime::ErrorCode;

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
        (table.add("s".into(), events, tx), rx)
    }

    fn req(frame: &ClientFrame) -> u64 {
        match frame {
            ClientFrame::Publish { req, .. } => *req,
            _ => 0,
        }
    }

    #[test]
    fn acks_and_errors_answer_their_own_request() {
        let mut table = Publishes::default();
        table.on_connected();
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
        let mut table = Publishes::default();
        let (queued, _queued_rx) = add(&mut table, &[Some("a")]);
        assert!(queued.is_none(), "nothing is sent while disconnected");
        assert_eq!(table.on_connected().len(), 1);
        let (_, mut unsafe_rx) = add(&mut table, &[Some("b"), None]);
        let (_, _safe_rx) = add(&mut table, &[Some("c")]);
        table.on_disconnected();
        let failed = unsafe_rx.try_recv().ok().and_then(Result::err);
        assert_eq!(
            failed.map(|e| e.kind()),
            Some(PublishErrorKind::Interrupted)
        );
        let resent: Vec<u64> = table.on_connected().iter().map(req).collect();
        assert_eq!(resent, vec![1, 3]);
    }

    #[test]
    fn closing_fails_everything_pending() {
        let mut table = Publishes::default();
        let (_, mut rx) = add(&mut table, &[Some("a")]);
        table.fail_all("closed");
        let failed = rx.try_recv().ok().and_then(Result::err);
        assert_eq!(failed.map(|e| e.kind()), Some(PublishErrorKind::Closed));
    }
}
