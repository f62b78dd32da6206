//! The node's own routes: `/health`, `/v1/members`, `/v1/inspect/{kind}/{id}`, `/metrics`,
//! and the answer for unknown routes.

use super::AppState;
use super::body::PathParams;
use super::error::ApiError;
use crate::{Key, Kind, Member};
use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// `GET /health`: `{"status":"ok","node_id":..,"region":..}`.
pub(crate) async fn health(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "node_id": s.mesh.node_id(),
        "region": s.mesh.region(),
    }))
}

/// `GET /v1/members`: every member this node knows of, itself first.
pub(crate) async fn members(State(s): State<AppState>) -> Json<Vec<Member>> {
    Json(s.mesh.members())
}

/// `GET /v1/inspect/{kind}/{id}` (`kind`: `carts`, `sessions` or `docs`): the key's value,
/// causal context, contributions with their origin node, region and HLC stamp, and the recent
/// deltas that touched it, as this node (named in `node_id` and `region`) holds them.
pub(crate) async fn inspect(
    State(s): State<AppState>,
    PathParams((kind, id)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = match kind.as_str() {
        "cart" => Some(Kind::Cart),
        "session" => Some(Kind::Session),
        "doc" => Some(Kind::Doc),
        other => Kind::parse(other),
    }
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "kind: {kind:?} is not one of carts, sessions, docs"
        ))
    })?;
    let inspection = s.mesh.inspect(&Key::new(kind, id)).await?;
    let mut body = serde_json::to_value(&inspection).unwrap_or(Value::Null);
    let origins = origins(&body);
    if let Value::Object(map) = &mut body {
        map.insert("node_id".into(), s.mesh.node_id().into());
        map.insert("region".into(), s.mesh.region().into());
        map.insert("origins".into(), origins);
    }
    Ok(Json(body))
}

/// Replica id to `{node_id, region}` for every origin the inspection names, so that the
/// causal context (keyed by replica) reads in node names.
fn origins(inspection: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for list in ["contributions", "recent_deltas"] {
        let entries = inspection[list].as_array().into_iter().flatten();
        for origin in entries.map(|e| &e["origin"]) {
            if let (Some(replica), false) =
                (origin["replica"].as_str(), origin["node_id"].is_null())
            {
                out.entry(replica).or_insert_with(
                    || json!({"node_id": origin["node_id"], "region": origin["region"]}),
                );
            }
        }
    }
    Value::Object(out)
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(&s.mesh),
    )
}

/// Any route not in CONTRACT §2: 404, except a known route with an empty id or sku, which is
/// bad input (400).
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    match empty_segment(uri.path()) {
        Some(what) => ApiError::bad_request(format!("{what}: must not be empty")),
        None => ApiError::not_found(format!("no route for {method} {}", uri.path())),
    }
}

/// Which id a path of a known route leaves empty (`/v1/carts/`, `/v1/carts/c/items/`...).
fn empty_segment(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "v1", "carts", ""] | ["", "v1", "carts", "", "items", ..] => Some("cart id"),
        ["", "v1", "carts", _, "items", ""] => Some("sku"),
        ["", "v1", "sessions", ""] => Some("session id"),
        ["", "v1", "docs", ""] | ["", "v1", "docs", "", "changes"] => Some("doc id"),
        ["", "v1", "inspect", _, ""] => Some("id"),
        _ => None,
    }
}
