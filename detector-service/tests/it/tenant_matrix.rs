//! The object-level authorization matrix (OWASP API1): two tenants, every route of the
//! committed OpenAPI document, and for each the other tenant's read, write and delete. Each
//! is refused with 404 (403 on the operator's routes, whatever the tenant named) and changes
//! nothing of the owner's. A route this table does not know fails the test, so a new route
//! cannot ship without its tenant probe — and so without scoping.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_error, base64_of, fresh_postgres_schema, postgres_url, solid_png, spawn_app,
};
use crate::tenants::{ALICE, BOB, call, noise_png, register_as, two_tenants};

/// What a route must do when Bob aims it at Alice's objects.
enum Probe {
    /// Bob's request naming Alice's object: 404, Alice's data unchanged.
    NotFound(Method, String, Option<Value>),
    /// A collection: Bob's answer must not mention Alice's concept.
    Hides(Method, String, Option<Value>),
    /// An operator route: a tenant's key is refused (403) whichever tenant it names.
    OperatorOnly(Method, String),
    /// Holds no tenant data at all (probes, the model list, the stateless model endpoint).
    NoTenantData,
}

/// The probes of one route; `conversation` is Alice's conversation id.
fn probes_of(method: &str, path: &str, photo: &str, conversation: &str) -> Vec<Probe> {
    let method_of = |m: &str| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap();
    let m = method_of(method);
    let concrete = path
        .replace(
            "/v1/conversations/{id}",
            &format!("/v1/conversations/{conversation}"),
        )
        .replace("{id}", "al")
        .replace("{n}", "0")
        .replace("{tenant}", "alice");
    let probe = match (method, path) {
        ("get" | "delete", "/v1/concepts/{id}")
        | ("get", "/v1/concepts/{id}/images/{n}")
        | ("get" | "delete", "/v1/conversations/{id}")
        | ("get" | "delete", "/v1/scenarios/{id}") => Probe::NotFound(m, concrete, None),
        ("put", "/v1/scenarios/{id}") => Probe::NotFound(
            m,
            concrete,
            Some(json!({"description": "bob's now.", "concepts": ["al"]})),
        ),
        // Bob cannot group Alice's concept into a scenario of his.
        ("post", "/v1/scenarios") => Probe::NotFound(
            m,
            concrete,
            Some(json!({"id": "bobs", "description": "bob's.", "concepts": ["al"]})),
        ),
        ("put", "/v1/concepts/{id}") => Probe::NotFound(
            m,
            concrete,
            Some(json!({"description": "<al> is bob's now.", "images": [photo]})),
        ),
        ("post", "/v1/detect") => {
            return vec![
                Probe::NotFound(
                    m.clone(),
                    concrete.clone(),
                    Some(json!({"image": photo, "concepts": ["al"]})),
                ),
                Probe::NotFound(
                    m,
                    concrete,
                    Some(json!({"image": photo, "concepts": [], "scenario": "al"})),
                ),
            ];
        }
        ("post", "/v1/ask") => {
            return vec![
                Probe::NotFound(
                    m.clone(),
                    concrete.clone(),
                    Some(json!({"question": "Is <al> here?", "concepts": ["al"], "image": photo})),
                ),
                Probe::NotFound(
                    m.clone(),
                    concrete.clone(),
                    Some(json!({"question": "Is it here?", "scenario": "al"})),
                ),
                Probe::NotFound(
                    m,
                    concrete,
                    Some(json!({"question": "And now?", "conversation_id": conversation})),
                ),
            ];
        }
        ("get", "/v1/concepts" | "/v1/export" | "/v1/scenarios")
        | ("post", "/v1/conversations") => Probe::Hides(m, concrete, None),
        // Bob's `al` is his own: ids are unique per tenant, so this writes nothing of Alice's.
        ("post", "/v1/concepts") => Probe::Hides(
            m,
            concrete,
            Some(json!({"id": "al", "description": "<al> is bob's own.", "images": [photo]})),
        ),
        (_, p) if p.starts_with("/v1/tenants") => Probe::OperatorOnly(m, concrete),
        ("get", "/healthz" | "/readyz" | "/metrics" | "/v1/status" | "/v1/models")
        | ("post", "/v1/chat/completions") => Probe::NoTenantData,
        _ => panic!(
            "{method} {path} has no tenant probe: scope it in the registry layer and add it here"
        ),
    };
    vec![probe]
}

/// Everything Alice can see of her data: the list, each concept and each image's bytes, her
/// scenario and her conversation.
async fn alice_snapshot(app: &TestApp, conversation: &str) -> Vec<u8> {
    let mut snapshot = Vec::new();
    for path in [
        "/v1/concepts".to_owned(),
        "/v1/concepts/al/images/0".to_owned(),
        "/v1/scenarios/al".to_owned(),
        format!("/v1/conversations/{conversation}"),
    ] {
        let response = call(app, ALICE, Method::GET, &path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        snapshot.extend(response.bytes().await.unwrap());
    }
    snapshot
}

async fn run_matrix(database_url: Option<String>) {
    let app = spawn_app(two_tenants(database_url, |_| {})).await;
    let alices_photo = noise_png(16, 16, 4242);
    register_as(
        &app,
        ALICE,
        "al",
        "<al> is alice's secret-marker cat.",
        &alices_photo,
    )
    .await;
    let scenario =
        json!({"id": "al", "description": "al's secret-marker scenario.", "concepts": ["al"]});
    let created = call(&app, ALICE, Method::POST, "/v1/scenarios", Some(&scenario)).await;
    assert_eq!(created.status(), 201);
    let conversation: Value = call(&app, ALICE, Method::POST, "/v1/conversations", None)
        .await
        .json()
        .await
        .unwrap();
    let conversation = conversation["id"].as_str().unwrap().to_owned();
    let before = alice_snapshot(&app, &conversation).await;
    let document: Value =
        serde_json::from_str(include_str!("../../../openapi/detector.json")).unwrap();
    let photo = base64_of(&solid_png([1, 2, 3], 6, 6));
    let mut probes = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            for probe in probes_of(method, path, &photo, &conversation) {
                probes.push((format!("{method} {path}"), probe));
            }
        }
    }
    // Bob's own `al` (the collection's write) comes last, after every probe of Alice's `al`.
    probes.sort_by_key(|(_, probe)| matches!(probe, Probe::Hides(..)));
    let mut probed = 0;
    for (label, probe) in probes {
        {
            match probe {
                Probe::NotFound(m, concrete, body) => {
                    let response = call(&app, BOB, m, &concrete, body.as_ref()).await;
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap();
                    assert_eq!(status, 404, "{label}: {text}");
                    assert!(!text.contains("secret-marker"), "{label} leaked: {text}");
                }
                Probe::Hides(m, concrete, body) => {
                    let response = call(&app, BOB, m, &concrete, body.as_ref()).await;
                    assert!(
                        response.status().is_success(),
                        "{label}: {}",
                        response.status()
                    );
                    let bytes = response.bytes().await.unwrap();
                    assert!(
                        !contains(&bytes, b"secret-marker"),
                        "{label} shows alice's concept"
                    );
                    let middle = alices_photo.len() / 2;
                    assert!(
                        !contains(&bytes, &alices_photo[middle..middle + 32]),
                        "{label} shows alice's photo"
                    );
                }
                Probe::OperatorOnly(m, concrete) => {
                    let response = call(&app, BOB, m, &concrete, None).await;
                    assert_error(response, 403, "forbidden").await;
                }
                Probe::NoTenantData => continue,
            }
            probed += 1;
            assert_eq!(
                alice_snapshot(&app, &conversation).await,
                before,
                "{label} changed alice's data"
            );
        }
    }
    assert!(probed >= 10, "only {probed} routes probed");
    // Alice still reads and owns all of it; Bob's `al` is another concept.
    let bobs: Value = call(&app, BOB, Method::GET, "/v1/concepts/al", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["description"], "<al> is bob's own.");
    app.stop().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn another_tenants_objects_are_404_on_every_route_on_sqlite() {
    run_matrix(None).await;
}

#[tokio::test]
async fn another_tenants_objects_are_404_on_every_route_on_postgres() {
    let Some(base) = postgres_url() else { return };
    run_matrix(Some(fresh_postgres_schema(&base).await)).await;
}
