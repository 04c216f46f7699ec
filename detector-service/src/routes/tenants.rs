//! Data rights and the operator's tenant routes: `GET /v1/export` (a tenant's own data, one
//! tar archive), `GET /v1/tenants` and `/v1/tenants/{tenant}` (usage), `DELETE
//! /v1/tenants/{tenant}` (everything of a tenant) and `GET /v1/tenants/{tenant}/export` (only
//! with `SLC_OPERATOR_READS_PHOTOS`).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared_types::ErrorBody;

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::registry::{ExportedConcept, ScopedRegistry, TenantUsage, now_rfc3339};
use crate::state::AppState;
use crate::tenants::archive::TarWriter;
use crate::tenants::{Operator, Scope, TenantId};

/// Every tenant holding anything, with its usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantUsage>,
}

/// `manifest.json` of an export.
#[derive(Serialize)]
struct Manifest<'a> {
    format: &'static str,
    tenant: &'a str,
    exported_at: String,
    concepts: Vec<ManifestConcept>,
    scenarios: Vec<shared_types::Scenario>,
    /// Each with its stored turns (questions, answers, cue sets; images only as hashes).
    conversations: Vec<shared_types::Conversation>,
}

#[derive(Serialize)]
struct ManifestConcept {
    id: String,
    description: String,
    created_at: String,
    updated_at: String,
    clip_model: String,
    images: Vec<ManifestImage>,
}

#[derive(Serialize)]
struct ManifestImage {
    index: u32,
    file: String,
    sha256: String,
    content_type: String,
    width: u32,
    height: u32,
}

fn extension(content_type: &str) -> &str {
    match content_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        _ => "bin",
    }
}

/// The tenant's data as a tar archive: `manifest.json` and `concepts/<id>/<n>.<ext>`.
async fn archive(registry: &ScopedRegistry) -> Result<Response, ApiError> {
    let concepts: Vec<ExportedConcept> = registry.export().await?;
    let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let mut tar = TarWriter::new(mtime);
    let mut listed = Vec::with_capacity(concepts.len());
    for exported in concepts {
        let mut images = Vec::with_capacity(exported.images.len());
        for (image, bytes) in &exported.images {
            let file = format!(
                "concepts/{}/{}.{}",
                exported.concept.id,
                image.index,
                extension(&image.content_type)
            );
            tar.file(&file, bytes);
            images.push(ManifestImage {
                index: image.index,
                file,
                sha256: image.sha256.clone(),
                content_type: image.content_type.clone(),
                width: image.width,
                height: image.height,
            });
        }
        listed.push(ManifestConcept {
            id: exported.concept.id,
            description: exported.concept.description,
            created_at: exported.concept.created_at,
            updated_at: exported.concept.updated_at,
            clip_model: exported.clip_model,
            images,
        });
    }
    let manifest = Manifest {
        format: "slc-export/v1",
        tenant: registry.tenant().as_str(),
        exported_at: now_rfc3339(),
        concepts: listed,
        scenarios: registry
            .scenarios()
            .await?
            .into_iter()
            .map(|record| record.scenario)
            .collect(),
        conversations: registry.conversations().await?,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    tar.file("manifest.json", &json);
    let disposition = format!(
        "attachment; filename=\"slc-export-{}.tar\"",
        registry.tenant()
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        tar.finish(),
    )
        .into_response())
}

/// Export the calling tenant's data: concepts with their reference photos, as one tar.
#[utoipa::path(get, path = "/v1/export", tag = "tenants",
    responses(
        (status = 200, description = "A tar archive: `manifest.json` and `concepts/<id>/<n>.<ext>`", content_type = "application/x-tar"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "An operator key (it owns no data)", body = ErrorBody)))]
pub async fn export(scope: Scope) -> Result<Response, ApiError> {
    archive(&scope.registry).await
}

fn tenant_path(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(ApiError::InvalidRequest)
}

/// List tenants with their usage (operator).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, body = TenantList),
        (status = 403, description = "Not an operator key", body = ErrorBody)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    _: Operator,
) -> Result<axum::Json<TenantList>, ApiError> {
    Ok(axum::Json(TenantList {
        tenants: state.registry.tenants_usage().await?,
    }))
}

/// One tenant's usage (operator); a tenant with nothing stored reads as zeros.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, example = "alice")),
    responses((status = 200, body = TenantUsage),
        (status = 403, description = "Not an operator key", body = ErrorBody),
        (status = 422, description = "Invalid tenant id", body = ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(raw): ApiPath<String>,
) -> Result<axum::Json<TenantUsage>, ApiError> {
    let tenant = tenant_path(&raw)?;
    Ok(axum::Json(state.registry.tenant_usage(&tenant).await?))
}

/// Delete everything of a tenant: concepts, stored photos and their rows (operator). Says
/// what was removed; deleting a tenant with nothing stored removes nothing and is not an
/// error. The tenant's keys stay valid until the operator removes them from the keys.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, example = "alice")),
    responses((status = 200, description = "What was removed", body = TenantUsage),
        (status = 403, description = "Not an operator key", body = ErrorBody),
        (status = 422, description = "Invalid tenant id", body = ErrorBody),
        (status = 503, description = "The registry database is busy, locked, full or unreachable; retry after `Retry-After`", body = ErrorBody)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(raw): ApiPath<String>,
) -> Result<axum::Json<TenantUsage>, ApiError> {
    let tenant = tenant_path(&raw)?;
    let removed = state.registry.delete_tenant(&tenant).await?;
    tracing::info!(%tenant, concepts = removed.concepts, images = removed.images, "deleted a tenant");
    Ok(axum::Json(removed))
}

/// Export a tenant's data, photos included (operator, only with `SLC_OPERATOR_READS_PHOTOS`).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/export", tag = "tenants",
    params(("tenant" = String, Path, example = "alice")),
    responses(
        (status = 200, description = "As `GET /v1/export` for that tenant", content_type = "application/x-tar"),
        (status = 403, description = "Not an operator key, or `SLC_OPERATOR_READS_PHOTOS` is off", body = ErrorBody),
        (status = 422, description = "Invalid tenant id", body = ErrorBody)))]
pub async fn export_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    if !state.tenants.operator_reads_photos {
        return Err(ApiError::Forbidden(
            "operators read no tenant's photos unless SLC_OPERATOR_READS_PHOTOS is on".into(),
        ));
    }
    let tenant = tenant_path(&raw)?;
    archive(&state.registry.scoped(tenant)).await
}
