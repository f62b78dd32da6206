//! Gossip timer presets for nodes on one machine (tests, the demo, the load generator); it
//! holds numbers only.

use std::num::NonZeroUsize;
use std::time::Duration;

/// A gossip configuration for `cluster_size` nodes on loopback: the LAN preset with timers cut
/// so that failure detection, partition heals and anti-entropy take hundreds of milliseconds
/// rather than seconds. Not for real networks: probes this frequent would flood a WAN.
pub fn loopback_gossip_config(cluster_size: u32) -> gossip::Config {
    let mut config = gossip::Config::lan(cluster_size);
    let two = NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN);
    config.swim.probe_period = Duration::from_millis(300);
    config.swim.probe_rtt = Duration::from_millis(100);
    config.swim.suspect_to_down_after = Duration::from_millis(900);
    config.swim.periodic_announce_to_down_members = Some(foca_periodic(300, two));
    config.swim.periodic_gossip = Some(foca_periodic(100, two));
    config.plumtree.ihave_delay_ms = 10;
    config.plumtree.graft_timeout_ms = 80;
    config.plumtree.graft_retry_ms = 50;
    config.anti_entropy.interval_ms = 250;
    config.anti_entropy.settle_ms = 150;
    config.rejoin_interval_ms = 300;
    config
}

fn foca_periodic(ms: u64, num_members: NonZeroUsize) -> gossip::foca::PeriodicParams {
    gossip::foca::PeriodicParams {
        frequency: Duration::from_millis(ms),
        num_members,
    }
}
