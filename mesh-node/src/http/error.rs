//! The API's error answer, `{"error": "<message>"}` with its status (CONTRACT §2), and how
//! the embedding API's errors map onto it. It shapes answers; it decides nothing.

use crate::error::{InvalidInput, MeshError};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer: a status and a message that names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `error` field of the body.
    pub message: String,
}

impl ApiError {
    /// A 400: the request's input was refused and nothing changed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// A 503: the node is shutting down.
    pub fn shutting_down() -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "node is shutting down".into(),
        }
    }
}

/// The JSON body of an error answer.
pub(crate) fn error_body(message: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "error": message }))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, error_body(&self.message)).into_response()
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        let message = match e {
            InvalidInput::Id { what, source } => format!("{what}: {source}"),
            InvalidInput::IncompleteSession => {
                "a new session needs user_id and ttl_s (the session does not exist or expired)"
                    .to_owned()
            }
            other => other.to_string(),
        };
        ApiError::bad_request(message)
    }
}

impl From<MeshError> for ApiError {
    fn from(e: MeshError) -> Self {
        match e {
            MeshError::Invalid(invalid) => invalid.into(),
            MeshError::SessionRevoked => ApiError::not_found("session is revoked"),
            MeshError::ShuttingDown => ApiError::shutting_down(),
            e @ (MeshError::Storage(_) | MeshError::Clock(_)) => {
                tracing::error!(error = %e, "request failed");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: e.to_string(),
                }
            }
        }
    }
}
