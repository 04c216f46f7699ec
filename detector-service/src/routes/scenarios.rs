//! `/v1/scenarios`: named groups of registered concepts. A turn that names a scenario uses its
//! members, with the Eq. 1 adapter choice computed once per revision (`scenario_adapters.rs`).

use axum::extract::State;
use axum::http::StatusCode;
use shared_types::limits::MAX_DESCRIPTION_CHARS;
use shared_types::{ConceptId, CreateScenario, ErrorBody, Scenario, ScenarioList, UpdateScenario};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::registry::ScopedRegistry;
use crate::routes::turn_concepts::parse_listed;
use crate::state::AppState;
use crate::tenants::Scope;

/// Members: at least one, valid, unique, registered, not more than one turn may use.
async fn validate_members(
    state: &AppState,
    registry: &ScopedRegistry,
    raw: &[String],
) -> Result<Vec<ConceptId>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::InvalidRequest(
            "a scenario needs at least one registered concept".into(),
        ));
    }
    let ids = parse_listed(state, raw)?;
    registry
        .get_many(&ids)
        .await?
        .map_err(ApiError::UnknownConcepts)?;
    Ok(ids)
}

fn validate_description(description: &str) -> Result<String, ApiError> {
    let description = description.trim().to_owned();
    ApiError::check_length(
        "description_too_long",
        "the description",
        &description,
        MAX_DESCRIPTION_CHARS,
    )?;
    Ok(description)
}

/// Create a scenario.
#[utoipa::path(post, path = "/v1/scenarios", tag = "scenarios",
    request_body(content = CreateScenario, example = json!({"id": "family", "concepts": ["bo", "mam"], "description": "Bo and Mam at home"})),
    responses(
        (status = 201, body = Scenario),
        (status = 404, description = "Unknown member concepts", body = ErrorBody),
        (status = 409, description = "The id is taken (`scenario_exists`)", body = ErrorBody),
        (status = 413, description = "More members than `SLC_MAX_CONCEPTS_PER_REQUEST`, or a description over `shared_types::limits::MAX_DESCRIPTION_CHARS`", body = ErrorBody),
        (status = 422, description = "An invalid id, no members, or a member listed twice", body = ErrorBody),
    ))]
pub async fn create_scenario(
    State(state): State<AppState>,
    scope: Scope,
    ApiJson(body): ApiJson<CreateScenario>,
) -> Result<(StatusCode, axum::Json<Scenario>), ApiError> {
    let id = ConceptId::parse(&body.id)?;
    let description = validate_description(&body.description)?;
    let members = validate_members(&state, &scope.registry, &body.concepts).await?;
    let record = scope
        .registry
        .insert_scenario(&id, &description, &members)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(record.scenario)))
}

/// List scenarios.
#[utoipa::path(get, path = "/v1/scenarios", tag = "scenarios",
    responses((status = 200, body = ScenarioList)))]
pub async fn list_scenarios(scope: Scope) -> Result<axum::Json<ScenarioList>, ApiError> {
    let scenarios = scope.registry.scenarios().await?;
    Ok(axum::Json(ScenarioList {
        scenarios: scenarios
            .into_iter()
            .map(|record| record.scenario)
            .collect(),
    }))
}

/// Get a scenario.
#[utoipa::path(get, path = "/v1/scenarios/{id}", tag = "scenarios",
    params(("id" = String, Path, example = "family")),
    responses((status = 200, body = Scenario), (status = 404, body = ErrorBody),
        (status = 422, description = "Invalid scenario id", body = ErrorBody)))]
pub async fn get_scenario(
    scope: Scope,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<axum::Json<Scenario>, ApiError> {
    let id = ConceptId::parse(&raw_id)?;
    let record = scope
        .registry
        .scenario(&id)
        .await?
        .ok_or_else(|| ApiError::unknown_scenario(&id))?;
    Ok(axum::Json(record.scenario))
}

/// Replace a scenario's members and description; its revision grows, so its adapter choice is
/// computed again on next use.
#[utoipa::path(put, path = "/v1/scenarios/{id}", tag = "scenarios",
    params(("id" = String, Path, example = "family")),
    request_body(content = UpdateScenario, example = json!({"concepts": ["bo"], "description": "Bo alone"})),
    responses((status = 200, body = Scenario),
        (status = 404, description = "Unknown scenario or member concepts", body = ErrorBody),
        (status = 413, description = "Too many members, or a description too long", body = ErrorBody),
        (status = 422, description = "Invalid id, no members, or a member listed twice", body = ErrorBody)))]
pub async fn update_scenario(
    State(state): State<AppState>,
    scope: Scope,
    ApiPath(raw_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateScenario>,
) -> Result<axum::Json<Scenario>, ApiError> {
    let id = ConceptId::parse(&raw_id)?;
    let description = validate_description(&body.description)?;
    let members = validate_members(&state, &scope.registry, &body.concepts).await?;
    let record = scope
        .registry
        .update_scenario(&id, &description, &members)
        .await?;
    Ok(axum::Json(record.scenario))
}

/// Delete a scenario (its concepts stay registered).
#[utoipa::path(delete, path = "/v1/scenarios/{id}", tag = "scenarios",
    params(("id" = String, Path, example = "family")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody),
        (status = 422, description = "Invalid scenario id", body = ErrorBody)))]
pub async fn delete_scenario(
    scope: Scope,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = ConceptId::parse(&raw_id)?;
    scope.registry.delete_scenario(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
