//! Recovery without a clean shutdown: a node whose handles are dropped mid-run (its engine
//! stops without a final checkpoint, as after a crash) comes back from its last checkpoint
//! plus the log written since, with every acknowledged write, and catches up.

mod common;

use common::*;
use mesh_node::certs::write_cluster_certs;
use mesh_node::store::StoreError;
use mesh_node::{Mesh, MeshBuilder, StartError};
use std::time::Duration;

/// Starts `builder`, retrying while the previous life still holds the data directory.
async fn start_when_released(make: impl Fn() -> MeshBuilder) -> Mesh {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match make().start().await {
            Ok(m) => return m,
            Err(StartError::Store(StoreError::InUse { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_without_shutdown_recovers_from_checkpoint_and_log() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    write_cluster_certs(&certs, &["node-a", "node-b"]).expect("certs");
    let a = builder(dir.path(), &certs, "node-a", "eu")
        .start()
        .await
        .expect("a");
    // Small checkpoints, so the crash lands after some and between others.
    let b_builder = || {
        builder(dir.path(), &certs, "node-b", "us")
            .seeds([a.local_addr()])
            .checkpoint_every(16, Duration::from_millis(50))
    };
    let b = b_builder().start().await.expect("b");
    all_alive(&[&a, &b]).await;

    let mut expected = Vec::new();
    for round in 0..5u64 {
        let writes: Vec<_> = (0..40u64)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let cart = format!("b-{}", i % 10);
                    let sku = format!("r{round}-s{i}");
                    b.cart_add(&cart, &sku, round + 1)
                        .await
                        .map(|_| (cart, sku, round + 1))
                })
            })
            .collect();
        for w in writes {
            expected.push(w.await.expect("join").expect("acknowledged"));
        }
        // Let a checkpoint or two happen between rounds (not a wait on an outcome).
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    b.cart_remove("b-0", "r0-s0").await.expect("remove");
    b.session_revoke("gone").await.expect("revoke");
    let replica = b.replica();
    // The crash: every handle dropped, no shutdown, no final checkpoint.
    drop(b);
    a.cart_add("while-down", "x", 1).await.expect("write");

    let b = start_when_released(b_builder).await;
    assert_eq!(b.replica(), replica);
    for (cart, sku, qty) in &expected {
        let view = b.cart(cart).expect("read");
        let got = view.items.iter().find(|i| &i.sku == sku).map(|i| i.qty);
        if cart == "b-0" && sku == "r0-s0" {
            assert_eq!(got, None, "a removed item stays removed");
        } else {
            assert_eq!(got, Some(*qty), "{cart}/{sku} after recovery");
        }
    }
    assert_eq!(b.session("gone").expect("read"), None);
    // It catches up, and its new writes use fresh sequence numbers: they reach a.
    converged_cart(&[&a, &b], "while-down").await;
    b.cart_add("after", "y", 1).await.expect("write");
    let after = converged_cart(&[&a, &b], "after").await;
    assert_eq!(after.items.len(), 1);
    for i in 0..10 {
        let cart = format!("b-{i}");
        converged_cart(&[&a, &b], &cart).await;
    }
    for m in [&a, &b] {
        within("shutdown", m.shutdown()).await;
    }
}
