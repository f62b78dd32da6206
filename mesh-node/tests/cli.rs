//! The `mesh-node` command line (CONTRACT §3) as a real process: `certs` writes exactly the
//! files it names and `run` accepts them, a config file with flag overrides, exit status 2 with
//! a one-line error for bad flags or configuration, 1 for failures.

mod node_process;

use node_process::*;
use serde_json::json;
use std::collections::BTreeSet;

#[test]
fn certs_writes_exactly_the_contract_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("certs");
    let out_s = out.display().to_string();
    let (status, stdout, stderr) =
        run_to_end(&["certs", "--out", &out_s, "--nodes", "eu-1,us-1,ap-1"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let files: BTreeSet<String> = std::fs::read_dir(&out)
        .expect("out dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = [
        "ca.pem", "ca.key", "eu-1.pem", "eu-1.key", "us-1.pem", "us-1.key", "ap-1.pem", "ap-1.key",
    ]
    .map(String::from)
    .into();
    assert_eq!(files, expected);
    for f in &expected {
        assert!(stdout.contains(f.as_str()), "stdout names {f}: {stdout}");
        let text = std::fs::read_to_string(out.join(f)).expect("read");
        assert!(text.starts_with("-----BEGIN "), "{f} is PEM");
    }

    for (args, what) in [
        (
            vec!["certs", "--out", &out_s, "--nodes", "bad_id"],
            "invalid node id",
        ),
        (vec!["certs", "--out", &out_s, "--nodes", "a,a"], "twice"),
        (vec!["certs", "--out", &out_s], "--nodes"),
        (vec!["certs", "--nodes", "a"], "--out"),
    ] {
        let (status, _, stderr) = run_to_end(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
        assert!(stderr.contains(what), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn run_accepts_the_certs_output_and_two_nodes_form_a_mesh_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let (status, _, stderr) = run_to_end(&[
        "certs",
        "--out",
        &certs.display().to_string(),
        "--nodes",
        "n1,n2",
    ]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let config = loopback_config(dir.path(), "c.toml", "");
    let start = |id: &str, seed: Option<String>| {
        let mut args = loopback_flags(id, &dir.path().join(id));
        args.extend(tls_flags(&certs, id));
        args.extend(["--config".into(), config.display().to_string()]);
        if let Some(seed) = seed {
            args.extend(["--seed".into(), seed]);
        }
        Node::start(&args, &dir.path().join(format!("{id}.log")))
    };
    let n1 = start("n1", None);
    let n2 = start("n2", Some(n1.gossip.to_string()));
    let (c1, c2) = (n1.client(), n2.client());
    eventually("both nodes to see two alive members", || async {
        let mut ok = true;
        for c in [&c1, &c2] {
            let members = c.get("/v1/members").await.json();
            let alive = members
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count());
            ok &= alive == 2;
        }
        ok
    })
    .await;
    c1.json("POST", "/v1/carts/c/items", json!({"sku": "a", "qty": 1}))
        .await;
    eventually("the write to reach n2", || async {
        c2.get("/v1/carts/c").await.json()["items"] == json!([{"sku": "a", "qty": 1}])
    })
    .await;

    // A certificate for another node id is refused at start (exit 2).
    let mut args = loopback_flags("n3", &dir.path().join("n3"));
    args.extend(tls_flags(&certs, "n1"));
    let err = match Node::try_start(&args, &dir.path().join("n3.log")) {
        Ok(_) => panic!("started with another node's certificate"),
        Err(e) => e,
    };
    assert!(err.contains("exit status: 2"), "{err}");
    assert!(err.contains("n1"), "{err}");
}

#[tokio::test]
async fn a_config_file_sets_the_node_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "node_id = \"from-file\"\nregion = \"file-region\"\nhttp_addr = \"127.0.0.1:0\"\n\
         gossip_addr = \"127.0.0.1:0\"\ndata_dir = \"data\"\ninsecure_dev = true\n\
         gossip_timers = \"loopback\"\napi_token = \"tok\"\n",
    )
    .expect("write");
    let config_s = config.display().to_string();

    let node = Node::start(
        &["--config".into(), config_s.clone()],
        &dir.path().join("a.log"),
    );
    let health = node.client().get("/health").await.json();
    assert_eq!(
        health,
        json!({"status": "ok", "node_id": "from-file", "region": "file-region"})
    );
    assert_eq!(
        node.client().get("/v1/members").await.status,
        401,
        "api_token from the file"
    );
    assert!(
        dir.path().join("data").is_dir(),
        "data_dir is relative to the config file"
    );
    node.sigterm();
    assert_eq!(node.wait_exit().0.code(), Some(0));

    let args: Vec<String> = [
        "--config",
        &config_s,
        "--node-id",
        "from-flag",
        "--data-dir",
        &dir.path().join("other").display().to_string(),
    ]
    .map(String::from)
    .into();
    let node = Node::start(&args, &dir.path().join("b.log"));
    let health = node.client().get("/health").await.json();
    assert_eq!(
        health,
        json!({"status": "ok", "node_id": "from-flag", "region": "file-region"})
    );
    assert!(dir.path().join("other").is_dir());
}

#[test]
fn bad_flags_and_config_exit_2_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let unknown_key = write("unknown.toml", "insecure_dev = true\nnodeid = \"x\"\n");
    let bad_toml = write("bad.toml", "insecure_dev = true\nhttp_addr = \n");
    let bad_addr = write(
        "addr.toml",
        "insecure_dev = true\nhttp_addr = \"localhost\"\n",
    );
    let bad_timers = write(
        "timers.toml",
        "insecure_dev = true\ngossip_timers = \"fast\"\n",
    );
    let data = dir.path().join("d").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--data-dir", &data], "no TLS files"),
        (
            vec!["run", "--insecure-dev", "--bogus-flag"],
            "--bogus-flag",
        ),
        (
            vec!["run", "--insecure-dev", "--http-addr", "nowhere"],
            "--http-addr",
        ),
        (
            vec!["run", "--insecure-dev", "--node-id", "not valid!"],
            "node_id",
        ),
        (vec!["run", "--insecure-dev", "--region", ""], "region"),
        (
            vec!["run", "--insecure-dev", "--seed", "no-port"],
            "no-port",
        ),
        (
            vec!["run", "--tls-cert", "c.pem", "--data-dir", &data],
            "--tls-key",
        ),
        (
            vec![
                "run",
                "--insecure-dev",
                "--config",
                "/nonexistent/mesh.toml",
            ],
            "/nonexistent/mesh.toml",
        ),
        (vec!["run", "--config", &unknown_key], "nodeid"),
        (vec!["run", "--config", &bad_toml], "line 2"),
        (vec!["run", "--config", &bad_addr], "http_addr"),
        (vec!["run", "--config", &bad_timers], "fast"),
        (
            vec![
                "run",
                "--insecure-dev",
                "--kafka-brokers",
                "k:9092",
                "--kafka-topic",
                "t",
            ],
            "not built",
        ),
        (vec!["run", "--insecure-dev", "--kafka-topic", "t"], "Kafka"),
        (
            vec![
                "run",
                "--tls-cert",
                "/nonexistent/n.pem",
                "--tls-key",
                "/nonexistent/n.key",
                "--tls-ca",
                "/nonexistent/ca.pem",
                "--data-dir",
                &data,
            ],
            "/nonexistent/n.pem",
        ),
        (vec!["frobnicate"], "frobnicate"),
        (vec![], "subcommand"),
    ];
    for (args, what) in cases {
        let (status, _, stderr) = run_to_end(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr}");
        assert!(
            stderr.contains(what),
            "{args:?}: {stderr:?} does not name {what:?}"
        );
    }
    assert!(
        !dir.path().join("d").exists(),
        "a refused start created the data directory"
    );
}

#[test]
fn help_and_version_exit_0_and_help_says_kafka_is_not_built() {
    let (status, stdout, _) = run_to_end(&["run", "--help"]);
    assert_eq!(status.code(), Some(0));
    for flag in [
        "--config",
        "--node-id",
        "--region",
        "--gossip-addr",
        "--http-addr",
        "--seed",
        "--data-dir",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--insecure-dev",
        "--kafka-brokers",
        "--kafka-topic",
    ] {
        assert!(stdout.contains(flag), "help lacks {flag}");
    }
    assert!(stdout.contains("not built in this version"), "{stdout}");
    let (status, stdout, _) = run_to_end(&["--version"]);
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("mesh-node"));
}

#[tokio::test]
async fn a_busy_http_port_is_a_failure_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let data = dir.path().join("d").display().to_string();
    let (status, _, stderr) = run_to_end(&[
        "run",
        "--insecure-dev",
        "--http-addr",
        &addr,
        "--gossip-addr",
        "127.0.0.1:0",
        "--data-dir",
        &data,
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");

    // A data directory held by a running node is a failure too.
    let node = Node::start(
        &loopback_flags("holder", &dir.path().join("held"))
            .into_iter()
            .chain(["--insecure-dev".to_owned()])
            .collect::<Vec<_>>(),
        &dir.path().join("h.log"),
    );
    let held = dir.path().join("held").display().to_string();
    let (status, _, stderr) = run_to_end(&[
        "run",
        "--insecure-dev",
        "--http-addr",
        "127.0.0.1:0",
        "--gossip-addr",
        "127.0.0.1:0",
        "--data-dir",
        &held,
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    drop(node);
}
