//! `/v1/concepts`: register, list, read, replace and delete personal concepts.
//!
//! A registration validates the id and description, decodes every image and embeds them all
//! before the registry's single write transaction, so a bad third image leaves nothing behind.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared_types::limits::MAX_DESCRIPTION_CHARS;
use shared_types::{
    AdapterChoice, Concept, ConceptId, ConceptList, CreateConcept, ErrorBody, UpdateConcept,
};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::images::DecodedImage;
use crate::model::PromptImage;
use crate::registry::{ConceptRecord, EmbeddedImages, NewImage};
use crate::routes::detect::eq1_adapter;
use crate::state::AppState;
use crate::tenants::Scope;

/// Register a concept (JSON with base64 / data-URL images, or multipart with files).
#[utoipa::path(
    post,
    path = "/v1/concepts",
    tag = "concepts",
    request_body(content(
        (CreateConcept = "application/json", example = json!({
            "id": "bo",
            "description": "<bo> is a well-groomed, medium-sized Shiba Inu with a thick, cinnamon-colored coat, cream accents, alert eyes, and a black collar.",
            "images": ["data:image/jpeg;base64,/9j/4AAQSkZJRg..."]
        })),
        (MultipartConcept = "multipart/form-data")
    )),
    responses(
        (status = 201, description = "Registered", body = Concept),
        (status = 400, description = "A body that does not parse (JSON or multipart)", body = ErrorBody),
        (status = 409, description = "The id is taken", body = ErrorBody),
        (status = 413, description = "Body or image too large, too many images, or a description over `MAX_DESCRIPTION_CHARS`", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart", body = ErrorBody),
        (status = 422, description = "Invalid id, empty description, undecodable image or an aspect ratio over 200:1", body = ErrorBody),
        (status = 429, description = "Model queue full", body = ErrorBody),
        (status = 503, description = "The registry database is busy, locked, full or unreachable; retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn create_concept(
    State(state): State<AppState>,
    scope: Scope,
    request: Request,
) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (id, description, images) = if content_type.starts_with("multipart/form-data") {
        read_multipart(&state, request).await?
    } else if content_type.starts_with("application/json") {
        let ApiJson(body) = ApiJson::<CreateConcept>::from_request(request, &state).await?;
        let images = decode_all(&state, &body.images).await?;
        (body.id, body.description, images)
    } else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "POST /v1/concepts takes application/json or multipart/form-data, not {content_type:?}"
        )));
    };
    let id = ConceptId::parse(&id)?;
    let description = validate_description(&description)?;
    check_image_count(&state, images.len())?;
    check_quotas(&state, &scope, &images, None).await?;
    let embedded = embed(&state, images).await?;
    let record = scope.registry.insert(&id, &description, embedded).await?;
    tracing::info!(concept = %id, images = record.concept.images.len(), "registered a concept");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/concepts/{}", id.bare()))],
        axum::Json(concept_view(&state, record)),
    )
        .into_response())
}

/// The multipart form of a registration (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct MultipartConcept {
    id: String,
    description: String,
    /// One part per reference image (repeat the field).
    #[schema(value_type = Vec<String>, format = Binary)]
    images: Vec<String>,
}

async fn read_multipart(
    state: &AppState,
    request: Request,
) -> Result<(String, String, Vec<DecodedImage>), ApiError> {
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|rejection| ApiError::Malformed {
            kind: "invalid_multipart",
            message: rejection.body_text(),
        })?;
    let mut id = None;
    let mut description = None;
    let mut images = Vec::new();
    loop {
        let field = multipart.next_field().await.map_err(multipart_error)?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "id" => id = Some(field.text().await.map_err(multipart_error)?),
            "description" => description = Some(field.text().await.map_err(multipart_error)?),
            "images" | "image" | "images[]" => {
                if images.len() >= state.limits.max_images_per_concept {
                    return Err(ApiError::TooMany {
                        what: "images",
                        count: images.len() + 1,
                        max: state.limits.max_images_per_concept,
                    });
                }
                let bytes = field.bytes().await.map_err(multipart_error)?;
                let what = format!("images[{}]", images.len());
                images.push(state.images.bytes(bytes.to_vec(), &what).await?);
            }
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown multipart field {other:?}; expected id, description, images"
                )));
            }
        }
    }
    let id = id.ok_or_else(|| ApiError::InvalidRequest("missing field \"id\"".into()))?;
    let description = description
        .ok_or_else(|| ApiError::InvalidRequest("missing field \"description\"".into()))?;
    Ok((id, description, images))
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the request body exceeds the size limit".into())
    } else {
        ApiError::Malformed {
            kind: "invalid_multipart",
            message: format!("malformed multipart body: {}", error.body_text()),
        }
    }
}

async fn decode_all(state: &AppState, images: &[String]) -> Result<Vec<DecodedImage>, ApiError> {
    check_image_count(state, images.len())?;
    let mut decoded = Vec::with_capacity(images.len());
    for (index, image) in images.iter().enumerate() {
        decoded.push(
            state
                .images
                .base64(image, &format!("images[{index}]"))
                .await?,
        );
    }
    Ok(decoded)
}

/// The quotas, the tenant's and then the registry-wide ones, before any embedding or write:
/// the number of concepts (for a new one, `replacing` is `None`) and the bytes of stored
/// images (a replacement's old images do not count). Two registrations racing at the edge of
/// a quota can both pass; the bound is what a disk should hold, not an exact ledger.
async fn check_quotas(
    state: &AppState,
    scope: &Scope,
    images: &[DecodedImage],
    replacing: Option<&ConceptId>,
) -> Result<(), ApiError> {
    let too_large = |kind, message| Err(ApiError::OverQuota { kind, message });
    let quotas = state.tenants.quotas;
    let adding: u64 = images.iter().map(|image| image.bytes.len() as u64).sum();
    if replacing.is_none() && scope.registry.concept_count().await? as usize >= quotas.max_concepts
    {
        return too_large(
            "concept_quota_exceeded",
            format!(
                "this tenant holds its quota of {} concepts; delete one first",
                quotas.max_concepts
            ),
        );
    }
    let tenant_stored = scope.registry.stored_bytes(replacing).await? as u64;
    if tenant_stored + adding > quotas.max_stored_bytes {
        return too_large(
            "storage_quota_exceeded",
            format!(
                "{adding} more bytes of photos would pass this tenant's quota of {} MiB",
                quotas.max_stored_bytes / (1024 * 1024)
            ),
        );
    }
    if replacing.is_none() {
        let (concepts, _) = state.registry.row_counts().await?;
        if concepts as usize >= state.limits.max_concepts {
            return too_large(
                "concept_quota_exceeded",
                format!(
                    "the registry holds its quota of {} concepts; delete one first",
                    state.limits.max_concepts
                ),
            );
        }
    }
    let stored = state
        .registry
        .stored_bytes(&scope.tenant, replacing)
        .await? as u64;
    if stored + adding > state.limits.max_stored_bytes {
        return too_large(
            "storage_quota_exceeded",
            format!(
                "{adding} more bytes of photos would pass the registry's quota of {} MiB",
                state.limits.max_stored_bytes / (1024 * 1024)
            ),
        );
    }
    Ok(())
}

fn check_image_count(state: &AppState, count: usize) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::InvalidRequest(
            "a concept needs at least one reference image".into(),
        ));
    }
    if count > state.limits.max_images_per_concept {
        return Err(ApiError::TooMany {
            what: "images",
            count,
            max: state.limits.max_images_per_concept,
        });
    }
    Ok(())
}

fn validate_description(description: &str) -> Result<String, ApiError> {
    let trimmed = description.trim();
    if trimmed.is_empty() {
        return Err(ApiError::InvalidRequest("the description is empty".into()));
    }
    ApiError::check_length(
        "description_too_long",
        "the description",
        trimmed,
        MAX_DESCRIPTION_CHARS,
    )?;
    Ok(trimmed.to_string())
}

/// CLIP-embeds the images on a model worker: the concept embedding is the mean of the
/// L2-normalized image embeddings (paper Eq. 1).
async fn embed(state: &AppState, images: Vec<DecodedImage>) -> Result<EmbeddedImages, ApiError> {
    let prompt_images: Vec<PromptImage> = images
        .iter()
        .map(|image| PromptImage {
            sha256: image.sha256.clone(),
            rgb: image.rgb.clone(),
        })
        .collect();
    let embeddings = state.workers.embed(prompt_images, state.deadline()).await?;
    if embeddings.len() != images.len() {
        return Err(ApiError::ModelFailed(format!(
            "the embedder returned {} embeddings for {} images",
            embeddings.len(),
            images.len()
        )));
    }
    let embedding = slc_engine::lora::concept_embedding(&embeddings)
        .map_err(|error| ApiError::ModelFailed(error.to_string()))?;
    Ok(EmbeddedImages {
        images: images
            .into_iter()
            .map(|image| NewImage {
                sha256: image.sha256,
                content_type: image.content_type.to_string(),
                width: image.width,
                height: image.height,
                bytes: image.bytes.as_ref().clone(),
            })
            .collect(),
        embedding,
        clip_model: state.workers.catalog().clip_model,
    })
}

/// A concept as the API shows it: with the adapter it maps to on its own (Eq. 1).
fn concept_view(state: &AppState, record: ConceptRecord) -> Concept {
    let adapter =
        eq1_adapter(state, std::slice::from_ref(&record)).map(|selection| AdapterChoice {
            name: selection.name,
            similarity: selection.similarity,
        });
    Concept {
        adapter,
        ..record.concept
    }
}

/// List every registered concept (metadata only; images via their own route).
#[utoipa::path(get, path = "/v1/concepts", tag = "concepts",
    responses((status = 200, body = ConceptList)))]
pub async fn list_concepts(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<axum::Json<ConceptList>, ApiError> {
    let records = scope.registry.list().await?;
    Ok(axum::Json(ConceptList {
        concepts: records
            .into_iter()
            .map(|record| concept_view(&state, record))
            .collect(),
    }))
}

/// Read one concept.
#[utoipa::path(get, path = "/v1/concepts/{id}", tag = "concepts",
    params(("id" = String, Path, description = "Concept id, bare (`bo`)", example = "bo")),
    responses((status = 200, body = Concept), (status = 404, body = ErrorBody),
        (status = 422, description = "Invalid concept id", body = ErrorBody)))]
pub async fn get_concept(
    State(state): State<AppState>,
    scope: Scope,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<axum::Json<Concept>, ApiError> {
    let id = ConceptId::parse(&raw_id)?;
    match scope.registry.get(&id).await? {
        Some(record) => Ok(axum::Json(concept_view(&state, record))),
        None => Err(ApiError::UnknownConcepts(vec![id])),
    }
}

/// Replace a concept's description, and its images (re-embedded) when given.
#[utoipa::path(put, path = "/v1/concepts/{id}", tag = "concepts",
    params(("id" = String, Path, example = "bo")),
    request_body(content = UpdateConcept, example = json!({
        "description": "<bo> is a Shiba Inu with a black collar."
    })),
    responses((status = 200, body = Concept), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, description = "The registry database is busy, locked, full or unreachable; retry after `Retry-After`", body = ErrorBody)))]
pub async fn update_concept(
    State(state): State<AppState>,
    scope: Scope,
    ApiPath(raw_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateConcept>,
) -> Result<axum::Json<Concept>, ApiError> {
    let id = ConceptId::parse(&raw_id)?;
    let description = validate_description(&body.description)?;
    if scope.registry.get(&id).await?.is_none() {
        return Err(ApiError::UnknownConcepts(vec![id]));
    }
    let embedded = match body.images {
        Some(images) => {
            let images = decode_all(&state, &images).await?;
            check_quotas(&state, &scope, &images, Some(&id)).await?;
            Some(embed(&state, images).await?)
        }
        None => None,
    };
    let record = scope.registry.update(&id, &description, embedded).await?;
    Ok(axum::Json(concept_view(&state, record)))
}

/// Delete a concept and its images.
#[utoipa::path(delete, path = "/v1/concepts/{id}", tag = "concepts",
    params(("id" = String, Path, example = "bo")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody),
        (status = 422, description = "Invalid concept id", body = ErrorBody),
        (status = 503, description = "The registry database is busy, locked, full or unreachable; retry after `Retry-After`", body = ErrorBody)))]
pub async fn delete_concept(
    scope: Scope,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = ConceptId::parse(&raw_id)?;
    scope.registry.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One stored reference image, as uploaded. It is served to the device's own app only.
#[utoipa::path(get, path = "/v1/concepts/{id}/images/{n}", tag = "concepts",
    params(("id" = String, Path, example = "bo"), ("n" = u32, Path, example = 0)),
    responses(
        (status = 200, description = "The image bytes", content_type = "image/*"),
        (status = 400, description = "`n` is not a number", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Invalid concept id", body = ErrorBody)))]
pub async fn get_concept_image(
    scope: Scope,
    ApiPath((raw_id, position)): ApiPath<(String, u32)>,
) -> Result<Response, ApiError> {
    let id = ConceptId::parse(&raw_id)?;
    match scope.registry.image(&id, position).await? {
        Some((content_type, bytes)) => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, "private, max-age=3600")
            .body(Body::from(bytes))
            .map_err(|error| ApiError::Internal(error.to_string()))?),
        None => Err(ApiError::NotFound(format!(
            "concept {id} has no image {position}"
        ))),
    }
}
