//! The HTTP API of CONTRACT §2 (JSON, version 1) over a [`Mesh`]: routing, input checks and
//! the error answers. It translates requests into calls of the embedding API and must hold no
//! replication or storage logic.
//!
//! Every error is `{"error": "<message>"}` naming what was wrong: 400 for bad input (nothing is
//! written), 401 for a missing or wrong bearer token when `api_token` is set (every route but
//! `/health`), 404 for an unknown route, key or session, 405 for a known path with another
//! method, 413 for a body over the limit, 500 for a storage failure, 503 once the node is
//! shutting down.

mod body;
mod carts;
mod docs;
mod error;
mod gate;
mod node;
mod sessions;

pub use error::ApiError;
pub use sessions::MAX_TTL_S;

use crate::Mesh;
use crate::metrics::NodeMetrics;
use crate::settings::DEFAULT_MAX_BODY_BYTES;
use crate::shutdown::Draining;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};
use std::sync::Arc;

/// The HTTP API's own settings.
#[derive(Clone)]
pub struct ApiConfig {
    /// When set, every route but `/health` needs `Authorization: Bearer <api_token>`.
    pub api_token: Option<String>,
    /// Largest request body accepted; larger ones get a 413.
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    mesh: Mesh,
    metrics: Arc<NodeMetrics>,
    draining: Draining,
    api_token: Option<Arc<str>>,
    max_body_bytes: usize,
}

/// The API's router over `mesh`. `draining` turns every answer into a 503 once started;
/// `metrics` renders `/metrics` and counts requests.
pub fn router(
    mesh: Mesh,
    config: ApiConfig,
    metrics: Arc<NodeMetrics>,
    draining: Draining,
) -> Router {
    let state = AppState {
        mesh,
        metrics,
        draining,
        api_token: config.api_token.map(Arc::from),
        max_body_bytes: config.max_body_bytes,
    };
    let protected = Router::new()
        .route("/v1/members", get(node::members))
        .route("/v1/carts/{id}", get(carts::get).delete(carts::clear))
        .route("/v1/carts/{id}/items", post(carts::add))
        .route(
            "/v1/carts/{id}/items/{sku}",
            put(carts::set).delete(carts::remove),
        )
        .route(
            "/v1/sessions/{id}",
            put(sessions::put)
                .get(sessions::get)
                .delete(sessions::revoke),
        )
        .route("/v1/docs/{id}", get(docs::get))
        .route("/v1/docs/{id}/changes", post(docs::change))
        .route("/v1/inspect/{kind}/{id}", get(node::inspect))
        .route("/metrics", get(node::metrics))
        .route_layer(from_fn_with_state(state.clone(), gate::require_token));
    Router::new()
        .route("/health", get(node::health))
        .merge(protected)
        .fallback(node::not_found)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), gate::gate))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use std::net::SocketAddr;

    async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, String, bool) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let resp = sender.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        let close = resp
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v == "close");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), close)
    }

    #[tokio::test]
    async fn a_draining_or_stopped_node_answers_503_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mesh = Mesh::builder()
            .node_id("drain")
            .region("local")
            .gossip_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .data_dir(dir.path())
            .insecure_dev()
            .start()
            .await
            .expect("start");
        let draining = Draining::new();
        let metrics = Arc::new(NodeMetrics::new(dir.path()));
        let app = router(
            mesh.clone(),
            ApiConfig::default(),
            metrics,
            draining.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let add = r#"{"sku":"a","qty":1}"#;
        let (status, _, _) = request(addr, "POST", "/v1/carts/c/items", add).await;
        assert_eq!(status, 200);

        // Draining: every route answers 503 with a JSON error and closes the connection.
        draining.start();
        for (method, path) in [
            ("POST", "/v1/carts/c/items"),
            ("GET", "/health"),
            ("GET", "/nope"),
        ] {
            let (status, body, close) = request(addr, method, path, add).await;
            assert_eq!(status, 503, "{method} {path}");
            assert_eq!(body, r#"{"error":"node is shutting down"}"#);
            assert!(close, "{method} {path}: Connection: close");
        }
        assert_eq!(mesh.cart("c").expect("read").items[0].qty, 1);

        // A request that got past the gate before the mesh stopped is a 503 too.
        let app = router(
            mesh.clone(),
            ApiConfig::default(),
            Arc::new(NodeMetrics::new(dir.path())),
            Draining::new(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        mesh.shutdown().await;
        let (status, body, _) = request(addr, "POST", "/v1/carts/c/items", add).await;
        assert_eq!(
            (status, body.as_str()),
            (503, r#"{"error":"node is shutting down"}"#)
        );
        assert_eq!(mesh.cart("c").expect("read").items[0].qty, 1);
    }
}
