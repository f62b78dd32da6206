//! `/v1/docs/{id}`: read a document, apply a list of edits (CONTRACT §1 "Documents", §2).
//! The edits are all applied or none.

use super::AppState;
use super::body::{JsonBody, PathParams};
use super::error::ApiError;
use crate::DocEdit;
use axum::Json;
use axum::extract::State;
use serde_json::Value;

/// `GET /v1/docs/{id}`: the document as JSON (`{}` when unknown).
pub(crate) async fn get(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.mesh.doc(&id)?))
}

/// `POST /v1/docs/{id}/changes` with a list of edits
/// (`{"op":"set"|"delete"|"insert"|"increment","path":[..],...}`): the document after them.
pub(crate) async fn change(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let Value::Array(list) = body else {
        return Err(ApiError::bad_request(
            "request body must be a JSON array of edits, e.g. [{\"op\":\"set\",\"path\":[\"a\"],\"value\":1}]",
        ));
    };
    if list.is_empty() {
        return Err(ApiError::bad_request("changes: the list of edits is empty"));
    }
    let edits = list
        .into_iter()
        .enumerate()
        .map(|(i, edit)| {
            serde_json::from_value::<DocEdit>(edit)
                .map_err(|e| ApiError::bad_request(format!("changes[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(s.mesh.doc_change(&id, edits).await?))
}
