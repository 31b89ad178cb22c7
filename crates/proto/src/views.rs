//! The JSON views: what the waiter's API answers for orders and the menu, and what the
//! lab, the client and the tests read back. One definition for both sides, so a field
//! renamed on the waiter cannot silently vanish from what the lab verifies.
//!
//! An order is shown as an [`OrderView`]: every stored field of the [`Order`], each item
//! with its dish's name, and `progress` (status and seconds until ready), computed at
//! the time of the answer. With the `openapi` feature the views derive `ToSchema`, so
//! the waiter's `/openapi.json` documents exactly what is sent.

use bistro_orders::{Allergen, Menu, Notes, Order, Status};
use serde::{Deserialize, Serialize};

/// One line of an order, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemView {
    /// Dish id from the menu.
    pub dish: String,
    /// The dish's name (absent if the dish has left the menu since).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Portions.
    pub quantity: u32,
    /// Price of one portion when the line was added, in cents.
    pub unit_price_cents: u32,
}

/// Where the order is and when it should be ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// The order's status.
    pub status: Status,
    /// Seconds until ready: counts down while placed or cooking, 0 once ready, absent
    /// when the order is open or cancelled.
    pub eta_seconds: Option<u64>,
}

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderView {
    /// Random identifier.
    pub id: String,
    /// Lifecycle status.
    pub status: Status,
    /// Version, also sent as the `ETag`.
    pub version: u64,
    /// One line per dish.
    pub items: Vec<ItemView>,
    /// The diner's notes.
    pub notes: Notes,
    /// Sum of all lines, in cents.
    pub total_cents: u64,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds of the last accepted change.
    pub updated_at_ms: u64,
    /// When the order was placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placed_at_ms: Option<u64>,
    /// When the kitchen acts next; set while in the kitchen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kitchen_due_ms: Option<u64>,
    /// When the order is expected to be ready; set while in the kitchen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_by_ms: Option<u64>,
    /// When the order was paid or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
    /// Status and ETA at the time of this answer.
    pub progress: Progress,
}

impl OrderView {
    /// The view of `order` at `now`.
    pub fn new(order: &Order, menu: &Menu, now: u64) -> OrderView {
        OrderView {
            id: order.id.clone(),
            status: order.status,
            version: order.version,
            items: order
                .items
                .iter()
                .map(|i| ItemView {
                    dish: i.dish.clone(),
                    name: menu.dish(&i.dish).map(|d| d.name.clone()),
                    quantity: i.quantity,
                    unit_price_cents: i.unit_price_cents,
                })
                .collect(),
            notes: order.notes.clone(),
            total_cents: order.total_cents,
            created_at_ms: order.created_at_ms,
            updated_at_ms: order.updated_at_ms,
            placed_at_ms: order.placed_at_ms,
            kitchen_due_ms: order.kitchen_due_ms,
            ready_by_ms: order.ready_by_ms,
            closed_at_ms: order.closed_at_ms,
            progress: Progress {
                status: order.status,
                eta_seconds: order.eta_seconds(now),
            },
        }
    }
}

/// The session's orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderList {
    /// Oldest first.
    pub orders: Vec<OrderView>,
}

/// One dish, as the menu shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DishView {
    /// Stable id used in orders.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Price of one portion, in cents.
    pub price_cents: u32,
    /// Allergens the dish contains.
    pub allergens: Vec<Allergen>,
}

/// The menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MenuView {
    /// Every dish, in menu order.
    pub dishes: Vec<DishView>,
}

impl MenuView {
    /// The view of `menu`.
    pub fn new(menu: &Menu) -> MenuView {
        MenuView {
            dishes: menu
                .dishes()
                .iter()
                .map(|d| DishView {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    price_cents: d.price_cents,
                    allergens: d.allergens.iter().copied().collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bistro_orders::{ItemInput, KitchenTimings, NewOrder};

    #[test]
    fn the_view_shows_every_stored_field_and_adds_names_and_progress() {
        let menu = Menu::default_menu();
        let new = NewOrder {
            items: vec![ItemInput {
                dish: "fries".into(),
                quantity: 2,
            }],
            ..Default::default()
        };
        let mut order = Order::create("o1".into(), new, &menu, 1_000).unwrap();
        let timings = KitchenTimings {
            queue_ms: 1_000,
            cook_ms: 2_000,
        };
        order
            .apply(&[bistro_orders::Change::Place(timings)], &menu, 2_000)
            .unwrap();
        order.closed_at_ms = Some(9);
        let stored = serde_json::to_value(&order).unwrap();
        let view = serde_json::to_value(OrderView::new(&order, &menu, 2_500)).unwrap();
        for (key, value) in stored.as_object().unwrap() {
            if key == "items" {
                continue;
            }
            assert_eq!(&view[key], value, "field {key}");
        }
        assert_eq!(
            view["items"][0]["name"],
            menu.dish("fries").unwrap().name.as_str()
        );
        assert_eq!(view["items"][0]["quantity"], 2);
        assert_eq!(view["progress"]["status"], "placed");
        assert_eq!(view["progress"]["eta_seconds"], 3); // ready at 5_000, now 2_500: 2.5 s rounds up
    }
}
