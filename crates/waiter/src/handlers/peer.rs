//! The peer endpoint of replicated mode: `POST /v1/peer/batch`, where the waiters of a
//! group send each other session copies, expiries, drops and claims (see
//! [`replication`](crate::replication)).
//!
//! Not part of the diners' API (it is left out of the OpenAPI document): only a request
//! carrying the group's secret as a bearer token, from a configured peer, is taken. A
//! batch carries whole sessions, so its body may be far larger than a diner's request;
//! [`MAX_BATCH_BYTES`] bounds it.

use crate::Waiter;
use crate::problem::Problem;
use crate::replication::PeerError;
use crate::replication::wire::Batch;
use crate::reply::Reply;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::AUTHORIZATION;

/// Largest batch body taken (a batch of up to 256 whole sessions).
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Applies a batch from a peer and answers one reply per item.
pub async fn batch(State(waiter): State<Waiter>, req: Request) -> Response {
    let Some(replication) = waiter.replication() else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not-replicated",
            "Not a replicated waiter",
            format!(
                "this waiter runs in {} mode and keeps no copies for peers",
                waiter.config().mode
            ),
        )
        .into_response();
    };
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !replication.authorized(token) {
        tracing::warn!("a peer request without the group's secret was refused");
        return peer_problem(&PeerError::Unauthorized);
    }
    let bytes = match axum::body::to_bytes(req.into_body(), MAX_BATCH_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Unreadable batch",
                format!("the batch body could not be read: {e}"),
            )
            .into_response();
        }
    };
    let batch: Batch = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Not a peer batch",
                format!("the body is not a peer batch: {e}"),
            )
            .into_response();
        }
    };
    match replication.receive(batch, waiter.clock().now()) {
        Ok(replies) => Reply::json(StatusCode::OK, &replies).into_response(),
        Err(e) => peer_problem(&e),
    }
}

fn peer_problem(e: &PeerError) -> Response {
    let (status, kind) = match e {
        PeerError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
        PeerError::UnknownPeer(_) => (StatusCode::FORBIDDEN, "unknown-peer"),
    };
    let mut resp = Problem::new(status, kind, "Not a peer", e.to_string()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"bistro-peers\""),
        );
    }
    resp
}
