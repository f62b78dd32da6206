//! What every request passes through: the 503 once the node is draining, the bearer token
//! (compared in constant time), the request counter, and a JSON body for the error answers
//! the router makes itself (405). It admits or refuses; handlers do the work.

use super::AppState;
use super::error::{ApiError, error_body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq};

/// Outermost layer: refuses requests while draining, counts answers, and gives every error
/// answer a JSON body.
pub(crate) async fn gate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let mut response = if s.draining.is_draining() {
        let mut r = ApiError::shutting_down().into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    } else {
        next.run(req).await
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let message = match status {
            StatusCode::METHOD_NOT_ALLOWED => format!("method {method} is not allowed here"),
            other => other.canonical_reason().unwrap_or("error").to_lowercase(),
        };
        let headers = std::mem::take(response.headers_mut());
        response = (status, error_body(&message)).into_response();
        for (name, value) in &headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().insert(name, value.clone());
            }
        }
    }
    s.metrics.count_request(method.as_str(), status.as_u16());
    response
}

/// Layer of the protected routes: with an `api_token` configured, requires
/// `Authorization: Bearer <token>`.
pub(crate) async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &s.api_token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let message = match given {
        Some(token) if token_matches(token.as_bytes(), expected.as_bytes()) => {
            return next.run(req).await;
        }
        Some(_) => "invalid bearer token",
        None => "missing bearer token: send Authorization: Bearer <api_token>",
    };
    let mut r = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_owned(),
    }
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Whether `given` is `expected`, in a time that depends only on `expected`'s length (not on
/// where the first difference is, nor on `given`'s length).
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut same = given.len().ct_eq(&expected.len());
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!*e);
        same &= g.ct_eq(e);
    }
    bool::from(same & Choice::from(1))
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        for other in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"s3crex"] {
            assert!(!token_matches(other, b"s3cret"), "{other:?}");
        }
    }
}
