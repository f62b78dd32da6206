//! Same seed, same inputs: the same transmits, bit for bit.

mod common;

use common::{Net, TraceEntry};
use gossip::Config;

fn scenario(seed: u64) -> (Vec<TraceEntry>, Vec<gossip::Stats>) {
    let net = run(seed, |_| {});
    let stats = (0..6).map(|i| net.stats(i)).collect();
    (net.trace, stats)
}

/// The scenario's run, with `setup` applied to the network first.
fn run(seed: u64, setup: impl FnOnce(&mut Net)) -> Net {
    let mut net = Net::new(6, &["eu", "us", "ap"], seed, Config::lan(6));
    setup(&mut net);
    net.loss = 0.05;
    net.run_for(4_000);
    for k in 0..30u64 {
        net.write((k % 6) as usize, &format!("k{}", k % 5), k);
        net.run_for(37);
    }
    net.partition(&[0, 1], &[2, 3, 4, 5]);
    for k in 0..10u64 {
        net.write((k % 6) as usize, "p", k);
        net.run_for(300);
    }
    net.heal();
    net.crash(5);
    net.run_for(2_000);
    net.restart(5, true);
    net.run_for(10_000);
    assert!(net.converged());
    net
}

#[test]
fn same_seed_same_transmit_trace() {
    let (a, sa) = scenario(42);
    let (b, sb) = scenario(42);
    assert!(
        a.len() > 1_000,
        "trace too short to mean anything: {}",
        a.len()
    );
    assert_eq!(a.len(), b.len());
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(first_diff, None, "traces diverge");
    assert_eq!(sa, sb);
    let (c, _) = scenario(43);
    assert_ne!(a, c, "a different seed should give a different run");
}

#[test]
fn taking_events_in_one_go_hands_out_the_same_events_in_the_same_order() {
    let traced = |take: bool| {
        run(42, |net| {
            net.take_events = take;
            net.event_trace = Some(Vec::new());
        })
    };
    let (polled, taken) = (traced(false), traced(true));
    let (a, b) = (
        polled.event_trace.expect("traced"),
        taken.event_trace.expect("traced"),
    );
    assert!(
        a.len() > 200,
        "too few events to mean anything: {}",
        a.len()
    );
    assert_eq!(a, b);
    assert_eq!(polled.trace, taken.trace);
}
