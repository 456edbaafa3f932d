//! The OpenAPI 3.1 document of the HTTP API (`coordinator/openapi.json`,
//! checked in), served at `GET /v1/openapi.json`.
//!
//! It is served without authentication: it describes the API's shape,
//! which is public (the source is open), holds no data, and a client or a
//! code generator needs it before it has a token. The rate limiter still
//! applies. A test checks that the document names exactly the routes the
//! router serves.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;

use super::routes::{Routes, Verb};

/// The document.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// Where it is served.
pub const PATH: &str = "/v1/openapi.json";

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

/// The document's route.
pub fn routes() -> Routes<()> {
    Routes::default().add(Verb::Get, PATH, document)
}

/// The document's router.
pub fn router() -> Router {
    routes().into_router()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every (method, path) the HTTP API routes, from the routers' own tables.
    fn routed() -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        let tables = [
            super::super::http::routes().table().to_vec(),
            super::super::custody::routes().table().to_vec(),
            routes().table().to_vec(),
        ];
        for (verb, path) in tables.into_iter().flatten() {
            assert!(
                all.insert((verb.openapi_name().to_owned(), path.to_owned())),
                "{verb:?} {path} routed twice"
            );
        }
        all
    }

    #[test]
    fn the_document_names_exactly_the_routes_served() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let routed = routed();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routed, not documented: {undocumented:?}"
        );
        assert!(unrouted.is_empty(), "documented, not routed: {unrouted:?}");
    }

    /// Every `$ref` resolves, every operation answers 200 and documents its
    /// errors with the Error schema, every path parameter is declared.
    #[test]
    fn the_document_is_consistent() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.contains_key(name), "dangling {r}");
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(op["responses"]["200"].is_object(), "{method} {path}");
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                let in_path: BTreeSet<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .collect();
                assert_eq!(declared, in_path, "{method} {path}");
            }
        }
    }
}
