//! The fixed list of allergens a dish can contain and a diner can declare.
//!
//! The list is closed on purpose: allergy safety is a rule the kitchen must be able to
//! check mechanically, so free-text allergies would defeat it. Free text belongs in
//! the order's `requests` note.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One of the nine allergens bistro knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Allergen {
    /// `peanuts`. A legume, so listed apart from the tree nuts.
    Peanuts,
    /// `tree-nuts`: almonds, walnuts, cashews and the like.
    TreeNuts,
    /// `gluten`: wheat, barley, rye and what is made from them.
    Gluten,
    /// `dairy`: milk and what is made from it.
    Dairy,
    /// `egg`.
    Egg,
    /// `soy`.
    Soy,
    /// `fish`.
    Fish,
    /// `shellfish`: crustaceans and molluscs.
    Shellfish,
    /// `sesame`.
    Sesame,
}

impl Allergen {
    /// Every allergen, in a stable order.
    pub const ALL: [Allergen; 9] = [
        Allergen::Peanuts,
        Allergen::TreeNuts,
        Allergen::Gluten,
        Allergen::Dairy,
        Allergen::Egg,
        Allergen::Soy,
        Allergen::Fish,
        Allergen::Shellfish,
        Allergen::Sesame,
    ];

    /// The wire name (`tree-nuts`, ...), as used in JSON, TOML and the TCP protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Allergen::Peanuts => "peanuts",
            Allergen::TreeNuts => "tree-nuts",
            Allergen::Gluten => "gluten",
            Allergen::Dairy => "dairy",
            Allergen::Egg => "egg",
            Allergen::Soy => "soy",
            Allergen::Fish => "fish",
            Allergen::Shellfish => "shellfish",
            Allergen::Sesame => "sesame",
        }
    }
}

impl fmt::Display for Allergen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a name that is not on the fixed allergen list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown allergen {0:?}; known allergens: peanuts, tree-nuts, gluten, dairy, egg, soy, fish, shellfish, sesame"
)]
pub struct UnknownAllergen(pub String);

impl FromStr for Allergen {
    type Err = UnknownAllergen;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Allergen::ALL
            .into_iter()
            .find(|a| a.as_str() == lower)
            .ok_or_else(|| UnknownAllergen(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for a in Allergen::ALL {
            assert_eq!(a.as_str().parse::<Allergen>().unwrap(), a);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let err = "kiwi".parse::<Allergen>().unwrap_err();
        assert!(err.to_string().contains("tree-nuts"));
    }
}
