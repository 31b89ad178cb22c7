//! # bistro-proto: the contract between bistro's parts
//!
//! What the waiter, the balancer, the lab, the client and the tests must agree on, each
//! written once: the [`Mode`] of a waiter, the names of bistro's [`headers`] and
//! [`cookies`] (with the one cookie parser), the [`problem`] type URIs, and the
//! [`ready`] line a `bistro waiter` or `bistro balancer` prints when it accepts
//! connections, which supervisors (`bistro up`, the lab, the benchmarks, the tests) read
//! instead of scraping log lines, and the JSON [`views`] of orders and the menu.
//!
//! No I/O and no async here: plain names, types and parsers.

#![warn(missing_docs)]

pub mod cookies;
pub mod headers;
pub mod mode;
pub mod problem;
pub mod ready;
pub mod views;

pub use mode::{Mode, ParseModeError};
pub use ready::Ready;
