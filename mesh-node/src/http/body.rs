//! Request input: the JSON body (413 over the limit, 400 when it is not JSON), typed reads of
//! its fields that name the field in every refusal, and path parameters. It checks shapes and
//! ranges; the embedding API checks ids and the rest.

use super::AppState;
use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A request body parsed as JSON, within the configured size limit.
#[derive(Debug)]
pub(crate) struct JsonBody(pub(crate) Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!(
                        "request body is over the limit of {} bytes",
                        state.max_body_bytes
                    ),
                }
            } else {
                ApiError::bad_request(format!("cannot read the request body: {rejection}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "request body is empty: a JSON body is required",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))
    }
}

/// Path parameters; a parameter that is not valid percent-encoded UTF-8 is a 400.
#[derive(Debug)]
pub(crate) struct PathParams<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| PathParams(t))
            .map_err(|e| ApiError::bad_request(format!("path: {e}")))
    }
}

/// The fields of a JSON object body, read one by one; refusals name the field.
#[derive(Debug)]
pub(crate) struct Fields {
    map: Map<String, Value>,
}

/// A JSON value's type, for messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Fields {
    /// The body as an object whose keys are all among `allowed`.
    pub(crate) fn new(body: Value, allowed: &[&str]) -> Result<Self, ApiError> {
        let Value::Object(map) = body else {
            return Err(ApiError::bad_request(format!(
                "request body must be a JSON object, got {}",
                type_name(&body)
            )));
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "{unknown}: unknown field (expected {})",
                allowed.join(", ")
            )));
        }
        Ok(Fields { map })
    }

    /// A field that may be absent (or null).
    fn optional(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    /// A string field; `None` when absent or null.
    pub(crate) fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::bad_request(format!(
                "{name}: must be a string, got {}",
                type_name(&other)
            ))),
        }
    }

    /// A required string field.
    pub(crate) fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        self.string(name)?
            .ok_or_else(|| ApiError::bad_request(format!("{name}: is required")))
    }

    /// An integer field in `min..=max`; `None` when absent or null.
    pub(crate) fn integer(
        &mut self,
        name: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.optional(name) else {
            return Ok(None);
        };
        let range = || format!("{name}: must be an integer from {min} to {max}");
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(n) => Err(ApiError::bad_request(format!("{}, got {n}", range()))),
            None => match &v {
                Value::Number(n) => Err(ApiError::bad_request(format!("{}, got {n}", range()))),
                other => Err(ApiError::bad_request(format!(
                    "{}, got {}",
                    range(),
                    type_name(other)
                ))),
            },
        }
    }

    /// A required integer field in `min..=max`.
    pub(crate) fn required_integer(
        &mut self,
        name: &str,
        min: u64,
        max: u64,
    ) -> Result<u64, ApiError> {
        self.integer(name, min, max)?
            .ok_or_else(|| ApiError::bad_request(format!("{name}: is required")))
    }

    /// An object field; `None` when absent or null.
    pub(crate) fn object(&mut self, name: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(ApiError::bad_request(format!(
                "{name}: must be an object, got {}",
                type_name(&other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(r: Result<impl std::fmt::Debug, ApiError>) -> String {
        r.expect_err("refused").message
    }

    #[test]
    fn fields_name_the_field_in_every_refusal() {
        let mut f = Fields::new(json!({"qty": -1, "sku": 3, "t": 1.5}), &["qty", "sku", "t"])
            .expect("object");
        assert_eq!(
            message(f.required_integer("qty", 1, 10)),
            "qty: must be an integer from 1 to 10, got -1"
        );
        assert_eq!(
            message(f.string("sku")),
            "sku: must be a string, got a number"
        );
        assert!(message(f.integer("t", 0, 5)).starts_with("t: "));
        assert_eq!(message(f.required_string("sku")), "sku: is required");
        assert!(message(Fields::new(json!({"x": 1}), &["qty"])).starts_with("x: unknown field"));
        assert!(message(Fields::new(json!([1]), &["qty"])).contains("must be a JSON object"));
    }

    #[test]
    fn null_reads_as_absent() {
        let mut f = Fields::new(json!({"user_id": null}), &["user_id"]).expect("object");
        assert_eq!(f.string("user_id").expect("ok"), None);
    }
}
