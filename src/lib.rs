//! mailfault: a fake receiving mail server (a fake MX) that answers every
//! SMTP command as a TOML scenario says.
//!
//! # Layout
//!
//! - [`proto`]: the SMTP session, sans-I/O. Bytes in, replies and actions
//!   out; no sockets, no clock, no tasks. Also the SASL exchanges of AUTH.
//! - [`scenario`]: the TOML model, validation with `file:line:col`, the
//!   preset catalog, and the rule engine the session asks at every stage.
//! - [`state`]: counters shared across connections (times, sequences,
//!   rates, greylisting, open sessions, reputation) behind one trait: in
//!   memory, or in Redis to share them between instances.
//! - [`certs`]: certificates without sockets: the faults a scenario names,
//!   PEM parsing, the test CA and the broken certificates it signs.
//! - [`server`]: listeners, the per-connection driver, TLS set-up, hot
//!   reload, the connection cap and graceful shutdown.
//! - [`capture`]: transcripts (JSON Lines, in memory, live), the message
//!   store (bounded by bytes, fsynced to a folder before the 250) and the
//!   counters behind `/metrics`.
//! - [`api`]: the HTTP API (axum, on a thread of its own): health,
//!   messages, sessions, deliveries, the report, live events (SSE),
//!   metrics; loopback or a bearer token; and the web UI at `/` (`api/ui/`:
//!   plain HTML, CSS and JS, embedded).
//! - [`report`]: how the sender behaved: deliveries, findings, `[[expect]]`;
//!   as text, JSON, or one self-contained HTML page (the UI's timeline).
//! - [`bounce`]: `explain` for replies, `from-bounce` for bounce messages.
//! - [`cli`]: the command line.
//! - [`testing`]: `TestServer`, an in-process server for Rust tests
//!   (scenario from a string, wait-for, transcripts, report, stop on drop).
pub mod api;
pub mod bounce;
pub mod capture;
pub mod certs;
pub mod cli;
pub mod proto;
pub mod report;
pub mod scenario;
pub mod server;
pub mod state;
pub mod testing;
