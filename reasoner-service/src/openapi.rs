//! The OpenAPI document, generated from the handlers and the shared wire types. The committed
//! copy is `openapi/reasoner.json`; `slc-reasoner openapi` prints it and a test checks drift.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "slc-reasoner",
        description = "The SLC cloud service: identity extraction (Table 7), test-time reflection (Table 8) and answer generation (Table 9) through an OpenAI-compatible large VLM.",
    ),
    paths(
        crate::http::reason,
        crate::http::identities,
        crate::http::healthz,
        crate::http::readyz,
        crate::http::metrics,
    ),
    components(schemas(
        shared_types::ErrorBody,
        shared_types::ErrorDetail,
        shared_types::AnswerDelta,
        shared_types::VerificationEvent,
        shared_types::StreamError,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "reasoner", description = "Turns and identities"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn spec() -> utoipa::openapi::OpenApi {
    let mut spec = ApiDoc::openapi();
    // The crate version would make the committed file drift on every release bump.
    spec.info.version = "1".into();
    spec
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn spec_json() -> String {
    let mut text = spec()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}
