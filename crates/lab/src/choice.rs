//! What a diner orders: its choices, as pure functions of a seeded RNG and the menu.
//!
//! The choices respect the allergy rule the waiters enforce, so a refusal (422) in a run
//! means something went wrong rather than a diner ordering carelessly: dishes are picked
//! only among those free of the declared allergies, and an allergy is only added if no
//! dish on the order contains it.

use crate::api::MenuDish;
use crate::ledger::Contents;
use rand::seq::IndexedRandom;
use rand::{Rng, RngExt};
use serde_json::{Value, json};

/// Free-text requests diners choose from.
const REQUESTS: [&str; 6] = [
    "",
    "no onions",
    "sauce on the side",
    "extra napkins",
    "a window seat",
    "birthday candle",
];

/// Half the diners declare no allergy, four in ten one, one in ten two; drawn from the
/// allergens the menu mentions.
pub fn allergies(rng: &mut impl Rng, menu: &[MenuDish]) -> Vec<String> {
    let mut known: Vec<&String> = menu.iter().flat_map(|d| &d.allergens).collect();
    known.sort();
    known.dedup();
    let n = match rng.random_range(0..10) {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    };
    let mut out: Vec<String> = known.sample(rng, n).map(|a| a.to_string()).collect();
    out.sort();
    out
}

/// One to three dishes free of `allergies`, one to three portions each.
pub fn items(rng: &mut impl Rng, menu: &[MenuDish], allergies: &[String]) -> Vec<(String, u32)> {
    let safe: Vec<&MenuDish> = menu
        .iter()
        .filter(|d| !d.allergens.iter().any(|a| allergies.contains(a)))
        .collect();
    let n = rng.random_range(1..=3usize).min(safe.len());
    let dishes: Vec<String> = safe.sample(rng, n).map(|d| d.id.clone()).collect();
    dishes
        .into_iter()
        .map(|d| (d, rng.random_range(1..=3u32)))
        .collect()
}

/// A spice level, 0 to 5.
pub fn spice(rng: &mut impl Rng) -> u8 {
    rng.random_range(0..=5u8)
}

/// A free-text request (often none).
pub fn request(rng: &mut impl Rng) -> String {
    REQUESTS
        .choose(rng)
        .copied()
        .unwrap_or_default()
        .to_string()
}

/// The full allergy set of an order with `contents` plus one allergen that no dish on
/// it contains, if there is one.
pub fn one_more_allergy(
    rng: &mut impl Rng,
    menu: &[MenuDish],
    contents: &Contents,
) -> Option<Vec<String>> {
    let on_order: Vec<&String> = contents
        .items
        .iter()
        .filter_map(|(dish, _)| menu.iter().find(|d| &d.id == dish))
        .flat_map(|d| &d.allergens)
        .collect();
    let mut candidates: Vec<&String> = menu
        .iter()
        .flat_map(|d| &d.allergens)
        .filter(|a| !on_order.contains(a) && !contents.allergies.contains(a))
        .collect();
    candidates.sort();
    candidates.dedup();
    let extra = candidates.choose(rng)?.to_string();
    let mut all = contents.allergies.clone();
    all.push(extra);
    all.sort();
    Some(all)
}

/// Items as the API's JSON (`[{"dish": ..., "quantity": ...}]`).
pub fn items_json(items: &[(String, u32)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(dish, quantity)| json!({"dish": dish, "quantity": quantity}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn menu() -> Vec<MenuDish> {
        let dish = |id: &str, allergens: &[&str]| MenuDish {
            id: id.into(),
            allergens: allergens.iter().map(|a| a.to_string()).collect(),
        };
        vec![
            dish("fries", &[]),
            dish("pad-thai", &["peanuts", "egg", "soy", "fish"]),
            dish("satay-skewers", &["peanuts", "soy"]),
            dish("margherita", &["gluten", "dairy"]),
            dish("salmon", &["fish"]),
            dish("green-salad", &[]),
        ]
    }

    #[test]
    fn dishes_are_always_safe_for_the_declared_allergies() {
        let menu = menu();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..500 {
            let allergies = allergies(&mut rng, &menu);
            let items = items(&mut rng, &menu, &allergies);
            assert!(!items.is_empty() && items.len() <= 3);
            for (dish, qty) in &items {
                assert!((1..=3).contains(qty));
                let d = menu.iter().find(|d| &d.id == dish).unwrap();
                assert!(
                    !d.allergens.iter().any(|a| allergies.contains(a)),
                    "{dish} contains one of {allergies:?}"
                );
            }
        }
    }

    #[test]
    fn an_added_allergy_never_conflicts_with_the_order() {
        let menu = menu();
        let mut rng = StdRng::seed_from_u64(2);
        let contents = Contents::new(
            vec![("pad-thai".into(), 1)],
            2,
            vec!["dairy".into()],
            String::new(),
        );
        for _ in 0..100 {
            let all = one_more_allergy(&mut rng, &menu, &contents).unwrap();
            assert_eq!(all.len(), 2);
            assert!(all.contains(&"dairy".to_string()));
            assert!(
                all.iter()
                    .all(|a| !["peanuts", "egg", "soy", "fish"].contains(&a.as_str())),
                "{all:?}"
            );
        }
        let everything = Contents::new(
            vec![("pad-thai".into(), 1), ("margherita".into(), 1)],
            0,
            vec![],
            String::new(),
        );
        assert_eq!(
            one_more_allergy(&mut rng, &menu, &everything),
            None,
            "no allergen is left to declare"
        );
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let menu = menu();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let a = allergies(&mut rng, &menu);
            (
                items(&mut rng, &menu, &a),
                a,
                spice(&mut rng),
                request(&mut rng),
            )
        };
        assert_eq!(run(42), run(42));
        assert_eq!(
            items_json(&[("fries".into(), 2)]),
            json!([{"dish": "fries", "quantity": 2}])
        );
    }
}
