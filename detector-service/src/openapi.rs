//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::OpenApi;

use crate::openai_types as openai;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "slc-detector",
        description = "The SLC edge service: personal concept registry, test-time detection with the small VLM, an OpenAI-compatible endpoint, and the app's /v1/ask entry point.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::concepts::create_concept,
        routes::concepts::list_concepts,
        routes::concepts::get_concept,
        routes::concepts::update_concept,
        routes::concepts::delete_concept,
        routes::concepts::get_concept_image,
        routes::scenarios::create_scenario,
        routes::scenarios::list_scenarios,
        routes::scenarios::get_scenario,
        routes::scenarios::update_scenario,
        routes::scenarios::delete_scenario,
        routes::conversations::create_conversation,
        routes::conversations::get_conversation,
        routes::conversations::delete_conversation,
        routes::detect::detect,
        routes::ask::ask,
        routes::chat::chat_completions,
        routes::chat::list_models,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::health::status,
        routes::tenants::export,
        routes::tenants::list_tenants,
        routes::tenants::get_tenant,
        routes::tenants::delete_tenant,
        routes::tenants::export_tenant,
    ),
    components(schemas(
        shared_types::ErrorBody,
        shared_types::AskFailure,
        shared_types::AnswerDelta,
        shared_types::VerificationEvent,
        routes::concepts::MultipartConcept,
        openai::ChatCompletionChunk,
    )),
    modifiers(&BearerSecurity),
    security(("bearer" = [])),
    tags(
        (name = "concepts", description = "The personal concept registry (reference images never leave the edge)"),
        (name = "scenarios", description = "Named groups of concepts (multi-concept scenes); a turn may name one"),
        (name = "conversations", description = "Multi-turn conversations stored on the edge (text, cues and image hashes; never images)"),
        (name = "detection", description = "Test-time detection with the small VLM (paper Table 6)"),
        (name = "ask", description = "The app's entry point: detect, reason in the cloud, answer"),
        (name = "openai", description = "OpenAI-compatible chat completions with the edge model"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "tenants", description = "Data rights (a tenant's export) and the operator's tenant management"),
    )
)]
pub struct ApiDoc;

struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON with a trailing newline, exactly as committed in
/// `openapi/detector.json`.
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("serializing the OpenAPI document");
    text.push('\n');
    text
}
