//! Scenarios: the TOML model, its validation (`file:line:col` errors), the
//! preset catalog, and the rule engine that answers the session.

pub mod engine;
mod headers;
mod index;
pub mod load;
pub mod magic;
mod memo;
pub mod model;
pub mod pattern;
pub mod presets;
pub mod stage_codes;
pub mod units;

pub use engine::Engine;
pub use load::{default_scenario, load_file, parse, Diagnostic, LoadError};
pub use model::Scenario;

#[cfg(test)]
mod tests;
