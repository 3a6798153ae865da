//! The client against a real node, in process, on the memory engine: one test binary, a
//! module per feature.

mod node;
mod proxy;

mod attach;
mod auth;
mod presence;
mod publish;
mod resume;
mod runs;
mod scripted;
mod work;
