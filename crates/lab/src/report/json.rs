//! `report.json`: every figure of the run, for scripts and for comparing runs later.
//!
//! The shape is the [`Report`] struct itself (serde), so the JSON and the Rust types
//! cannot drift apart; times are seconds since each architecture's load started,
//! latencies milliseconds.

use super::Report;

/// The report as pretty-printed JSON.
pub fn render(report: &Report) -> String {
    // A Report holds only strings, numbers, maps with string keys and vectors, which
    // always serialize.
    let mut text = serde_json::to_string_pretty(report).expect("a report always serializes");
    text.push('\n');
    text
}
