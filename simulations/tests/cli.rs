//! The CLI of CONTRACT §4: flags, exit status, and the JSON report's field names.

use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("statemesh-sim-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_simulations"))
}

#[test]
fn json_report_has_the_contract_fields_and_plots_are_written() {
    let dir = scratch("json");
    let json = dir.join("report.json");
    let out = sim()
        .args([
            "--scenario",
            "broadcast-once",
            "--nodes",
            "12",
            "--regions",
            "3",
            "--seed",
            "9",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PASS  scenario broadcast-once  seed 9"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for field in [
        "scenario",
        "seed",
        "nodes",
        "regions",
        "updates",
        "converged",
        "convergence_ms",
        "p50_propagation_ms",
        "p99_propagation_ms",
        "lost_writes",
        "resurrections",
        "bytes_sent",
        "bytes_per_update_per_node",
        "messages_sent",
        "cluster_convergence_p50_ms",
        "cluster_convergence_p99_ms",
        "hops_p50",
        "hops_p99",
        "duplicates_per_delivery",
        "messages_per_delta",
    ] {
        assert!(v.get(field).is_some(), "report lacks {field}: {v}");
    }
    assert_eq!(v["scenario"], "broadcast-once");
    assert_eq!(v["seed"], 9);
    assert_eq!(v["nodes"], 12);
    assert_eq!(v["regions"], 3);
    assert_eq!(v["converged"], true);
    for plot in ["propagation", "agreement"] {
        let svg =
            std::fs::read_to_string(dir.join(format!("broadcast-once-seed9-{plot}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn regions_file_with_coordinates_is_used() {
    let dir = scratch("regions");
    let file = dir.join("regions.toml");
    std::fs::write(
        &file,
        r#"
        [distance]
        base_rtt_ms = 2.0
        km_per_ms = 100.0
        [[regions]]
        name = "dublin"
        weight = 2
        lat = 53.35
        lon = -6.26
        [[regions]]
        name = "frankfurt"
        lat = 50.11
        lon = 8.68
        "#,
    )
    .unwrap();
    let out = sim()
        .args([
            "--scenario",
            "steady",
            "--nodes",
            "9",
            "--seed",
            "3",
            "--updates",
            "60",
        ])
        .arg("--regions-file")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("9 nodes in 2 regions"), "{stdout}");
    // Dublin to Frankfurt: (2 + ~1090 km / 100) / 2 ms one way.
    assert!(stdout.contains("latency floor 6.4 ms"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_usage_exits_2() {
    let out = sim().args(["--scenario", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = sim()
        .args(["--scenario", "steady", "--regions", "7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
