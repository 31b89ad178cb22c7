//! The handoff endpoints (see [`handoff`](crate::handoff)): `GET /v1/handoff` and
//! `POST /v1/handoff`, through which a balancer drains this waiter's sessions to other
//! waiters, and `POST /v1/peer/handoff`, where a draining waiter offers them to this one.
//!
//! Not part of the diners' API (left out of the OpenAPI document): every request must
//! carry the group's secret (`--peer-secret`) as a bearer token. A waiter started
//! without a secret, or not in stateful mode, answers 404 `handoff-unavailable`.

use crate::Waiter;
use crate::handoff::{Handoff, MAX_MOVES, MoveOutcome, MoveRequest, PeerHandoff};
use crate::problem::Problem;
use crate::reply::Reply;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use bistro_store::SessionId;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

/// Largest handoff body (a thousand moves, or a batch of whole sessions).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Most session ids listed by default.
const DEFAULT_LIMIT: usize = 500;

/// `GET /v1/handoff` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Most session ids to list (default 500, at most 1000).
    pub limit: Option<usize>,
}

/// What `GET /v1/handoff` answers.
#[derive(Debug, Serialize)]
pub struct SessionsHeld {
    /// This waiter's id.
    pub waiter: String,
    /// Live sessions held now.
    pub sessions: usize,
    /// Up to `limit` of their ids.
    pub ids: Vec<SessionId>,
}

/// What `POST /v1/handoff` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moves {
    /// The sessions to move and where.
    pub moves: Vec<MoveRequest>,
}

/// What `POST /v1/handoff` answers.
#[derive(Debug, Serialize)]
pub struct Moved {
    /// One outcome per move, in order.
    pub results: Vec<MoveOutcome>,
    /// Live sessions still held after these moves.
    pub sessions: usize,
}

/// The handoff when the request may use it; otherwise the answer.
#[allow(clippy::result_large_err)]
fn authorized<'a>(waiter: &'a Waiter, req: &Request) -> Result<&'a Handoff, Response> {
    let Some(handoff) = waiter.handoff() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "handoff-unavailable",
            "This waiter cannot hand sessions off",
            format!(
                "handoff needs a stateful waiter started with --peer-secret; this one runs in {} mode{}",
                waiter.config().mode,
                if waiter.config().mode == crate::Mode::Stateful { " without a secret" } else { "" }
            ),
        )
        .into_response());
    };
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !handoff.authorized(token.trim()) {
        tracing::warn!("a handoff request without the group's secret was refused");
        let mut resp = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The group's secret is required",
            "send the waiters' --peer-secret as `Authorization: Bearer <secret>`".to_string(),
        )
        .into_response();
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"bistro-peers\""),
        );
        return Err(resp);
    }
    Ok(handoff)
}

async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Unreadable body",
                format!("the body could not be read: {e}"),
            )
            .into_response()
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Not a handoff request",
            format!("the body is not the expected JSON: {e}"),
        )
        .into_response()
    })
}

/// Lists the sessions this waiter holds.
pub async fn list(
    State(waiter): State<Waiter>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let handoff = match authorized(&waiter, &req) {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    let limit = match query {
        Ok(Query(q)) => q.limit.unwrap_or(DEFAULT_LIMIT),
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query",
                e.body_text(),
            )
            .into_response();
        }
    };
    let (sessions, ids) = handoff.sessions(waiter.clock().now(), limit.min(MAX_MOVES));
    Reply::json(
        StatusCode::OK,
        &SessionsHeld {
            waiter: waiter.config().id.clone(),
            sessions,
            ids,
        },
    )
    .into_response()
}

/// Moves sessions to the waiters the balancer names.
pub async fn moves(State(waiter): State<Waiter>, req: Request) -> Response {
    let handoff = match authorized(&waiter, &req) {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    let asked: Moves = match json_body(req).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if asked.moves.len() > MAX_MOVES {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-moves",
            "Too many moves",
            format!(
                "at most {MAX_MOVES} moves per request, got {}",
                asked.moves.len()
            ),
        )
        .into_response();
    }
    if let Some(m) = asked.moves.iter().find(|m| m.to == waiter.config().id) {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "A move to this waiter itself",
            format!("session moves must name another waiter, not {}", m.to),
        )
        .into_response();
    }
    let results = handoff.move_sessions(asked.moves).await;
    let (sessions, _) = handoff.sessions(waiter.clock().now(), 0);
    Reply::json(StatusCode::OK, &Moved { results, sessions }).into_response()
}

/// Takes sessions a draining waiter hands to this one.
pub async fn peer(State(waiter): State<Waiter>, req: Request) -> Response {
    let handoff = match authorized(&waiter, &req) {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    let offered: PeerHandoff = match json_body(req).await {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    let replies = handoff.receive(offered, waiter.clock().now());
    Reply::json(StatusCode::OK, &replies).into_response()
}
