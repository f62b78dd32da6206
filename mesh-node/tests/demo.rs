//! `mesh-node demo` runs end to end and ends with the carts CONTRACT §1 predicts.

use mesh_node::demo::{DemoArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_converges_on_the_expected_carts() {
    let mut out = Vec::new();
    let report = run(&DemoArgs { timeout_secs: 20 }, &mut out)
        .await
        .expect("demo");
    let text = String::from_utf8(out).expect("utf-8");
    let carts: Vec<(String, Vec<(String, u64)>)> = report
        .carts
        .iter()
        .map(|(id, v)| {
            let items = v.items.iter().map(|i| (i.sku.clone(), i.qty)).collect();
            (id.clone(), items)
        })
        .collect();
    let owned = |v: &[(&str, u64)]| v.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect();
    assert_eq!(
        carts,
        vec![
            ("alice".to_owned(), owned(&[("book", 2), ("pen", 2)])),
            ("bob".to_owned(), owned(&[("bulb", 6), ("lamp", 4)])),
            ("carol".to_owned(), owned(&[("tea", 1)])),
        ],
        "{text}"
    );
    assert!(text.contains("identical carts"), "{text}");
}
