//! An edge service's HTTP routes over an embedded [`Mesh`]: a cart page (HTML), its JSON, and
//! a form that adds an item. Rendered pages are cached and invalidated by the node's change
//! subscription, which is what an edge service would do with its own caches.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_node::{CartView, ChangeFilter, Kind, Mesh, MeshError, SubscriptionError};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Rendered cart pages by cart id, dropped when the cart changes.
#[derive(Default)]
pub struct PageCache {
    pages: Mutex<HashMap<String, Arc<str>>>,
}

impl PageCache {
    fn get(&self, cart: &str) -> Option<Arc<str>> {
        self.lock().get(cart).cloned()
    }

    fn put(&self, cart: &str, page: Arc<str>) {
        self.lock().insert(cart.to_owned(), page);
    }

    fn invalidate(&self, cart: &str) {
        self.lock().remove(cart);
    }

    fn clear(&self) {
        self.lock().clear();
    }

    /// How many pages are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no page is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        self.pages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct Edge {
    mesh: Mesh,
    cache: Arc<PageCache>,
}

impl Edge {
    /// The service over `mesh`; spawns the task that invalidates cached pages on changes
    /// (call within a tokio runtime).
    pub fn new(mesh: Mesh) -> Self {
        let cache = Arc::new(PageCache::default());
        let mut changes = mesh.subscribe(ChangeFilter::kind(Kind::Cart));
        let invalidated = cache.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(change) => invalidated.invalidate(&change.key.id),
                    // Missed some changes: any cached page may be stale.
                    Err(SubscriptionError::Lagged(_)) => invalidated.clear(),
                    Err(SubscriptionError::Closed) => return,
                }
            }
        });
        Edge { mesh, cache }
    }

    /// The page cache (for tests and metrics).
    pub fn cache(&self) -> &PageCache {
        &self.cache
    }

    /// The routes: `GET /carts/{id}` (HTML page), `GET /api/carts/{id}` (JSON),
    /// `POST /carts/{id}/add` (form `sku`, `qty`; redirects to the page).
    pub fn router(self) -> Router {
        Router::new()
            .route("/carts/{id}", get(page))
            .route("/carts/{id}/add", post(add))
            .route("/api/carts/{id}", get(json))
            .with_state(self)
    }
}

/// A [`MeshError`] as an HTTP answer.
struct Failure(MeshError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            e if e.is_client_error() => StatusCode::BAD_REQUEST,
            MeshError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, self.0.to_string()).into_response()
    }
}

async fn page(State(edge): State<Edge>, Path(id): Path<String>) -> Result<Html<String>, Failure> {
    if let Some(page) = edge.cache.get(&id) {
        return Ok(Html(page.to_string()));
    }
    let cart = edge.mesh.cart(&id).map_err(Failure)?;
    let page: Arc<str> = render(&edge.mesh, &id, &cart).into();
    edge.cache.put(&id, page.clone());
    Ok(Html(page.to_string()))
}

async fn json(State(edge): State<Edge>, Path(id): Path<String>) -> Result<Json<CartView>, Failure> {
    edge.mesh.cart(&id).map(Json).map_err(Failure)
}

/// The add-to-cart form.
#[derive(Debug, Deserialize)]
struct AddForm {
    sku: String,
    qty: u64,
}

async fn add(
    State(edge): State<Edge>,
    Path(id): Path<String>,
    Form(form): Form<AddForm>,
) -> Result<Redirect, Failure> {
    edge.mesh
        .cart_add(&id, &form.sku, form.qty)
        .await
        .map_err(Failure)?;
    Ok(Redirect::to(&format!("/carts/{}", url_segment(&id))))
}

fn render(mesh: &Mesh, id: &str, cart: &CartView) -> String {
    let mut rows = String::new();
    for item in &cart.items {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(&item.sku),
            item.qty
        ));
    }
    if cart.items.is_empty() {
        rows.push_str("<tr><td colspan=\"2\">(empty)</td></tr>");
    }
    format!(
        "<!doctype html><html><head><title>Cart {id}</title></head><body>\
         <h1>Cart {id}</h1><p>served by {node} in {region}</p>\
         <table><tr><th>sku</th><th>qty</th></tr>{rows}</table>\
         <form method=\"post\" action=\"/carts/{path}/add\">\
         <input name=\"sku\" placeholder=\"sku\"> <input name=\"qty\" value=\"1\" size=\"3\"> \
         <button>add</button></form></body></html>",
        id = escape(id),
        path = url_segment(id),
        node = escape(mesh.node_id()),
        region = escape(mesh.region()),
    )
}

/// Percent-encodes a path segment.
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
