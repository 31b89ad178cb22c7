//! `ALLERGY <name>`: declare one more allergy. The allergy rule is the domain's: a
//! dish already on the order that contains it is refused (`allergy-conflicts-with-item`),
//! and so is adding such a dish later (`dish-contains-allergen`).

use super::change;
use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;
use bistro_orders::{Allergen, Change};

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allergy {
    /// The allergen.
    pub allergen: Allergen,
}

impl Allergy {
    /// Parses `<name>`, one of the fixed allergen names.
    ///
    /// # Errors
    /// `bad-argument` for a missing or unknown allergen, or extra words.
    pub fn parse(mut words: Words<'_>) -> Result<Allergy, ParseError> {
        let name = words.word("an allergen")?;
        let allergen = name
            .parse::<Allergen>()
            .map_err(|e| words.invalid(e.to_string()))?;
        words.finish()?;
        Ok(Allergy { allergen })
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        let allergen = self.allergen;
        change(waiter, conversation, Change::AddAllergy(allergen), |_| {
            format!("allergy {allergen} declared")
        })
        .await
    }
}
