//! Start-up on a data directory that is not this node's: corrupt, of another node, of an
//! unknown format, or not a statemesh store. Each is a clear error, and the directory is
//! left exactly as it was.

mod common;

use common::*;
use mesh_node::store::{DB_FILE, StoreError};
use mesh_node::{Mesh, StartError};
use std::path::Path;

fn node(dir: &Path, id: &str) -> mesh_node::MeshBuilder {
    Mesh::builder()
        .node_id(id)
        .region("eu")
        .gossip_addr(loopback())
        .data_dir(dir)
        .insecure_dev()
}

/// Starts `id` on `dir`, writes one cart and stops cleanly.
async fn populate(dir: &Path, id: &str) {
    let m = node(dir, id).start().await.expect("start");
    m.cart_add("cart", "apple", 1).await.expect("write");
    within("shutdown", m.shutdown()).await;
}

fn db(dir: &Path) -> std::path::PathBuf {
    dir.join(DB_FILE)
}

#[tokio::test]
async fn a_corrupt_database_header_is_a_start_error_and_is_not_wiped() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path(), "node-a").await;
    let bytes = flip_page(&db(dir.path()), 0);
    let err = node(dir.path(), "node-a")
        .start()
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, StartError::Store(StoreError::Corrupt { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(DB_FILE), "names the file: {err}");
    assert_eq!(
        std::fs::read(db(dir.path())).expect("read"),
        bytes,
        "left as it was"
    );
}

/// Damage anywhere in the file either refuses the start, or hit a page the store does not use
/// and the data reads back intact: never a panic, never wrong data.
#[tokio::test]
async fn damage_to_any_page_is_refused_or_harmless() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path(), "pristine").await;
    let pristine = std::fs::read(db(dir.path())).expect("read");
    let pages = pristine.len() / 4096;
    let mut refused = 0;
    for page in 1..pages {
        std::fs::write(db(dir.path()), &pristine).expect("restore");
        let damaged = flip_page(&db(dir.path()), page * 4096);
        match node(dir.path(), "pristine").start().await {
            Err(StartError::Store(StoreError::Corrupt { .. })) => {
                refused += 1;
                assert_eq!(std::fs::read(db(dir.path())).expect("read"), damaged);
            }
            Err(other) => panic!("page {page}: unexpected {other}"),
            Ok(m) => {
                let cart = m.cart("cart").expect("read");
                assert_eq!(cart.items.len(), 1, "page {page}: data intact");
                within("shutdown", m.shutdown()).await;
            }
        }
    }
    assert!(refused > 0, "no damage among {pages} pages was detected");
}

/// Flips every bit of the 4 KiB at `offset`; returns the damaged file.
fn flip_page(path: &Path, offset: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("read");
    for b in bytes.iter_mut().skip(offset).take(4096) {
        *b ^= 0xff;
    }
    std::fs::write(path, &bytes).expect("damage");
    bytes
}

#[tokio::test]
async fn a_truncated_database_is_a_start_error() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path(), "node-a").await;
    let bytes = std::fs::read(db(dir.path())).expect("read");
    std::fs::write(db(dir.path()), &bytes[..bytes.len() / 3]).expect("truncate");
    let err = node(dir.path(), "node-a")
        .start()
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, StartError::Store(StoreError::Corrupt { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn another_nodes_data_directory_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path(), "node-a").await;
    let err = node(dir.path(), "node-b")
        .start()
        .await
        .expect_err("must refuse");
    match &err {
        StartError::Store(StoreError::ForeignNode {
            found, expected, ..
        }) => {
            assert_eq!(found, "node-a");
            assert_eq!(expected, "node-b");
        }
        other => panic!("unexpected {other}"),
    }
    // The rightful owner still starts on it, with its data.
    let m = node(dir.path(), "node-a")
        .start()
        .await
        .expect("owner starts");
    assert_eq!(m.cart("cart").expect("read").items.len(), 1);
    within("shutdown", m.shutdown()).await;
}

#[tokio::test]
async fn an_unknown_store_format_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path(), "node-a").await;
    {
        let db = redb::Database::open(db(dir.path())).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut t = txn.open_table(meta).expect("meta");
            let v = crdt_types::wire::encode(&99u32).expect("encode");
            t.insert("format", v.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = node(dir.path(), "node-a")
        .start()
        .await
        .expect_err("must refuse");
    assert!(
        matches!(
            err,
            StartError::Store(StoreError::UnknownFormat { found: 99, .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_database_that_is_not_a_statemesh_store_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = redb::Database::create(db(dir.path())).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let other: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
            txn.open_table(other)
                .expect("table")
                .insert(1, 2)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = node(dir.path(), "node-a")
        .start()
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, StartError::Store(StoreError::Corrupt { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn a_data_directory_in_use_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let m = node(dir.path(), "node-a").start().await.expect("start");
    let err = node(dir.path(), "node-a")
        .start()
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, StartError::Store(StoreError::InUse { .. })),
        "{err}"
    );
    within("shutdown", m.shutdown()).await;
}
