//! mailfault: a fake receiving mail server (a fake MX) that answers every
//! SMTP command as a TOML scenario says.
//!
//! # Layout
//!
//! - [`proto`]: the SMTP session, sans-I/O. Bytes in, replies and actions
//!   out; no sockets, no clock, no tasks.
pub mod bounce;
pub mod capture;
pub mod cli;
pub mod proto;
pub mod report;
pub mod scenario;
pub mod server;
pub mod state;
