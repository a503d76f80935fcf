//! The sender report: reads transcripts and says how the *sender* behaved.
//!
//! Attempts (one recipient in one transaction) are grouped into deliveries
//! (same sender and recipient, across connections; a delivered attempt ends
//! a delivery). The report lists each delivery's attempts with their
//! replies and intervals, flags what no good sender does, shows how a
//! client's reputation went, and checks the scenario's `[[expect]]`.

mod build;
mod html;
pub mod input;
mod render;

use serde::Serialize;

pub use build::{build, sender_of};
pub use html::html;
pub use render::text;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 250 after the message.
    Delivered,
    /// A 4xx reply.
    Deferred,
    /// A 5xx reply.
    Failed,
    /// The connection closed without a reply.
    Dropped,
    /// The sender gave up the transaction itself.
    Abandoned,
}

/// One recipient in one transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The recipient (shown once per delivery).
    #[serde(skip)]
    pub rcpt: String,
    pub time: String,
    #[serde(skip)]
    pub at_ms: u64,
    pub listener: String,
    pub session: u64,
    /// The connection, `IP:port`.
    pub client: String,
    /// The sender: the client's IP.
    pub sender: String,
    pub outcome: Outcome,
    /// Where it was decided: mail, rcpt, data, message.
    pub stage: String,
    /// The deciding reply (first line), if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Greylist retry time announced by this reply, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greylist_ms: Option<u64>,
}

/// Attempts for one sender and recipient, until one was delivered.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub mail_from: String,
    pub rcpt: String,
    pub outcome: Outcome,
    pub attempts: Vec<Attempt>,
    /// Milliseconds between consecutive attempts.
    pub intervals_ms: Vec<u64>,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.outcome == Outcome::Delivered
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A misbehaviour: fails `report --check`.
    Error,
    /// Worth knowing; does not fail the check.
    Warning,
}

/// Something the sender did that a good sender does not.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// A stable id: retry_after_permanent, command_after_421,
    /// greylist_retry_too_early, rate_limit_ignored,
    /// pipelining_unadvertised, no_quit, bare_line_ends.
    pub kind: &'static str,
    pub severity: Severity,
    pub time: String,
    /// The sender (client IP) that did it.
    pub client: String,
    /// The connection where it was seen (the last one, for a finding about
    /// several attempts).
    pub session: u64,
    pub message: String,
}

/// An `[[expect]]` and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    /// Why it failed, or what it saw.
    pub detail: String,
}

/// A transaction refused before any recipient (at MAIL), or a connection
/// refused before any transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub time: String,
    pub client: String,
    pub sender: String,
    pub session: u64,
    /// connect, ehlo, mail...
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_from: Option<String>,
    pub reply: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// Recipients of one client judged (2xx or 5xx at RCPT) per minute.
#[derive(Debug, Clone, Serialize)]
pub struct ReputationPoint {
    pub minute: String,
    pub attempts: u64,
    pub failures: u64,
}

/// How a sender's standing went, over all its connections, and when the
/// receiver turned on it.
#[derive(Debug, Clone, Serialize)]
pub struct Reputation {
    /// The sender: the client IP.
    pub client: String,
    /// The HELO/EHLO names it used.
    pub helos: Vec<String>,
    pub connections: u64,
    pub attempts: u64,
    pub failures: u64,
    pub series: Vec<ReputationPoint>,
    /// When a reputation rule first applied, and what it had counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turned_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turned_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turned_after: Option<(u64, u64)>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sessions: usize,
    /// Sessions without a close event yet (a live transcript): their open
    /// transaction is not judged.
    pub in_progress: usize,
    /// Distinct senders (client IPs).
    pub senders: usize,
    pub deliveries: Vec<Delivery>,
    pub refusals: Vec<Refusal>,
    pub findings: Vec<Finding>,
    pub reputation: Vec<Reputation>,
    pub expectations: Vec<Verdict>,
    /// Lines of the input that were not events.
    pub skipped_lines: usize,
}

impl Report {
    /// True when `report --check` passes: every expectation held and no
    /// finding is an error.
    pub fn passed(&self) -> bool {
        self.expectations.iter().all(|v| v.passed)
            && !self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

#[cfg(test)]
mod tests;
