//! The contract of [`OrderStore`], checked the same way on every backend.
//!
//! Each case below is one async function over an `Arc<dyn OrderStore>`; the
//! `conformance!` macro instantiates every case for the memory store, SQLite (a temp
//! file), PostgreSQL (a schema of its own) and Redis (a key prefix of its own), so the
//! tests of one backend are `memory::...`, `sqlite::...`, `postgres::...` and
//! `redis::...`. Every test uses its own place and removes it afterwards, so tests run in
//! parallel. Time is passed in: expiry is tested with larger `now` values, not sleeps.
//!
//! Tests of one backend's own machinery (schema versions, corrupt data, outages) are in
//! `conformance/backends.rs`.

#[path = "conformance/backends.rs"]
mod backends;
#[path = "conformance/common.rs"]
mod common;
#[path = "conformance/proxy.rs"]
mod proxy;

use bistro_orders::{Change, KitchenTimings, Order};
use bistro_store::{IdempotencyBegin, OrderStore, SessionCreated, SessionId, StoreError};
use common::{
    IDEM_TTL, MAX_KEYS, MAX_ORDERS, PENDING, T0, TTL, changed, open_order, placed_order, response,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Barrier;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::common::run(crate::common::Backend::Memory, crate::$case).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::common::run(crate::common::Backend::Sqlite, crate::$case).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::common::run(crate::common::Backend::Postgres, crate::$case).await;
            })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::common::run(crate::common::Backend::Redis, crate::$case).await;
            })*
        }
    };
}

conformance!(
    sessions_live_by_touch_and_expire_without_a_sweep,
    every_session_method_refuses_an_unknown_or_expired_session,
    every_session_method_extends_the_ttl_even_when_it_refuses,
    creating_over_an_expired_session_starts_empty,
    creating_a_live_session_again_keeps_it,
    orders_are_stored_whole_and_listed_oldest_first,
    sessions_do_not_see_each_others_orders,
    update_is_a_compare_and_set,
    update_takes_the_expected_version_from_the_caller,
    a_session_holds_a_bounded_number_of_orders,
    a_session_holds_a_bounded_number_of_idempotency_keys,
    concurrent_writers_lose_no_acknowledged_change,
    idempotency_claim_replay_mismatch_and_abort,
    idempotency_records_expire,
    concurrent_claims_of_a_key_have_one_winner,
    kitchen_finds_due_orders,
    sweep_removes_expired_sessions_in_bounded_batches,
    counts_follow_sessions_and_orders,
);

pub(crate) async fn new_session(store: &dyn OrderStore, now: u64) -> SessionId {
    let session = SessionId::generate();
    store
        .create_session(session, now)
        .await
        .expect("create a session");
    session
}

async fn sessions_live_by_touch_and_expire_without_a_sweep(store: Arc<dyn OrderStore>) {
    store.ping().await.expect("ping");
    let (a, b) = (
        new_session(&*store, T0).await,
        new_session(&*store, T0).await,
    );
    assert!(
        !store
            .touch_session(SessionId::generate(), T0)
            .await
            .unwrap(),
        "a session never created"
    );

    // Each touch extends the idle TTL from its own `now`.
    assert!(store.touch_session(a, T0 + TTL - 1).await.unwrap());
    assert!(store.touch_session(b, T0 + TTL - 1).await.unwrap());
    let expires = T0 + 2 * TTL - 1;
    // Alive until the last millisecond before `expires`, gone from `expires` on, with
    // no sweep in between.
    assert!(
        store.touch_session(a, expires - 1).await.unwrap(),
        "one ms before expiry"
    );
    assert!(!store.touch_session(b, expires).await.unwrap(), "at expiry");
    assert_eq!(
        store.list_orders(b, expires).await,
        Err(StoreError::UnknownSession)
    );
    // `a` was touched at `expires - 1`, so it lives a whole TTL more.
    assert_eq!(
        store.list_orders(a, expires - 1 + TTL - 1).await,
        Ok(vec![])
    );
    assert!(
        !store
            .touch_session(a, expires - 1 + TTL - 1 + TTL)
            .await
            .unwrap()
    );
}

async fn every_session_method_refuses_an_unknown_or_expired_session(store: Arc<dyn OrderStore>) {
    let expired = new_session(&*store, T0).await;
    let order = open_order(T0);
    store.insert_order(expired, &order, T0).await.unwrap();
    let later = T0 + TTL;
    for session in [SessionId::generate(), expired] {
        let unknown = Some(StoreError::UnknownSession);
        assert_eq!(store.list_orders(session, later).await.err(), unknown);
        assert_eq!(
            store.get_order(session, &order.id, later).await.err(),
            unknown
        );
        assert_eq!(
            store
                .insert_order(session, &open_order(later), later)
                .await
                .err(),
            unknown
        );
        let update = changed(&order, Change::SetSpice(2), later);
        assert_eq!(
            store
                .update_order(session, &update, update.version - 1, later)
                .await
                .err(),
            unknown
        );
        assert_eq!(
            store
                .idempotency_begin(session, "k", "fp", later)
                .await
                .err(),
            unknown
        );
        assert_eq!(
            store
                .idempotency_finish(session, "k", &response("{}"), later)
                .await
                .err(),
            unknown
        );
        assert!(!store.touch_session(session, later).await.unwrap());
        // Abort takes no `now`: it only ever releases a claim, so it never fails.
        store.idempotency_abort(session, "k").await.unwrap();
    }
}

async fn every_session_method_extends_the_ttl_even_when_it_refuses(store: Arc<dyn OrderStore>) {
    // Each call comes one ms before the session would expire had the previous call not
    // extended it; a domain refusal (not found, conflict, duplicate) extends it too.
    let session = new_session(&*store, T0).await;
    let at = |step: u64| T0 + step * (TTL - 1);
    let order = open_order(T0);
    store.insert_order(session, &order, at(1)).await.unwrap();
    assert_eq!(store.list_orders(session, at(2)).await.unwrap().len(), 1);
    store.get_order(session, &order.id, at(3)).await.unwrap();
    let missing = store.get_order(session, "AAAAAAAAAAAAAAAA", at(4)).await;
    assert_eq!(missing, Err(StoreError::OrderNotFound));
    let v2 = changed(&order, Change::SetSpice(1), at(5));
    store
        .update_order(session, &v2, v2.version - 1, at(5))
        .await
        .unwrap();
    let stale = store
        .update_order(session, &v2, v2.version - 1, at(6))
        .await;
    assert_eq!(
        stale,
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2
        })
    );
    let duplicate = store.insert_order(session, &order, at(7)).await;
    assert_eq!(duplicate, Err(StoreError::DuplicateOrder));
    let begin = store.idempotency_begin(session, "k", "fp", at(8)).await;
    assert_eq!(begin, Ok(IdempotencyBegin::Proceed));
    store
        .idempotency_finish(session, "k", &response("{}"), at(9))
        .await
        .unwrap();
    assert!(store.touch_session(session, at(10)).await.unwrap());
    assert_eq!(store.list_orders(session, at(11)).await.unwrap(), vec![v2]);
}

async fn creating_over_an_expired_session_starts_empty(store: Arc<dyn OrderStore>) {
    let session = new_session(&*store, T0).await;
    let order = placed_order(T0, 1_000);
    store.insert_order(session, &order, T0).await.unwrap();
    assert_eq!(
        store.idempotency_begin(session, "k", "fp", T0).await,
        Ok(IdempotencyBegin::Proceed)
    );

    let later = T0 + TTL;
    store.create_session(session, later).await.unwrap();
    assert_eq!(store.list_orders(session, later).await, Ok(vec![]));
    assert_eq!(
        store.get_order(session, &order.id, later).await,
        Err(StoreError::OrderNotFound)
    );
    assert_eq!(
        store.idempotency_begin(session, "k", "other", later).await,
        Ok(IdempotencyBegin::Proceed)
    );
    assert!(
        store.kitchen_due(later, 10).await.unwrap().is_empty(),
        "the old order left the kitchen"
    );
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.sessions, counts.orders), (1, 0));
}

async fn orders_are_stored_whole_and_listed_oldest_first(store: Arc<dyn OrderStore>) {
    let session = new_session(&*store, T0).await;
    assert_eq!(store.list_orders(session, T0).await, Ok(vec![]));

    // Text that JSON, SQL and Lua must all carry unchanged.
    let tricky = "Ünïcödé ✓ 'single' \"double\" \\ back | pipe %s ; DROP TABLE x; --";
    let first = changed(&open_order(T0), Change::SetRequests(tricky.into()), T0);
    let second = placed_order(T0 + 1, 1_000);
    let third = changed(&open_order(T0 + 2), Change::SetSpice(5), T0 + 2);
    for order in [&first, &second, &third] {
        store.insert_order(session, order, T0 + 3).await.unwrap();
    }
    assert_eq!(
        store.list_orders(session, T0 + 4).await.unwrap(),
        vec![first.clone(), second.clone(), third.clone()]
    );
    for order in [&first, &second, &third] {
        assert_eq!(
            &store.get_order(session, &order.id, T0 + 4).await.unwrap(),
            order
        );
    }
    assert_eq!(
        store.get_order(session, "AAAAAAAAAAAAAAAA", T0 + 4).await,
        Err(StoreError::OrderNotFound)
    );

    let mut again = open_order(T0 + 5);
    again.id = first.id.clone();
    assert_eq!(
        store.insert_order(session, &again, T0 + 5).await,
        Err(StoreError::DuplicateOrder)
    );
    assert_eq!(
        store.get_order(session, &first.id, T0 + 5).await.unwrap(),
        first,
        "a duplicate changes nothing"
    );
    assert_eq!(store.list_orders(session, T0 + 5).await.unwrap().len(), 3);
}

async fn sessions_do_not_see_each_others_orders(store: Arc<dyn OrderStore>) {
    let (a, b) = (
        new_session(&*store, T0).await,
        new_session(&*store, T0).await,
    );
    let order = open_order(T0);
    store.insert_order(a, &order, T0).await.unwrap();

    assert_eq!(
        store.get_order(b, &order.id, T0).await,
        Err(StoreError::OrderNotFound)
    );
    let update = changed(&order, Change::SetSpice(3), T0);
    assert_eq!(
        store.update_order(b, &update, update.version - 1, T0).await,
        Err(StoreError::OrderNotFound)
    );
    assert_eq!(store.list_orders(b, T0).await, Ok(vec![]));
    assert_eq!(
        store.get_order(a, &order.id, T0).await.unwrap(),
        order,
        "b's update did not reach a's order"
    );

    // Ids are per session: b holding an order with the same id leaves a's alone.
    let mut lookalike = placed_order(T0, 500);
    lookalike.id = order.id.clone();
    store.insert_order(b, &lookalike, T0).await.unwrap();
    assert_eq!(store.get_order(a, &order.id, T0).await.unwrap(), order);
    assert_eq!(store.get_order(b, &order.id, T0).await.unwrap(), lookalike);
}

async fn update_is_a_compare_and_set(store: Arc<dyn OrderStore>) {
    let session = new_session(&*store, T0).await;
    let v1 = open_order(T0);
    store.insert_order(session, &v1, T0).await.unwrap();

    let v2 = changed(&v1, Change::SetRequests("first writer".into()), T0 + 1);
    store
        .update_order(session, &v2, v2.version - 1, T0 + 1)
        .await
        .unwrap();
    assert_eq!(store.get_order(session, &v1.id, T0 + 1).await.unwrap(), v2);

    // A second writer that also started from version 1 loses, and is told what is stored.
    let lost = changed(&v1, Change::SetRequests("second writer".into()), T0 + 2);
    assert_eq!(
        store
            .update_order(session, &lost, lost.version - 1, T0 + 2)
            .await,
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2
        })
    );
    let mut ahead = changed(&v2, Change::SetSpice(1), T0 + 2);
    ahead.version = 5;
    assert_eq!(
        store
            .update_order(session, &ahead, ahead.version - 1, T0 + 2)
            .await,
        Err(StoreError::Conflict {
            expected: 4,
            actual: 2
        })
    );
    assert_eq!(
        store.get_order(session, &v1.id, T0 + 2).await.unwrap(),
        v2,
        "losers wrote nothing"
    );

    let v3 = changed(&v2, Change::Place(KitchenTimings::default()), T0 + 3);
    store
        .update_order(session, &v3, v3.version - 1, T0 + 3)
        .await
        .unwrap();
    assert_eq!(store.get_order(session, &v1.id, T0 + 3).await.unwrap(), v3);

    let stranger = changed(&open_order(T0), Change::SetSpice(1), T0);
    assert_eq!(
        store
            .update_order(session, &stranger, stranger.version - 1, T0 + 4)
            .await,
        Err(StoreError::OrderNotFound)
    );
}

async fn concurrent_writers_lose_no_acknowledged_change(store: Arc<dyn OrderStore>) {
    concurrent_writers(&[store]).await;
}

/// 32 writers, each making two changes to one order through `stores` (taking turns),
/// each change a read and a compare-and-set retried until it wins: every acknowledged
/// change must be in the final order, exactly once.
pub(crate) async fn concurrent_writers(stores: &[Arc<dyn OrderStore>]) {
    const WRITERS: usize = 32;
    const ROUNDS: usize = 2;
    let session = new_session(&*stores[0], T0).await;
    let order = open_order(T0);
    stores[0].insert_order(session, &order, T0).await.unwrap();

    let start = Arc::new(Barrier::new(WRITERS));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&stores[writer % stores.len()]);
        let (start, id) = (Arc::clone(&start), order.id.clone());
        writers.push(tokio::spawn(async move {
            start.wait().await;
            let mut conflicts = 0;
            for round in 0..ROUNDS {
                // Each acknowledged change appends a tag no other change uses.
                let tag = format!("{:02};", writer * ROUNDS + round);
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 10_000, "writer {writer} never got its change in");
                    let current = store.get_order(session, &id, T0).await.unwrap();
                    let requests = format!("{}{tag}", current.notes.requests);
                    let next = changed(&current, Change::SetRequests(requests), T0);
                    match store
                        .update_order(session, &next, next.version - 1, T0)
                        .await
                    {
                        Ok(()) => break,
                        Err(StoreError::Conflict { expected, actual }) => {
                            assert_eq!(expected, current.version);
                            assert!(
                                actual > expected,
                                "a conflict reports a newer version ({actual} vs {expected})"
                            );
                            conflicts += 1;
                        }
                        Err(e) => panic!("writer {writer}: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for writer in writers {
        conflicts += writer.await.expect("a writer finished");
    }

    let last = stores[0].get_order(session, &order.id, T0).await.unwrap();
    assert_eq!(
        last.version,
        1 + (WRITERS * ROUNDS) as u64,
        "one version per acknowledged change"
    );
    let tags: Vec<&str> = last.notes.requests.split_terminator(';').collect();
    let distinct: BTreeSet<&str> = tags.iter().copied().collect();
    let expected: BTreeSet<String> = (0..WRITERS * ROUNDS).map(|i| format!("{i:02}")).collect();
    assert_eq!(
        tags.len(),
        WRITERS * ROUNDS,
        "every change is there exactly once: {:?}",
        last.notes.requests
    );
    assert_eq!(distinct, expected.iter().map(String::as_str).collect());
    println!(
        "{WRITERS} writers over {} stores: {conflicts} conflicts retried",
        stores.len()
    );
}

async fn idempotency_claim_replay_mismatch_and_abort(store: Arc<dyn OrderStore>) {
    let session = new_session(&*store, T0).await;
    let done = response("{\"id\":\"x\",\"note\":\"ünï ✓\"}");

    assert_eq!(
        store.idempotency_begin(session, "k1", "fp-a", T0).await,
        Ok(IdempotencyBegin::Proceed)
    );
    assert_eq!(
        store.idempotency_begin(session, "k1", "fp-a", T0 + 1).await,
        Ok(IdempotencyBegin::InProgress)
    );
    assert_eq!(
        store.idempotency_begin(session, "k1", "fp-b", T0 + 1).await,
        Ok(IdempotencyBegin::Mismatch)
    );
    store
        .idempotency_finish(session, "k1", &done, T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        store.idempotency_begin(session, "k1", "fp-a", T0 + 3).await,
        Ok(IdempotencyBegin::Replay(done.clone()))
    );
    assert_eq!(
        store.idempotency_begin(session, "k1", "fp-b", T0 + 3).await,
        Ok(IdempotencyBegin::Mismatch)
    );
    // Abort only releases a pending claim: a finished request stays finished.
    store.idempotency_abort(session, "k1").await.unwrap();
    assert_eq!(
        store.idempotency_begin(session, "k1", "fp-a", T0 + 4).await,
        Ok(IdempotencyBegin::Replay(done))
    );

    assert_eq!(
        store.idempotency_begin(session, "k2", "fp-a", T0 + 5).await,
        Ok(IdempotencyBegin::Proceed)
    );
    store.idempotency_abort(session, "k2").await.unwrap();
    assert_eq!(
        store.idempotency_begin(session, "k2", "fp-b", T0 + 6).await,
        Ok(IdempotencyBegin::Proceed)
    );

    // Finishing a key nobody claimed records nothing.
    store
        .idempotency_finish(session, "k3", &response("x"), T0 + 7)
        .await
        .unwrap();
    assert_eq!(
        store.idempotency_begin(session, "k3", "fp-a", T0 + 8).await,
        Ok(IdempotencyBegin::Proceed)
    );

    // Keys belong to their session.
    let other = new_session(&*store, T0).await;
    assert_eq!(
        store.idempotency_begin(other, "k1", "fp-b", T0 + 9).await,
        Ok(IdempotencyBegin::Proceed)
    );
}

async fn idempotency_records_expire(store: Arc<dyn OrderStore>) {
    let session = new_session(&*store, T0).await;

    // A claim whose request never finished blocks repeats for PENDING, then a retry runs.
    assert_eq!(
        store.idempotency_begin(session, "k", "fp-a", T0).await,
        Ok(IdempotencyBegin::Proceed)
    );
    assert_eq!(
        store
            .idempotency_begin(session, "k", "fp-a", T0 + PENDING - 1)
            .await,
        Ok(IdempotencyBegin::InProgress)
    );
    let retry = T0 + PENDING;
    assert_eq!(
        store.idempotency_begin(session, "k", "fp-a", retry).await,
        Ok(IdempotencyBegin::Proceed)
    );
    assert_eq!(
        store
            .idempotency_begin(session, "k", "fp-a", retry + 1)
            .await,
        Ok(IdempotencyBegin::InProgress)
    );

    // A finished request is replayed for IDEM_TTL; after that the key is free, whatever
    // the fingerprint.
    let finished = retry + 2;
    store
        .idempotency_finish(session, "k", &response("done"), finished)
        .await
        .unwrap();
    let last_replay = finished + IDEM_TTL - 1;
    assert_eq!(
        store
            .idempotency_begin(session, "k", "fp-a", last_replay)
            .await,
        Ok(IdempotencyBegin::Replay(response("done")))
    );
    let gone = finished + IDEM_TTL;
    assert_eq!(
        store.idempotency_begin(session, "k", "fp-b", gone).await,
        Ok(IdempotencyBegin::Proceed)
    );
    assert_eq!(
        store
            .idempotency_begin(session, "k", "fp-b", gone + 1)
            .await,
        Ok(IdempotencyBegin::InProgress)
    );
}

async fn concurrent_claims_of_a_key_have_one_winner(store: Arc<dyn OrderStore>) {
    const CLAIMERS: usize = 16;
    let session = new_session(&*store, T0).await;
    for round in 0..8 {
        let key = format!("key-{round}");
        let start = Arc::new(Barrier::new(CLAIMERS));
        let claims: Vec<_> = (0..CLAIMERS)
            .map(|_| {
                let (store, start, key) = (Arc::clone(&store), Arc::clone(&start), key.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    store
                        .idempotency_begin(session, &key, "fp", T0)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for claim in claims {
            answers.push(claim.await.expect("a claimer finished"));
        }
        let proceeds = answers
            .iter()
            .filter(|a| **a == IdempotencyBegin::Proceed)
            .count();
        assert_eq!(proceeds, 1, "round {round}: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, IdempotencyBegin::Proceed | IdempotencyBegin::InProgress))
        );
    }
}

fn ids(due: &[(SessionId, Order)]) -> BTreeSet<String> {
    due.iter().map(|(_, order)| order.id.clone()).collect()
}

async fn kitchen_finds_due_orders(store: Arc<dyn OrderStore>) {
    let (s1, s2) = (
        new_session(&*store, T0).await,
        new_session(&*store, T0).await,
    );
    let a = placed_order(T0, 1_000);
    let b = placed_order(T0, 2_000);
    let open = open_order(T0);
    store.insert_order(s1, &a, T0).await.unwrap();
    store.insert_order(s2, &b, T0).await.unwrap();
    store.insert_order(s1, &open, T0).await.unwrap();

    assert!(
        store.kitchen_due(T0 + 500, 10).await.unwrap().is_empty(),
        "nothing is due yet"
    );
    let due = store.kitchen_due(T0 + 1_500, 10).await.unwrap();
    assert_eq!(due, vec![(s1, a.clone())]);
    // The limit holds. (A store may hand an order out again until it changes: waiters
    // sharing a store compare-and-set, and one of them wins.)
    assert_eq!(store.kitchen_due(T0 + 2_500, 1).await.unwrap().len(), 1);

    let cooking = changed(&a, Change::StartCooking { cook_ms: 5_000 }, T0 + 2_500);
    store
        .update_order(s1, &cooking, cooking.version - 1, T0 + 2_500)
        .await
        .unwrap();
    let due = store.kitchen_due(T0 + 3_000, 10).await.unwrap();
    assert!(
        !ids(&due).contains(&a.id),
        "a is not due again before it is cooked: {due:?}"
    );
    assert!(
        !ids(&due).contains(&open.id),
        "an open order never reaches the kitchen"
    );
    assert!(
        due.iter()
            .all(|(session, order)| *session == s2 && *order == b)
    );

    let cancelled = changed(&b, Change::Cancel, T0 + 3_000);
    store
        .update_order(s2, &cancelled, cancelled.version - 1, T0 + 3_000)
        .await
        .unwrap();
    let due = store.kitchen_due(T0 + 8_000, 10).await.unwrap();
    assert_eq!(
        due,
        vec![(s1, cooking)],
        "cooked orders are due, cancelled ones never"
    );
}

async fn sweep_removes_expired_sessions_in_bounded_batches(store: Arc<dyn OrderStore>) {
    let mut expired = Vec::new();
    for _ in 0..25 {
        let session = new_session(&*store, T0).await;
        store
            .insert_order(session, &open_order(T0), T0)
            .await
            .unwrap();
        assert_eq!(
            store.idempotency_begin(session, "k", "fp", T0).await,
            Ok(IdempotencyBegin::Proceed)
        );
        expired.push(session);
    }
    let mut live = Vec::new();
    for _ in 0..3 {
        let session = new_session(&*store, T0 + TTL / 2).await;
        let order = open_order(T0 + TTL / 2);
        store
            .insert_order(session, &order, T0 + TTL / 2)
            .await
            .unwrap();
        live.push((session, order));
    }
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.sessions, counts.orders), (28, 28));

    let now = T0 + TTL;
    let mut batches = Vec::new();
    for _ in 0..4 {
        batches.push(store.sweep(now, 10).await.unwrap());
    }
    assert_eq!(batches, vec![10, 10, 5, 0]);
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.sessions, counts.orders),
        (3, 3),
        "the orders went with their sessions"
    );
    for (session, order) in live {
        assert_eq!(store.list_orders(session, now).await.unwrap(), vec![order]);
    }
    for session in expired {
        assert!(!store.touch_session(session, now).await.unwrap());
    }
}

async fn counts_follow_sessions_and_orders(store: Arc<dyn OrderStore>) {
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.sessions, counts.orders), (0, 0));
    let (a, b) = (
        new_session(&*store, T0).await,
        new_session(&*store, T0).await,
    );
    let first = open_order(T0);
    store.insert_order(a, &first, T0).await.unwrap();
    store.insert_order(a, &open_order(T0), T0).await.unwrap();
    store
        .insert_order(b, &placed_order(T0, 1), T0)
        .await
        .unwrap();
    assert_eq!(
        store.insert_order(a, &first, T0).await,
        Err(StoreError::DuplicateOrder)
    );
    store
        .update_order(
            a,
            &changed(&first, Change::SetSpice(4), T0),
            first.version,
            T0,
        )
        .await
        .unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.sessions, counts.orders), (2, 3));
}

async fn creating_a_live_session_again_keeps_it(store: Arc<dyn OrderStore>) {
    // Two requests that name the same new session (a retried POST) both "create" it:
    // the second must not wipe what the first stored.
    let session = SessionId::generate();
    assert_eq!(
        store.create_session(session, T0).await,
        Ok(SessionCreated::New)
    );
    let order = open_order(T0);
    store.insert_order(session, &order, T0).await.unwrap();
    assert_eq!(
        store.create_session(session, T0 + 1).await,
        Ok(SessionCreated::Existing)
    );
    assert_eq!(store.list_orders(session, T0 + 2).await, Ok(vec![order]));
    // It also counts as a touch.
    assert!(
        store
            .touch_session(session, T0 + 1 + TTL - 1)
            .await
            .unwrap()
    );
    // Once expired, the same id starts a new, empty session.
    let later = T0 + 1 + 3 * TTL;
    assert_eq!(
        store.create_session(session, later).await,
        Ok(SessionCreated::New)
    );
    assert_eq!(store.list_orders(session, later).await, Ok(vec![]));
}

async fn update_takes_the_expected_version_from_the_caller(store: Arc<dyn OrderStore>) {
    let session = new_session(&*store, T0).await;
    let v1 = open_order(T0);
    store.insert_order(session, &v1, T0).await.unwrap();
    // The caller says which version it read; the new order's own version is stored
    // as it is, even when it skips ahead (several changes applied in one step).
    let mut v3 = changed(&v1, Change::SetSpice(3), T0 + 1);
    v3.version = 3;
    store.update_order(session, &v3, 1, T0 + 1).await.unwrap();
    assert_eq!(store.get_order(session, &v1.id, T0 + 1).await.unwrap(), v3);
    let mut again = changed(&v1, Change::SetSpice(4), T0 + 2);
    again.version = 4;
    assert_eq!(
        store.update_order(session, &again, 1, T0 + 2).await,
        Err(StoreError::Conflict {
            expected: 1,
            actual: 3
        })
    );
    assert_eq!(
        store.update_order(session, &again, 2, T0 + 2).await,
        Err(StoreError::Conflict {
            expected: 2,
            actual: 3
        })
    );
    store
        .update_order(session, &again, 3, T0 + 3)
        .await
        .unwrap();
    assert_eq!(
        store.get_order(session, &v1.id, T0 + 3).await.unwrap(),
        again
    );
}

async fn a_session_holds_a_bounded_number_of_orders(store: Arc<dyn OrderStore>) {
    let (full, other) = (
        new_session(&*store, T0).await,
        new_session(&*store, T0).await,
    );
    let mut kept = Vec::new();
    for i in 0..MAX_ORDERS as u64 {
        let order = open_order(T0 + i);
        store.insert_order(full, &order, T0 + i).await.unwrap();
        kept.push(order);
    }
    let over = open_order(T0 + 100);
    assert_eq!(
        store.insert_order(full, &over, T0 + 100).await,
        Err(StoreError::OrderLimit { limit: MAX_ORDERS })
    );
    assert_eq!(
        store.get_order(full, &over.id, T0 + 101).await,
        Err(StoreError::OrderNotFound),
        "a refused order is not stored"
    );
    assert_eq!(store.list_orders(full, T0 + 101).await, Ok(kept.clone()));
    // Changing an order of a full session is fine; so is another session.
    let first = &kept[0];
    let next = changed(first, Change::SetSpice(1), T0 + 102);
    store
        .update_order(full, &next, first.version, T0 + 102)
        .await
        .unwrap();
    store
        .insert_order(other, &open_order(T0 + 103), T0 + 103)
        .await
        .unwrap();
}

async fn a_session_holds_a_bounded_number_of_idempotency_keys(store: Arc<dyn OrderStore>) {
    let session = new_session(&*store, T0).await;
    for i in 0..MAX_KEYS {
        let key = format!("key-{i}");
        assert_eq!(
            store.idempotency_begin(session, &key, "fp", T0).await,
            Ok(IdempotencyBegin::Proceed)
        );
        store
            .idempotency_finish(session, &key, &response("{}"), T0)
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .idempotency_begin(session, "one-more", "fp", T0 + 1)
            .await,
        Err(StoreError::IdempotencyLimit { limit: MAX_KEYS })
    );
    // A key already held still replays; the cap only stops new ones.
    assert!(matches!(
        store
            .idempotency_begin(session, "key-0", "fp", T0 + 2)
            .await,
        Ok(IdempotencyBegin::Replay(_))
    ));
    // Expired records make room again, without a sweep.
    let later = T0 + IDEM_TTL;
    assert!(store.touch_session(session, later).await.unwrap());
    assert_eq!(
        store
            .idempotency_begin(session, "one-more", "fp", later)
            .await,
        Ok(IdempotencyBegin::Proceed)
    );
}
