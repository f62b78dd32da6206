//! `/v1/sessions/{id}`: create or update, read, revoke (CONTRACT §1 "Session", §2). An
//! expired or revoked session reads as absent: 404.

use super::AppState;
use super::body::{Fields, JsonBody, PathParams};
use super::error::ApiError;
use crate::{SessionUpdate, SessionView};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The longest `ttl_s` one update may give: ten years.
pub const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

/// A session as the API answers it.
#[derive(Debug, Serialize)]
pub(crate) struct SessionBody {
    id: String,
    user_id: Option<String>,
    attrs: BTreeMap<String, serde_json::Value>,
    expires_at_ms: i64,
}

fn answer(id: String, view: SessionView) -> Json<SessionBody> {
    Json(SessionBody {
        id,
        user_id: view.user_id,
        attrs: view.attrs,
        expires_at_ms: view.expires_at_ms,
    })
}

/// `PUT /v1/sessions/{id}` with `{"user_id":..,"attrs":{..},"ttl_s":n}`: every field is
/// optional on a live session; creating one needs `user_id` and `ttl_s`.
pub(crate) async fn put(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<SessionBody>, ApiError> {
    let mut f = Fields::new(body, &["user_id", "attrs", "ttl_s"])?;
    let user_id = f.string("user_id")?;
    if let Some(user) = &user_id {
        crdt_types::validate_id(user)
            .map_err(|e| ApiError::bad_request(format!("user_id: {e}")))?;
    }
    let attrs: BTreeMap<String, serde_json::Value> =
        f.object("attrs")?.unwrap_or_default().into_iter().collect();
    for name in attrs.keys() {
        crdt_types::validate_id(name)
            .map_err(|e| ApiError::bad_request(format!("attrs: attribute name {name:?} {e}")))?;
    }
    let ttl = f.integer("ttl_s", 1, MAX_TTL_S)?.map(Duration::from_secs);
    let update = SessionUpdate {
        user_id,
        attrs,
        ttl,
    };
    match s.mesh.session_put(&id, update).await? {
        Some(view) => Ok(answer(id, view)),
        None => Err(ApiError::not_found(format!("session {id:?} has expired"))),
    }
}

/// `GET /v1/sessions/{id}`: the session, or 404 when unknown, expired or revoked.
pub(crate) async fn get(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<SessionBody>, ApiError> {
    match s.mesh.session(&id)? {
        Some(view) => Ok(answer(id, view)),
        None => Err(ApiError::not_found(format!("session {id:?} not found"))),
    }
}

/// `DELETE /v1/sessions/{id}`: revokes the session for good; 204.
pub(crate) async fn revoke(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    s.mesh.session_revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
