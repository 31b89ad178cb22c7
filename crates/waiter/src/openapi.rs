//! The API description, generated from the code.
//!
//! Each handler carries a `#[utoipa::path]` attribute next to its code and each response
//! shape derives `ToSchema`, so `/openapi.json` cannot drift from what the waiter does
//! without a handler's own annotation being wrong. A test checks that every route the
//! router serves is listed here.

use crate::handlers::{actions, ops, orders};
use std::sync::OnceLock;
use utoipa::OpenApi;

/// The OpenAPI document (`#[derive(OpenApi)]` over every handler).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "bistro waiter",
        description = "The order service of bistro. Every response carries Bistro-Waiter and Bistro-Mode headers; errors are application/problem+json (RFC 9457) with a stable type https://bistro.dev/problems/<kind>. Sessions travel in the bistro_session cookie or the Bistro-Session header."
    ),
    paths(
        ops::menu,
        orders::list,
        orders::create,
        orders::get,
        orders::patch,
        actions::place,
        actions::cancel,
        actions::serve,
        actions::pay,
        ops::waiter_info,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(
        crate::view::OrderView,
        crate::view::ItemView,
        crate::view::Progress,
        crate::view::OrderList,
        crate::view::MenuView,
        crate::view::DishView,
        crate::view::WaiterInfo,
        crate::view::StoreInfo,
        crate::view::Health,
        crate::view::ProblemDoc,
        crate::config::Mode,
        crate::replication::ReplicationStatus,
        crate::replication::PeerStatus,
        bistro_orders::NewOrder,
        bistro_orders::OrderPatch,
        bistro_orders::ItemInput,
        bistro_orders::NotesInput,
        bistro_orders::Notes,
        bistro_orders::Status,
        bistro_orders::Allergen,
    )),
    tags(
        (name = "orders", description = "The session's orders"),
        (name = "actions", description = "Moving an order through its life"),
        (name = "menu", description = "What can be ordered"),
        (name = "ops", description = "Health, readiness, metrics and the API description"),
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("an OpenAPI document serializes")
    })
}

/// Every route the router serves, as (method, path): what the document must list.
#[cfg(test)]
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/menu"),
    ("get", "/v1/orders"),
    ("post", "/v1/orders"),
    ("get", "/v1/orders/{id}"),
    ("patch", "/v1/orders/{id}"),
    ("post", "/v1/orders/{id}/place"),
    ("post", "/v1/orders/{id}/cancel"),
    ("post", "/v1/orders/{id}/serve"),
    ("post", "/v1/orders/{id}/pay"),
    ("get", "/v1/waiter"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3."),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in ROUTES {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is not documented"
            );
        }
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "the document lists operations the router does not serve"
        );
        for schema in [
            "OrderView",
            "NewOrder",
            "OrderPatch",
            "ProblemDoc",
            "Allergen",
        ] {
            assert!(
                doc["components"]["schemas"].get(schema).is_some(),
                "schema {schema} missing"
            );
        }
    }
}
