//! Mooring's wire vocabulary, free of I/O and async.
//!
//! - [`position`]: a place in a session's log, `(epoch, serial)`, and its text form as a
//!   Durable Streams offset.
//! - [`durable_streams`]: the header names and header-value grammars of the Durable Streams
//!   HTTP protocol, parsed into typed values or a reason the value was refused.
//! - [`cursor`]: the CDN-collapsing cursor of live reads.

pub mod cursor;
pub mod durable_streams;
pub mod json_mode;
pub mod position;
pub mod presence;
pub mod realtime;
pub mod session;

pub use position::{Position, PositionParseError, ReadFrom};
