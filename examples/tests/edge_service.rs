//! The edge service over a real embedded node: the page shows the cart, the form adds to it,
//! and a cached page is invalidated by the node's change subscription.

use examples::edge::Edge;
use mesh_node::Mesh;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one HTTP/1.1 request and returns (status, body).
async fn request(addr: SocketAddr, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = form.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_page_is_served_from_the_embedded_node_and_invalidated_on_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::builder()
        .node_id("edge-1")
        .region("eu-west")
        .gossip_addr("127.0.0.1:0".parse().expect("addr"))
        .data_dir(dir.path())
        .insecure_dev()
        .start()
        .await
        .expect("start");
    let edge = Edge::new(mesh.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = edge.clone().router();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, page) = request(addr, "GET", "/carts/alice", None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("(empty)") && page.contains("edge-1"),
        "{page}"
    );
    assert_eq!(edge.cache().len(), 1);

    let (status, _) = request(addr, "POST", "/carts/alice/add", Some("sku=book&qty=2")).await;
    assert_eq!(status, 303);
    // A write through the embedding API too, as another part of the service would make.
    mesh.cart_add("alice", "<pen>", 1).await.expect("write");
    // The subscription drops the cached page; the next read renders the new cart.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = request(addr, "GET", "/carts/alice", None).await;
        if page.contains("book") && page.contains("&lt;pen&gt;") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stale page: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, json) = request(addr, "GET", "/api/carts/alice", None).await;
    assert_eq!(status, 200);
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        value,
        serde_json::json!({"items": [{"sku": "<pen>", "qty": 1}, {"sku": "book", "qty": 2}]})
    );
    let (status, _) = request(addr, "POST", "/carts/alice/add", Some("sku=book&qty=0")).await;
    assert_eq!(status, 400);

    server.abort();
    mesh.shutdown().await;
}
