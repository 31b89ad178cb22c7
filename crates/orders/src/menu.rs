//! The menu: which dishes exist, what they cost and which allergens they contain.
//!
//! A default menu is compiled into the binary (`crates/orders/menu.toml`); a custom one
//! is loaded from a TOML file of the same shape. A menu is validated once when it is
//! built, so every later lookup can trust it.

use crate::allergen::Allergen;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// The default menu's TOML source, also the reference for the custom-menu format.
pub const DEFAULT_MENU_TOML: &str = include_str!("../menu.toml");

/// One dish on the menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dish {
    /// Stable identifier used in orders, e.g. `pad-thai`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Price of one portion, in cents.
    pub price_cents: u32,
    /// Allergens the dish contains.
    pub allergens: BTreeSet<Allergen>,
}

/// Why a menu could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MenuError {
    /// The TOML did not parse or did not have the expected shape.
    #[error(
        "menu is not valid TOML of the expected shape ([[dish]] tables with id, name, price_cents, allergens): {0}"
    )]
    Syntax(String),
    /// The menu has no dishes.
    #[error("menu has no dishes; add at least one [[dish]] table")]
    Empty,
    /// Two dishes share an id.
    #[error("dish id {0:?} appears more than once; dish ids must be unique")]
    DuplicateId(String),
    /// A dish id is not a lowercase slug.
    #[error("dish id {0:?} is invalid; use 1-40 lowercase letters, digits and dashes")]
    BadId(String),
    /// A dish has an empty name or a name that is too long.
    #[error("dish {0:?} needs a name of 1-80 characters")]
    BadName(String),
    /// A dish has a zero price.
    #[error("dish {0:?} has price_cents 0; prices must be positive")]
    ZeroPrice(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MenuFile {
    dish: Vec<Dish>,
}

/// A validated menu. Cheap to look up by dish id.
#[derive(Debug, Clone)]
pub struct Menu {
    dishes: Vec<Dish>,
    by_id: HashMap<String, usize>,
}

impl Menu {
    /// The menu compiled into the binary.
    pub fn default_menu() -> Menu {
        // The embedded menu is checked by a unit test, so this cannot fail at run time.
        Menu::from_toml(DEFAULT_MENU_TOML).expect("the embedded default menu is valid")
    }

    /// Parses and validates a menu from TOML (`[[dish]]` tables).
    ///
    /// # Errors
    /// [`MenuError`] says which rule the file breaks.
    pub fn from_toml(src: &str) -> Result<Menu, MenuError> {
        let file: MenuFile = toml::from_str(src).map_err(|e| MenuError::Syntax(e.to_string()))?;
        Menu::new(file.dish)
    }

    /// Validates a list of dishes into a menu.
    ///
    /// # Errors
    /// [`MenuError`] says which rule the list breaks.
    pub fn new(dishes: Vec<Dish>) -> Result<Menu, MenuError> {
        if dishes.is_empty() {
            return Err(MenuError::Empty);
        }
        let mut by_id = HashMap::with_capacity(dishes.len());
        for (i, d) in dishes.iter().enumerate() {
            let valid_id = !d.id.is_empty()
                && d.id.len() <= 40
                && d.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_id {
                return Err(MenuError::BadId(d.id.clone()));
            }
            let name_len = d.name.trim().chars().count();
            if name_len == 0 || name_len > 80 {
                return Err(MenuError::BadName(d.id.clone()));
            }
            if d.price_cents == 0 {
                return Err(MenuError::ZeroPrice(d.id.clone()));
            }
            if by_id.insert(d.id.clone(), i).is_some() {
                return Err(MenuError::DuplicateId(d.id.clone()));
            }
        }
        Ok(Menu { dishes, by_id })
    }

    /// Looks a dish up by id.
    pub fn dish(&self, id: &str) -> Option<&Dish> {
        self.by_id.get(id).map(|&i| &self.dishes[i])
    }

    /// All dishes, in menu order.
    pub fn dishes(&self) -> &[Dish] {
        &self.dishes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_menu_is_valid_and_large_enough() {
        let menu = Menu::default_menu();
        assert!(menu.dishes().len() >= 12);
        assert!(
            menu.dish("pad-thai")
                .unwrap()
                .allergens
                .contains(&Allergen::Peanuts)
        );
        assert!(menu.dish("nope").is_none());
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let src = r#"
            [[dish]]
            id = "a"
            name = "A"
            price_cents = 1
            allergens = []
            [[dish]]
            id = "a"
            name = "B"
            price_cents = 2
            allergens = []
        "#;
        assert_eq!(
            Menu::from_toml(src).unwrap_err(),
            MenuError::DuplicateId("a".into())
        );
    }

    #[test]
    fn unknown_allergens_and_bad_ids_are_refused() {
        let bad_allergen = r#"
            [[dish]]
            id = "a"
            name = "A"
            price_cents = 1
            allergens = ["kiwi"]
        "#;
        assert!(matches!(
            Menu::from_toml(bad_allergen),
            Err(MenuError::Syntax(_))
        ));
        let bad_id = r#"
            [[dish]]
            id = "Big Dish"
            name = "A"
            price_cents = 1
            allergens = []
        "#;
        assert!(matches!(Menu::from_toml(bad_id), Err(MenuError::BadId(_))));
        assert_eq!(Menu::from_toml("dish = []").unwrap_err(), MenuError::Empty);
    }
}
