//! `/openapi.json` describes the server as it is: every route the server has is in it, every
//! operation in it is served, and it is the document `latchkey openapi` prints (which CI runs
//! through an OpenAPI validator, `.ci/run`).

use std::collections::BTreeSet;

use latchkey::startup::ROUTE_PATTERNS;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Backend, spawn_app_with};

#[tokio::test]
async fn the_document_lists_every_route_and_every_listed_operation_is_served() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["client_basic"]["scheme"], "basic");

    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let served: BTreeSet<&str> = ROUTE_PATTERNS.iter().copied().collect();
    assert_eq!(
        documented, served,
        "the document and the route table differ"
    );

    // Every documented operation reaches its handler: the request metrics name its route, and
    // the answer is neither 404-unmatched nor 405.
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let concrete = path.replace("{sid}", "00000000-0000-0000-0000-000000000000");
            let response = app
                .client
                .request(method.clone(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            operations += 1;
        }
    }
    assert!(operations >= ROUTE_PATTERNS.len());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for path in ROUTE_PATTERNS {
        assert!(
            metrics.contains(&format!("latchkey_http_requests_total{{route=\"{path}\"")),
            "{path} was not served by its route"
        );
    }

    // Error answers name their schema; request bodies theirs.
    let login = &paths["/auth/login"]["post"];
    assert_eq!(
        login["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/LoginBody"
    );
    assert_eq!(
        login["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    assert!(
        paths["/oauth/token"]["post"]["requestBody"]["content"]
            .get("application/x-www-form-urlencoded")
            .is_some()
    );
}

#[test]
fn the_cli_prints_the_served_document() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let served: Value = serde_json::from_str(latchkey::routes::openapi::json()).unwrap();
    assert_eq!(printed, served);
}

/// Every operation has an id of its own (OpenAPI 3.1 §4.8.10: unique among all operations;
/// code generators name functions after it). Two handlers named `login` once shared one.
#[test]
fn operation_ids_are_unique() {
    let doc: Value = serde_json::from_str(latchkey::routes::openapi::json()).unwrap();
    let mut seen = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(id) = operation["operationId"].as_str() {
                assert!(
                    seen.insert(id.to_owned()),
                    "{method} {path}: operationId {id} is taken"
                );
            }
        }
    }
    assert!(seen.len() > 20);
}
