//! The names of bistro's own HTTP headers (lower case, as HTTP/2 and `http` want them).

use http::HeaderName;

/// On every waiter answer: the id of the waiter that answered.
pub const WAITER: HeaderName = HeaderName::from_static("bistro-waiter");
/// On every waiter answer: its [`Mode`](crate::Mode).
pub const MODE: HeaderName = HeaderName::from_static("bistro-mode");
/// A session id: sent by clients without cookies, and by a waiter that just created a
/// session.
pub const SESSION: HeaderName = HeaderName::from_static("bistro-session");
/// On a replicated waiter's answer: the waiter holding the session's copy.
pub const BACKUP: HeaderName = HeaderName::from_static("bistro-backup");
/// On `421 session-moved`: the waiter that leads the session now.
pub const LEADER: HeaderName = HeaderName::from_static("bistro-leader");
/// On a replicated waiter's answer acknowledged with no copy anywhere: `alone`.
pub const REPLICATION: HeaderName = HeaderName::from_static("bistro-replication");
/// On a balancer answer whose diner's waiter is gone for good: `1`.
pub const SESSION_LOST: HeaderName = HeaderName::from_static("bistro-session-lost");
/// On a balancer answer served elsewhere than the diner's pinned waiter: `FROM->TO`.
pub const REROUTED: HeaderName = HeaderName::from_static("bistro-rerouted");
/// On the balancer's own answers: the request's id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("bistro-request-id");
