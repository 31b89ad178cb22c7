//! Unit and property tests of the order rules.

use crate::*;
use proptest::prelude::*;

fn menu() -> Menu {
    Menu::default_menu()
}

fn item(dish: &str, quantity: u32) -> ItemInput {
    ItemInput {
        dish: dish.into(),
        quantity,
    }
}

fn open_with(items: Vec<ItemInput>, allergies: Vec<Allergen>) -> Result<Order, OrderError> {
    let new = NewOrder {
        items,
        notes: NotesInput {
            allergies: Some(allergies),
            ..Default::default()
        },
    };
    Order::create("o1".into(), new, &menu(), 1_000)
}

#[test]
fn create_computes_totals_and_starts_at_version_one() {
    let o = open_with(
        vec![item("fries", 2), item("salmon", 1), item("fries", 1)],
        vec![],
    )
    .unwrap();
    assert_eq!(o.version, 1);
    assert_eq!(o.status, Status::Open);
    assert_eq!(o.items.len(), 2, "repeated dishes are merged into one line");
    assert_eq!(o.total_cents, 3 * 450 + 1950);
    o.check_invariants(&menu()).unwrap();
}

#[test]
fn adding_a_dish_with_a_declared_allergen_is_refused_naming_both() {
    let err = open_with(vec![item("pad-thai", 1)], vec![Allergen::Peanuts]).unwrap_err();
    assert_eq!(
        err,
        OrderError::DishContainsAllergen {
            dish: "pad-thai".into(),
            allergen: Allergen::Peanuts
        }
    );
    assert!(err.to_string().contains("pad-thai") && err.to_string().contains("peanuts"));

    let mut o = open_with(vec![], vec![Allergen::Fish]).unwrap();
    let err = o
        .apply(
            &[Change::AddItem {
                dish: "salmon".into(),
                quantity: 1,
            }],
            &menu(),
            2,
        )
        .unwrap_err();
    assert_eq!(err.kind(), "dish-contains-allergen");
    assert_eq!(o.version, 1, "a refused change leaves the order untouched");
}

#[test]
fn declaring_an_allergy_that_an_ordered_dish_contains_is_refused() {
    let mut o = open_with(vec![item("satay-skewers", 1)], vec![]).unwrap();
    let err = o
        .apply(&[Change::AddAllergy(Allergen::Soy)], &menu(), 2)
        .unwrap_err();
    assert_eq!(
        err,
        OrderError::AllergyConflictsWithItem {
            allergen: Allergen::Soy,
            dish: "satay-skewers".into()
        }
    );
    assert!(o.notes.allergies.is_empty());
}

#[test]
fn a_patch_replacing_items_and_allergies_is_judged_on_the_result() {
    let mut o = open_with(vec![item("pad-thai", 1)], vec![]).unwrap();
    let patch = OrderPatch {
        items: Some(vec![item("green-salad", 1)]),
        notes: Some(NotesInput {
            allergies: Some(vec![Allergen::Peanuts]),
            ..Default::default()
        }),
    };
    o.apply(&patch.into_changes(), &menu(), 5).unwrap();
    assert_eq!(o.version, 2);
    o.check_invariants(&menu()).unwrap();
}

#[test]
fn quantities_spice_and_requests_are_bounded() {
    assert!(matches!(
        open_with(vec![item("fries", 0)], vec![]),
        Err(OrderError::BadQuantity { .. })
    ));
    assert!(matches!(
        open_with(vec![item("fries", 21)], vec![]),
        Err(OrderError::BadQuantity { .. })
    ));
    assert!(matches!(
        open_with(vec![item("fries", 15), item("fries", 6)], vec![]),
        Err(OrderError::BadQuantity { quantity: 21, .. })
    ));
    assert!(matches!(
        open_with(vec![item("caviar", 1)], vec![]),
        Err(OrderError::UnknownDish { .. })
    ));
    let mut o = open_with(vec![], vec![]).unwrap();
    assert_eq!(
        o.apply(&[Change::SetSpice(6)], &menu(), 2),
        Err(OrderError::BadSpice(6))
    );
    let long = "é".repeat(281);
    assert_eq!(
        o.apply(&[Change::SetRequests(long)], &menu(), 2),
        Err(OrderError::RequestsTooLong { chars: 281 })
    );
    o.apply(&[Change::SetRequests("é".repeat(280))], &menu(), 2)
        .unwrap();
    assert_eq!(
        o.apply(&[Change::SetRequests("no\nonions".into())], &menu(), 3),
        Err(OrderError::ControlCharacter)
    );
}

#[test]
fn full_lifecycle_moves_one_version_per_step() {
    let m = menu();
    let t = KitchenTimings {
        queue_ms: 100,
        cook_ms: 1_000,
    };
    let mut o = open_with(vec![item("fries", 1)], vec![]).unwrap();
    o.apply(&[Change::Place(t)], &m, 2_000).unwrap();
    assert_eq!(o.eta_seconds(2_000), Some(2));
    assert_eq!(o.kitchen_step(2_050, t), None, "not due yet");
    let step = o.kitchen_step(2_100, t).unwrap();
    o.apply(&[step], &m, 2_100).unwrap();
    assert_eq!(o.status, Status::Cooking);
    let step = o.kitchen_step(3_100, t).unwrap();
    o.apply(&[step], &m, 3_100).unwrap();
    assert_eq!(o.status, Status::Ready);
    assert_eq!(o.eta_seconds(3_100), Some(0));
    o.apply(&[Change::Serve], &m, 3_200).unwrap();
    o.apply(&[Change::Pay], &m, 3_300).unwrap();
    assert_eq!(o.status, Status::Paid);
    assert_eq!(o.version, 6);
    assert_eq!(o.closed_at_ms, Some(3_300));
    o.check_invariants(&m).unwrap();
}

#[test]
fn edits_after_the_kitchen_started_are_refused_as_state_errors() {
    let m = menu();
    let t = KitchenTimings {
        queue_ms: 0,
        cook_ms: 10,
    };
    let mut o = open_with(vec![item("fries", 1)], vec![]).unwrap();
    o.apply(&[Change::Place(t)], &m, 1).unwrap();
    o.apply(&[Change::SetSpice(3)], &m, 1)
        .expect("placed orders may still change");
    o.apply(&[o.kitchen_step(1, t).unwrap()], &m, 1).unwrap();
    let err = o.apply(&[Change::SetSpice(1)], &m, 2).unwrap_err();
    assert_eq!(
        err,
        OrderError::KitchenStarted {
            status: Status::Cooking
        }
    );
    assert_eq!(err.class(), ErrorClass::State);
    assert!(err.to_string().contains("kitchen has started"));
    assert_eq!(
        o.apply(&[Change::Cancel], &m, 2).unwrap_err().kind(),
        "invalid-transition"
    );
}

#[test]
fn invalid_transitions_are_refused() {
    let m = menu();
    let mut o = open_with(vec![], vec![]).unwrap();
    assert_eq!(
        o.apply(&[Change::Place(KitchenTimings::default())], &m, 1),
        Err(OrderError::EmptyOrder)
    );
    assert!(matches!(
        o.apply(&[Change::Pay], &m, 1),
        Err(OrderError::InvalidTransition { .. })
    ));
    assert!(matches!(
        o.apply(&[Change::Serve], &m, 1),
        Err(OrderError::InvalidTransition { .. })
    ));
    o.apply(&[Change::Cancel], &m, 1).unwrap();
    let err = o.apply(&[Change::SetSpice(1)], &m, 1).unwrap_err();
    assert_eq!(err.class(), ErrorClass::State);
    assert!(matches!(
        o.apply(&[Change::Cancel], &m, 1),
        Err(OrderError::InvalidTransition { .. })
    ));
}

#[test]
fn orders_round_trip_through_json() {
    let o = open_with(vec![item("fries", 2)], vec![Allergen::Dairy]).unwrap();
    let json = serde_json::to_string(&o).unwrap();
    let back: Order = serde_json::from_str(&json).unwrap();
    assert_eq!(back, o);
    assert!(json.contains("\"status\":\"open\""));
}

// ---- property tests -------------------------------------------------------------------

fn any_allergen() -> impl Strategy<Value = Allergen> {
    proptest::sample::select(Allergen::ALL.to_vec())
}

fn any_dish() -> impl Strategy<Value = String> {
    let mut ids: Vec<String> = menu().dishes().iter().map(|d| d.id.clone()).collect();
    ids.push("not-a-dish".into());
    proptest::sample::select(ids)
}

fn any_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (any_dish(), 0u32..25).prop_map(|(dish, quantity)| Change::AddItem { dish, quantity }),
        any_dish().prop_map(|dish| Change::RemoveItem { dish }),
        proptest::collection::vec((any_dish(), 0u32..22), 0..4).prop_map(|v| Change::ReplaceItems(
            v.into_iter()
                .map(|(dish, quantity)| ItemInput { dish, quantity })
                .collect()
        )),
        (0u32..8).prop_map(Change::SetSpice),
        any_allergen().prop_map(Change::AddAllergy),
        proptest::collection::btree_set(any_allergen(), 0..3).prop_map(Change::SetAllergies),
        "[a-z \\n]{0,300}".prop_map(Change::SetRequests),
        Just(Change::Place(KitchenTimings {
            queue_ms: 5,
            cook_ms: 5
        })),
        Just(Change::Cancel),
        Just(Change::StartCooking { cook_ms: 5 }),
        Just(Change::MarkReady),
        Just(Change::Serve),
        Just(Change::Pay),
    ]
}

proptest! {
    /// No sequence of operations, accepted or refused, leaves an order invalid, and the
    /// version moves by exactly one per accepted batch.
    #[test]
    fn no_sequence_of_changes_breaks_an_invariant(
        batches in proptest::collection::vec(proptest::collection::vec(any_change(), 1..3), 0..40)
    ) {
        let m = menu();
        let mut o = open_with(vec![], vec![]).unwrap();
        let mut now = 1_000;
        for batch in batches {
            now += 7;
            let before = o.clone();
            match o.apply(&batch, &m, now) {
                Ok(()) => prop_assert_eq!(o.version, before.version + 1),
                Err(_) => prop_assert_eq!(&o, &before),
            }
            prop_assert!(o.check_invariants(&m).is_ok(), "{:?}", o.check_invariants(&m));
        }
    }

    /// Whatever the order of operations, no ordered dish ever contains a declared allergen.
    #[test]
    fn the_allergy_rule_holds_in_any_order(changes in proptest::collection::vec(any_change(), 0..60)) {
        let m = menu();
        let mut o = open_with(vec![], vec![]).unwrap();
        for c in changes {
            let _refused_or_not = o.apply(std::slice::from_ref(&c), &m, 5);
            for line in &o.items {
                let dish = m.dish(&line.dish).unwrap();
                prop_assert!(dish.allergens.is_disjoint(&o.notes.allergies));
            }
        }
    }
}

#[test]
fn regression_a_batch_cannot_empty_an_order_and_start_cooking_it() {
    let m = menu();
    let t = KitchenTimings {
        queue_ms: 5,
        cook_ms: 5,
    };
    let mut o = open_with(vec![item("tomato-soup", 1)], vec![]).unwrap();
    o.apply(&[Change::Place(t)], &m, 2).unwrap();
    let err = o.apply(
        &[
            Change::ReplaceItems(vec![]),
            Change::StartCooking { cook_ms: 5 },
        ],
        &m,
        3,
    );
    assert_eq!(err, Err(OrderError::EmptyOrder));
    assert_eq!(o.items.len(), 1);
}
