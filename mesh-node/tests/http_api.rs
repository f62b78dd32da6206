//! Every route of CONTRACT §2 against a real `mesh-node run` process: good input answers as
//! written, bad input is a 400 (or 413) with a JSON error naming the field and changes nothing,
//! unknown routes are 404, the bearer token guards the API, and SIGTERM stops the node cleanly
//! with every acknowledged write kept.

mod node_process;

use node_process::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

fn solo(dir: &Path, extra_config: &str) -> Node {
    let config = loopback_config(dir, "node.toml", extra_config);
    let mut args = loopback_flags("solo", &dir.join("data"));
    args.extend(["--config".into(), config.display().to_string()]);
    args.push("--insecure-dev".into());
    Node::start(&args, &dir.join("node.log"))
}

/// Asserts a 400 whose error mentions `field`.
fn assert_bad(r: &Response, field: &str, what: &str) {
    assert_eq!(
        r.status,
        400,
        "{what}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    let error = r.error();
    assert!(
        error.contains(field),
        "{what}: error {error:?} does not name {field:?}"
    );
}

#[tokio::test]
async fn cart_routes_answer_as_the_contract_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "");
    let c = node.client();

    let r = c.get("/v1/carts/unknown").await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"id": "unknown", "items": []}))
    );

    let r = c
        .json("POST", "/v1/carts/c1/items", json!({"sku": "b", "qty": 2}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"id": "c1", "items": [{"sku": "b", "qty": 2}]})
    );
    let r = c
        .json("POST", "/v1/carts/c1/items", json!({"sku": "a", "qty": 1}))
        .await;
    assert_eq!(
        r.json(),
        json!({"id": "c1", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}),
        "items sorted by sku"
    );
    let r = c
        .json("POST", "/v1/carts/c1/items", json!({"sku": "a", "qty": 3}))
        .await;
    assert_eq!(r.json()["items"][0], json!({"sku": "a", "qty": 4}));

    let r = c
        .json("PUT", "/v1/carts/c1/items/b", json!({"qty": 7}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"][1], json!({"sku": "b", "qty": 7}));
    let r = c
        .json("PUT", "/v1/carts/c1/items/a", json!({"qty": 0}))
        .await;
    assert_eq!(
        r.json(),
        json!({"id": "c1", "items": [{"sku": "b", "qty": 7}]}),
        "qty 0 removes"
    );

    let r = c.delete("/v1/carts/c1/items/b").await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"id": "c1", "items": []}))
    );
    let r = c.delete("/v1/carts/c1/items/never").await;
    assert_eq!(r.status, 200, "removing an absent item is not an error");

    c.json("POST", "/v1/carts/c1/items", json!({"sku": "x", "qty": 1}))
        .await;
    c.json("POST", "/v1/carts/c1/items", json!({"sku": "y", "qty": 1}))
        .await;
    let r = c.delete("/v1/carts/c1").await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"id": "c1", "items": []}))
    );
    assert_eq!(c.get("/v1/carts/c1").await.json()["items"], json!([]));

    // Ids and skus: any UTF-8 up to 256 bytes without control characters.
    let id = "ü".repeat(128); // 256 bytes
    let path = format!("/v1/carts/{}/items", pct(&id));
    let r = c
        .json("POST", &path, json!({"sku": "s p/a?c#e", "qty": 1}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.error_or_body());
    assert_eq!(r.json()["id"], json!(id));
    let r = c.get(&format!("/v1/carts/{}", pct(&id))).await;
    assert_eq!(r.json()["items"], json!([{"sku": "s p/a?c#e", "qty": 1}]));
}

/// Percent-encodes every byte outside the unreserved set.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

trait ErrorOrBody {
    fn error_or_body(&self) -> String;
}

impl ErrorOrBody for Response {
    fn error_or_body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[tokio::test]
async fn bad_cart_input_is_a_400_naming_the_field_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "");
    let c = node.client();
    c.json(
        "POST",
        "/v1/carts/c/items",
        json!({"sku": "keep", "qty": 3}),
    )
    .await;
    let before = c.get("/v1/carts/c").await.json();
    let inspect_before = c.get("/v1/inspect/carts/c").await.json();
    let long = "x".repeat(257);

    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some("{\"sku\":\"a\",".into()),
            "JSON",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some("not json".into()),
            "JSON",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(String::new()),
            "body",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some("[1,2]".into()),
            "object",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a","qty":-1}"#.into()),
            "qty",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a","qty":0}"#.into()),
            "qty",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a","qty":1.5}"#.into()),
            "qty",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a","qty":"2"}"#.into()),
            "qty",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a","qty":1e30}"#.into()),
            "qty",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a","qty":1000000001}"#.into()),
            "qty",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a"}"#.into()),
            "qty",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"qty":1}"#.into()),
            "sku",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":7,"qty":1}"#.into()),
            "sku",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"","qty":1}"#.into()),
            "sku",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(format!(r#"{{"sku":"{long}","qty":1}}"#)),
            "sku",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a\nb","qty":1}"#.into()),
            "sku",
        ),
        (
            "POST",
            "/v1/carts/c/items".into(),
            Some(r#"{"sku":"a","qty":1,"extra":1}"#.into()),
            "extra",
        ),
        (
            "POST",
            format!("/v1/carts/{long}/items"),
            Some(r#"{"sku":"a","qty":1}"#.into()),
            "cart id",
        ),
        (
            "POST",
            "/v1/carts/a%00b/items".into(),
            Some(r#"{"sku":"a","qty":1}"#.into()),
            "cart id",
        ),
        (
            "POST",
            "/v1/carts//items".into(),
            Some(r#"{"sku":"a","qty":1}"#.into()),
            "cart id",
        ),
        (
            "PUT",
            "/v1/carts/c/items/keep".into(),
            Some(r#"{"qty":-5}"#.into()),
            "qty",
        ),
        (
            "PUT",
            "/v1/carts/c/items/keep".into(),
            Some(r#"{"qty":null}"#.into()),
            "qty",
        ),
        (
            "PUT",
            "/v1/carts/c/items/keep".into(),
            Some(r#"{}"#.into()),
            "qty",
        ),
        (
            "PUT",
            "/v1/carts/c/items/keep".into(),
            Some(r#"{"qty":true}"#.into()),
            "qty",
        ),
        (
            "PUT",
            format!("/v1/carts/c/items/{long}"),
            Some(r#"{"qty":1}"#.into()),
            "sku",
        ),
        (
            "PUT",
            "/v1/carts/c/items/%07".into(),
            Some(r#"{"qty":1}"#.into()),
            "sku",
        ),
        ("DELETE", format!("/v1/carts/c/items/{long}"), None, "sku"),
        ("DELETE", "/v1/carts/c/items/".into(), None, "sku"),
        ("DELETE", format!("/v1/carts/{long}"), None, "cart id"),
        ("GET", format!("/v1/carts/{long}"), None, "cart id"),
        ("GET", "/v1/carts/%FF".into(), None, "id"),
    ];
    for (method, path, body, field) in cases {
        let r = c
            .send(method, &path, body.clone().map(String::into_bytes))
            .await;
        assert_bad(&r, field, &format!("{method} {path} {body:?}"));
    }
    assert_eq!(
        c.get("/v1/carts/c").await.json(),
        before,
        "bad input changed the cart"
    );
    // A delta would advance the cart's context and its change cursor, and be listed among the
    // recent deltas. The list is not compared whole: a solo node trims its log whenever its
    // own deltas are stable, which can fall between the two reads.
    let inspect_after = c.get("/v1/inspect/carts/c").await.json();
    for field in ["context", "change_cursor"] {
        assert!(!inspect_before[field].is_null(), "inspect lists no {field}");
        assert_eq!(
            inspect_after[field], inspect_before[field],
            "bad input moved the {field}"
        );
    }
    let listed = |i: &Value| i["recent_deltas"].as_array().cloned().unwrap_or_default();
    let before_deltas = listed(&inspect_before);
    for d in listed(&inspect_after) {
        assert!(before_deltas.contains(&d), "bad input made a delta: {d}");
    }
}

/// `bytes` letters that do not compress (a document's encoding is compressed).
fn noise(seed: u64, bytes: usize) -> String {
    let mut x = seed | 1;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

#[tokio::test]
async fn an_object_past_the_size_limit_is_a_400_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "");
    let c = node.client();
    // Documents grown 900 KB at a time, each body under the 1 MiB limit: accepted up to the
    // per-object limit (2 MiB encoded), then refused with a JSON 400 naming the limit.
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..8u64 {
        let field = format!("f{i}");
        let edits = json!([{"op": "set", "path": [field.clone()], "value": noise(i + 1, 900_000)}]);
        let r = c.json("POST", "/v1/docs/d/changes", edits).await;
        match r.status {
            200 => acked.push((field, i + 1)),
            400 => {
                refused = Some(r.error());
                break;
            }
            other => panic!(
                "status {other}: {}",
                r.error_or_body().chars().take(200).collect::<String>()
            ),
        }
    }
    let refused = refused.expect("a write past the object limit is refused");
    assert!(refused.contains("limit"), "{refused}");
    assert!(!acked.is_empty());
    // The node keeps serving, and the document keeps every acknowledged write.
    let r = c
        .json("POST", "/v1/carts/c/items", json!({"sku": "a", "qty": 1}))
        .await;
    assert_eq!(r.status, 200);
    let doc = c.get("/v1/docs/d").await.json();
    for (field, seed) in &acked {
        assert!(
            doc[field.as_str()] == json!(noise(*seed, 900_000)),
            "{field}"
        );
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_a_413_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "");
    let c = node.client();
    let big = format!(r#"{{"sku":"a","qty":1,"pad":"{}"}}"#, "p".repeat(1 << 20));
    let r = c.raw("POST", "/v1/carts/c/items", &big).await;
    assert_eq!(r.status, 413);
    assert!(r.error().contains("limit"), "{}", r.error());
    let attrs = json!({"user_id": "u", "ttl_s": 60, "attrs": {"blob": "b".repeat(1 << 20)}});
    let r = c.json("PUT", "/v1/sessions/s", attrs).await;
    assert_eq!(r.status, 413);
    let edits = json!([{"op": "set", "path": ["t"], "value": "v".repeat(1 << 20)}]);
    let r = c.json("POST", "/v1/docs/d/changes", edits).await;
    assert_eq!(r.status, 413);
    assert_eq!(c.get("/v1/carts/c").await.json()["items"], json!([]));
    assert_eq!(c.get("/v1/sessions/s").await.status, 404);
    assert_eq!(c.get("/v1/docs/d").await.json(), json!({}));

    // Just under the limit is fine.
    let value = "v".repeat((1 << 20) - 100);
    let edits = json!([{"op": "set", "path": ["t"], "value": value}]);
    let r = c.json("POST", "/v1/docs/d/changes", edits).await;
    assert_eq!(
        r.status,
        200,
        "{}",
        r.error_or_body().chars().take(200).collect::<String>()
    );
}

#[tokio::test]
async fn session_routes_create_update_read_and_revoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "");
    let c = node.client();

    assert_eq!(c.get("/v1/sessions/s1").await.status, 404);
    let r = c
        .json(
            "PUT",
            "/v1/sessions/s1",
            json!({"user_id": "u1", "attrs": {"theme": "dark", "n": {"a": [1, 2]}}, "ttl_s": 60}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.error_or_body());
    let s = r.json();
    assert_eq!(s["id"], json!("s1"));
    assert_eq!(s["user_id"], json!("u1"));
    assert_eq!(s["attrs"], json!({"n": {"a": [1, 2]}, "theme": "dark"}));
    let expires = s["expires_at_ms"].as_i64().expect("expires_at_ms");
    assert_eq!(c.get("/v1/sessions/s1").await.json(), s);

    // Updates: every field optional on a live session.
    let r = c
        .json(
            "PUT",
            "/v1/sessions/s1",
            json!({"attrs": {"theme": "light"}}),
        )
        .await;
    assert_eq!(r.json()["attrs"]["theme"], json!("light"));
    assert_eq!(r.json()["user_id"], json!("u1"));
    let r = c
        .json("PUT", "/v1/sessions/s1", json!({"ttl_s": 3600}))
        .await;
    assert!(r.json()["expires_at_ms"].as_i64().expect("ms") > expires);

    let before = c.get("/v1/sessions/s1").await.json();
    let long = "k".repeat(257);
    let bad: Vec<(&str, Value, &str)> = vec![
        ("/v1/sessions/s1", json!({"ttl_s": -1}), "ttl_s"),
        ("/v1/sessions/s1", json!({"ttl_s": 0}), "ttl_s"),
        ("/v1/sessions/s1", json!({"ttl_s": "60"}), "ttl_s"),
        ("/v1/sessions/s1", json!({"user_id": 5}), "user_id"),
        ("/v1/sessions/s1", json!({"user_id": ""}), "user_id"),
        ("/v1/sessions/s1", json!({"attrs": [1]}), "attrs"),
        (
            "/v1/sessions/s1",
            json!({"attrs": {long.clone(): 1}}),
            "attrs",
        ),
        ("/v1/sessions/s1", json!({"attr": {}}), "attr"),
        ("/v1/sessions/s1", json!("text"), "object"),
        ("/v1/sessions/new", json!({"user_id": "u2"}), "ttl_s"),
        ("/v1/sessions/new", json!({"ttl_s": 60}), "user_id"),
    ];
    for (path, body, field) in bad {
        let r = c.json("PUT", path, body.clone()).await;
        assert_bad(&r, field, &format!("PUT {path} {body}"));
    }
    let r = c.raw("PUT", "/v1/sessions/s1", "{\"ttl_s\":").await;
    assert_bad(&r, "JSON", "malformed");
    let r = c
        .json("PUT", &format!("/v1/sessions/{long}"), json!({"ttl_s": 5}))
        .await;
    assert_bad(&r, "session id", "long id");
    assert_eq!(
        c.get("/v1/sessions/s1").await.json(),
        before,
        "bad input changed the session"
    );
    assert_eq!(c.get("/v1/sessions/new").await.status, 404);

    // Revoke: 204, then absent for good, and no update brings it back.
    let r = c.delete("/v1/sessions/s1").await;
    assert_eq!((r.status, r.body.len()), (204, 0));
    let r = c.get("/v1/sessions/s1").await;
    assert_eq!(r.status, 404);
    r.error();
    let r = c
        .json(
            "PUT",
            "/v1/sessions/s1",
            json!({"user_id": "u1", "ttl_s": 60}),
        )
        .await;
    assert_eq!(r.status, 404, "a revoked session stays revoked");
    assert_eq!(
        c.delete("/v1/sessions/s1").await.status,
        204,
        "revoke is idempotent"
    );
    assert_eq!(c.delete("/v1/sessions/never").await.status, 204);
    assert_bad(
        &c.delete(&format!("/v1/sessions/{long}")).await,
        "session id",
        "long id",
    );
    assert_bad(&c.get("/v1/sessions/%0A").await, "session id", "control");
}

#[tokio::test]
async fn doc_routes_apply_edits_and_refuse_bad_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "");
    let c = node.client();

    assert_eq!(c.get("/v1/docs/d").await.json(), json!({}));
    let edits = json!([
        {"op": "set", "path": ["title"], "value": "hello"},
        {"op": "set", "path": ["tags"], "value": ["a"]},
        {"op": "insert", "path": ["tags"], "index": 1, "value": "b"},
        {"op": "increment", "path": ["views"], "by": 3},
        {"op": "set", "path": ["gone"], "value": 1},
        {"op": "delete", "path": ["gone"]},
    ]);
    let r = c.json("POST", "/v1/docs/d/changes", edits).await;
    assert_eq!(r.status, 200, "{}", r.error_or_body());
    let doc = json!({"tags": ["a", "b"], "title": "hello", "views": 3});
    assert_eq!(r.json(), doc);
    assert_eq!(c.get("/v1/docs/d").await.json(), doc);

    let bad: Vec<(Value, &str)> = vec![
        (json!({"op": "set"}), "array"),
        (json!([]), "empty"),
        (json!([{"op": "frobnicate", "path": ["a"]}]), "changes[0]"),
        (json!([{"op": "set", "path": ["a"]}]), "changes[0]"),
        (
            json!([{"op": "set", "path": ["ok"], "value": 1}, {"op": "increment", "path": ["n"], "by": "x"}]),
            "changes[1]",
        ),
        (
            json!([{"op": "insert", "path": ["tags"], "index": -1, "value": 1}]),
            "changes[0]",
        ),
        // Well-formed but impossible against the document: all or nothing.
        (
            json!([{"op": "set", "path": ["ok"], "value": 1}, {"op": "insert", "path": ["title"], "index": 0, "value": 1}]),
            "path",
        ),
        (json!([{"op": "set", "path": [], "value": 1}]), "path"),
    ];
    for (body, field) in bad {
        let r = c.json("POST", "/v1/docs/d/changes", body.clone()).await;
        assert_bad(&r, field, &format!("POST changes {body}"));
    }
    assert_bad(
        &c.raw("POST", "/v1/docs/d/changes", "[{").await,
        "JSON",
        "malformed",
    );
    let long = "d".repeat(257);
    assert_bad(
        &c.get(&format!("/v1/docs/{long}")).await,
        "doc id",
        "long id",
    );
    let r = c
        .json(
            "POST",
            &format!("/v1/docs/{long}/changes"),
            json!([{"op": "set", "path": ["a"], "value": 1}]),
        )
        .await;
    assert_bad(&r, "doc id", "long id");
    assert_eq!(
        c.get("/v1/docs/d").await.json(),
        doc,
        "bad input changed the document"
    );
}

#[tokio::test]
async fn health_members_inspect_metrics_and_unknown_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "");
    let c = node.client();

    let r = c.get("/health").await;
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"status": "ok", "node_id": "solo", "region": "local"})
        )
    );
    let r = c.get("/v1/members").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!([{"node_id": "solo", "region": "local", "addr": node.gossip.to_string(), "state": "alive"}])
    );

    c.json("POST", "/v1/carts/c/items", json!({"sku": "a", "qty": 2}))
        .await;
    let r = c.get("/v1/inspect/carts/c").await;
    assert_eq!(r.status, 200);
    let i = r.json();
    assert_eq!(i["node_id"], json!("solo"));
    assert_eq!(i["value"], json!({"items": [{"sku": "a", "qty": 2}]}));
    let contribution = &i["contributions"][0];
    assert_eq!(contribution["sku"], json!("a"));
    assert_eq!(contribution["amount"], json!(2));
    assert_eq!(contribution["origin"]["node_id"], json!("solo"));
    assert_eq!(contribution["origin"]["region"], json!("local"));
    assert!(contribution["stamp"]["wall_ms"].as_i64().is_some());
    assert_eq!(i["recent_deltas"].as_array().map(Vec::len), Some(1));
    let vv = i["context"]["vv"].as_object().expect("vv");
    assert_eq!(vv.len(), 1);
    let replica = vv.keys().next().expect("replica");
    assert_eq!(
        i["origins"][replica],
        json!({"node_id": "solo", "region": "local"})
    );
    for kind in ["sessions", "docs", "session", "doc", "cart"] {
        assert_eq!(
            c.get(&format!("/v1/inspect/{kind}/x")).await.status,
            200,
            "{kind}"
        );
    }
    assert_bad(
        &c.get("/v1/inspect/widgets/x").await,
        "kind",
        "unknown kind",
    );
    assert_bad(
        &c.get(&format!("/v1/inspect/carts/{}", "x".repeat(257)))
            .await,
        "id",
        "long id",
    );

    let r = c.get("/metrics").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.clone()).expect("utf-8");
    assert!(
        r.headers[hyper::header::CONTENT_TYPE]
            .to_str()
            .expect("ct")
            .starts_with("text/plain"),
        "content type"
    );
    for name in [
        "statemesh_replication_lag_seconds",
        "statemesh_members{state=\"alive\"} 1",
        "statemesh_gossip_bytes_total",
        "statemesh_gossip_messages_total",
        "statemesh_deltas_refused_total{reason=\"clock_drift\"}",
        "statemesh_queue_depth{queue=\"commands\"}",
        "statemesh_anti_entropy_rounds_total",
        "statemesh_anti_entropy_bytes_total",
        "statemesh_delta_log_entries",
        "statemesh_store_bytes",
        "statemesh_http_requests_total",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }

    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v1"),
        ("GET", "/v2/carts/c"),
        ("POST", "/v1/nothing"),
        ("GET", "/v1/carts/c/items/a/b"),
    ] {
        let r = c.send(method, path, None).await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert!(r.error().contains("no route"), "{method} {path}");
    }
    // A known path with another method.
    for (method, path) in [
        ("PATCH", "/v1/carts/c"),
        ("GET", "/v1/carts/c/items"),
        ("POST", "/health"),
    ] {
        let r = c.send(method, path, None).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert!(r.error().contains(method), "{method} {path}");
        assert!(
            r.headers.contains_key(hyper::header::ALLOW),
            "{method} {path}"
        );
    }
    assert_eq!(
        c.get("/v1/carts/c").await.json()["items"],
        json!([{"sku": "a", "qty": 2}])
    );
}

#[tokio::test]
async fn the_bearer_token_guards_every_route_but_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "api_token = \"s3cret-token\"");
    let anonymous = node.client();
    let wrong = node.client().with_token("s3cret-tokeN");
    let right = node.client().with_token("s3cret-token");

    assert_eq!(anonymous.get("/health").await.status, 200);
    for path in [
        "/v1/members",
        "/v1/carts/c",
        "/v1/sessions/s",
        "/v1/docs/d",
        "/v1/inspect/carts/c",
        "/metrics",
    ] {
        for (client, what) in [(&anonymous, "no token"), (&wrong, "wrong token")] {
            let r = client.get(path).await;
            assert_eq!(r.status, 401, "{what} on {path}");
            assert!(r.error().contains("token"), "{what} on {path}");
            assert_eq!(r.headers[hyper::header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    let r = anonymous
        .json("POST", "/v1/carts/c/items", json!({"sku": "a", "qty": 1}))
        .await;
    assert_eq!(r.status, 401);
    let r = wrong
        .json("POST", "/v1/carts/c/items", json!({"sku": "a", "qty": 1}))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        right.get("/v1/carts/c").await.json()["items"],
        json!([]),
        "refused writes changed nothing"
    );

    let r = right
        .json("POST", "/v1/carts/c/items", json!({"sku": "a", "qty": 1}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(right.get("/metrics").await.status, 200);
    // Another scheme, or the token without a scheme, is refused.
    let raw = node_process::Client {
        addr: node.http,
        token: None,
    };
    for header in ["Basic s3cret-token", "s3cret-token", "Bearer"] {
        let r = raw_with_auth(&raw, header).await;
        assert_eq!(r, 401, "{header}");
    }
}

async fn raw_with_auth(client: &Client, authorization: &str) -> u16 {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(client.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get("/v1/carts/c")
        .header(hyper::header::HOST, client.addr.to_string())
        .header(hyper::header::AUTHORIZATION, authorization)
        .body(Empty::<hyper::body::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn sigterm_exits_0_and_a_restart_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = solo(dir.path(), "");
    let client = node.client();
    // Writers keep writing while the node is stopped under them.
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                let sku = format!("w{w}-{i}");
                let body = json!({"sku": sku, "qty": 1});
                match client
                    .try_send(
                        "POST",
                        "/v1/carts/c/items",
                        Some(body.to_string().into_bytes()),
                    )
                    .await
                {
                    Ok(r) if r.status == 200 => acked.push(sku),
                    Ok(r) => {
                        assert_eq!(r.status, 503, "while stopping: {}", r.error_or_body());
                        r.error();
                        break;
                    }
                    Err(_) => break, // connection refused or closed: not acknowledged
                }
            }
            acked
        }));
    }
    eventually("some writes to be acknowledged", || async {
        client.get("/v1/carts/c").await.json()["items"]
            .as_array()
            .is_some_and(|a| a.len() >= 20)
    })
    .await;
    node.sigterm();
    let (status, rest) = node.wait_exit();
    assert_eq!(status.code(), Some(0), "SIGTERM exit status");
    assert!(
        rest.iter().any(|l| l.contains("stopped")),
        "stop line: {rest:?}"
    );
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(acked.len() >= 20);

    let node = solo(dir.path(), "");
    let cart = node.client().get("/v1/carts/c").await.json();
    let present: BTreeSet<String> = cart["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["sku"].as_str().expect("sku").to_owned())
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    node.sigterm();
    assert_eq!(node.wait_exit().0.code(), Some(0));
}
