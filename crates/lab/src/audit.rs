//! The read-back at the end of a run: every diner asks for each of its orders and lists
//! each of its sessions, through the balancer, with the same client (cookies included)
//! it used during the run. The answers become [`Observation`]s and [`Listing`]s, which
//! [`crate::verify`] judges.
//!
//! A read that fails transiently (a timeout, a 5xx) is retried a few times; one that
//! still fails is reported as such (the order is "unchecked"), never guessed. The whole
//! read-back has a deadline, so a wedged cluster cannot hang the lab.

use crate::api;
use crate::diner::DinerOutcome;
use crate::ledger::{Ledger, OrderSnapshot};
use crate::verify::{Listing, Observation, ReadBack};
use bistro_client::{Client, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Attempts per read.
const ATTEMPTS: u32 = 3;
/// Diners reading back at once.
const CONCURRENCY: usize = 16;

/// Reads back every diner's orders and sessions before `deadline`.
pub async fn read_back(diners: Vec<DinerOutcome>, deadline: Instant) -> Vec<(Ledger, ReadBack)> {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = JoinSet::new();
    for diner in diners {
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let back = one_diner(&diner, deadline).await;
            for c in &diner.clients {
                c.disconnect().await;
            }
            (diner.ledger, back)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(pair) => out.push(pair),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => tracing::error!("a read-back task was cancelled: {e}"),
        }
    }
    out.sort_by_key(|(l, _)| l.diner);
    out
}

async fn one_diner(diner: &DinerOutcome, deadline: Instant) -> ReadBack {
    let ledger = &diner.ledger;
    for (client, session) in diner.clients.iter().zip(&ledger.sessions) {
        // A waiter that answered `unknown-session` cleared the session cookie, and a
        // balancer that answered `session-lost` its affinity cookie. Present them again,
        // so the read-back asks about the session the orders were made in, on the waiter
        // that held it: if that waiter is back (after a pause), its orders are there.
        for (name, value) in [
            (api::SESSION_COOKIE, &session.cookie),
            (api::AFFINITY_COOKIE, &session.affinity),
        ] {
            if let Some(value) = value
                && client.cookie(name).is_none()
            {
                client.set_cookie(name, value);
            }
        }
    }
    let mut sessions = Vec::with_capacity(ledger.sessions.len());
    for (i, session) in ledger.sessions.iter().enumerate() {
        if session.cookie.is_none() {
            sessions.push(Listing::NoSession);
            continue;
        }
        let listing = match get(&diner.clients[i], "/v1/orders", deadline).await {
            Ok(resp) => match api::parse_order_ids(&resp) {
                Some(ids) => Listing::Listed(ids),
                None => Listing::Failed(format!("unreadable order list: {}", resp.text())),
            },
            Err(Read::Missing(kind)) => Listing::Missing(kind),
            Err(Read::Failed(why)) => Listing::Failed(why),
        };
        sessions.push(listing);
    }
    let mut orders = Vec::with_capacity(ledger.orders.len());
    for rec in &ledger.orders {
        let obs = match get(
            &diner.clients[rec.session],
            &format!("/v1/orders/{}", rec.id),
            deadline,
        )
        .await
        {
            Ok(resp) => match OrderSnapshot::from_json(&resp.value()) {
                Some(s) => Observation::Found(s),
                None => Observation::Failed(format!("unreadable order: {}", resp.text())),
            },
            Err(Read::Missing(kind)) => Observation::Missing(kind),
            Err(Read::Failed(why)) => Observation::Failed(why),
        };
        orders.push(obs);
    }
    ReadBack { orders, sessions }
}

enum Read {
    Missing(crate::sample::ErrorKind),
    Failed(String),
}

/// GET with retries on transient failures; "missing" answers are final.
async fn get(client: &Client, path: &str, deadline: Instant) -> Result<Response, Read> {
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if Instant::now() >= deadline {
            return Err(Read::Failed(format!(
                "the read-back deadline passed ({last})"
            )));
        }
        match client.get(path).await {
            Ok(resp) => match api::classify_response(&resp) {
                None => return Ok(resp),
                Some(kind)
                    if kind.session_gone() || kind == crate::sample::ErrorKind::OrderNotFound =>
                {
                    return Err(Read::Missing(kind));
                }
                Some(kind) if resp.status.as_u16() == 404 => return Err(Read::Missing(kind)),
                Some(kind) => last = format!("{kind}: HTTP {}", resp.status),
            },
            Err(e) => last = format!("{}: {e}", api::classify_error(&e)),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }
    Err(Read::Failed(last))
}
