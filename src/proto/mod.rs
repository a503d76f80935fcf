//! The SMTP protocol core, sans-I/O: line framing, commands, the DATA
//! decoder, replies and the session state machine. Nothing here touches a
//! socket, a clock or a task; the server drives it and performs what it asks.

pub mod auth;
pub mod budget;
pub mod command;
pub mod data;
pub mod fact;
pub mod line;
pub mod policy;
pub mod reply;
pub mod session;

pub use budget::{MemoryBudget, DEFAULT_MAX_MESSAGE_MEMORY};
pub use fact::{Answer, Fact, TxEnd};
pub use policy::{Asked, Context, Cursor, Decision, Healthy, Outcome, Policy, Stage, Tag};
pub use reply::{EnhancedCode, Reply};
pub use session::{BareLf, Captured, CloseReason, Output, Session, SessionConfig};

#[cfg(test)]
mod tests;
