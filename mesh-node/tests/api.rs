//! The embedding API on one node: typed operations and their errors, sessions, documents,
//! subscriptions and inspection.

mod common;

use common::*;
use mesh_node::{
    ChangeFilter, ChangeSource, DocEdit, InvalidInput, Key, Kind, Mesh, MeshError, PathSegment,
    SessionUpdate,
};
use std::collections::BTreeMap;
use std::time::Duration;

async fn single(dir: &std::path::Path) -> Mesh {
    Mesh::builder()
        .node_id("solo")
        .region("eu")
        .gossip_addr(loopback())
        .data_dir(dir)
        .insecure_dev()
        .start()
        .await
        .expect("start")
}

#[tokio::test]
async fn cart_operations_follow_the_contract_and_refuse_bad_input() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = single(dir.path()).await;
    m.cart_add("c", "b-sku", 2).await.expect("add");
    let view = m.cart_add("c", "a-sku", 1).await.expect("add");
    assert_eq!(
        items(&view.to_view()),
        vec![("a-sku".into(), 1), ("b-sku".into(), 2)]
    );
    let view = m.cart_set_quantity("c", "b-sku", 5).await.expect("set");
    assert_eq!(
        items(&view.to_view()),
        vec![("a-sku".into(), 1), ("b-sku".into(), 5)]
    );
    let view = m.cart_set_quantity("c", "b-sku", 0).await.expect("set 0");
    assert_eq!(items(&view.to_view()), vec![("a-sku".into(), 1)]);
    let view = m.cart_remove("c", "a-sku").await.expect("remove");
    assert!(view.is_empty());
    let view = m
        .cart_remove("c", "never-there")
        .await
        .expect("remove absent");
    assert!(view.is_empty());
    m.cart_add("c", "x", 1).await.expect("add");
    assert!(m.cart_clear("c").await.expect("clear").is_empty());
    assert!(m.cart("unknown").expect("read").items.is_empty());

    for (result, what) in [
        (m.cart_add("", "s", 1).await, "empty cart id"),
        (m.cart_add("c", "bad\nsku", 1).await, "control character"),
        (m.cart_add("c", &"s".repeat(257), 1).await, "sku too long"),
        (m.cart_add("c", "s", 0).await, "zero quantity"),
        (m.cart_add("c", "s", 1 << 40).await, "quantity too large"),
    ] {
        match result {
            Err(e @ MeshError::Invalid(_)) => assert!(e.is_client_error(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(m.cart("c\u{7}").is_err());
    within("shutdown", m.shutdown()).await;
    assert!(matches!(
        m.cart_add("c", "s", 1).await,
        Err(MeshError::ShuttingDown)
    ));
    // Reads still answer from the last committed state.
    assert!(m.cart("c").expect("read").items.is_empty());
}

#[tokio::test]
async fn sessions_are_created_updated_and_revoked_for_good() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = single(dir.path()).await;
    let incomplete = m
        .session_put("s1", SessionUpdate::default())
        .await
        .expect_err("a new session needs user_id and ttl");
    assert!(matches!(
        incomplete,
        MeshError::Invalid(InvalidInput::IncompleteSession)
    ));
    assert_eq!(m.session("s1").expect("read"), None);

    let created = m
        .session_put(
            "s1",
            SessionUpdate {
                user_id: Some("alice".into()),
                attrs: BTreeMap::from([("theme".into(), serde_json::json!("dark"))]),
                ttl: Some(Duration::from_secs(60)),
            },
        )
        .await
        .expect("create")
        .expect("live");
    assert_eq!(created.user_id.as_deref(), Some("alice"));
    let updated = m
        .session_put(
            "s1",
            SessionUpdate {
                attrs: BTreeMap::from([("lang".into(), serde_json::json!({"primary": "fr"}))]),
                ..SessionUpdate::default()
            },
        )
        .await
        .expect("update")
        .expect("live");
    assert_eq!(updated.attrs.len(), 2);
    assert_eq!(m.session("s1").expect("read"), Some(updated));

    m.session_revoke("s1").await.expect("revoke");
    assert_eq!(m.session("s1").expect("read"), None);
    m.session_revoke("s1").await.expect("revoke is idempotent");
    let again = m
        .session_put(
            "s1",
            SessionUpdate {
                user_id: Some("alice".into()),
                ttl: Some(Duration::from_secs(60)),
                ..SessionUpdate::default()
            },
        )
        .await;
    assert!(matches!(again, Err(MeshError::SessionRevoked)), "{again:?}");
    assert_eq!(m.session("s1").expect("read"), None);
    within("shutdown", m.shutdown()).await;
}

#[tokio::test]
async fn documents_take_edit_batches_atomically() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = single(dir.path()).await;
    assert_eq!(m.doc("d").expect("read"), serde_json::json!({}));
    let doc = m
        .doc_change(
            "d",
            vec![
                DocEdit::Set {
                    path: vec![PathSegment::Key("title".into())],
                    value: serde_json::json!("hello"),
                },
                DocEdit::Set {
                    path: vec![PathSegment::Key("tags".into())],
                    value: serde_json::json!(["a"]),
                },
            ],
        )
        .await
        .expect("edit");
    assert_eq!(doc, serde_json::json!({"title": "hello", "tags": ["a"]}));
    let bad = m
        .doc_change(
            "d",
            vec![
                DocEdit::Set {
                    path: vec![PathSegment::Key("title".into())],
                    value: serde_json::json!("changed"),
                },
                DocEdit::Delete {
                    path: vec![PathSegment::Key("tags".into()), PathSegment::Index(7)],
                },
            ],
        )
        .await;
    assert!(
        matches!(bad, Err(MeshError::Invalid(InvalidInput::Doc(_)))),
        "{bad:?}"
    );
    assert_eq!(
        m.doc("d").expect("read"),
        serde_json::json!({"title": "hello", "tags": ["a"]}),
        "a failed batch changes nothing"
    );
    // The failed batch still consumed its sequence number with an empty delta: later writes work.
    m.cart_add("c", "s", 1).await.expect("later write");
    within("shutdown", m.shutdown()).await;
}

#[tokio::test]
async fn subscribers_see_committed_changes_filtered_by_kind_and_prefix() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = single(dir.path()).await;
    let mut carts_of_eu = m.subscribe(ChangeFilter::kind(Kind::Cart).with_prefix("eu-"));
    let mut everything = m.subscribe(ChangeFilter::all());
    m.cart_add("us-1", "s", 1).await.expect("write");
    m.cart_add("eu-1", "s", 1).await.expect("write");
    m.session_revoke("eu-2").await.expect("write");
    let change = within("change", carts_of_eu.recv()).await.expect("change");
    assert_eq!(change.key, Key::new(Kind::Cart, "eu-1"));
    assert_eq!(change.source, ChangeSource::Local);
    assert_eq!(carts_of_eu.try_recv().expect("no lag"), None);
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(
            within("change", everything.recv())
                .await
                .expect("change")
                .key,
        );
    }
    assert_eq!(
        all,
        vec![
            Key::new(Kind::Cart, "us-1"),
            Key::new(Kind::Cart, "eu-1"),
            Key::new(Kind::Session, "eu-2")
        ]
    );
    within("shutdown", m.shutdown()).await;
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_and_never_blocks_writes() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = Mesh::builder()
        .node_id("solo")
        .region("eu")
        .gossip_addr(loopback())
        .data_dir(dir.path())
        .insecure_dev()
        .subscription_capacity(4)
        .start()
        .await
        .expect("start");
    let mut slow = m.subscribe(ChangeFilter::all());
    for i in 0..20 {
        within("write", m.cart_add(&format!("c{i}"), "s", 1))
            .await
            .expect("write");
    }
    assert!(matches!(
        slow.recv().await,
        Err(mesh_node::SubscriptionError::Lagged(_))
    ));
    within("shutdown", m.shutdown()).await;
}

#[tokio::test]
async fn inspect_shows_value_context_contributions_and_recent_deltas() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = single(dir.path()).await;
    m.cart_add("c", "apple", 2).await.expect("write");
    m.cart_add("c", "apple", 1).await.expect("write");
    m.cart_add("other", "x", 1).await.expect("write");
    let info = m
        .inspect(&Key::new(Kind::Cart, "c"))
        .await
        .expect("inspect");
    assert_eq!(info.key, "carts/c");
    assert_eq!(
        info.value,
        serde_json::json!({"items": [{"sku": "apple", "qty": 3}]})
    );
    assert_eq!(info.contributions.len(), 2);
    for c in &info.contributions {
        assert_eq!(c.origin.node_id.as_deref(), Some("solo"));
        assert_eq!(c.origin.region.as_deref(), Some("eu"));
        assert!(c.stamp.is_some());
    }
    assert_eq!(info.recent_deltas.len(), 2);
    assert!(info.recent_deltas[0].stamp.hlc > info.recent_deltas[1].stamp.hlc);
    assert!(!info.context.vv.is_empty());
    let json = serde_json::to_value(&info).expect("serializes for HTTP");
    assert!(json.get("recent_deltas").is_some());
    within("shutdown", m.shutdown()).await;
}

#[tokio::test]
async fn every_committed_batch_of_local_writes_is_timed_stage_by_stage() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = single(dir.path()).await;
    let before = m.stats().write_stages;
    // Writers waiting for each answer, as the load generator's do.
    let mut writers = Vec::new();
    for w in 0..8 {
        let m = m.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                m.cart_add(&format!("cart-{w}"), &format!("sku-{i}"), 1)
                    .await
                    .expect("add");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // A batch is counted right after its answers went out.
    let counted = std::time::Instant::now();
    let mut stages = m.stats().write_stages.since(&before);
    while stages.ops < 200 && counted.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        stages = m.stats().write_stages.since(&before);
    }
    // Every write is answered by exactly one timed batch; an append includes an fsync.
    assert_eq!(stages.ops, 200);
    assert!((1..=200).contains(&stages.batches), "{stages:?}");
    assert!(stages.append_micros > 0, "{stages:?}");
    // Batches after the first wait for their callers' next operations and apply them.
    assert!(
        stages.gather_micros > 0 && stages.apply_micros > 0,
        "{stages:?}"
    );
    // A read or a refused input is no batch of local writes.
    let _ = m.cart("cart-0").expect("read");
    let _ = m.cart_add("", "s", 1).await;
    assert_eq!(m.stats().write_stages.since(&before).ops, 200);
    m.shutdown().await;
}
