//! # bistro-orders: the restaurant's rules
//!
//! This crate is the domain of bistro and nothing else: the [`Menu`], the [`Order`] with
//! its items and [`Notes`], the allergy rule, and the lifecycle
//! `open → placed → cooking → ready → served → paid` (with `cancelled` from open or
//! placed). It does no I/O and reads no clock: callers pass `now` in unix milliseconds.
//!
//! Every mutation goes through [`Order::apply`], which is atomic and bumps
//! [`Order::version`] by exactly one, so the stores can compare-and-set on the version and
//! the HTTP layer can turn it into an ETag.
//!
//! ```
//! use bistro_orders::{Change, KitchenTimings, Menu, NewOrder, ItemInput, Order, Status};
//! let menu = Menu::default_menu();
//! let new = NewOrder { items: vec![ItemInput { dish: "fries".into(), quantity: 2 }], ..Default::default() };
//! let mut order = Order::create("o1".into(), new, &menu, 1_000).unwrap();
//! order.apply(&[Change::Place(KitchenTimings::default())], &menu, 2_000).unwrap();
//! assert_eq!(order.status, Status::Placed);
//! assert_eq!(order.version, 2);
//! ```

#![warn(missing_docs)]

mod allergen;
mod menu;
mod order;

pub use allergen::{Allergen, UnknownAllergen};
pub use menu::{DEFAULT_MENU_TOML, Dish, Menu, MenuError};
pub use order::{
    Change, ErrorClass, Item, ItemInput, KitchenTimings, MAX_LINES, MAX_QUANTITY,
    MAX_REQUEST_CHARS, MAX_SPICE, MIN_QUANTITY, NewOrder, Notes, NotesInput, Order, OrderError,
    OrderPatch, Status,
};

#[cfg(test)]
mod tests;
