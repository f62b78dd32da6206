//! Three nodes over real QUIC on loopback: writes made on each converge everywhere.

mod common;

use common::*;
use mesh_node::Mesh;
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

/// Waits until every node has run at least `rounds` more anti-entropy rounds than `before`.
async fn more_sync_rounds(nodes: &[&Mesh], rounds: u64) {
    let before: Vec<u64> = nodes.iter().map(|m| m.stats().gossip.sync_rounds).collect();
    eventually("more anti-entropy rounds", || {
        nodes
            .iter()
            .zip(&before)
            .all(|(m, b)| m.stats().gossip.sync_rounds >= b + rounds)
    })
    .await;
}

fn pairs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_across_a_partition_merge_add_wins_without_resurrection() {
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
    let all = [&a, &b, &c];
    all_alive(&all).await;

    // Before the partition: everyone sees apple 2 (from a), banana 1 (from b), cherry 1.
    a.cart_add("cart", "apple", 2).await.expect("write");
    b.cart_add("cart", "banana", 1).await.expect("write");
    a.cart_add("cart", "cherry", 1).await.expect("write");
    let before = converged_cart(&all, "cart").await;
    assert_eq!(
        items(&before),
        pairs(&[("apple", 2), ("banana", 1), ("cherry", 1)])
    );

    // Cut region ap (node c) off from the others, both ways.
    for peer in [a.local_addr(), b.local_addr()] {
        c.faults().block(peer);
    }
    a.faults().block(c.local_addr());
    b.faults().block(c.local_addr());

    // Majority side: remove apple and cherry as observed, add another banana.
    a.cart_remove("cart", "apple").await.expect("write");
    a.cart_remove("cart", "cherry").await.expect("write");
    b.cart_add("cart", "banana", 1).await.expect("write");
    // Minority side: add apple (unseen by a's remove), remove banana as observed (1).
    c.cart_add("cart", "apple", 3).await.expect("write");
    c.cart_remove("cart", "banana").await.expect("write");
    assert_eq!(
        items(&c.cart("cart").expect("read")),
        pairs(&[("apple", 5), ("cherry", 1)])
    );
    eventually("the majority side to agree", || {
        a.cart("cart").expect("read") == b.cart("cart").expect("read")
            && items(&a.cart("cart").expect("read")) == pairs(&[("banana", 2)])
    })
    .await;
    assert_eq!(
        items(&c.cart("cart").expect("read")),
        pairs(&[("apple", 5), ("cherry", 1)]),
        "nothing crossed the partition"
    );

    for m in all {
        m.faults().heal();
    }
    // Add wins with only its unseen increments (apple 3, not 5); b's concurrent banana
    // survives c's remove; cherry, removed on a, does not come back.
    let expected = pairs(&[("apple", 3), ("banana", 1)]);
    eventually("the merged cart on every node", || {
        all.iter()
            .all(|m| items(&m.cart("cart").expect("read")) == expected)
    })
    .await;
    // And it stays merged through further anti-entropy exchanges.
    more_sync_rounds(&all, 3).await;
    for m in all {
        assert_eq!(items(&m.cart("cart").expect("read")), expected, "{m:?}");
    }
    for m in all {
        within("shutdown", m.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_a_foreign_ca_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let foreign = dir.path().join("foreign");
    write_cluster_certs(&foreign, &["node-c"]).expect("foreign certs");
    let (a, b) = start_pair(dir.path(), &certs).await;
    let x = builder(dir.path(), &foreign, "node-c", "ap")
        .seeds([a.local_addr(), b.local_addr()])
        .start()
        .await
        .expect("the intruder starts (it only fails to join)");
    x.cart_add("stolen", "gold", 1).await.expect("local write");
    a.cart_add("honest", "bread", 1).await.expect("write");

    // The intruder did try: its handshakes fail on both sides.
    eventually("refused handshakes", || {
        a.stats().transport.handshake_failures + b.stats().transport.handshake_failures >= 1
            && x.stats().transport.handshake_failures + x.stats().transport.dial_failures >= 1
    })
    .await;
    converged_cart(&[&a, &b], "honest").await;
    // Several more anti-entropy rounds on the cluster: still no trace of the intruder.
    more_sync_rounds(&[&a, &b], 3).await;
    for m in [&a, &b] {
        assert!(
            m.members().iter().all(|p| p.addr != x.local_addr()),
            "{:?}",
            m.members()
        );
        assert!(m.cart("stolen").expect("read").items.is_empty());
    }
    assert_eq!(x.members().len(), 1, "the intruder knows no one");
    assert!(x.cart("honest").expect("read").items.is_empty());
    for m in [&a, &b, &x] {
        within("shutdown", m.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_acknowledged_writes_and_catches_up() {
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

    // Acknowledged writes on c, some concurrent with each other.
    let mut acked = Vec::new();
    let writes: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.cart_add(&format!("c-{}", i % 8), &format!("sku-{i}"), 1)
                    .await
            })
        })
        .collect();
    for (i, w) in writes.into_iter().enumerate() {
        w.await.expect("join").expect("acknowledged");
        acked.push((format!("c-{}", i % 8), format!("sku-{i}")));
    }
    c.cart_remove("c-0", "sku-0").await.expect("remove");
    let replica = c.replica();
    let c_addr = c.local_addr();
    within("shutdown", c.shutdown()).await;
    assert!(matches!(
        c.cart_add("c-1", "late", 1).await,
        Err(mesh_node::MeshError::ShuttingDown)
    ));

    // While c is down: writes on a and b.
    a.cart_add("while-down", "x", 1).await.expect("write");
    b.cart_add("while-down", "y", 2).await.expect("write");
    a.cart_add("c-1", "from-a", 1).await.expect("write");

    // The old handle holds the socket until it is dropped.
    drop(c);
    let c = builder(dir.path(), &certs, "node-c", "ap")
        .gossip_addr(c_addr)
        .start()
        .await
        .expect("restart c");
    assert_eq!(c.replica(), replica, "same data directory, same replica");
    // Every acknowledged write is there straight from the disk (no seed given: it rejoins
    // through the peers it remembered).
    for (cart, sku) in &acked {
        let view = c.cart(cart).expect("read");
        let present = view.items.iter().any(|i| &i.sku == sku);
        assert_eq!(present, !(cart == "c-0" && sku == "sku-0"), "{cart}/{sku}");
    }
    // It catches up on what happened while it was down.
    converged_cart(&[&a, &b, &c], "while-down").await;
    assert_eq!(
        items(&c.cart("while-down").expect("read")),
        pairs(&[("x", 1), ("y", 2)])
    );
    let c1 = converged_cart(&[&a, &b, &c], "c-1").await;
    assert!(c1.items.iter().any(|i| i.sku == "from-a"));
    // Its new writes use fresh sequence numbers: they reach the others.
    c.cart_add("after-restart", "z", 1).await.expect("write");
    let after = converged_cart(&[&a, &b, &c], "after-restart").await;
    assert_eq!(items(&after), pairs(&[("z", 1)]));
    for m in [&a, &b, &c] {
        within("shutdown", m.shutdown()).await;
    }
}
