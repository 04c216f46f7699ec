//! `/v1/conversations`: a conversation is created empty, grows by one stored turn per
//! `/v1/ask` that names it (`conversation_id`), and is read or deleted here with its turns.

use axum::extract::State;
use axum::http::StatusCode;
use shared_types::{Conversation, ErrorBody};

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;
use crate::tenants::Scope;

/// Longest conversation id accepted in a path (ours are 37 characters).
const MAX_CONVERSATION_ID_LEN: usize = 128;

/// Create a conversation. The body, if any, is ignored.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations",
    responses((status = 201, body = Conversation, example = json!({
        "id": "conv_3f2a9c0d4e5b46f7a8b9c0d1e2f3a4b5",
        "created_at": "2026-12-03T16:00:00Z", "updated_at": "2026-12-03T16:00:00Z", "turns": []})),
        (status = 413, description = "The tenant keeps its most conversations (`conversation_quota_exceeded`)", body = ErrorBody)))]
pub async fn create_conversation(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<(StatusCode, axum::Json<Conversation>), ApiError> {
    let max = state.tenants.quotas.max_conversations;
    if scope.registry.conversation_count().await? as usize >= max {
        return Err(ApiError::OverQuota {
            kind: "conversation_quota_exceeded",
            message: format!(
                "this tenant keeps {max} conversations already (SLC_TENANT_MAX_CONVERSATIONS); \
                 delete one first"
            ),
        });
    }
    let record = scope.registry.create_conversation().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Conversation {
            id: record.id,
            created_at: record.created_at,
            updated_at: record.updated_at,
            turns: Vec::new(),
        }),
    ))
}

/// A conversation with its stored turns, oldest first (question, answer, image hash, cues and
/// a trace summary each; never the image).
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, example = "conv_3f2a9c0d4e5b46f7a8b9c0d1e2f3a4b5")),
    responses((status = 200, body = Conversation),
        (status = 404, description = "No such conversation (`unknown_conversation`)", body = ErrorBody)))]
pub async fn get_conversation(
    scope: Scope,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Conversation>, ApiError> {
    if id.len() > MAX_CONVERSATION_ID_LEN {
        return Err(ApiError::unknown_conversation());
    }
    let conversation = scope
        .registry
        .conversation(&id)
        .await?
        .ok_or_else(ApiError::unknown_conversation)?;
    Ok(axum::Json(conversation))
}

/// Delete a conversation and everything stored for it.
#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, example = "conv_3f2a9c0d4e5b46f7a8b9c0d1e2f3a4b5")),
    responses((status = 204, description = "Deleted with its turns and pseudonyms"),
        (status = 404, description = "No such conversation (`unknown_conversation`)", body = ErrorBody)))]
pub async fn delete_conversation(
    scope: Scope,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if id.len() > MAX_CONVERSATION_ID_LEN || !scope.registry.delete_conversation(&id).await? {
        return Err(ApiError::unknown_conversation());
    }
    Ok(StatusCode::NO_CONTENT)
}
