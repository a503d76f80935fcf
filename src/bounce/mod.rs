//! Reading replies and bounces: `explain` says what a reply means and what a
//! sender should do; `from-bounce` finds the failed recipients in a bounce
//! message and writes a scenario that reproduces each failure.

pub mod category;
pub mod dsn;
pub mod esp;
pub mod explain;
pub mod input;
pub mod lhost;
mod merge;
pub(crate) mod mime;
pub mod mtalog;
pub(crate) mod prose;
pub mod reason;
pub mod reproduce;
mod rfc3464;
