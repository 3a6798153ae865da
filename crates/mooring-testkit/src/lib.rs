//! Test tools for Mooring.
//!
//! - [`balancer`]: a TCP load balancer in front of several nodes, failing over in order.
//! - [`server`]: run `mooring serve` as a child process, SIGKILL it, restart it on the same data;
//!   [`start_node`] runs one node of several on a shared engine.
//! - [`history`] and [`observation`]: what writers were told and what readers saw.
//! - [`checker`]: finds lost, duplicated, reordered, corrupted or misplaced appends.
//! - [`client`] and [`observe`]: the HTTP side of writing and reading Durable Streams.
//! - [`payload`]: self-identifying JSON messages for crash tests.
//! - [`redis`]: a real `redis-server` on a free port, for the Redis engine.
//! - [`redis_cluster`]: a real Redis Cluster of three primaries.
//! - [`rng`]: a seeded random source so randomized tests replay.
//! - [`writer`]: a crash-test writer that records what the server acknowledged.
//! - [`ws`]: a minimal raw client of the realtime protocol (`/v1/ws`).
//! - [`session_check`]: reconstructs what a realtime client saw of a session, folds it into
//!   messages, and finds gaps, duplicates and reordering.
//! - [`faults`]: a store wrapper that makes a real engine's writes fail on demand.

pub mod balancer;
pub mod checker;
pub mod client;
pub mod faults;
pub mod history;
pub mod observation;
pub mod observe;
pub mod payload;
pub mod redis;
pub mod redis_cluster;
pub mod rng;
pub mod server;
pub mod session_check;
pub mod writer;
pub mod ws;

pub use checker::{check, Report, Violation, ViolationKind};
pub use client::{AppendOutcome, ClientError, StreamClient};
pub use history::{Attempt, History, Outcome, PayloadId};
/// The wire types the realtime helpers speak, for tests that do not depend on the protocol crate.
pub use mooring_protocol as protocol;
pub use observation::{Observation, ObservedStream, ProbeResult};
pub use server::{start_node, MooringProcess, ServerConfig, ServerError};
