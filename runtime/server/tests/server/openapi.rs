//! `GET /phasebox/v1/openapi.json` describes every route of the router, and nothing else.
//!
//! The route list is read from `src/router.rs` itself (every `.route("…", get(…).post(…))`),
//! so a route added there without documentation fails here; the live server is then asked
//! each documented path with every method, so a method added to an existing path fails too.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Options, TestServer};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// `(OpenAPI path, method)` of every route registered in router.rs.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = include_str!("../../src/router.rs");
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        // The call's arguments, up to the matching parenthesis.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("balanced .route( call");
        let args = &rest[..end];
        let path = args.split('"').nth(1).expect("route path literal");
        let path = path.replace("{*", "{");
        let handlers = &args[args.find(',').expect("route handler") + 1..];
        let mut found = false;
        for m in METHODS {
            // `get(` at the start of the expression or as a `.get(` call on it.
            let starts = handlers.trim_start().starts_with(&format!("{m}("));
            if starts || handlers.contains(&format!(".{m}(")) {
                out.insert((path.clone(), m.to_owned()));
                found = true;
            }
        }
        assert!(found, "no method found for route {path}: {args}");
    }
    assert!(out.len() > 40, "router.rs parsed to only {} routes", out.len());
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            out.insert((path.clone(), method.clone()));
        }
    }
    out
}

/// A concrete URL path for a template.
fn sample(path: &str) -> String {
    path.replace("{job_id}", "0b1c6a52-8d3c-4f2e-9a61-3f5d2b7c9e10")
        .replace("{sha256}", &"0".repeat(64))
        .replace("{log_type}", "output")
        .replace("{path}", "a/b")
        .replace("{queue}", "q")
        .replace("{agent}", "dut")
        .replace("{client_id}", "someone")
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_route_is_documented() {
    let s = TestServer::start().await;
    let r = s.anon().get("/phasebox/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc = r.json();
    for key in ["openapi", "info", "paths", "components", "tags"] {
        assert!(doc.get(key).is_some(), "top-level key {key} missing");
    }
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert!(doc["components"]["securitySchemes"]["bearerAuth"].is_object());

    // Source → document and document → source.
    let source = routes_in_source();
    let described = documented(&doc);
    let undocumented: Vec<_> = source.difference(&described).collect();
    assert!(undocumented.is_empty(), "routes without documentation: {undocumented:?}");
    let phantom: Vec<_> = described.difference(&source).collect();
    assert!(phantom.is_empty(), "documented routes the router lacks: {phantom:?}");

    // Each operation is complete: unique id, responses, security, declared path parameters,
    // and every $ref resolves.
    let mut ids = BTreeSet::new();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, method) in &described {
        let op = &doc["paths"][path][method];
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: operationId"));
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: responses");
        assert!(op["security"].is_array() && op["x-roles"].is_array(), "{method} {path}: security");
        let params: BTreeSet<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_template: BTreeSet<&str> = path.split('{').skip(1).map(|s| s.split('}').next().unwrap()).collect();
        assert_eq!(params, in_template, "{method} {path}: path parameters");
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }

    // The live router agrees on the methods of every documented path.
    let api = s.anon();
    let mut by_path: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (path, method) in &described {
        by_path.entry(path).or_default().insert(method);
    }
    for (path, methods) in by_path {
        let url = sample(path);
        for m in METHODS {
            let method = reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap();
            let r = api.send(api.req(method, &url)).await;
            if methods.contains(m) {
                assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {url}");
                assert!(!r.text.starts_with("Not found:"), "{m} {url} is not routed");
            } else {
                assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {url} answers but is undocumented");
            }
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn security_follows_anonymous_access() {
    let open = TestServer::start().await;
    let doc = open.anon().get("/phasebox/v1/openapi.json").await.json();
    assert_eq!(doc["paths"]["/v1/job"]["post"]["security"], serde_json::json!([{"bearerAuth": []}, {}]));
    assert_eq!(doc["paths"]["/v1/job"]["get"]["security"], serde_json::json!([{"bearerAuth": []}]));
    assert_eq!(doc["paths"]["/v1/job"]["get"]["x-roles"], serde_json::json!(["agent"]));
    assert_eq!(doc["paths"]["/v1/oauth2/token"]["post"]["security"], serde_json::json!([{"basicAuth": []}]));
    open.stop().await;

    let closed =
        TestServer::start_with(Options { edit: Box::new(|c| c.anonymous_access = false), ..Options::default() }).await;
    let doc = closed.anon().get("/phasebox/v1/openapi.json").await.json();
    assert_eq!(doc["paths"]["/v1/job"]["post"]["security"], serde_json::json!([{"bearerAuth": []}]));
    closed.stop().await;
}
