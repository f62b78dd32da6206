//! Three nodes over real QUIC on loopback: writes made on each converge everywhere.

mod common;

use common::*;
use mesh_node::certs::write_cluster_certs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_on_writes_made_on_each() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    write_cluster_certs(&certs, &["node-a", "node-b", "node-c"]).expect("certs");
    let a = builder(dir.path(), &certs, "node-a", "eu")
        .start()
        .await
        .expect("a");
    let b = builder(dir.path(), &certs, "node-b", "us")
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("b");
    let c = builder(dir.path(), &certs, "node-c", "ap")
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("c");
    all_alive(&[&a, &b, &c]).await;

    a.cart_add("cart-1", "apple", 2).await.expect("add on a");
    b.cart_add("cart-1", "pear", 1).await.expect("add on b");
    c.cart_add("cart-1", "apple", 3).await.expect("add on c");
    c.cart_add("cart-2", "plum", 7).await.expect("add on c");

    let cart = converged_cart(&[&a, &b, &c], "cart-1").await;
    assert_eq!(
        items(&cart),
        vec![("apple".to_owned(), 5), ("pear".to_owned(), 1)]
    );
    let cart2 = converged_cart(&[&a, &b, &c], "cart-2").await;
    assert_eq!(items(&cart2), vec![("plum".to_owned(), 7)]);

    for m in [&a, &b, &c] {
        within("shutdown", m.shutdown()).await;
    }
}
