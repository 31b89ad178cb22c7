//! A simulated diner: one person ordering through the balancer, like a browser would.
//!
//! A visit follows the waiter API's real flow: read the menu, order dishes compatible
//! with the declared allergies (with notes: spice, allergies, a request), change the
//! items, change the spice, sometimes declare one more allergy, place the order, check
//! its progress until the kitchen has it ready, have it served, pay. A closed-loop diner
//! then starts its next order in the same session; an open-loop diner leaves.
//!
//! Every diner has its own [`Client`] (its own cookie jar, so the balancer's sticky
//! cookie and the waiter's session cookie are its own) and its own RNG seeded from the
//! scenario seed plus its index, so a run makes the same choices again.
//!
//! What happens on failure is what a careful client does: a request that got no answer
//! is retried at once (POSTs with the same `Idempotency-Key`, so a retry cannot order
//! twice); a 5xx is retried after a think time, up to three attempts in all; a lost
//! session (`session-lost`, `unknown-session`) makes the diner start over in a fresh
//! session with a fresh client; `idempotency-in-progress` on place, serve or pay makes it
//! read the order to see whether the action took effect; anything else abandons the
//! order. Every attempt is a [`Sample`], and every acknowledged state goes into the
//! diner's [`Ledger`].

use crate::api::{self, MenuDish};
use crate::choice;
use crate::ledger::{Contents, Ledger, OrderSnapshot};
use crate::load::Live;
use crate::sample::{ErrorKind, Sample, Step};
use crate::scenario::ThinkTime;
use bistro_client::{Client, Response};
use http::Method;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Attempts per step (the first try included).
const ATTEMPTS: u32 = 3;

/// What a diner needs to know about the run.
#[derive(Debug, Clone)]
pub struct DinerSetup {
    /// The diner's index (seeds its RNG with `seed + index`).
    pub index: usize,
    /// The scenario seed.
    pub seed: u64,
    /// The balancer.
    pub addr: SocketAddr,
    /// Pause between requests.
    pub think: ThinkTime,
    /// Pause between progress checks.
    pub poll_interval: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// How long to wait for the kitchen before giving the order up.
    pub kitchen_budget: Duration,
    /// When the load started (sample times count from here).
    pub t0: Instant,
    /// No request is sent at or after this instant.
    pub end: Instant,
    /// Live counters for the progress display.
    pub live: Arc<Live>,
}

/// What a diner leaves behind: its ledger, its clients (one per session, in ledger
/// order, for verification) and its samples.
pub struct DinerOutcome {
    /// What the servers acknowledged.
    pub ledger: Ledger,
    /// One client per session.
    pub clients: Vec<Client>,
    /// Every request.
    pub samples: Vec<Sample>,
    /// Failed requests by step, status and problem kind (e.g. `pay: 409
    /// invalid-transition`), to explain the error counts.
    pub failures: BTreeMap<String, u64>,
}

/// How a step ended.
enum StepResult {
    /// A 2xx answer.
    Ok(Response),
    /// It failed for good; `ambiguous` if any attempt may have taken effect.
    Failed { kind: ErrorKind, ambiguous: bool },
    /// The run is over.
    Stopped,
}

/// How a visit goes on.
enum Flow {
    /// The order is done (or given up); start the next one.
    Next,
    /// The session is gone; start the next order in a fresh session.
    SessionGone,
    /// The run is over.
    Stop,
}

/// One simulated diner.
pub struct Diner {
    setup: DinerSetup,
    rng: StdRng,
    ledger: Ledger,
    clients: Vec<Client>,
    menu: Vec<MenuDish>,
    samples: Vec<Sample>,
    failures: BTreeMap<String, u64>,
    next_at: Instant,
    /// Whether the next request's latency counts from its scheduled time (an open-loop
    /// arrival) rather than from when it actually left.
    from_schedule: bool,
    keys: u64,
    /// Fresh for every diner of every run, from the OS-seeded generator: see
    /// [`Diner::new_key`].
    nonce: u64,
}

impl Diner {
    /// A diner whose first request is due at `first_at`.
    pub fn new(setup: DinerSetup, first_at: Instant) -> Diner {
        let rng = StdRng::seed_from_u64(setup.seed.wrapping_add(setup.index as u64));
        let ledger = Ledger::new(setup.index);
        Diner {
            setup,
            rng,
            ledger,
            clients: Vec::new(),
            menu: Vec::new(),
            samples: Vec::new(),
            failures: BTreeMap::new(),
            next_at: first_at,
            from_schedule: false,
            keys: 0,
            nonce: rand::random(),
        }
    }

    /// Closed loop: orders one meal after another until the run ends.
    pub async fn run_closed(mut self) -> DinerOutcome {
        // Spread the crowd's first requests over one think time instead of a burst.
        let spread = self.rng.random_range(0..=self.setup.think.max_ms);
        self.next_at = self.setup.t0 + Duration::from_millis(spread);
        self.new_session();
        loop {
            match self.visit().await {
                Flow::Next => {}
                Flow::SessionGone => self.new_session(),
                Flow::Stop => break,
            }
        }
        self.finish().await
    }

    /// Open loop: one visit, from menu to payment, then leave. The first request's
    /// latency counts from the scheduled arrival, so a late generator or a stalled
    /// server cannot hide the wait.
    pub async fn run_visit(mut self) -> DinerOutcome {
        self.from_schedule = true;
        self.new_session();
        // However the visit ends, the diner leaves: what happened is in its ledger and
        // samples.
        match self.visit().await {
            Flow::Next | Flow::SessionGone | Flow::Stop => {}
        }
        self.finish().await
    }

    async fn finish(self) -> DinerOutcome {
        for c in &self.clients {
            c.disconnect().await;
        }
        DinerOutcome {
            ledger: self.ledger,
            clients: self.clients,
            samples: self.samples,
            failures: self.failures,
        }
    }

    /// Starts a fresh session with a fresh client (and so an empty cookie jar); the old
    /// client is kept, with its cookies, to read the old orders back at the end.
    fn new_session(&mut self) {
        self.clients
            .push(Client::new(self.setup.addr).with_timeout(self.setup.request_timeout));
        self.ledger.new_session();
    }

    fn session(&self) -> usize {
        self.ledger.sessions.len() - 1
    }

    fn think(&mut self) -> Duration {
        Duration::from_millis(
            self.rng
                .random_range(self.setup.think.min_ms..=self.setup.think.max_ms),
        )
    }

    /// A key no other request of any run has used. A key that starts a session also
    /// names it (the waiter derives the session from it), so with keys drawn only from
    /// the seeded generator, a second run of the same scenario on a store that keeps its
    /// data (PostgreSQL, a Redis the lab does not own; every point of a sweep) replayed
    /// the first run's answers into the new diners' sessions: orders counted as
    /// diverged and duplicated that no server had mixed up. The nonce keeps the keys
    /// unique, the seeded part keeps the choices repeatable.
    fn new_key(&mut self) -> String {
        self.keys += 1;
        format!(
            "lab-{:016x}-d{}-{}-{:08x}",
            self.nonce,
            self.setup.index,
            self.keys,
            self.rng.random::<u32>()
        )
    }

    /// Sends one request at its intended time and records it.
    ///
    /// Latency counts from when the request left, except for an open-loop arrival (see
    /// [`Diner::run_visit`]), which counts from its schedule. Within a visit the diner
    /// is a person who waits for each answer, so the next request is *meant* to leave
    /// after the answer and a think time: no request is omitted while the server stalls,
    /// and the timer's own lateness (about a millisecond) must not be charged to the
    /// server. That lateness is recorded apart, as the generator's send lag.
    async fn send(
        &mut self,
        step: Step,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Option<Result<Response, ErrorKind>> {
        if self.next_at >= self.setup.end {
            return None;
        }
        tokio::time::sleep_until(self.next_at).await;
        let intended = self.next_at;
        let sent = Instant::now();
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let client = self.clients.last().expect("a diner always has a session");
        let result = client.request(method.clone(), path, &headers, body).await;
        let done = Instant::now();
        let outcome = match result {
            Ok(resp) => match api::classify_response(&resp) {
                None => Ok(resp),
                Some(kind) => {
                    let what = format!("{}: {}", step.as_str(), api::describe_failure(&resp));
                    *self.failures.entry(what).or_default() += 1;
                    Err(kind)
                }
            },
            Err(e) => {
                let kind = api::classify_error(&e);
                *self
                    .failures
                    .entry(format!("{}: {kind}", step.as_str()))
                    .or_default() += 1;
                Err(kind)
            }
        };
        let us = |d: Duration| d.as_micros() as u64;
        let start = if std::mem::take(&mut self.from_schedule) {
            intended
        } else {
            sent
        };
        self.samples.push(Sample {
            at_us: us(start.saturating_duration_since(self.setup.t0)),
            latency_us: us(done.saturating_duration_since(start)),
            lag_us: us(sent.saturating_duration_since(intended)),
            step,
            error: outcome.as_ref().err().copied(),
        });
        self.setup.live.record(outcome.is_ok());
        let pause = self.think();
        self.next_at = done + pause;
        Some(outcome)
    }

    /// One step with retries: at once after no answer, after a think time after a 5xx.
    async fn step(
        &mut self,
        step: Step,
        method: Method,
        path: &str,
        body: Option<Value>,
        keyed: bool,
    ) -> StepResult {
        let key = keyed.then(|| self.new_key());
        let mut ambiguous = false;
        for attempt in 1..=ATTEMPTS {
            let Some(outcome) = self
                .send(step, &method, path, body.as_ref(), key.as_deref())
                .await
            else {
                return StepResult::Stopped;
            };
            match outcome {
                Ok(resp) => return StepResult::Ok(resp),
                Err(kind) => {
                    ambiguous |= kind.ambiguous();
                    if !kind.transient() || attempt == ATTEMPTS {
                        return StepResult::Failed { kind, ambiguous };
                    }
                    if kind.is_transport() {
                        self.next_at = Instant::now();
                    }
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Turns a failed step into how the visit goes on.
    fn after_failure(kind: ErrorKind) -> Flow {
        if kind.session_gone() {
            Flow::SessionGone
        } else {
            Flow::Next
        }
    }

    /// Reads an order out of a 2xx answer into the ledger; `false` if the body is not an
    /// order (then the order is given up: the lab cannot track what it cannot read).
    fn acknowledge(&mut self, resp: &Response) -> bool {
        match OrderSnapshot::from_json(&resp.value()) {
            Some(s) => {
                self.ledger.acknowledged(s);
                let client = self.clients.last().expect("a diner always has a session");
                let (cookie, affinity) = (
                    client.cookie(api::SESSION_COOKIE),
                    client.cookie(api::AFFINITY_COOKIE),
                );
                self.ledger.cookies(self.session(), cookie, affinity);
                true
            }
            None => {
                tracing::warn!(
                    diner = self.setup.index,
                    "a 2xx answer did not carry an order: {}",
                    resp.text()
                );
                false
            }
        }
    }

    /// One order, from menu to payment.
    async fn visit(&mut self) -> Flow {
        if self.menu.is_empty() {
            match self
                .step(Step::Menu, Method::GET, "/v1/menu", None, false)
                .await
            {
                StepResult::Ok(resp) => match api::parse_menu(&resp) {
                    Some(menu) => self.menu = menu,
                    None => {
                        tracing::warn!(
                            diner = self.setup.index,
                            "the menu answer has no dishes: {}",
                            resp.text()
                        );
                        return Flow::Next;
                    }
                },
                StepResult::Failed { kind, .. } => return Self::after_failure(kind),
                StepResult::Stopped => return Flow::Stop,
            }
        }
        let session = self.session();
        let allergies = choice::allergies(&mut self.rng, &self.menu);
        let items = choice::items(&mut self.rng, &self.menu, &allergies);
        let spice = choice::spice(&mut self.rng);
        let requests = choice::request(&mut self.rng);
        let body = json!({
            "items": choice::items_json(&items),
            "notes": {"spice": spice, "allergies": allergies, "requests": requests},
        });
        let id = match self
            .step(Step::Create, Method::POST, "/v1/orders", Some(body), true)
            .await
        {
            StepResult::Ok(resp) => {
                let Some(order) = OrderSnapshot::from_json(&resp.value()) else {
                    tracing::warn!(
                        diner = self.setup.index,
                        "a created order could not be read: {}",
                        resp.text()
                    );
                    return Flow::Next;
                };
                let waiter = resp
                    .header(bistro_proto::headers::WAITER.as_str())
                    .map(str::to_string);
                let cookie = self.clients[session].cookie(api::SESSION_COOKIE);
                let id = order.id.clone();
                self.ledger.created(session, order, waiter, cookie);
                id
            }
            StepResult::Failed { kind, ambiguous } => {
                if ambiguous && self.ledger.sessions[session].cookie.is_some() {
                    self.ledger.ambiguous_create(session);
                }
                return Self::after_failure(kind);
            }
            StepResult::Stopped => return Flow::Stop,
        };
        let path = format!("/v1/orders/{id}");

        // Change the items, then the spice, then maybe declare one more allergy.
        let new_items = choice::items(&mut self.rng, &self.menu, &allergies);
        let body = json!({"items": choice::items_json(&new_items)});
        if let Some(flow) = self
            .change(Step::ChangeItems, &id, body, |c| {
                c.items = new_items.clone()
            })
            .await
        {
            return flow;
        }
        let spice = choice::spice(&mut self.rng);
        if let Some(flow) = self
            .change(
                Step::ChangeSpice,
                &id,
                json!({"notes": {"spice": spice}}),
                |c| c.spice = spice,
            )
            .await
        {
            return flow;
        }
        if self.rng.random_bool(0.3)
            && let Some(all) = self
                .ledger
                .order(&id)
                .and_then(|o| choice::one_more_allergy(&mut self.rng, &self.menu, &o.contents))
            && let Some(flow) = self
                .change(
                    Step::AddAllergy,
                    &id,
                    json!({"notes": {"allergies": all.clone()}}),
                    |c| c.allergies = all.clone(),
                )
                .await
        {
            return flow;
        }

        // Place, wait for the kitchen, be served, pay.
        if let Some(flow) = self
            .action(Step::Place, &path, "place", &["placed", "cooking", "ready"])
            .await
        {
            return flow;
        }
        if let Some(flow) = self.wait_until_ready(&path).await {
            return flow;
        }
        if let Some(flow) = self.action(Step::Serve, &path, "serve", &["served"]).await {
            return flow;
        }
        if let Some(flow) = self.action(Step::Pay, &path, "pay", &["paid"]).await {
            return flow;
        }
        self.setup.live.paid();
        Flow::Next
    }

    /// A PATCH whose success is acknowledged and whose ambiguous failure is noted with
    /// the contents it would have produced. `None` to go on with the visit.
    async fn change(
        &mut self,
        step: Step,
        id: &str,
        body: Value,
        apply: impl FnOnce(&mut Contents),
    ) -> Option<Flow> {
        let mut expected = self.ledger.order(id)?.contents.clone();
        apply(&mut expected);
        expected = Contents::new(
            expected.items,
            expected.spice,
            expected.allergies,
            expected.requests,
        );
        match self
            .step(
                step,
                Method::PATCH,
                &format!("/v1/orders/{id}"),
                Some(body),
                false,
            )
            .await
        {
            StepResult::Ok(resp) => (!self.acknowledge(&resp)).then_some(Flow::Next),
            StepResult::Failed { kind, ambiguous } => {
                if ambiguous {
                    self.ledger.unconfirmed(id, expected);
                }
                Some(Self::after_failure(kind))
            }
            StepResult::Stopped => Some(Flow::Stop),
        }
    }

    /// A keyed POST (place, serve, pay) on the order at `order`. `None` to go on with
    /// the visit.
    ///
    /// `409 idempotency-in-progress` means an earlier attempt with this key may still
    /// take effect (typically: the waiter handling it died, and the balancer retried
    /// elsewhere). As the problem's detail advises, the diner then reads the order: if
    /// the action is visible (its status is one of `done`), the visit goes on.
    async fn action(
        &mut self,
        step: Step,
        order: &str,
        action: &str,
        done: &[&str],
    ) -> Option<Flow> {
        let path = format!("{order}/{action}");
        match self.step(step, Method::POST, &path, None, true).await {
            StepResult::Ok(resp) => (!self.acknowledge(&resp)).then_some(Flow::Next),
            StepResult::Failed {
                kind: ErrorKind::InProgress,
                ..
            } => match self.step(Step::Poll, Method::GET, order, None, false).await {
                StepResult::Ok(resp) => {
                    let status = resp
                        .value()
                        .get("status")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let seen = self.acknowledge(&resp)
                        && status.is_some_and(|s| done.contains(&s.as_str()));
                    (!seen).then_some(Flow::Next)
                }
                StepResult::Failed { kind, .. } => Some(Self::after_failure(kind)),
                StepResult::Stopped => Some(Flow::Stop),
            },
            StepResult::Failed { kind, .. } => Some(Self::after_failure(kind)),
            StepResult::Stopped => Some(Flow::Stop),
        }
    }

    /// Checks progress every poll interval until the order is ready. `None` once ready.
    async fn wait_until_ready(&mut self, path: &str) -> Option<Flow> {
        let give_up = Instant::now() + self.setup.kitchen_budget;
        loop {
            self.next_at = Instant::now() + self.setup.poll_interval;
            match self.step(Step::Poll, Method::GET, path, None, false).await {
                StepResult::Ok(resp) => {
                    if !self.acknowledge(&resp) {
                        return Some(Flow::Next);
                    }
                    match resp.value().get("status").and_then(Value::as_str) {
                        Some("ready") => return None,
                        Some("placed" | "cooking") => {}
                        // Someone else moved the order on: nothing more to do with it.
                        _ => return Some(Flow::Next),
                    }
                }
                StepResult::Failed { kind, .. } => return Some(Self::after_failure(kind)),
                StepResult::Stopped => return Some(Flow::Stop),
            }
            if Instant::now() >= give_up {
                tracing::debug!(
                    diner = self.setup.index,
                    "the kitchen did not finish in time; giving the order up"
                );
                return Some(Flow::Next);
            }
        }
    }
}
