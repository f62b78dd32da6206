//! Object size limits: no input can stop a node. A local write that would grow an object past
//! [`MAX_OBJECT_BYTES`] is refused with a typed error (HTTP 400) and the node keeps serving; a
//! remote delta that would push an object past the storage limit is refused and counted.

mod common;

use common::*;
use mesh_node::{DocEdit, InvalidInput, MAX_OBJECT_BYTES, Mesh, MeshError, PathSegment};
use std::time::Duration;

async fn single(dir: &std::path::Path) -> Mesh {
    Mesh::builder()
        .node_id("solo")
        .region("eu")
        .gossip_addr(loopback())
        .data_dir(dir)
        .insecure_dev()
        .checkpoint_every(4, Duration::from_millis(20))
        .start()
        .await
        .expect("start")
}

/// `bytes` letters that do not compress (a document's encoding is compressed), from `seed`.
fn noise(seed: char, bytes: usize) -> String {
    let mut x = u64::from(seed) | 1;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// One edit setting `field` to `bytes` letters made from `seed`.
fn big_set(field: &str, bytes: usize, seed: char) -> Vec<DocEdit> {
    vec![DocEdit::Set {
        path: vec![PathSegment::Key(field.to_owned())],
        value: serde_json::Value::String(noise(seed, bytes)),
    }]
}

fn too_large(result: &Result<serde_json::Value, MeshError>) -> bool {
    matches!(
        result,
        Err(MeshError::Invalid(InvalidInput::ObjectTooLarge { .. }))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_object_is_refused_and_the_node_keeps_serving_and_every_acked_write() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = single(dir.path()).await;

    // One write far over the limit (and over the codec's 4 MiB record limit) is refused.
    let huge = m.doc_change("d", big_set("x", 6 << 20, 'h')).await;
    assert!(too_large(&huge), "{:?}", huge.err());

    // Growing a document 512 KiB at a time: accepted up to the limit, then refused.
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        let field = format!("f{i}");
        let fill = char::from(b'a' + i as u8);
        match m.doc_change("d", big_set(&field, 512 << 10, fill)).await {
            Ok(_) => acked.push((field, fill)),
            Err(e) => {
                assert!(too_large(&Err(e.clone())), "{e:?}");
                refused += 1;
            }
        }
        // Other keys keep being written between the big writes.
        m.cart_add("c", &format!("sku-{i}"), 1)
            .await
            .expect("cart add next to a big document");
    }
    assert!(
        !acked.is_empty() && refused > 0,
        "acked {acked:?}, refused {refused}"
    );
    // A write that fits is still taken next to the refused ones.
    let small = m.doc_change("d", big_set("tiny", 1, 't')).await;
    assert!(small.is_ok(), "a small write: {:?}", small.err());
    // Let a checkpoint or two run over the big document.
    tokio::time::sleep(Duration::from_millis(200)).await;
    m.cart_add("c", "after", 1).await.expect("still serving");

    let check = |m: &Mesh| {
        let doc = m.doc("d").expect("doc");
        for (field, fill) in &acked {
            let value = doc[field.as_str()].as_str().expect("field");
            assert!(value == noise(*fill, 512 << 10), "field {field}");
        }
        let cart = m.cart("c").expect("cart");
        assert_eq!(cart.items.len(), 9);
    };
    check(&m);
    within("shutdown", m.shutdown()).await;

    // Every acknowledged write survives a restart.
    let m = single(dir.path()).await;
    check(&m);
    m.cart_add("c", "restarted", 1)
        .await
        .expect("serving after restart");
    within("shutdown", m.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_growth_past_the_storage_limit_is_refused_on_the_replica_not_fatal() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let (a, b) = start_pair(dir.path(), &certs).await;

    // Cut the two apart, then grow the same document to near the local limit on each side.
    a.faults().block(b.local_addr());
    b.faults().block(a.local_addr());
    for (node, side) in [(&a, 'a'), (&b, 'b')] {
        let mut grown = 0;
        for i in 0.. {
            let seed = char::from_u32(u32::from(side) * 100 + i).expect("seed");
            match node
                .doc_change("d", big_set(&format!("{side}{i}"), 256 << 10, seed))
                .await
            {
                Ok(_) => grown += 256 << 10,
                Err(MeshError::Invalid(InvalidInput::ObjectTooLarge { .. })) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(grown >= MAX_OBJECT_BYTES, "grew {grown} bytes");
    }
    a.faults().heal();
    b.faults().heal();

    // Each side's writes alone fit; both together are over the storage limit: some remote
    // deltas are refused and counted, and both nodes keep taking writes.
    eventually("a refused remote delta", || {
        a.stats().oversize_refused + b.stats().oversize_refused > 0
    })
    .await;
    for (i, node) in [&a, &b].into_iter().enumerate() {
        node.cart_add("c", &format!("after-{i}"), 1)
            .await
            .expect("still serving");
    }
    converged_cart(&[&a, &b], "c").await;
    within("shutdown a", a.shutdown()).await;
    within("shutdown b", b.shutdown()).await;
}
