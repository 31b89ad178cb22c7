//! Orders: items, notes, the allergy rule and the lifecycle.
//!
//! An [`Order`] only changes through [`Order::apply`], which takes a batch of
//! [`Change`]s, applies them to a copy, checks every rule, and only then commits the copy
//! and bumps `version` once. So a request that fails halfway leaves the order exactly as
//! it was, and every successful request moves the version by one: the version is what
//! the stores compare-and-set on and what HTTP ETags carry.
//!
//! Time is passed in as unix milliseconds (`now`), never read here, so the rules are
//! deterministic and testable.

use crate::allergen::Allergen;
use crate::menu::Menu;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// Fewest portions of one dish on an order line.
pub const MIN_QUANTITY: u32 = 1;
/// Most portions of one dish on an order line.
pub const MAX_QUANTITY: u32 = 20;
/// Hottest spice level.
pub const MAX_SPICE: u8 = 5;
/// Longest free-text request, in characters (Unicode scalar values).
pub const MAX_REQUEST_CHARS: usize = 280;
/// Most distinct dishes on one order; keeps stored documents bounded.
pub const MAX_LINES: usize = 32;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being taken: items and notes may change.
    Open,
    /// Sent to the kitchen's queue: items and notes may still change.
    Placed,
    /// The kitchen has started: no more changes.
    Cooking,
    /// Ready to be served.
    Ready,
    /// On the table.
    Served,
    /// Paid: the order is finished.
    Paid,
    /// Cancelled before the kitchen started.
    Cancelled,
}

impl Status {
    /// The wire name (`open`, `placed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Placed => "placed",
            Status::Cooking => "cooking",
            Status::Ready => "ready",
            Status::Served => "served",
            Status::Paid => "paid",
            Status::Cancelled => "cancelled",
        }
    }

    /// Whether items and notes may still change in this status.
    pub fn is_editable(self) -> bool {
        matches!(self, Status::Open | Status::Placed)
    }

    /// Whether the kitchen still has work to do on an order in this status.
    pub fn in_kitchen(self) -> bool {
        matches!(self, Status::Placed | Status::Cooking)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an order: a dish, how many, and its price when it was ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Item {
    /// Dish id from the menu.
    pub dish: String,
    /// Portions, 1 to 20.
    pub quantity: u32,
    /// Price of one portion when the line was added, in cents. Kept on the order so a
    /// later menu change does not reprice an order already taken.
    pub unit_price_cents: u32,
}

/// The diner's notes: the part of an order a stateful waiter keeps on its notepad.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notes {
    /// Spice level 0 (none) to 5 (hottest).
    pub spice: u8,
    /// Declared allergies; no dish on the order may contain one.
    pub allergies: BTreeSet<Allergen>,
    /// Free text, at most 280 characters, no control characters.
    pub requests: String,
}

/// An item as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// Dish id from the menu.
    pub dish: String,
    /// Portions, 1 to 20; defaults to 1.
    #[serde(default = "one")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 20, default = 1))]
    pub quantity: u32,
}

fn one() -> u32 {
    1
}

/// Notes as a client sends them: every field optional, absent means "leave as is".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NotesInput {
    /// Spice level 0-5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 5))]
    pub spice: Option<u32>,
    /// The full set of declared allergies (replaces the current set; repeats count once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allergies: Option<Vec<Allergen>>,
    /// Free-text requests (replaces the current text): at most 280 characters, no
    /// control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 280, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")
    )]
    pub requests: Option<String>,
}

/// The body of a request that creates an order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// Initial items; may be empty; at most 32 different dishes.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 32))]
    pub items: Vec<ItemInput>,
    /// Initial notes.
    #[serde(default)]
    pub notes: NotesInput,
}

/// The body of a request that changes an order's items and/or notes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrderPatch {
    /// When present, replaces all items (at most 32 different dishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 32))]
    pub items: Option<Vec<ItemInput>>,
    /// When present, changes the given note fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<NotesInput>,
}

impl OrderPatch {
    /// The changes this patch stands for, items first so that a patch replacing both
    /// the items and the allergies is judged on its final combination.
    pub fn into_changes(self) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(items) = self.items {
            out.push(Change::ReplaceItems(items));
        }
        if let Some(notes) = self.notes {
            out.extend(notes.into_changes());
        }
        out
    }
}

impl NotesInput {
    /// The changes these notes stand for.
    pub fn into_changes(self) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(spice) = self.spice {
            out.push(Change::SetSpice(spice));
        }
        if let Some(allergies) = self.allergies {
            out.push(Change::SetAllergies(allergies.into_iter().collect()));
        }
        if let Some(requests) = self.requests {
            out.push(Change::SetRequests(requests));
        }
        out
    }
}

/// How long the kitchen takes, carried into [`Change::Place`] and
/// [`Change::StartCooking`] so that due times are fixed on the order itself and every
/// waiter sharing a store agrees on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KitchenTimings {
    /// From placed to cooking (the queue), in milliseconds.
    pub queue_ms: u64,
    /// From cooking to ready, in milliseconds.
    pub cook_ms: u64,
}

impl Default for KitchenTimings {
    fn default() -> Self {
        KitchenTimings {
            queue_ms: 1_000,
            cook_ms: 3_000,
        }
    }
}

/// One change to an order. Several are applied together by [`Order::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replace every item (quantities of repeated dishes are summed).
    ReplaceItems(Vec<ItemInput>),
    /// Add portions of a dish (merged into an existing line).
    AddItem {
        /// Dish id from the menu.
        dish: String,
        /// Portions to add, 1 to 20; the line's total must stay within 20 too.
        quantity: u32,
    },
    /// Remove a dish's line entirely.
    RemoveItem {
        /// Dish id of the line to remove; it must be on the order.
        dish: String,
    },
    /// Set the spice level.
    SetSpice(u32),
    /// Replace the declared allergies.
    SetAllergies(BTreeSet<Allergen>),
    /// Declare one more allergy.
    AddAllergy(Allergen),
    /// Replace the free-text requests.
    SetRequests(String),
    /// Open → placed. Items must not be empty.
    Place(KitchenTimings),
    /// Open or placed → cancelled.
    Cancel,
    /// Placed → cooking (the kitchen does this).
    StartCooking {
        /// From now to ready, in milliseconds: the new due time is `now + cook_ms`.
        cook_ms: u64,
    },
    /// Cooking → ready (the kitchen does this).
    MarkReady,
    /// Ready → served.
    Serve,
    /// Served → paid.
    Pay,
}

impl Change {
    /// Short verb for messages ("place", "add item", ...).
    pub fn verb(&self) -> &'static str {
        match self {
            Change::ReplaceItems(_) => "change items",
            Change::AddItem { .. } => "add an item",
            Change::RemoveItem { .. } => "remove an item",
            Change::SetSpice(_) => "change the spice level",
            Change::SetAllergies(_) | Change::AddAllergy(_) => "change allergies",
            Change::SetRequests(_) => "change requests",
            Change::Place(_) => "place",
            Change::Cancel => "cancel",
            Change::StartCooking { .. } => "start cooking",
            Change::MarkReady => "mark ready",
            Change::Serve => "serve",
            Change::Pay => "pay",
        }
    }

    fn edits_contents(&self) -> bool {
        matches!(
            self,
            Change::ReplaceItems(_)
                | Change::AddItem { .. }
                | Change::RemoveItem { .. }
                | Change::SetSpice(_)
                | Change::SetAllergies(_)
                | Change::AddAllergy(_)
                | Change::SetRequests(_)
        )
    }
}

/// Why a change was refused. Each variant has a stable [`kind`](OrderError::kind) and
/// belongs to one [`class`](OrderError::class).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// `unknown-dish`: an item names a dish id that is not on the menu.
    #[error("there is no dish {dish:?} on the menu; GET /v1/menu lists the dish ids")]
    UnknownDish {
        /// The dish id as the client sent it.
        dish: String,
    },
    /// `bad-quantity`: a line would hold fewer than [`MIN_QUANTITY`] or more than
    /// [`MAX_QUANTITY`] portions.
    #[error("quantity {quantity} for {dish:?} is out of range; order 1 to 20 portions per dish")]
    BadQuantity {
        /// Dish id of the line.
        dish: String,
        /// The quantity refused: as asked, or the line's new total when adding to an
        /// existing line would pass the maximum.
        quantity: u32,
    },
    /// `too-many-items`: a new dish would make more than [`MAX_LINES`] lines.
    #[error("an order can hold at most {MAX_LINES} different dishes")]
    TooManyLines,
    /// `bad-spice`: a spice level above [`MAX_SPICE`]; the field is the level asked for.
    #[error("spice level {0} is out of range; choose 0 (none) to 5 (hottest)")]
    BadSpice(u32),
    /// `requests-too-long`: the free-text requests are longer than
    /// [`MAX_REQUEST_CHARS`].
    #[error("requests are {chars} characters long; keep them to at most 280")]
    RequestsTooLong {
        /// Length of the refused text, in characters (Unicode scalar values).
        chars: usize,
    },
    /// `control-character`: the free-text requests contain a control character (a
    /// newline included).
    #[error("requests contain a control character; use plain text on one line")]
    ControlCharacter,
    /// `dish-contains-allergen`: an item being added contains an allergen the order
    /// already declares.
    #[error(
        "{dish:?} contains {allergen}, which this order declares as an allergy; choose another dish or change the declared allergies"
    )]
    DishContainsAllergen {
        /// Dish id of the refused item.
        dish: String,
        /// The declared allergen the dish contains (the first in [`Allergen::ALL`]
        /// order, when several).
        allergen: Allergen,
    },
    /// `allergy-conflicts-with-item`: an allergy being declared is contained in a dish
    /// already on the order.
    #[error(
        "cannot declare an allergy to {allergen}: {dish:?} on this order contains it; remove that dish first"
    )]
    AllergyConflictsWithItem {
        /// The refused allergy.
        allergen: Allergen,
        /// Dish id of the first line on the order that contains it.
        dish: String,
    },
    /// `not-on-order`: a removal names a dish the order does not hold.
    #[error("{dish:?} is not on this order")]
    NotOnOrder {
        /// The dish id as the client sent it.
        dish: String,
    },
    /// `empty-order`: placing an order with no items, or a change that would leave an
    /// order past `open` with none.
    #[error("a placed order must hold at least one dish; add a dish first, or cancel the order")]
    EmptyOrder,
    /// `kitchen-started`: a change to the items or notes once the kitchen has started
    /// (cooking or later).
    #[error(
        "the kitchen has started on this order (status {status}), so items and notes can no longer change"
    )]
    KitchenStarted {
        /// The order's status when the change was refused.
        status: Status,
    },
    /// `invalid-transition`: a lifecycle step the order's status does not allow (pay
    /// before served, cancel once cooking, any edit of a cancelled order, ...).
    #[error("cannot {action} an order that is {status}")]
    InvalidTransition {
        /// The order's status when the change was refused.
        status: Status,
        /// The refused change's verb, from [`Change::verb`] ("place", "cancel", ...).
        action: &'static str,
    },
}

/// The broad class of an [`OrderError`], which decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request names something invalid (HTTP 422).
    Invalid,
    /// The request is valid but the order's state forbids it (HTTP 409).
    State,
}

impl OrderError {
    /// A stable, URL-safe name for this kind of error (used as the problem `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            OrderError::UnknownDish { .. } => "unknown-dish",
            OrderError::BadQuantity { .. } => "bad-quantity",
            OrderError::TooManyLines => "too-many-items",
            OrderError::BadSpice(_) => "bad-spice",
            OrderError::RequestsTooLong { .. } => "requests-too-long",
            OrderError::ControlCharacter => "control-character",
            OrderError::DishContainsAllergen { .. } => "dish-contains-allergen",
            OrderError::AllergyConflictsWithItem { .. } => "allergy-conflicts-with-item",
            OrderError::NotOnOrder { .. } => "not-on-order",
            OrderError::EmptyOrder => "empty-order",
            OrderError::KitchenStarted { .. } => "kitchen-started",
            OrderError::InvalidTransition { .. } => "invalid-transition",
        }
    }

    /// Whether the request was invalid or the order's state forbade it.
    pub fn class(&self) -> ErrorClass {
        match self {
            OrderError::KitchenStarted { .. } | OrderError::InvalidTransition { .. } => {
                ErrorClass::State
            }
            _ => ErrorClass::Invalid,
        }
    }
}

/// An order, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Order {
    /// Random identifier, unique across waiters.
    pub id: String,
    /// Lifecycle status.
    pub status: Status,
    /// Starts at 1; +1 on every accepted change. Compare-and-set and ETags use it.
    pub version: u64,
    /// One line per dish.
    pub items: Vec<Item>,
    /// The diner's notes.
    pub notes: Notes,
    /// Sum of all lines, in cents.
    pub total_cents: u64,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds of the last accepted change.
    pub updated_at_ms: u64,
    /// When the order was placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_at_ms: Option<u64>,
    /// When the kitchen acts next (start cooking, or ready); set while in the kitchen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kitchen_due_ms: Option<u64>,
    /// When the order is expected to be ready; set while in the kitchen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_by_ms: Option<u64>,
    /// When the order was paid or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
}

impl Order {
    /// Creates an open order at version 1 from a client's request.
    ///
    /// # Errors
    /// Any [`OrderError`] of the [`ErrorClass::Invalid`] class.
    pub fn create(id: String, new: NewOrder, menu: &Menu, now: u64) -> Result<Order, OrderError> {
        let mut order = Order {
            id,
            status: Status::Open,
            version: 0,
            items: Vec::new(),
            notes: Notes::default(),
            total_cents: 0,
            created_at_ms: now,
            updated_at_ms: now,
            placed_at_ms: None,
            kitchen_due_ms: None,
            ready_by_ms: None,
            closed_at_ms: None,
        };
        // Notes first: an item that contains a declared allergen is then reported as
        // the dish's fault, naming dish and allergen.
        let mut changes = new.notes.into_changes();
        changes.push(Change::ReplaceItems(new.items));
        order.apply(&changes, menu, now)?;
        Ok(order)
    }

    /// Applies `changes` atomically: either all of them and `version + 1`, or none.
    ///
    /// # Errors
    /// The first [`OrderError`] met; the order is then unchanged.
    pub fn apply(&mut self, changes: &[Change], menu: &Menu, now: u64) -> Result<(), OrderError> {
        let mut next = self.clone();
        for change in changes {
            next.apply_one(change, menu, now)?;
        }
        // Checked on the result, not per change: a batch may swap the last dish for
        // another, but no accepted batch may leave an order past `open` empty (regression:
        // `[ReplaceItems([]), StartCooking]` once produced an empty cooking order).
        if !matches!(next.status, Status::Open | Status::Cancelled) && next.items.is_empty() {
            return Err(OrderError::EmptyOrder);
        }
        next.total_cents = next
            .items
            .iter()
            .map(|i| u64::from(i.unit_price_cents) * u64::from(i.quantity))
            .sum();
        next.version = self.version + 1;
        next.updated_at_ms = now.max(self.updated_at_ms);
        *self = next;
        Ok(())
    }

    fn apply_one(&mut self, change: &Change, menu: &Menu, now: u64) -> Result<(), OrderError> {
        if change.edits_contents() && !self.status.is_editable() {
            return Err(match self.status {
                Status::Cancelled => OrderError::InvalidTransition {
                    status: self.status,
                    action: change.verb(),
                },
                status => OrderError::KitchenStarted { status },
            });
        }
        let refuse = |status| {
            Err(OrderError::InvalidTransition {
                status,
                action: change.verb(),
            })
        };
        match change {
            Change::ReplaceItems(inputs) => {
                self.items.clear();
                for input in inputs {
                    self.add_item(&input.dish, input.quantity, menu)?;
                }
            }
            Change::AddItem { dish, quantity } => self.add_item(dish, *quantity, menu)?,
            Change::RemoveItem { dish } => {
                let before = self.items.len();
                self.items.retain(|i| &i.dish != dish);
                if self.items.len() == before {
                    return Err(OrderError::NotOnOrder { dish: dish.clone() });
                }
            }
            Change::SetSpice(spice) => {
                if *spice > u32::from(MAX_SPICE) {
                    return Err(OrderError::BadSpice(*spice));
                }
                self.notes.spice = *spice as u8;
            }
            Change::SetAllergies(set) => {
                for &allergen in set {
                    self.check_allergy_against_items(allergen, menu)?;
                }
                self.notes.allergies = set.clone();
            }
            Change::AddAllergy(allergen) => {
                self.check_allergy_against_items(*allergen, menu)?;
                self.notes.allergies.insert(*allergen);
            }
            Change::SetRequests(text) => {
                validate_requests(text)?;
                self.notes.requests = text.clone();
            }
            Change::Place(timings) => {
                if self.status != Status::Open {
                    return refuse(self.status);
                }
                if self.items.is_empty() {
                    return Err(OrderError::EmptyOrder);
                }
                self.status = Status::Placed;
                self.placed_at_ms = Some(now);
                self.kitchen_due_ms = Some(now.saturating_add(timings.queue_ms));
                self.ready_by_ms = Some(
                    now.saturating_add(timings.queue_ms)
                        .saturating_add(timings.cook_ms),
                );
            }
            Change::Cancel => {
                if !matches!(self.status, Status::Open | Status::Placed) {
                    return refuse(self.status);
                }
                self.status = Status::Cancelled;
                self.kitchen_due_ms = None;
                self.ready_by_ms = None;
                self.closed_at_ms = Some(now);
            }
            Change::StartCooking { cook_ms } => {
                if self.status != Status::Placed {
                    return refuse(self.status);
                }
                self.status = Status::Cooking;
                let ready = now.saturating_add(*cook_ms);
                self.kitchen_due_ms = Some(ready);
                self.ready_by_ms = Some(ready);
            }
            Change::MarkReady => {
                if self.status != Status::Cooking {
                    return refuse(self.status);
                }
                self.status = Status::Ready;
                self.kitchen_due_ms = None;
                self.ready_by_ms = None;
            }
            Change::Serve => {
                if self.status != Status::Ready {
                    return refuse(self.status);
                }
                self.status = Status::Served;
            }
            Change::Pay => {
                if self.status != Status::Served {
                    return refuse(self.status);
                }
                self.status = Status::Paid;
                self.closed_at_ms = Some(now);
            }
        }
        Ok(())
    }

    fn add_item(&mut self, dish_id: &str, quantity: u32, menu: &Menu) -> Result<(), OrderError> {
        let dish = menu.dish(dish_id).ok_or_else(|| OrderError::UnknownDish {
            dish: dish_id.to_string(),
        })?;
        if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&quantity) {
            return Err(OrderError::BadQuantity {
                dish: dish_id.to_string(),
                quantity,
            });
        }
        if let Some(&allergen) = dish.allergens.intersection(&self.notes.allergies).next() {
            return Err(OrderError::DishContainsAllergen {
                dish: dish.id.clone(),
                allergen,
            });
        }
        match self.items.iter_mut().find(|i| i.dish == dish.id) {
            Some(line) => {
                let total = line.quantity + quantity;
                if total > MAX_QUANTITY {
                    return Err(OrderError::BadQuantity {
                        dish: dish.id.clone(),
                        quantity: total,
                    });
                }
                line.quantity = total;
            }
            None => {
                if self.items.len() >= MAX_LINES {
                    return Err(OrderError::TooManyLines);
                }
                self.items.push(Item {
                    dish: dish.id.clone(),
                    quantity,
                    unit_price_cents: dish.price_cents,
                });
            }
        }
        Ok(())
    }

    fn check_allergy_against_items(
        &self,
        allergen: Allergen,
        menu: &Menu,
    ) -> Result<(), OrderError> {
        // A dish that vanished from a custom menu cannot be checked; it was checked
        // when it was added, so only dishes still on the menu can conflict.
        let conflict = self.items.iter().find(|i| {
            menu.dish(&i.dish)
                .is_some_and(|d| d.allergens.contains(&allergen))
        });
        match conflict {
            Some(item) => Err(OrderError::AllergyConflictsWithItem {
                allergen,
                dish: item.dish.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The change the kitchen should make now, if any.
    pub fn kitchen_step(&self, now: u64, timings: KitchenTimings) -> Option<Change> {
        let due = self.kitchen_due_ms?;
        if now < due {
            return None;
        }
        match self.status {
            Status::Placed => Some(Change::StartCooking {
                cook_ms: timings.cook_ms,
            }),
            Status::Cooking => Some(Change::MarkReady),
            _ => None,
        }
    }

    /// Seconds until the order should be ready (0 once it is, `None` when it is not in
    /// or past the kitchen).
    pub fn eta_seconds(&self, now: u64) -> Option<u64> {
        match self.status {
            Status::Placed | Status::Cooking => {
                let ready_by = self.ready_by_ms?;
                Some(ready_by.saturating_sub(now).div_ceil(1000))
            }
            Status::Ready | Status::Served | Status::Paid => Some(0),
            Status::Open | Status::Cancelled => None,
        }
    }

    /// Checks every invariant an order must keep; used by tests and by stores that load
    /// documents written by another process.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self, menu: &Menu) -> Result<(), String> {
        if self.version == 0 {
            return Err("version 0".into());
        }
        let mut seen = BTreeSet::new();
        for item in &self.items {
            if !seen.insert(item.dish.as_str()) {
                return Err(format!("dish {} appears on two lines", item.dish));
            }
            if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&item.quantity) {
                return Err(format!("quantity {} out of range", item.quantity));
            }
            if let Some(dish) = menu.dish(&item.dish)
                && let Some(a) = dish.allergens.intersection(&self.notes.allergies).next()
            {
                return Err(format!("{} contains declared allergen {a}", item.dish));
            }
        }
        if self.items.len() > MAX_LINES {
            return Err("too many lines".into());
        }
        let total: u64 = self
            .items
            .iter()
            .map(|i| u64::from(i.unit_price_cents) * u64::from(i.quantity))
            .sum();
        if total != self.total_cents {
            return Err(format!(
                "total {} != sum of lines {total}",
                self.total_cents
            ));
        }
        if self.notes.spice > MAX_SPICE {
            return Err("spice out of range".into());
        }
        validate_requests(&self.notes.requests).map_err(|e| e.to_string())?;
        if self.status != Status::Open && self.status != Status::Cancelled && self.items.is_empty()
        {
            return Err(format!("{} order with no items", self.status));
        }
        if self.status.in_kitchen() != self.kitchen_due_ms.is_some() {
            return Err(format!(
                "kitchen due time inconsistent with status {}",
                self.status
            ));
        }
        if self.updated_at_ms < self.created_at_ms {
            return Err("updated before created".into());
        }
        Ok(())
    }
}

fn validate_requests(text: &str) -> Result<(), OrderError> {
    let chars = text.chars().count();
    if chars > MAX_REQUEST_CHARS {
        return Err(OrderError::RequestsTooLong { chars });
    }
    if text.chars().any(char::is_control) {
        return Err(OrderError::ControlCharacter);
    }
    Ok(())
}
