//! Who answers which input: the state of agent dispatch, free of I/O so it can be tested alone.
//!
//! An input is *waiting* (no worker could take it yet), *assigned* (offered to one worker, not
//! yet started), or *answered* (a `run.start` named it). Each input is assigned to one worker at
//! a time; it goes back to waiting when that worker releases it, unregisters or its connection
//! ends, and is offered to the next. Only the worker that holds an input may start its run.

use std::collections::{BTreeMap, HashMap};

use mooring_core::auth::SessionPattern;
use mooring_protocol::session::Event;

/// An input: its session and serial.
pub(crate) type InputKey = (String, u64);

/// Bounds on inputs that wait for a worker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HoldLimits {
    /// An input nobody took for this long is dropped.
    pub(crate) hold_ms: u64,
    /// Inputs waiting at once; over it, the oldest is dropped.
    pub(crate) max_inputs: usize,
    /// Bytes of waiting inputs (their events as JSON); over it, the oldest is dropped.
    pub(crate) max_bytes: usize,
}

#[derive(Debug)]
struct Input {
    epoch: u64,
    event: Event,
    bytes: usize,
    /// Arrival order: a returned input keeps its place in the line.
    order: u64,
    waiting_since_ms: u64,
    attempts: u32,
    /// Workers (connections) that released it: it is not offered to them again.
    declined: Vec<String>,
    /// With several nodes: this node holds the input's claim in the store (it was offered
    /// here), so it must give the claim back if the input waits again.
    held_here: bool,
    /// Written through this node (not heard of from another): this node announces it to the
    /// others while it waits.
    local: bool,
}

impl Input {
    /// This input, waiting at `key`, as the other nodes are told of it.
    fn announced_as(&self, key: &InputKey) -> Waiting {
        Waiting {
            key: key.clone(),
            epoch: self.epoch,
            event: self.event.clone(),
        }
    }
}

/// A waiting input, as the other nodes are told of it.
#[derive(Debug, PartialEq)]
pub(crate) struct Waiting {
    pub(crate) key: InputKey,
    pub(crate) epoch: u64,
    pub(crate) event: Event,
}

#[derive(Debug)]
struct Worker<L> {
    client_id: String,
    patterns: Vec<SessionPattern>,
    capacity: Option<u32>,
    link: L,
    /// Inputs assigned and not started.
    assigned: usize,
    /// When it was last given an input: ties go to the one that waited longest.
    last_given: u64,
}

/// An input to send to a worker.
#[derive(Debug)]
pub(crate) struct Offer<L> {
    pub(crate) link: L,
    /// The worker's connection.
    pub(crate) connection: String,
    pub(crate) session: String,
    pub(crate) epoch: u64,
    pub(crate) input: Event,
    pub(crate) attempt: u32,
}

/// What to do with an offer whose claim was won.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClaimWon {
    Send,
    /// Not this offer's any more; the table has it.
    Stale,
    /// The input is gone from the table: the claim can go.
    Unneeded,
}

/// What became of inputs nobody took in time (for logs and metrics).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) expired: usize,
    pub(crate) evicted: usize,
}

impl Dropped {
    pub(crate) fn add(&mut self, other: Dropped) {
        self.expired += other.expired;
        self.evicted += other.evicted;
    }
}

/// A run that answers an input, or any run of a worker (it counts against its capacity).
#[derive(Debug)]
struct Running {
    connection: Option<String>,
    input: Option<u64>,
}

/// The dispatch state of a node.
#[derive(Debug)]
pub(crate) struct DispatchTable<L> {
    limits: HoldLimits,
    workers: HashMap<String, Worker<L>>,
    /// Waiting inputs by arrival order, and their data.
    line: BTreeMap<u64, InputKey>,
    waiting: HashMap<InputKey, Input>,
    waiting_bytes: usize,
    /// Assigned inputs and the connection holding each.
    assigned: HashMap<InputKey, (Input, String)>,
    /// Runs by (session, run_id).
    running: HashMap<(String, String), Running>,
    /// The run answering each input.
    answering: HashMap<InputKey, String>,
    /// Runs by connection, for capacity.
    runs_of: HashMap<String, usize>,
    arrivals: u64,
    turns: u64,
}

impl<L: Clone> DispatchTable<L> {
    pub(crate) fn new(limits: HoldLimits) -> Self {
        Self {
            limits,
            workers: HashMap::new(),
            line: BTreeMap::new(),
            waiting: HashMap::new(),
            waiting_bytes: 0,
            assigned: HashMap::new(),
            running: HashMap::new(),
            answering: HashMap::new(),
            runs_of: HashMap::new(),
            arrivals: 0,
            turns: 0,
        }
    }

    /// Inputs waiting for a worker.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Inputs offered to a worker and not started.
    pub(crate) fn assigned(&self) -> usize {
        self.assigned.len()
    }

    /// A new input, durable in `session`: offered to a worker now, or held until one comes.
    pub(crate) fn input(
        &mut self,
        session: &str,
        epoch: u64,
        event: Event,
        now_ms: u64,
    ) -> (Vec<Offer<L>>, Dropped) {
        self.admit(session, epoch, event, now_ms, true)
    }

    /// An input written through another node: taken in only if a worker here could answer it
    /// (the node that has it announces it again while it waits, for workers that come later).
    pub(crate) fn remote_input(
        &mut self,
        session: &str,
        epoch: u64,
        event: Event,
        now_ms: u64,
    ) -> (Vec<Offer<L>>, Dropped) {
        let matched = self
            .workers
            .values()
            .any(|w| w.patterns.iter().any(|p| p.matches(session)));
        if !matched {
            return (Vec::new(), Dropped::default());
        }
        self.admit(session, epoch, event, now_ms, false)
    }

    fn admit(
        &mut self,
        session: &str,
        epoch: u64,
        event: Event,
        now_ms: u64,
        local: bool,
    ) -> (Vec<Offer<L>>, Dropped) {
        let key = (session.to_owned(), event.serial);
        if self.waiting.contains_key(&key)
            || self.assigned.contains_key(&key)
            || self.answering.contains_key(&key)
        {
            return (Vec::new(), Dropped::default());
        }
        let bytes = serde_json::to_vec(&event).map_or(0, |b| b.len());
        self.arrivals += 1;
        let input = Input {
            epoch,
            event,
            bytes,
            order: self.arrivals,
            waiting_since_ms: now_ms,
            attempts: 0,
            declined: Vec::new(),
            held_here: false,
            local,
        };
        let mut offers = Vec::new();
        match self.give(key, input) {
            Ok(offer) => offers.push(offer),
            Err((key, input)) => self.wait(key, input),
        }
        (offers, self.trim(now_ms))
    }

    /// Makes `connection` a worker for `patterns` (none: no longer a worker); offers it what
    /// waits. An input it held that its new patterns no longer match goes to another worker.
    pub(crate) fn register(
        &mut self,
        connection: &str,
        client_id: &str,
        patterns: Vec<SessionPattern>,
        capacity: Option<u32>,
        link: L,
        now_ms: u64,
    ) -> (Vec<Offer<L>>, Dropped) {
        if patterns.is_empty() {
            self.workers.remove(connection);
            self.take_back(connection, |_| true, now_ms);
        } else {
            let previous = self.workers.remove(connection);
            let worker = Worker {
                client_id: client_id.to_owned(),
                patterns,
                capacity,
                link,
                assigned: previous.as_ref().map_or(0, |w| w.assigned),
                last_given: previous.map_or(0, |w| w.last_given),
            };
            let unmatched = |session: &str| !worker.patterns.iter().any(|p| p.matches(session));
            self.take_back(connection, unmatched, now_ms);
            self.workers.insert(connection.to_owned(), worker);
        }
        self.pump(now_ms)
    }

    /// `connection` gives `key` back without starting it: it goes to another worker.
    pub(crate) fn release(
        &mut self,
        connection: &str,
        key: &InputKey,
        now_ms: u64,
    ) -> (Vec<Offer<L>>, Dropped) {
        if self.assigned.get(key).is_some_and(|(_, c)| c == connection) {
            if let Some((mut input, holder)) = self.assigned.remove(key) {
                self.unassign(&holder);
                input.declined.push(holder);
                input.waiting_since_ms = now_ms;
                self.wait(key.clone(), input);
            }
        }
        self.pump(now_ms)
    }

    /// `connection` ended: what it held goes to other workers.
    pub(crate) fn connection_ended(
        &mut self,
        connection: &str,
        now_ms: u64,
    ) -> (Vec<Offer<L>>, Dropped) {
        let was_worker = self.workers.remove(connection).is_some();
        self.runs_of.remove(connection);
        if !was_worker {
            return (Vec::new(), Dropped::default());
        }
        self.take_back(connection, |_| true, now_ms);
        self.pump(now_ms)
    }

    /// Whether `connection` may start run `run_id` answering `key`: `Err(holder)` when another
    /// worker holds the input, or a run of another connection still answers it (one agent may
    /// answer an input with several runs; the same run's start again, a resend, is fine).
    pub(crate) fn may_start(
        &self,
        key: &InputKey,
        connection: Option<&str>,
        run_id: &str,
    ) -> Result<(), String> {
        if let Some((_, holder)) = self.assigned.get(key) {
            if Some(holder.as_str()) != connection {
                let who = self
                    .workers
                    .get(holder)
                    .map_or(holder.as_str(), |w| w.client_id.as_str());
                return Err(format!("dispatched to worker {who:?}"));
            }
        }
        if let Some(answer) = self.answering.get(key).filter(|r| *r != run_id) {
            let run = self.running.get(&(key.0.clone(), answer.clone()));
            if run.is_some_and(|r| r.connection.as_deref() != connection) {
                return Err(format!("run {answer:?} answers it"));
            }
        }
        Ok(())
    }

    /// A run started (durably), by `connection` if known, answering `input` if it names one.
    pub(crate) fn started(
        &mut self,
        session: &str,
        run_id: &str,
        input: Option<u64>,
        connection: Option<&str>,
    ) {
        if let Some(input) = input {
            let key = (session.to_owned(), input);
            self.forget_input(&key);
            self.answering.insert(key, run_id.to_owned());
        }
        let run = Running {
            connection: connection.map(str::to_owned),
            input,
        };
        let before = self
            .running
            .insert((session.to_owned(), run_id.to_owned()), run);
        if let (None, Some(connection)) = (before, connection) {
            *self.runs_of.entry(connection.to_owned()).or_default() += 1;
        }
    }

    /// A run ended: its worker has room for another input.
    pub(crate) fn ended(
        &mut self,
        session: &str,
        run_id: &str,
        now_ms: u64,
    ) -> (Vec<Offer<L>>, Dropped) {
        let Some(run) = self
            .running
            .remove(&(session.to_owned(), run_id.to_owned()))
        else {
            return (Vec::new(), Dropped::default());
        };
        if let Some(input) = run.input {
            let key = (session.to_owned(), input);
            if self.answering.get(&key).is_some_and(|r| r == run_id) {
                self.answering.remove(&key);
            }
        }
        if let Some(connection) = &run.connection {
            if let Some(n) = self.runs_of.get_mut(connection) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.runs_of.remove(connection);
                }
            }
        }
        self.pump(now_ms)
    }

    /// Whether any connection is a worker here.
    pub(crate) fn has_workers(&self) -> bool {
        !self.workers.is_empty()
    }

    /// Whether `key` waits for a worker here.
    pub(crate) fn is_waiting(&self, key: &InputKey) -> bool {
        self.waiting.contains_key(key)
    }

    /// Waiting inputs whose claim this node holds, which it must give back for the other
    /// nodes to take; it no longer counts as holding them.
    pub(crate) fn returned(&mut self) -> Vec<Waiting> {
        let mut out = Vec::new();
        for (key, input) in &mut self.waiting {
            if std::mem::take(&mut input.held_here) {
                out.push(input.announced_as(key));
            }
        }
        out
    }

    /// Waiting inputs written through this node.
    pub(crate) fn local_waiting(&self) -> Vec<Waiting> {
        self.waiting
            .iter()
            .filter(|(_, input)| input.local)
            .map(|(key, input)| input.announced_as(key))
            .collect()
    }

    /// Another node holds `key`, or a run answers it: it is not this node's to offer.
    pub(crate) fn taken_elsewhere(
        &mut self,
        key: &InputKey,
        now_ms: u64,
    ) -> (Vec<Offer<L>>, Dropped) {
        self.forget_input(key);
        self.pump(now_ms)
    }

    /// A run started through another node answers `key`: this node's copy goes.
    pub(crate) fn answered_elsewhere(&mut self, key: &InputKey) {
        self.forget_input(key);
    }

    /// The claim of an offered input could not be checked: it waits again (not declined), for
    /// the next change to offer it. The claim may have landed, so it counts as held here, to
    /// be given back.
    pub(crate) fn put_back(&mut self, key: &InputKey) {
        if let Some((mut input, holder)) = self.assigned.remove(key) {
            self.unassign(&holder);
            input.held_here = true;
            self.wait(key.clone(), input);
        }
    }

    /// This node won the claim of `key`, offered to `connection`: whether the offer still
    /// stands (send it). If the input went back to waiting meanwhile, it now counts as held
    /// here, to be given back; if it is gone (answered, dropped), the claim is not needed.
    pub(crate) fn claim_won(&mut self, key: &InputKey, connection: &str) -> ClaimWon {
        if let Some((input, holder)) = self.assigned.get_mut(key) {
            input.held_here = true;
            if holder == connection {
                return ClaimWon::Send;
            }
            // Handed on while the claim was on its way: the newer offer sends it.
            return ClaimWon::Stale;
        }
        if let Some(input) = self.waiting.get_mut(key) {
            input.held_here = true;
            return ClaimWon::Stale;
        }
        ClaimWon::Unneeded
    }

    /// Removes an input from waiting or assigned (it was answered).
    fn forget_input(&mut self, key: &InputKey) {
        if let Some(input) = self.waiting.remove(key) {
            self.line.remove(&input.order);
            self.waiting_bytes -= input.bytes;
        }
        if let Some((_, holder)) = self.assigned.remove(key) {
            self.unassign(&holder);
        }
    }

    fn unassign(&mut self, connection: &str) {
        if let Some(worker) = self.workers.get_mut(connection) {
            worker.assigned = worker.assigned.saturating_sub(1);
        }
    }

    /// Puts every input `connection` holds in a session `which` selects back in line.
    fn take_back(&mut self, connection: &str, which: impl Fn(&str) -> bool, now_ms: u64) {
        let keys: Vec<InputKey> = self
            .assigned
            .iter()
            .filter(|(key, (_, holder))| holder == connection && which(&key.0))
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            if let Some((input, holder)) = self.assigned.remove(&key) {
                self.unassign(&holder);
                // Its hold starts again: a worker's death is not the input's fault.
                let mut input = input;
                input.waiting_since_ms = now_ms;
                self.wait(key, input);
            }
        }
    }

    /// Puts an input in line, in its place by arrival.
    fn wait(&mut self, key: InputKey, input: Input) {
        self.waiting_bytes += input.bytes;
        self.line.insert(input.order, key.clone());
        self.waiting.insert(key, input);
    }

    /// Offers waiting inputs, oldest first, to workers with room; drops those held too long.
    fn pump(&mut self, now_ms: u64) -> (Vec<Offer<L>>, Dropped) {
        let dropped = self.trim(now_ms);
        let mut offers = Vec::new();
        if self.workers.is_empty() {
            return (offers, dropped);
        }
        let line: Vec<(u64, InputKey)> = self.line.iter().map(|(o, k)| (*o, k.clone())).collect();
        for (order, key) in line {
            let Some(input) = self.waiting.remove(&key) else {
                continue;
            };
            self.line.remove(&order);
            self.waiting_bytes -= input.bytes;
            match self.give(key, input) {
                Ok(offer) => offers.push(offer),
                Err((key, input)) => self.wait(key, input),
            }
        }
        (offers, dropped)
    }

    /// Assigns `input` to the least loaded worker that may take it.
    #[allow(clippy::result_large_err)]
    fn give(&mut self, key: InputKey, mut input: Input) -> Result<Offer<L>, (InputKey, Input)> {
        let runs_of = &self.runs_of;
        let chosen = self
            .workers
            .iter()
            .filter(|(connection, worker)| {
                worker.patterns.iter().any(|p| p.matches(&key.0))
                    && !input.declined.contains(connection)
                    && worker.capacity.is_none_or(|cap| {
                        let load = worker.assigned + runs_of.get(*connection).copied().unwrap_or(0);
                        load < cap as usize
                    })
            })
            .min_by_key(|(connection, worker)| {
                let load = worker.assigned + runs_of.get(*connection).copied().unwrap_or(0);
                (load, worker.last_given)
            })
            .map(|(connection, _)| connection.clone());
        let Some(connection) = chosen else {
            return Err((key, input));
        };
        self.turns += 1;
        let Some(worker) = self.workers.get_mut(&connection) else {
            return Err((key, input));
        };
        worker.assigned += 1;
        worker.last_given = self.turns;
        input.attempts += 1;
        let offer = Offer {
            link: worker.link.clone(),
            connection: connection.clone(),
            session: key.0.clone(),
            epoch: input.epoch,
            input: input.event.clone(),
            attempt: input.attempts,
        };
        self.assigned.insert(key, (input, connection));
        Ok(offer)
    }

    /// Drops waiting inputs held too long, then the oldest while over the bounds. Expiry is
    /// checked from the front of the line, so an input may outstay its hold behind a younger
    /// one that was put back; the bounds still hold.
    fn trim(&mut self, now_ms: u64) -> Dropped {
        let mut dropped = Dropped::default();
        while let Some((&order, key)) = self.line.first_key_value() {
            let Some(input) = self.waiting.get(key) else {
                self.line.remove(&order);
                continue;
            };
            let expired = now_ms.saturating_sub(input.waiting_since_ms) >= self.limits.hold_ms;
            let over = self.waiting.len() > self.limits.max_inputs
                || self.waiting_bytes > self.limits.max_bytes;
            if !expired && !over {
                break;
            }
            let key = key.clone();
            self.line.remove(&order);
            if let Some(input) = self.waiting.remove(&key) {
                self.waiting_bytes -= input.bytes;
            }
            if expired {
                dropped.expired += 1;
            } else {
                dropped.evicted += 1;
            }
        }
        dropped
    }
}
