//! Agent dispatch, the worker's side: a registration the task repeats on every connection,
//! and the inputs the server hands this client (see `docs/protocol.md`, Agent dispatch).

use std::collections::{HashSet, VecDeque};

use mooring_protocol::realtime::ClientFrame;
use mooring_protocol::session::Event;
use tokio::sync::{mpsc, oneshot};

use crate::error::ServerError;

/// Request ids of worker registrations start here, far above any publish's, so a reply finds
/// its way without a shared counter.
pub(crate) const WORKER_REQ_BASE: u64 = 1 << 62;
/// Inputs remembered as handed out: a connection lost and regained may be offered one again.
const REMEMBERED: usize = 4096;

/// An input dispatched to this worker: answer it with
/// [`Client::start_run`](crate::Client::start_run) passing `Some(input.serial)`, or give it
/// back with [`Work::release`].
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub session: String,
    pub epoch: u64,
    /// The `user-input` event.
    pub input: Event,
    /// 1 the first time the input is offered, more when another worker had it first.
    pub attempt: u32,
}

pub(crate) type Confirm = oneshot::Sender<Result<(), ServerError>>;

/// The registration in force.
#[derive(Debug)]
struct Registration {
    id: u64,
    patterns: Vec<String>,
    capacity: Option<u32>,
    inputs: mpsc::UnboundedSender<Dispatch>,
    /// Waits for the server's answer to the first registration.
    confirm: Option<Confirm>,
    req: u64,
}

/// The task's side: at most one registration per client.
#[derive(Debug)]
pub(crate) struct Workers {
    current: Option<Registration>,
    next_req: u64,
    /// Inputs already handed to the application, oldest first.
    seen: VecDeque<(String, u64)>,
    seen_set: HashSet<(String, u64)>,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            current: None,
            next_req: WORKER_REQ_BASE,
            seen: VecDeque::new(),
            seen_set: HashSet::new(),
        }
    }
}

impl Workers {
    /// Whether `req` answers a registration.
    pub(crate) fn owns(req: u64) -> bool {
        req >= WORKER_REQ_BASE
    }

    fn frame(&mut self) -> Option<ClientFrame> {
        let current = self.current.as_mut()?;
        self.next_req += 1;
        current.req = self.next_req;
        Some(ClientFrame::Worker {
            req: current.req,
            patterns: current.patterns.clone(),
            capacity: current.capacity,
        })
    }

    /// Registers (replacing any registration) and queues the frame.
    pub(crate) fn register(
        &mut self,
        id: u64,
        patterns: Vec<String>,
        capacity: Option<u32>,
        inputs: mpsc::UnboundedSender<Dispatch>,
        confirm: Confirm,
        out: &mut Vec<ClientFrame>,
    ) {
        self.current = Some(Registration {
            id,
            patterns,
            capacity,
            inputs,
            confirm: Some(confirm),
            req: 0,
        });
        out.extend(self.frame());
    }

    /// The registration `id` was dropped: stop being a worker, unless a newer one replaced it.
    pub(crate) fn stop(&mut self, id: u64, out: &mut Vec<ClientFrame>) {
        if self.current.as_ref().is_some_and(|r| r.id == id) {
            self.current = None;
            self.next_req += 1;
            out.push(ClientFrame::Worker {
                req: self.next_req,
                patterns: Vec::new(),
                capacity: None,
            });
        }
    }

    /// A new connection: the server forgot the registration with the old one.
    pub(crate) fn on_connected(&mut self, out: &mut Vec<ClientFrame>) {
        out.extend(self.frame());
    }

    pub(crate) fn on_registered(&mut self, req: u64) {
        if let Some(current) = self.current.as_mut().filter(|r| r.req == req) {
            if let Some(confirm) = current.confirm.take() {
                let _ = confirm.send(Ok(()));
            }
        }
    }

    pub(crate) fn on_error(&mut self, req: u64, error: ServerError) {
        let Some(current) = self.current.as_mut().filter(|r| r.req == req) else {
            return;
        };
        tracing::warn!(%error, "worker registration refused");
        if let Some(confirm) = current.confirm.take() {
            let _ = confirm.send(Err(error));
            // Refused the first time: nothing to repeat on later connections.
            self.current = None;
        }
    }

    /// An input for this worker: to the application, once; back to the server if nobody
    /// takes it any more.
    pub(crate) fn on_dispatch(&mut self, dispatch: Dispatch, out: &mut Vec<ClientFrame>) {
        let key = (dispatch.session.clone(), dispatch.input.serial);
        let session = dispatch.session.clone();
        let serial = dispatch.input.serial;
        if self.seen_set.contains(&key) {
            // Offered again after a reconnect while the application still has it.
            return;
        }
        let delivered = self
            .current
            .as_ref()
            .is_some_and(|r| r.inputs.send(dispatch).is_ok());
        if !delivered {
            out.push(ClientFrame::DispatchRelease {
                session,
                input: serial,
            });
            return;
        }
        self.seen.push_back(key.clone());
        self.seen_set.insert(key);
        while self.seen.len() > REMEMBERED {
            if let Some(old) = self.seen.pop_front() {
                self.seen_set.remove(&old);
            }
        }
    }

    /// The application gives an input back: it may be offered to this client again later.
    pub(crate) fn release(&mut self, session: String, serial: u64, out: &mut Vec<ClientFrame>) {
        self.seen_set.remove(&(session.clone(), serial));
        out.push(ClientFrame::DispatchRelease {
            session,
            input: serial,
        });
    }
}

/// This client's worker registration, from [`Client::work`](crate::Client::work): yields each
/// input dispatched to it. The client registers again after every reconnect. Dropping it stops
/// the client being a worker (inputs it was offered and did not start go to others).
#[derive(Debug)]
pub struct Work {
    pub(crate) id: u64,
    pub(crate) client: crate::Client,
    pub(crate) inputs: mpsc::UnboundedReceiver<Dispatch>,
}

impl Work {
    /// The next input to answer; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Dispatch> {
        self.inputs.recv().await
    }

    /// Gives `dispatch` back without starting its run: the server offers it to another worker.
    pub async fn release(&self, dispatch: &Dispatch) {
        self.client
            .command(crate::task::Command::Release {
                session: dispatch.session.clone(),
                serial: dispatch.input.serial,
            })
            .await;
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        self.client
            .try_command(crate::task::Command::StopWork { id: self.id });
    }
}
