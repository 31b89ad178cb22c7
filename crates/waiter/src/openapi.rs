//! The API description, generated from the code.
//!
//! Each handler carries a `#[utoipa::path]` attribute next to its code and each response
//! shape derives `ToSchema`, so `/openapi.json` cannot drift from what the waiter does
//! without a handler's own annotation being wrong. A test checks that every route the
//! router serves is listed here.

use crate::handlers::{actions, ops, orders};
use std::sync::OnceLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
    modifiers(&SessionSchemes, &OrderLinks),
    // A session is optional (a request without one starts one, or lists nothing), and
    // travels in the cookie or, for clients without cookies, the header.
    security((), ("session_cookie" = []), ("session_header" = [])),
    tags(
        (name = "orders", description = "The session's orders"),
        (name = "actions", description = "Moving an order through its life"),
        (name = "menu", description = "What can be ordered"),
        (name = "ops", description = "Health, readiness, metrics and the API description"),
    )
)]
pub struct ApiDoc;

/// Links from a created order to what can be done with it next (its read, change and
/// actions), so a client generated from the document can follow them: each takes the
/// `id` from the created order's body.
struct OrderLinks;

impl Modify for OrderLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::link::LinkBuilder;
        let created = openapi
            .paths
            .paths
            .get_mut("/v1/orders")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut("201"));
        let Some(RefOr::T(created)) = created else {
            return;
        };
        for (name, operation, what) in [
            ("read", "get", "Read the order and its progress"),
            ("change", "patch", "Change its items or notes"),
            ("place", "place", "Send it to the kitchen"),
            ("cancel", "cancel", "Cancel it before the kitchen starts"),
            ("serve", "serve", "Serve it once ready"),
            ("pay", "pay", "Pay for it"),
        ] {
            let link = LinkBuilder::new()
                .operation_id(operation)
                .parameter("id", "$response.body#/id")
                .description(what)
                .build();
            created.links.insert(name.to_string(), RefOr::T(link));
        }
    }
}

/// The session credentials as security schemes, so a client generated from the document
/// knows to keep the cookie (or send the header) to read back what it created.
struct SessionSchemes;

impl Modify for SessionSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::session::COOKIE_NAME,
                "The session the waiter set on the answer that started it (HttpOnly, SameSite=Lax).",
            ))),
        );
        components.add_security_scheme(
            "session_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Bistro-Session",
                "The same session id, for clients without cookies: every answer about a session carries it in Bistro-Session.",
            ))),
        );
    }
}

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        serde_json::to_string(&ApiDoc::openapi()).expect("an OpenAPI document serializes")
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
