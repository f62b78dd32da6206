//! A three-process cluster on loopback with mutual TLS, driven only through the HTTP API: it
//! converges (byte-identical answers on every node), and a node killed with SIGKILL during
//! writes loses no acknowledged write and catches up when restarted on its data directory.

mod node_process;

use node_process::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const IDS: [&str; 3] = ["n1", "n2", "n3"];

struct Cluster {
    dir: tempfile::TempDir,
    certs: PathBuf,
    config: PathBuf,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::with_config("")
    }

    /// A cluster whose shared config file has `extra` lines.
    fn with_config(extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        let (status, _, stderr) = run_to_end(&[
            "certs",
            "--out",
            &certs.display().to_string(),
            "--nodes",
            &IDS.join(","),
        ]);
        assert_eq!(status.code(), Some(0), "{stderr}");
        let config = loopback_config(dir.path(), "cluster.toml", extra);
        Cluster {
            dir,
            certs,
            config,
            nodes: Vec::new(),
        }
    }

    /// Node `i`'s flags; `addrs` pins its ports (for a restart), `seed` is a node to join.
    fn args(&self, i: usize, addrs: Option<(String, String)>, seed: Option<String>) -> Vec<String> {
        let id = IDS[i];
        let (http, gossip) = addrs.unwrap_or(("127.0.0.1:0".into(), "127.0.0.1:0".into()));
        let mut args: Vec<String> = vec![
            "--config".into(),
            self.config.display().to_string(),
            "--node-id".into(),
            id.into(),
            "--region".into(),
            format!("region-{}", i + 1),
            "--http-addr".into(),
            http,
            "--gossip-addr".into(),
            gossip,
            "--data-dir".into(),
            self.data_dir(i).display().to_string(),
        ];
        args.extend(tls_flags(&self.certs, id));
        if let Some(seed) = seed {
            args.extend(["--seed".into(), seed]);
        }
        args
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(IDS[i])
    }

    fn log(&self, i: usize, run: usize) -> PathBuf {
        self.dir.path().join(format!("{}-{run}.log", IDS[i]))
    }

    fn start(dir_owner: &mut Cluster) {
        let first = Node::start(&dir_owner.args(0, None, None), &dir_owner.log(0, 0));
        let seed = first.gossip.to_string();
        dir_owner.nodes.push(Some(first));
        for i in 1..IDS.len() {
            let node = Node::start(
                &dir_owner.args(i, None, Some(seed.clone())),
                &dir_owner.log(i, 0),
            );
            dir_owner.nodes.push(Some(node));
        }
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }

    fn clients(&self) -> Vec<Client> {
        self.nodes.iter().flatten().map(Node::client).collect()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("dir").flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out.push_str(&format!("--- {}\n", entry.path().display()));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

async fn all_alive(clients: &[Client]) {
    eventually("every node to see three alive members", || async {
        let mut ok = true;
        for c in clients {
            let members = c.get("/v1/members").await.json();
            let alive = members
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count());
            ok &= alive == clients.len();
        }
        ok
    })
    .await;
}

/// Waits until `path` answers byte-identical bodies on every node; returns the body.
async fn converged(clients: &[Client], path: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut bodies = Vec::new();
        for c in clients {
            bodies.push(c.get(path).await);
        }
        let same = bodies
            .windows(2)
            .all(|w| w[0].status == w[1].status && w[0].body == w[1].body);
        if same {
            return bodies.swap_remove(0).body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} did not converge: {:?}",
            bodies
                .iter()
                .map(|b| String::from_utf8_lossy(&b.body).into_owned())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn skus(body: &[u8]) -> BTreeMap<String, u64> {
    let v: Value = serde_json::from_slice(body).expect("json");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().expect("sku").to_owned(),
                i["qty"].as_u64().expect("qty"),
            )
        })
        .collect()
}

#[tokio::test]
async fn three_processes_converge_through_the_http_api() {
    let mut cluster = Cluster::new();
    Cluster::start(&mut cluster);
    let c = cluster.clients();
    all_alive(&c).await;

    // Concurrent adds of one sku on every node sum; other skus land where written.
    for (i, client) in c.iter().enumerate() {
        let r = client
            .json(
                "POST",
                "/v1/carts/shared/items",
                json!({"sku": "apple", "qty": i + 1}),
            )
            .await;
        assert_eq!(r.status, 200);
        let r = client
            .json(
                "POST",
                "/v1/carts/shared/items",
                json!({"sku": format!("only-{i}"), "qty": 1}),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let body = converged(&c, "/v1/carts/shared").await;
    let items = skus(&body);
    assert_eq!(items.get("apple"), Some(&6), "{items:?}");
    assert_eq!(items.len(), 4, "{items:?}");

    // A remove on one node, seen everywhere; the item does not come back.
    let r = c[1].delete("/v1/carts/shared/items/apple").await;
    assert_eq!(r.status, 200);
    let body = converged(&c, "/v1/carts/shared").await;
    assert!(!skus(&body).contains_key("apple"));

    // Sessions: created on one node, updated on another, revoked on the third.
    let r = c[0]
        .json(
            "PUT",
            "/v1/sessions/s",
            json!({"user_id": "u", "attrs": {"a": 1}, "ttl_s": 600}),
        )
        .await;
    assert_eq!(r.status, 200);
    eventually("the session to reach n2", || async {
        c[1].get("/v1/sessions/s").await.status == 200
    })
    .await;
    let r = c[1]
        .json("PUT", "/v1/sessions/s", json!({"attrs": {"b": 2}}))
        .await;
    assert_eq!(r.status, 200);
    let body = converged(&c, "/v1/sessions/s").await;
    let session: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(session["attrs"], json!({"a": 1, "b": 2}));
    assert_eq!(c[2].delete("/v1/sessions/s").await.status, 204);
    eventually("the revoke to reach every node", || async {
        let mut gone = true;
        for client in &c {
            gone &= client.get("/v1/sessions/s").await.status == 404;
        }
        gone
    })
    .await;

    // Documents: concurrent edits on two nodes merge.
    let edit = |k: &str| json!([{"op": "set", "path": [k], "value": k}, {"op": "increment", "path": ["n"], "by": 1}]);
    c[0].json(
        "POST",
        "/v1/docs/d/changes",
        json!([{"op": "increment", "path": ["n"], "by": 1}]),
    )
    .await;
    converged(&c, "/v1/docs/d").await;
    c[0].json("POST", "/v1/docs/d/changes", edit("x")).await;
    c[2].json("POST", "/v1/docs/d/changes", edit("y")).await;
    let body = converged(&c, "/v1/docs/d").await;
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc, json!({"n": 3, "x": "x", "y": "y"}));

    // The inspector shows contributions from every region, and the lag histogram filled.
    let i = c[0].get("/v1/inspect/carts/shared").await.json();
    let regions: BTreeSet<String> = i["contributions"]
        .as_array()
        .expect("contributions")
        .iter()
        .filter_map(|c| c["origin"]["region"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(regions.len(), 3, "{i}");
    let metrics = String::from_utf8(c[1].get("/metrics").await.body).expect("utf-8");
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("statemesh_replication_lag_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no lag count in\n{metrics}"));
    assert!(count > 0, "no replication lag observed");
    assert!(metrics.contains("statemesh_members{state=\"alive\"} 3"));

    for node in cluster.nodes.drain(..).flatten() {
        node.sigterm();
        assert_eq!(node.wait_exit().0.code(), Some(0));
    }
}

/// Writes unique skus to a few carts on `client` until `stop`; returns what was acknowledged.
async fn writer(client: Client, tag: String, stop: Arc<AtomicBool>) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let cart = format!("k{}", i % 3);
        let sku = format!("{tag}-{i}");
        i += 1;
        let body = json!({"sku": sku, "qty": 1}).to_string().into_bytes();
        match client
            .try_send("POST", &format!("/v1/carts/{cart}/items"), Some(body))
            .await
        {
            Ok(r) if r.status == 200 => acked.push((cart, sku)),
            Ok(r) => panic!(
                "write refused with {}: {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            Err(_) => break, // the node is gone: this write was not acknowledged
        }
    }
    acked
}

#[tokio::test]
async fn a_node_killed_during_writes_loses_no_acknowledged_write_and_catches_up() {
    let mut cluster = Cluster::new();
    Cluster::start(&mut cluster);
    let c = cluster.clients();
    all_alive(&c).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (n, client) in c.iter().enumerate() {
        for w in 0..2 {
            writers.push(tokio::spawn(writer(
                client.clone(),
                format!("n{n}w{w}"),
                stop.clone(),
            )));
        }
    }
    eventually("the victim to acknowledge some writes", || async {
        let body = c[2].get("/v1/carts/k0").await.body;
        skus(&body).len() >= 30
    })
    .await;
    let victim = cluster.nodes[2].take().expect("n3");
    let (http, gossip) = (victim.http.to_string(), victim.gossip.to_string());
    victim.kill9();
    // The survivors keep taking writes while the victim is down.
    eventually(
        "the survivors to see the victim down or suspect",
        || async {
            let members = c[0].get("/v1/members").await.json();
            members.as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["node_id"] == "n3" && m["state"] != "alive")
            })
        },
    )
    .await;
    let more = skus(&c[0].get("/v1/carts/k1").await.body).len() + 20;
    eventually("writes to continue on the survivors", || async {
        skus(&c[0].get("/v1/carts/k1").await.body).len() >= more
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked: BTreeSet<(String, String)> = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }

    let seed = cluster.node(0).gossip.to_string();
    let args = cluster.args(2, Some((http, gossip)), Some(seed));
    let restarted = Node::try_start(&args, &cluster.log(2, 1))
        .unwrap_or_else(|e| panic!("restart: {e}\n{}", cluster.logs()));
    cluster.nodes[2] = Some(restarted);
    let c = cluster.clients();
    all_alive(&c).await;

    let mut lost = Vec::new();
    for cart in ["k0", "k1", "k2"] {
        let body = converged(&c, &format!("/v1/carts/{cart}")).await;
        let present = skus(&body);
        lost.extend(
            acked
                .iter()
                .filter(|(c, sku)| c == cart && present.get(sku) != Some(&1))
                .cloned(),
        );
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}\n{}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)],
        cluster.logs()
    );
    assert!(
        acked.iter().any(|(_, sku)| sku.starts_with("n2")),
        "the victim acknowledged writes"
    );
    check_dir(&cluster.data_dir(2));
}

/// Received deltas stay non-durable for the whole test (10 minutes): a node killed with
/// SIGKILL loses everything it only received, while its own writes are durable all the same.
const RECEIVED_NEVER_SYNCED: &str = "replicated_sync_ms = 600000";

/// Adds `sku` to `cart` on `client`; the write must be acknowledged.
async fn add(client: &Client, cart: &str, sku: &str) {
    let r = client
        .json(
            "POST",
            &format!("/v1/carts/{cart}/items"),
            json!({"sku": sku, "qty": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{cart}/{sku}: {}", r.error());
}

/// Every cart of `acked` converges on `clients`, each acknowledged sku in it once.
async fn all_present(clients: &[Client], acked: &BTreeSet<(String, String)>) {
    let carts: BTreeSet<&str> = acked.iter().map(|(c, _)| c.as_str()).collect();
    for cart in carts {
        let present = skus(&converged(clients, &format!("/v1/carts/{cart}")).await);
        for (_, sku) in acked.iter().filter(|(c, _)| c == cart) {
            assert_eq!(present.get(sku), Some(&1), "{cart}/{sku}: {present:?}");
        }
    }
}

/// Node `i`'s store as a restart finds it: the deltas its log holds.
fn logged_deltas(cluster: &Cluster, i: usize) -> usize {
    let limits = mesh_node::store::LogLimits {
        max_entries: usize::MAX,
        max_bytes: usize::MAX,
    };
    let (store, loaded) = mesh_node::store::Store::open(&cluster.data_dir(i), IDS[i], limits)
        .unwrap_or_else(|e| panic!("the crashed store does not open: {e}"));
    drop(store);
    loaded.log.len()
}

/// Restarts node `i` on its old ports and data directory, joining through node `seed`.
fn restart(cluster: &mut Cluster, i: usize, addrs: (String, String), seed: usize) {
    let seed = cluster.node(seed).gossip.to_string();
    let args = cluster.args(i, Some(addrs), Some(seed));
    let restarted = Node::try_start(&args, &cluster.log(i, 1))
        .unwrap_or_else(|e| panic!("restart: {e}\n{}", cluster.logs()));
    cluster.nodes[i] = Some(restarted);
}

#[tokio::test]
async fn a_replica_killed_with_non_durable_deltas_restarts_consistent_and_catches_up() {
    let mut cluster = Cluster::with_config(RECEIVED_NEVER_SYNCED);
    Cluster::start(&mut cluster);
    let c = cluster.clients();
    all_alive(&c).await;
    // Writes on n1 only: n3 only receives them, in non-durable commits.
    let mut acked = BTreeSet::new();
    for i in 0..60 {
        let (cart, sku) = (format!("k{}", i % 3), format!("w{i}"));
        add(&c[0], &cart, &sku).await;
        acked.insert((cart, sku));
    }
    all_present(&c, &acked).await;

    let victim = cluster.nodes[2].take().expect("n3");
    let addrs = (victim.http.to_string(), victim.gossip.to_string());
    victim.kill9();
    // The crash lost what n3 received (its store rolled back to its last durable commit, from
    // before the writes), and the store opens consistent.
    let kept = logged_deltas(&cluster, 2);
    assert!(
        kept < acked.len(),
        "n3's log kept {kept} of the {} deltas it received: nothing was lost, so this test \
         shows nothing",
        acked.len()
    );

    restart(&mut cluster, 2, addrs, 0);
    let c = cluster.clients();
    all_alive(&c).await;
    // It catches up on every acknowledged write from its peers, and its own writes reach them.
    all_present(&c, &acked).await;
    add(&c[2], "k0", "n3-after-restart").await;
    acked.insert(("k0".into(), "n3-after-restart".into()));
    all_present(&c, &acked).await;
    for node in cluster.nodes.drain(..).flatten() {
        node.sigterm();
        assert_eq!(node.wait_exit().0.code(), Some(0));
    }
}

#[tokio::test]
async fn an_origin_killed_after_acknowledging_keeps_its_writes_and_its_dot_counter() {
    let mut cluster = Cluster::with_config(RECEIVED_NEVER_SYNCED);
    Cluster::start(&mut cluster);
    let c = cluster.clients();
    all_alive(&c).await;
    // n1 writes and also receives n2's writes (non-durable on n1) before its own next ones.
    let mut acked = BTreeSet::new();
    for i in 0..40 {
        let (cart, sku) = (format!("k{}", i % 3), format!("w{i}"));
        let writer = if i % 4 == 3 { &c[1] } else { &c[0] };
        add(writer, &cart, &sku).await;
        acked.insert((cart, sku));
    }
    all_present(&c, &acked).await;

    let victim = cluster.nodes[0].take().expect("n1");
    let addrs = (victim.http.to_string(), victim.gossip.to_string());
    victim.kill9();
    // Every write n1 acknowledged is in its store (durable before it was acknowledged).
    assert!(
        logged_deltas(&cluster, 0) >= 30,
        "n1 lost acknowledged writes"
    );

    restart(&mut cluster, 0, addrs, 1);
    let c = cluster.clients();
    all_alive(&c).await;
    // New writes on n1 take fresh sequence numbers: had its counter gone back, the peers
    // would take them for deltas they already have, and they would never arrive there.
    for i in 0..10 {
        let (cart, sku) = (format!("k{}", i % 3), format!("after-{i}"));
        add(&c[0], &cart, &sku).await;
        acked.insert((cart, sku));
    }
    all_present(&c, &acked).await;
    for node in cluster.nodes.drain(..).flatten() {
        node.sigterm();
        assert_eq!(node.wait_exit().0.code(), Some(0));
    }
}

fn check_dir(dir: &Path) {
    assert!(
        dir.join("statemesh.redb").is_file(),
        "the victim's store is in {}",
        dir.display()
    );
}
