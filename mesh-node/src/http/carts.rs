//! `/v1/carts/...`: read, add, set, remove, clear (CONTRACT §1 "Cart", §2). Each handler reads
//! and checks its input, then makes exactly one call of the embedding API.

use super::AppState;
use super::body::{Fields, JsonBody, PathParams};
use super::error::ApiError;
use crate::CartView;
use axum::Json;
use axum::extract::State;
use crdt_types::{Item, MAX_QUANTITY};
use serde::Serialize;

/// A cart as the API answers it: `{"id":..,"items":[{"sku":..,"qty":n}]}`.
#[derive(Debug, Serialize)]
pub(crate) struct CartBody {
    id: String,
    items: Vec<Item>,
}

fn answer(id: String, view: CartView) -> Json<CartBody> {
    Json(CartBody {
        id,
        items: view.items,
    })
}

/// `GET /v1/carts/{id}`: the cart, with no items if unknown.
pub(crate) async fn get(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<CartBody>, ApiError> {
    let view = s.mesh.cart(&id)?;
    Ok(answer(id, view))
}

/// `POST /v1/carts/{id}/items` with `{"sku":..,"qty":n}`, n >= 1: adds n.
pub(crate) async fn add(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<CartBody>, ApiError> {
    let mut f = Fields::new(body, &["sku", "qty"])?;
    let sku = f.required_string("sku")?;
    let qty = f.required_integer("qty", 1, MAX_QUANTITY)?;
    let view = s.mesh.cart_add(&id, &sku, qty).await?.to_view();
    Ok(answer(id, view))
}

/// `PUT /v1/carts/{id}/items/{sku}` with `{"qty":n}`, n >= 0: sets the quantity as observed.
pub(crate) async fn set(
    State(s): State<AppState>,
    PathParams((id, sku)): PathParams<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Json<CartBody>, ApiError> {
    let mut f = Fields::new(body, &["qty"])?;
    let qty = f.required_integer("qty", 0, MAX_QUANTITY)?;
    let view = s.mesh.cart_set_quantity(&id, &sku, qty).await?.to_view();
    Ok(answer(id, view))
}

/// `DELETE /v1/carts/{id}/items/{sku}`: removes the item as observed.
pub(crate) async fn remove(
    State(s): State<AppState>,
    PathParams((id, sku)): PathParams<(String, String)>,
) -> Result<Json<CartBody>, ApiError> {
    let view = s.mesh.cart_remove(&id, &sku).await?.to_view();
    Ok(answer(id, view))
}

/// `DELETE /v1/carts/{id}`: removes every item as observed.
pub(crate) async fn clear(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<CartBody>, ApiError> {
    let view = s.mesh.cart_clear(&id).await?.to_view();
    Ok(answer(id, view))
}
