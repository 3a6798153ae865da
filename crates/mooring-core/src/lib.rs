//! Mooring's domain, free of transports and storage.
//!
//! A *log* (a session, or a Durable Stream) is an ordered sequence of records with contiguous
//! serials starting at 1, in one life (`epoch`). This crate holds:
//!
//! - [`stream`]: a log's configuration and persisted state;
//! - [`append`], [`create`], [`producer`]: the rules every engine applies, as pure functions
//!   from state and request to a plan or a per-operation error;
//! - [`store`]: the [`LogStore`](store::LogStore) trait engines implement, with its contract;
//! - [`epoch`]: the epoch of a new life of a log;
//! - [`clock`] and [`access`]: injected time and the sliding-TTL access tracker.

pub mod access;
pub mod append;
pub mod auth;
pub mod clock;
pub mod create;
pub mod epoch;
pub mod fleet;
pub mod ops;
pub mod presence;
pub mod producer;
pub mod publish;
pub mod read;
pub mod retention;
pub mod runs;
pub mod session;
pub mod store;
pub mod stream;

pub use mooring_protocol::{Position, ReadFrom};
