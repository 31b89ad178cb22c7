//! The served `/openapi.json` tells the truth: real responses of an order's whole life,
//! and of the usual mistakes, are checked against the schema the same waiter serves —
//! every status must be documented for its operation, and every JSON body must validate
//! against the schema documented for that status.
//!
//! The validator below covers the JSON Schema the document uses (OpenAPI 3.1): `$ref`,
//! `type` (one or several), `enum`, `properties`/`required`/`additionalProperties`,
//! `items`, `minItems`/`maxItems`, `minimum`/`maximum`, `minLength`/`maxLength`, `oneOf`,
//! `anyOf`, `allOf`. `pattern` and `format` are not checked here.

use crate::harness::{Server, fast};
use bistro_client::{Client, Response};
use http::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// A request that should be refused: method, path, operation, headers, body.
type Mistake<'a> = (
    Method,
    String,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<Value>,
);

struct Doc(Value);

impl Doc {
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unexpected $ref {r}"));
                let target = &self.0["components"]["schemas"][name];
                assert!(!target.is_null(), "{r} resolves to nothing");
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// Why `value` does not match `schema` (empty when it does).
    fn check(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let schema = self.resolve(schema);
        let mut errors = Vec::new();
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let fits = |t: &str| match t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "string" => value.is_string(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                _ => false,
            };
            if !types.iter().any(|t| fits(t)) {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
                return errors;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errors.push(format!("{at}: {n} < minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errors.push(format!("{at}: {n} > maximum {max}"));
            }
        }
        if let Some(s) = value.as_str() {
            let len = s.chars().count() as u64;
            if schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| len > m)
            {
                errors.push(format!("{at}: longer than maxLength"));
            }
            if schema
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| len < m)
            {
                errors.push(format!("{at}: shorter than minLength"));
            }
        }
        if let Some(items) = value.as_array() {
            let n = items.len() as u64;
            if schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
            {
                errors.push(format!("{at}: more than maxItems"));
            }
            if schema
                .get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
            {
                errors.push(format!("{at}: fewer than minItems"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    errors.extend(self.check(item_schema, item, &format!("{at}[{i}]")));
                }
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required {name:?} is missing"));
                }
            }
            for (name, v) in object {
                match properties.and_then(|p| p.get(name)) {
                    Some(s) => errors.extend(self.check(s, v, &format!("{at}.{name}"))),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{at}: {name:?} is not in the schema"))
                        }
                        Some(extra @ Value::Object(_)) => {
                            errors.extend(self.check(extra, v, &format!("{at}.{name}")))
                        }
                        _ => {}
                    },
                }
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                errors.extend(self.check(s, value, at));
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(|s| self.check(s, value, at).is_empty())
        {
            errors.push(format!("{at}: {value} matches none of anyOf"));
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = one
                .iter()
                .filter(|s| self.check(s, value, at).is_empty())
                .count();
            if matching != 1 {
                errors.push(format!("{at}: {value} matches {matching} of oneOf, not 1"));
            }
        }
        errors
    }

    /// Checks one real exchange against the operation `method template`.
    fn conforms(&self, method: &str, template: &str, resp: &Response) {
        let op = &self.0["paths"][template][method];
        assert!(!op.is_null(), "{method} {template} is not documented");
        let status = resp.status.as_u16().to_string();
        let documented = &op["responses"][&status];
        assert!(
            !documented.is_null(),
            "{method} {template} answered {status}, which its documentation does not list: {}",
            resp.text()
        );
        let content_type = resp
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string());
        let Some(content_type) = content_type else {
            return;
        };
        let media = &documented["content"][&content_type];
        assert!(
            !media.is_null(),
            "{method} {template} {status} answered {content_type}, which is not documented ({})",
            documented["content"]
        );
        if content_type.ends_with("json") {
            let errors = self.check(&media["schema"], &resp.value(), "body");
            assert!(
                errors.is_empty(),
                "{method} {template} {status} does not match its schema: {errors:#?}\n{}",
                resp.text()
            );
        }
    }

    /// Checks a request body against the operation's request schema (the test's own
    /// requests must be schema-valid, or their answers prove nothing).
    fn valid_request(&self, method: &str, template: &str, body: &Value) -> Vec<String> {
        let schema = &self.0["paths"][template][method]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert!(
            !schema.is_null(),
            "{method} {template} documents no JSON body"
        );
        self.check(schema, body, "request")
    }
}

async fn call(
    client: &Client,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Response {
    client.request(method, path, headers, body).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_served_document() {
    let server = Server::memory(fast()).await;
    let client = server.client();
    let doc = Doc(client.get("/openapi.json").await.unwrap().value());
    let id_path = "/v1/orders/{id}";

    // The created order links to operations that exist, with the id they take.
    let operations: Vec<&str> = doc.0["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let links = doc.0["paths"]["/v1/orders"]["post"]["responses"]["201"]["links"]
        .as_object()
        .expect("a created order links to its next steps");
    assert_eq!(links.len(), 6, "{links:?}");
    for (name, link) in links {
        let op = link["operationId"].as_str().unwrap();
        assert!(
            operations.contains(&op),
            "link {name} names {op}, which is no operation"
        );
        assert_eq!(link["parameters"]["id"], "$response.body#/id");
    }

    for (path, template) in [
        ("/v1/menu", "/v1/menu"),
        ("/v1/waiter", "/v1/waiter"),
        ("/healthz", "/healthz"),
        ("/readyz", "/readyz"),
        ("/v1/orders", "/v1/orders"),
    ] {
        doc.conforms("get", template, &client.get(path).await.unwrap());
    }

    let new = json!({
        "items": [{"dish": "fries", "quantity": 2}],
        "notes": {"spice": 2, "allergies": ["peanuts"], "requests": "window seat"}
    });
    assert_eq!(
        doc.valid_request("post", "/v1/orders", &new),
        Vec::<String>::new()
    );
    let created = call(&client, Method::POST, "/v1/orders", &[], Some(&new)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    doc.conforms("post", "/v1/orders", &created);
    let order = format!("/v1/orders/{}", created.value()["id"].as_str().unwrap());

    doc.conforms("get", id_path, &client.get(&order).await.unwrap());
    doc.conforms(
        "get",
        "/v1/orders",
        &client.get("/v1/orders").await.unwrap(),
    );
    let change = json!({"notes": {"spice": 4}, "items": [{"dish": "fries"}]});
    assert_eq!(
        doc.valid_request("patch", id_path, &change),
        Vec::<String>::new()
    );
    let changed = call(&client, Method::PATCH, &order, &[], Some(&change)).await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    doc.conforms("patch", id_path, &changed);

    // The usual mistakes, each answered with a documented status and a valid problem.
    let mistakes: Vec<Mistake> = vec![
        (
            Method::GET,
            "/v1/orders/AAAAAAAAAAAAAAAA".into(),
            id_path,
            vec![],
            None,
        ),
        (
            Method::PATCH,
            order.clone(),
            id_path,
            vec![],
            Some(json!({"notes": {"spice": 9}})),
        ),
        (
            Method::PATCH,
            order.clone(),
            id_path,
            vec![],
            Some(json!({"tip": 1})),
        ),
        (
            Method::PATCH,
            order.clone(),
            id_path,
            vec![("if-match", "\"1\"")],
            Some(json!({"notes": {"spice": 1}})),
        ),
        (
            Method::PATCH,
            order.clone(),
            id_path,
            vec![("if-match", "nonsense")],
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("{order}/place"),
            "/v1/orders/{id}/place",
            vec![("idempotency-key", "has spaces")],
            None,
        ),
        (
            Method::POST,
            format!("{order}/pay"),
            "/v1/orders/{id}/pay",
            vec![],
            None,
        ),
        (
            Method::POST,
            format!("{order}/place"),
            "/v1/orders/{id}/place",
            vec![],
            Some(json!({"x": 1})),
        ),
        (
            Method::POST,
            "/v1/orders".into(),
            "/v1/orders",
            vec![],
            Some(json!({"items": [{"dish": "caviar"}]})),
        ),
    ];
    for (method, path, template, headers, body) in mistakes {
        let resp = call(&client, method.clone(), &path, &headers, body.as_ref()).await;
        assert!(
            resp.status.is_client_error(),
            "{method} {path}: {}",
            resp.text()
        );
        doc.conforms(&method.as_str().to_ascii_lowercase(), template, &resp);
    }

    // A session the waiter does not know (on a client of its own: the answer clears the
    // session cookie).
    let stranger = server.client();
    let unknown = call(
        &stranger,
        Method::GET,
        &order,
        &[("bistro-session", "not-a-session")],
        None,
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    doc.conforms("get", id_path, &unknown);

    // The rest of the order's life.
    let placed = call(
        &client,
        Method::POST,
        &format!("{order}/place"),
        &[("idempotency-key", "place-once-0001")],
        None,
    )
    .await;
    assert_eq!(placed.status, 200, "{}", placed.text());
    doc.conforms("post", "/v1/orders/{id}/place", &placed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = client.get(&order).await.unwrap();
        doc.conforms("get", id_path, &read);
        if read.value()["status"] == "ready" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kitchen never finished: {}",
            read.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for action in ["serve", "pay"] {
        let template = format!("/v1/orders/{{id}}/{action}");
        let done = call(
            &client,
            Method::POST,
            &format!("{order}/{action}"),
            &[],
            None,
        )
        .await;
        assert_eq!(done.status, 200, "{action}: {}", done.text());
        doc.conforms("post", &template, &done);
    }
    let cancelled = call(&client, Method::POST, &format!("{order}/cancel"), &[], None).await;
    assert_eq!(cancelled.status, 409, "{}", cancelled.text());
    doc.conforms("post", "/v1/orders/{id}/cancel", &cancelled);
    server.stop().await;
}

#[test]
fn the_validator_refuses_what_it_should() {
    let doc = Doc(json!({"components": {"schemas": {
        "T": {"type": "object", "required": ["a"], "additionalProperties": false,
              "properties": {"a": {"type": "integer", "minimum": 1, "maximum": 3},
                             "b": {"type": ["string", "null"], "maxLength": 2},
                             "c": {"type": "array", "maxItems": 1, "items": {"enum": ["x"]}}}}
    }}}));
    let t = json!({"$ref": "#/components/schemas/T"});
    assert!(
        doc.check(&t, &json!({"a": 2, "b": null, "c": ["x"]}), "v")
            .is_empty()
    );
    for bad in [
        json!({}),
        json!({"a": 0}),
        json!({"a": 4}),
        json!({"a": "1"}),
        json!({"a": 1, "b": "abc"}),
        json!({"a": 1, "c": ["x", "x"]}),
        json!({"a": 1, "c": ["y"]}),
        json!({"a": 1, "d": true}),
    ] {
        assert!(!doc.check(&t, &bad, "v").is_empty(), "{bad} passed");
    }
}

mod generated {
    //! Requests generated within the documented schemas (and a little outside their
    //! bounds): whatever the waiter answers must be documented, never a 5xx, and match
    //! its schema.
    use super::*;
    use proptest::prelude::*;

    const DISHES: &[&str] = &[
        "fries",
        "green-salad",
        "tomato-soup",
        "pad-thai",
        "satay-skewers",
        "nope",
    ];
    const ALLERGENS: &[&str] = &["peanuts", "gluten", "dairy", "soy", "shellfish", "eggs"];

    fn item() -> impl Strategy<Value = Value> {
        (prop::sample::select(DISHES), prop::option::of(0u32..=22)).prop_map(|(dish, q)| match q {
            Some(q) => json!({"dish": dish, "quantity": q}),
            None => json!({"dish": dish}),
        })
    }

    fn notes() -> impl Strategy<Value = Value> {
        (
            prop::option::of(0u32..=6),
            prop::option::of(prop::sample::subsequence(ALLERGENS, 0..3)),
            prop::option::of("[a-zA-Z0-9 éü✓,.!-]{0,300}"),
        )
            .prop_map(|(spice, allergies, requests)| {
                let mut n = serde_json::Map::new();
                if let Some(s) = spice {
                    n.insert("spice".into(), json!(s));
                }
                if let Some(a) = allergies {
                    n.insert("allergies".into(), json!(a));
                }
                if let Some(r) = requests {
                    n.insert("requests".into(), json!(r));
                }
                Value::Object(n)
            })
    }

    fn new_order() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(item(), 0..4),
            prop::option::of(notes()),
        )
            .prop_map(|(items, notes)| match notes {
                Some(n) => json!({"items": items, "notes": n}),
                None => json!({"items": items}),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn no_generated_order_is_answered_outside_the_document(new in new_order(), change in prop::option::of(notes()), place in any::<bool>()) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let server = Server::memory(fast()).await;
                let client = server.client();
                let doc = Doc(client.get("/openapi.json").await.unwrap().value());
                let created = call(&client, Method::POST, "/v1/orders", &[], Some(&new)).await;
                assert!(!created.status.is_server_error(), "{}", created.text());
                doc.conforms("post", "/v1/orders", &created);
                if created.status == 201 {
                    let order = format!("/v1/orders/{}", created.value()["id"].as_str().unwrap());
                    if let Some(notes) = change {
                        let body = json!({"notes": notes});
                        let changed = call(&client, Method::PATCH, &order, &[], Some(&body)).await;
                        assert!(!changed.status.is_server_error(), "{}", changed.text());
                        doc.conforms("patch", "/v1/orders/{id}", &changed);
                    }
                    if place {
                        let placed = call(&client, Method::POST, &format!("{order}/place"), &[], None).await;
                        assert!(!placed.status.is_server_error(), "{}", placed.text());
                        doc.conforms("post", "/v1/orders/{id}/place", &placed);
                    }
                }
                server.stop().await;
            });
        }
    }
}
