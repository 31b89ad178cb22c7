//! What the API answers: the JSON shapes of responses. The order and menu views are
//! the contract's ([`bistro_proto::views`]), shared with the lab and the client; the
//! waiter's own (who it is, its store, its health) are here. The shapes derive
//! `ToSchema`, so `/openapi.json` documents exactly what is sent.

use crate::config::Mode;
pub use bistro_proto::views::{DishView, ItemView, MenuView, OrderList, OrderView, Progress};
use serde::Serialize;
use utoipa::ToSchema;

/// The store behind a waiter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoreInfo {
    /// `memory`, `sqlite`, `postgres` or `redis`.
    pub kind: String,
    /// The store URL with any password redacted.
    pub url: String,
}

/// Who a waiter is and what it holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaiterInfo {
    /// The waiter's name.
    pub id: String,
    /// Stateful, stateless or replicated.
    pub mode: Mode,
    /// Where the notes are kept.
    pub store: StoreInfo,
    /// Sessions in the store (for a central store: all waiters' sessions).
    pub sessions: u64,
    /// Orders in the store.
    pub orders: u64,
    /// Seconds since the waiter started.
    pub uptime_seconds: u64,
    /// The waiter's software version.
    pub version: String,
    /// Replicated mode: the peers, whether this waiter is alone, and what it leads and
    /// keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::replication::ReplicationStatus>,
    /// A stateful waiter that can hand sessions off: what it moved and forwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<crate::handoff::HandoffStatus>,
}

/// Liveness.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `alive` or `ready`.
    pub status: &'static str,
}

/// An RFC 9457 problem document, as sent with `application/problem+json` (documentation
/// only: [`Problem`](crate::problem::Problem) builds them).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemDoc {
    /// `https://bistro.dev/problems/<kind>`, stable per kind of error.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of error.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened and what to do next.
    pub detail: String,
}
