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
//! * [`fsync_limit`]: the physical reference, the rate of `fdatasync` group commits on a disk;
//! * over the realtime protocol ([`ws`], [`fleet`]): [`token_streaming`], [`fan_out`],
//!   [`idle_connections`], [`resume_storm`] and [`catch_up`];
//! * [`fan_out_pusher`]: fan-out against a Pusher server such as Sockudo ([`pusher`] subscribes,
//!   [`pusher_sign`] signs its HTTP API), for the same run to compare the two;
//! * [`ws_limit`]: the physical reference for fan-out, small WebSocket frames a second.
//!
//! [`sysmon`] reads the CPU and memory of the server, the generator and the rest of the machine
//! from `/proc`; [`serial_check`] counts gaps and duplicates.

pub mod catch_up;
pub mod client;
pub mod durable_appends;
pub mod fan_out;
pub mod fan_out_pusher;
pub mod fleet;
pub mod fsync_limit;
pub mod idle_connections;
pub mod latency;
pub mod progress;
pub mod pusher;
pub mod pusher_sign;
pub mod resume_storm;
pub mod serial_check;
pub mod sysmon;
pub mod target;
pub mod token_streaming;
pub mod ws;
pub mod ws_limit;
