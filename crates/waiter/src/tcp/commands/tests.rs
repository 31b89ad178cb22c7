//! The grammar (pure) and the commands applied to a waiter over a memory store, without
//! sockets: the rules a connection follows, mode by mode.

use super::*;
use crate::config::Mode;
use crate::tcp::codec::{self, MAX_LINE};
use crate::tcp::conversation::{Conversation, Current};
use crate::{Waiter, WaiterConfig};
use bistro_orders::{Allergen, Status as OrderStatus};
use bistro_store::{MemoryStore, OrderStore, SessionId, StoreConfig, StoreError};
use proptest::prelude::*;
use std::sync::Arc;

fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    Command::parse(line.as_bytes())
}

#[test]
fn every_command_parses() {
    let id = SessionId::generate();
    let cases: Vec<(String, Command)> = vec![
        ("hello".into(), Command::Hello(Hello { session: None })),
        (
            format!("HELLO {id}"),
            Command::Hello(Hello {
                session: Some(Some(id)),
            }),
        ),
        (
            "HELLO nope".into(),
            Command::Hello(Hello {
                session: Some(None),
            }),
        ),
        ("MENU".into(), Command::Menu(Menu)),
        ("new".into(), Command::New(New)),
        (
            "ADD fries".into(),
            Command::Add(Add {
                dish: "fries".into(),
                quantity: 1,
            }),
        ),
        (
            "add\tfries 3".into(),
            Command::Add(Add {
                dish: "fries".into(),
                quantity: 3,
            }),
        ),
        (
            "REMOVE fries".into(),
            Command::Remove(Remove {
                dish: "fries".into(),
            }),
        ),
        ("SPICE 9".into(), Command::Spice(Spice { level: 9 })),
        (
            "ALLERGY Tree-Nuts".into(),
            Command::Allergy(Allergy {
                allergen: Allergen::TreeNuts,
            }),
        ),
        (
            "REQUEST  no onions,  please ".into(),
            Command::Request(Request {
                text: "no onions,  please".into(),
            }),
        ),
        (
            "REQUEST".into(),
            Command::Request(Request { text: "".into() }),
        ),
        ("SHOW".into(), Command::Show(Show)),
        ("PLACE".into(), Command::Place(Place)),
        ("STATUS".into(), Command::Status(Status)),
        ("CANCEL".into(), Command::Cancel(Cancel)),
        ("SERVE".into(), Command::Serve(Serve)),
        ("PAY".into(), Command::Pay(Pay)),
        ("HELP".into(), Command::Help(Help)),
        ("QUIT".into(), Command::Quit(Quit)),
    ];
    for (line, expected) in cases {
        assert_eq!(parse(&line), Ok(Some(expected)), "{line}");
    }
    assert_eq!(USAGE.len(), 16);
}

#[test]
fn bad_lines_get_stable_kinds() {
    for (line, kind) in [
        ("DANCE", "unknown-command"),
        ("ADD", "bad-argument"),
        ("ADD fries many", "bad-argument"),
        ("ADD fries 2 3", "bad-argument"),
        ("SPICE hot", "bad-argument"),
        ("SPICE -1", "bad-argument"),
        ("ALLERGY cats", "bad-argument"),
        ("SHOW me", "bad-argument"),
        ("HELLO a b", "bad-argument"),
    ] {
        assert_eq!(parse(line).unwrap_err().kind(), kind, "{line}");
    }
    assert_eq!(
        Command::parse(b"ADD \xff").unwrap_err().kind(),
        "bad-encoding"
    );
    assert_eq!(parse("   "), Ok(None));
    // A parse error is still counted under its command word.
    assert_eq!(label(b"add fries lots"), "ADD");
    assert_eq!(label(b"dance"), "unknown");
}

#[test]
fn unknown_commands_are_echoed_briefly() {
    let long = "X".repeat(500);
    let err = parse(&long).unwrap_err().to_string();
    assert!(err.len() < 120, "{err}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_100)) {
        let mut cursor = std::io::Cursor::new(&bytes[..]);
        while let Ok(line) = codec::line(&mut cursor) {
            prop_assert!(line.len() <= MAX_LINE);
            // Whatever the line, parsing either works or names a kind.
            if let Err(e) = Command::parse(line) {
                prop_assert!(!e.kind().is_empty());
            }
        }
    }

    #[test]
    fn text_lines_round_trip_through_the_framing(words in proptest::collection::vec("[A-Za-z0-9 ]{0,40}", 1..20)) {
        let input: String = words.iter().map(|w| format!("{w}\r\n")).collect();
        let mut cursor = std::io::Cursor::new(input.as_bytes());
        for w in &words {
            prop_assert_eq!(codec::line(&mut cursor).unwrap(), w.as_bytes());
        }
        prop_assert_eq!(codec::line(&mut cursor), Err(codec::FrameError::Incomplete));
    }
}

fn waiter(mode: Mode) -> Waiter {
    let config = WaiterConfig {
        mode,
        ..WaiterConfig::default()
    };
    Waiter::new(config, Arc::new(MemoryStore::new(StoreConfig::default())))
}

async fn run(w: &Waiter, c: &mut Conversation, line: &str) -> Reply {
    parse(line).unwrap().unwrap().apply(w, c).await
}

#[tokio::test]
async fn stateful_drafts_stay_on_the_connection_until_place() {
    let w = waiter(Mode::Stateful);
    let mut c = Conversation::default();
    assert_eq!(
        run(&w, &mut c, "ADD fries").await.result_label(),
        "no-order"
    );
    let new = run(&w, &mut c, "NEW").await;
    assert_eq!(new.result_label(), "ok");
    assert!(new.data()[0].starts_with("session "), "{new:?}");
    let session = c.session.unwrap();
    assert_eq!(run(&w, &mut c, "ADD fries 2").await.result_label(), "ok");
    assert_eq!(run(&w, &mut c, "SPICE 2").await.result_label(), "ok");
    // Nothing is stored yet: the session holds no order.
    let now = w.clock().now();
    assert!(
        w.store()
            .list_orders(session, now)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(c.has_draft());
    assert_eq!(run(&w, &mut c, "NEW").await.result_label(), "draft-pending");
    assert_eq!(
        run(&w, &mut c, "HELLO").await.result_label(),
        "draft-pending"
    );
    let placed = run(&w, &mut c, "PLACE").await;
    assert_eq!(placed.result_label(), "ok", "{placed:?}");
    let stored = w.store().list_orders(session, now).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, OrderStatus::Placed);
    assert_eq!(stored[0].items[0].quantity, 2);
    assert!(matches!(c.current, Current::Stored(_)));
    // After PLACE, changes go through the store.
    assert_eq!(
        run(&w, &mut c, "REQUEST no onions").await.result_label(),
        "ok"
    );
    let order = w
        .store()
        .get_order(session, &stored[0].id, now)
        .await
        .unwrap();
    assert_eq!(order.notes.requests, "no onions");
}

#[tokio::test]
async fn stateless_writes_every_command_through() {
    let w = waiter(Mode::Stateless);
    let mut c = Conversation::default();
    run(&w, &mut c, "NEW").await;
    let session = c.session.unwrap();
    let id = c.stored_id().unwrap().to_string();
    run(&w, &mut c, "ADD tomato-soup").await;
    let order = w
        .store()
        .get_order(session, &id, w.clock().now())
        .await
        .unwrap();
    assert_eq!(order.items.len(), 1);
    // Another connection resumes the same open order.
    let mut other = Conversation::default();
    let hello = run(&w, &mut other, &format!("HELLO {session}")).await;
    assert_eq!(hello.result_label(), "ok");
    assert_eq!(other.stored_id(), Some(id.as_str()));
    assert_eq!(run(&w, &mut other, "ADD fries").await.result_label(), "ok");
    let order = w
        .store()
        .get_order(session, &id, w.clock().now())
        .await
        .unwrap();
    assert_eq!(order.items.len(), 2);
}

#[tokio::test]
async fn domain_and_store_errors_use_the_http_kinds() {
    let w = waiter(Mode::Stateful);
    let mut c = Conversation::default();
    run(&w, &mut c, "NEW").await;
    for (line, kind) in [
        ("ALLERGY peanuts", "ok"),
        ("ADD satay-skewers", "dish-contains-allergen"),
        ("ADD caviar", "unknown-dish"),
        ("ADD fries 21", "bad-quantity"),
        ("SPICE 6", "bad-spice"),
        ("REMOVE fries", "not-on-order"),
        ("PLACE", "empty-order"),
        ("SERVE", "invalid-transition"),
    ] {
        assert_eq!(run(&w, &mut c, line).await.result_label(), kind, "{line}");
    }
    let mut fresh = Conversation::default();
    let unknown = run(&w, &mut fresh, &format!("HELLO {}", SessionId::generate())).await;
    assert_eq!(unknown.result_label(), "unknown-session");
    assert!(unknown.status_line().contains("(w1)"), "{unknown:?}");
    assert_eq!(
        run(&w, &mut fresh, "HELLO garbage").await.result_label(),
        "unknown-session"
    );
    // Kinds come from the same mapping as the HTTP problems.
    for err in [
        StoreError::UnknownSession,
        StoreError::OrderNotFound,
        StoreError::OrderLimit { limit: 2 },
        StoreError::Timeout {
            after: std::time::Duration::from_secs(1),
            maybe_applied: true,
        },
    ] {
        let err = crate::service::ServiceError::write(err);
        assert_eq!(
            crate::tcp::reply::Refusal::service(&w, &err).kind,
            w.problem(&err).kind()
        );
    }
}

#[tokio::test]
async fn cancelling_a_draft_drops_it_and_quit_warns_about_a_draft() {
    let w = waiter(Mode::Stateful);
    let mut c = Conversation::default();
    run(&w, &mut c, "NEW").await;
    assert!(
        run(&w, &mut c, "QUIT")
            .await
            .status_line()
            .contains("discarded")
    );
    assert_eq!(run(&w, &mut c, "CANCEL").await.result_label(), "ok");
    assert!(!c.has_draft());
    assert_eq!(run(&w, &mut c, "SHOW").await.result_label(), "no-order");
    let quit = run(&w, &mut c, "QUIT").await;
    assert!(quit.closes());
    assert_eq!(quit.status_line(), "OK bye");
}

#[tokio::test]
async fn show_menu_and_help_list_data_lines() {
    let w = waiter(Mode::Stateful);
    let mut c = Conversation::default();
    let menu = run(&w, &mut c, "MENU").await;
    assert_eq!(menu.data().len(), w.config().menu.dishes().len());
    assert!(menu.data().iter().all(|l| l.starts_with("dish ")));
    let help = run(&w, &mut c, "HELP").await;
    assert!(
        help.data()
            .iter()
            .any(|l| l.contains("lives only on this connection"))
    );
    run(&w, &mut c, "NEW").await;
    run(&w, &mut c, "ADD fries 2").await;
    let show = run(&w, &mut c, "SHOW").await;
    assert!(show.data()[0].contains("draft"), "{show:?}");
    assert!(
        show.data().iter().any(|l| l.starts_with("item fries 2 x ")),
        "{show:?}"
    );
    assert_eq!(
        run(&w, &mut c, "STATUS").await.status_line(),
        "OK status open"
    );
}
