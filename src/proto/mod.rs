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

/// Bytes as text, invalid UTF-8 replaced. Valid UTF-8 (nearly every
/// command and reply) is borrowed as it is after `str::from_utf8`, which
/// checks ASCII a word at a time; `String::from_utf8_lossy` walks it byte
/// by byte, and a few of these run for every command.
pub fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

pub use budget::{MemoryBudget, DEFAULT_MAX_MESSAGE_MEMORY};
pub use fact::{Answer, Fact, TxEnd};
pub use policy::{Asked, Context, Cursor, Decision, Healthy, Outcome, Policy, Stage, Tag};
pub use reply::{EnhancedCode, Reply};
pub use session::{BareLf, Captured, CloseReason, Output, Session, SessionConfig};

#[cfg(test)]
mod tests;
