//! Mooring's storage engines.
//!
//! - [`memory`]: plain maps behind a mutex; the oracle the others are tested against.
//! - [`embedded`]: redb files with group commit; the default for one node.
//! - [`redis`]: Redis 7 or Valkey, shared by many nodes.
//! - `conformance`: the suite every engine must pass (under `cfg(test)` or the `conformance`
//!   feature).
//!
//! Engines store; the rules live in `mooring_core::ops`, which engines run inside their
//! transactions.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
pub mod memory;
pub mod redis;
