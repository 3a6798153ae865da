//! Mooring's load generator and physical references.
//!
//! Every scenario is a module with a `Config` it runs from and a report it returns; the binary
//! (`mooring-bench`) parses the command line into a `Config`, runs the scenario, prints the
//! report and writes it as JSON. A scenario measures a target over its wire protocol only, so the
//! same run can point at Mooring and at any peer that speaks the protocol.
//!
//! Scenarios so far:
//! * [`durable_appends`]: producers appending over the Durable Streams protocol, each waiting for
//!   the acknowledgement before the next append;
//! * [`fsync_limit`]: the physical reference, the rate of `fdatasync` group commits on a disk.

pub mod client;
pub mod durable_appends;
pub mod fsync_limit;
pub mod latency;
pub mod progress;
pub mod target;
