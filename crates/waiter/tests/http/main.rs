//! Real-socket tests: a waiter served by `run` on 127.0.0.1:0, diners with cookie jars
//! (`bistro_client::Client`), and stores that are real (`MemoryStore`) or a real store
//! behind a switchable fault injector. Time-based behaviour (session expiry) runs under
//! tokio's paused clock and calls the router directly; connection limits (`limits`) run
//! on the real clock with limits of a few hundred milliseconds.

mod concurrency;
mod failures;
mod faulty;
mod harness;
mod journey;
mod limits;
mod openapi;
