//! The simulation driver: one thread, one event queue, virtual time. It feeds the real
//! `gossip::Node`s their messages and timers, carries out the workload and the fault plan,
//! applies what gossip hands out to the real stores, and records what happened. It holds no
//! protocol logic: every decision about what to send is the gossip node's.

use crate::checkers::{self, view_of};
use crate::delivery::Deliveries;
use crate::faults::Fault;
use crate::metrics::Histogram;
use crate::network::{Fate, Network, NetworkConfig};
use crate::node::{SimNode, Status, addr_slot};
use crate::oracle::{Op, OpId, Oracle};
use crate::queue::{EPOCH_MS, EventQueue, Millis};
use crate::regions::RegionMap;
use crate::report::{BroadcastFigures, Report};
use crate::rng::{SimRng, Stream};
use crate::scenarios::{Plan, Scenario, Timing};
use crate::store::{PlantedBug, SharedNumbers};
use crate::workload::{Intent, Workload, WorkloadConfig};
use bytes::Bytes;
use crdt_types::{Key, Object, ObjectDelta};
use gossip::Event;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Everything that determines a run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Which scenario.
    pub scenario: Scenario,
    /// Initial number of nodes.
    pub nodes: usize,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Regions and latencies.
    pub regions: RegionMap,
    /// Jitter, loss, bandwidth.
    pub network: NetworkConfig,
    /// When the workload and the faults happen.
    pub timing: Timing,
    /// What the workload writes.
    pub workload: WorkloadConfig,
    /// The gossip configuration (default: `gossip::Config::wan(nodes)`).
    pub gossip: Option<gossip::Config>,
    /// How often the share of replicas in agreement is sampled, in virtual ms.
    pub sample_ms: Millis,
    /// A bug to plant in every store (tests only).
    pub planted_bug: Option<PlantedBug>,
    /// Print a progress line to stderr every this many virtual ms (0: never). Not part of
    /// the report.
    pub progress_ms: Millis,
    /// Leave the nodes (every gossip node's delta log and every store) allocated when the run
    /// ends instead of freeing them one by one, for a process that exits right after: freeing
    /// is a few % of a large run. Not part of the report.
    pub skip_teardown: bool,
}

impl SimConfig {
    /// A configuration with the defaults of the CLI.
    pub fn new(scenario: Scenario, nodes: usize, regions: RegionMap, seed: u64) -> Self {
        let updates = if scenario == Scenario::BroadcastOnce {
            nodes as u64
        } else {
            2_000
        };
        SimConfig {
            scenario,
            nodes,
            seed,
            regions,
            network: NetworkConfig::default(),
            timing: Timing::default(),
            workload: WorkloadConfig::for_updates(updates),
            gossip: None,
            sample_ms: 100,
            planted_bug: None,
            progress_ms: 0,
            skip_teardown: false,
        }
    }
}

/// What the plots need from a run.
pub struct PlotData {
    /// `(label, delays)` per unordered region pair.
    pub pairs: Vec<(String, Histogram)>,
    /// `(seconds since start, share of replicas holding every update, mean share of the
    /// updates a replica holds)`.
    pub agreement: Vec<(f64, f64, f64)>,
    /// Seconds since start of every fault event.
    pub fault_times: Vec<f64>,
    /// Seconds since start of the last heal.
    pub heal_time: f64,
}

/// The result of a run.
pub struct Outcome {
    /// The CONTRACT §4 report.
    pub report: Report,
    /// Data for the SVG plots.
    pub plots: PlotData,
}

enum Ev {
    Deliver {
        to: usize,
        from: usize,
        bytes: Bytes,
    },
    Timer {
        node: usize,
        generation: u64,
    },
    Update {
        index: u64,
    },
    Broadcast {
        node: usize,
    },
    Fault(usize),
    LeaveDone {
        node: usize,
    },
    Heal,
    Sample,
}

/// How many read-your-writes failures get a full trace.
const TRACED_RYW: usize = 3;

/// One run in progress.
pub struct Simulation {
    cfg: SimConfig,
    rng: SimRng,
    gossip_config: gossip::Config,
    plan: Plan,
    queue: EventQueue<Ev>,
    network: Network,
    nodes: Vec<SimNode>,
    seeds: Vec<SocketAddr>,
    oracle: Oracle,
    deliveries: Deliveries,
    workload: Workload,
    now: Millis,
    bytes_sent: u64,
    messages_sent: u64,
    delta_bytes: u64,
    ryw_violations: u64,
    failures: Vec<String>,
    converged_at: Option<Millis>,
    healed: bool,
    agreement: Vec<(f64, f64, f64)>,
    /// The events of the node being drained, kept between drains (emptied by each): swapped
    /// with the node's own queue ([`gossip::Node::take_events`]), so no event is moved to
    /// be taken.
    event_buf: VecDeque<Event<ObjectDelta>>,
    /// Nodes that took messages in the current virtual millisecond and have not sent what
    /// they queued in answer, in the order they took the first one (see [`Simulation::run`]).
    unsent: Vec<usize>,
    /// `unsent_flag[slot]`: the slot is in `unsent`.
    unsent_flag: Vec<bool>,
    /// The key and replica numbers every store of the run shares.
    numbers: SharedNumbers,
}

impl Simulation {
    /// Sets up the nodes, the plan and the first events.
    pub fn new(cfg: SimConfig) -> Result<Self, String> {
        let rng = SimRng::new(cfg.seed);
        let plan = cfg.scenario.plan(
            &cfg.timing,
            &cfg.regions,
            cfg.nodes,
            &mut rng.child(Stream::Faults, 0),
        )?;
        let gossip_config = cfg
            .gossip
            .clone()
            .unwrap_or_else(|| gossip::Config::wan(cfg.nodes as u32));
        let mut network = Network::new(cfg.regions.clone(), cfg.network.clone(), &rng);
        let placement = cfg.regions.place(cfg.nodes);
        let numbers = SharedNumbers::default();
        let mut nodes = Vec::with_capacity(cfg.nodes);
        let mut per_region = vec![0usize; cfg.regions.len()];
        let mut seeds = Vec::new();
        for region in placement {
            let slot = network.add_node(region);
            per_region[region] += 1;
            let name = format!("{}-{}", cfg.regions.name(region), per_region[region]);
            let mut node = SimNode::new(name, region, slot, &rng, &numbers);
            if per_region[region] == 1 {
                seeds.push(node.addr);
            }
            if let Some(bug) = cfg.planted_bug {
                node.store.plant_bug(bug);
            }
            nodes.push(node);
        }
        let workload = Workload::new(cfg.workload.clone(), rng.child(Stream::Workload, 0));
        let mut sim = Simulation {
            deliveries: Deliveries::new(cfg.regions.len()),
            rng,
            gossip_config,
            plan,
            queue: EventQueue::new(),
            network,
            nodes,
            seeds,
            oracle: Oracle::new(),
            workload,
            now: EPOCH_MS,
            bytes_sent: 0,
            messages_sent: 0,
            delta_bytes: 0,
            ryw_violations: 0,
            failures: Vec::new(),
            converged_at: None,
            healed: false,
            agreement: Vec::new(),
            event_buf: VecDeque::new(),
            numbers,
            unsent: Vec::new(),
            unsent_flag: Vec::new(),
            cfg,
        };
        sim.schedule_start();
        Ok(sim)
    }

    fn schedule_start(&mut self) {
        if self.cfg.timing.cold_start {
            for slot in 0..self.nodes.len() {
                self.start_node(slot);
            }
        } else {
            self.start_formed();
        }
        for (i, f) in self.plan.faults.iter().enumerate() {
            self.queue.push(f.at, Ev::Fault(i));
        }
        let (w0, w1) = (self.plan.workload_start, self.plan.workload_end);
        if self.cfg.scenario == Scenario::BroadcastOnce {
            let n = self.nodes.len() as u64;
            let slot_ms = ((w1 - w0) / n.max(1)).max(1);
            for i in 0..n {
                let at = w0 + i * (w1 - w0) / n + self.workload.pick(slot_ms as usize) as u64;
                self.queue
                    .push(at.min(w1 - 1), Ev::Broadcast { node: i as usize });
            }
        } else if self.cfg.workload.updates > 0 {
            self.queue.push(w0, Ev::Update { index: 0 });
        }
        self.queue.push(self.plan.last_heal, Ev::Heal);
        self.queue.push(EPOCH_MS, Ev::Sample);
    }

    fn start_node(&mut self, slot: usize) {
        self.boot_node(slot);
        self.drain(slot);
    }

    /// Starts the gossip node of `slot`, leaving what it wants sent in its queue.
    fn boot_node(&mut self, slot: usize) {
        let region_name = self.cfg.regions.name(self.nodes[slot].region).to_string();
        self.nodes[slot].start(
            self.now,
            slot,
            &self.gossip_config,
            &region_name,
            &self.rng,
            &self.seeds,
        );
    }

    /// Starts every initial node knowing every other's identity, as the nodes of a cluster
    /// that has been running do (`Timing::cold_start` off): each still announces itself to
    /// its seeds, and SWIM's probes take over from there.
    fn start_formed(&mut self) {
        for slot in 0..self.nodes.len() {
            self.boot_node(slot);
        }
        let roster: Vec<gossip::Identity> = self
            .nodes
            .iter()
            .filter_map(|n| n.gossip.as_ref().map(|g| g.identity().clone()))
            .collect();
        // Each node is drained right after it took the roster, so its 999 member-up events
        // are dropped before the next node makes its own (a node's drain touches only its
        // own links and queue entries, so the order of everything queued is unchanged).
        for slot in 0..self.nodes.len() {
            let n = &mut self.nodes[slot];
            let local = n.local_now(self.now);
            if let Some(g) = n.gossip.as_mut() {
                g.add_known_members(local, roster.iter().cloned());
            }
            self.drain(slot);
        }
    }

    /// Runs to convergence or the deadline and returns the report.
    pub fn run(mut self) -> Outcome {
        let started = std::time::Instant::now();
        let mut next_progress = EPOCH_MS + self.cfg.progress_ms;
        loop {
            // Messages arriving in the same millisecond are all taken before the nodes send
            // what they queued in answer, as a node reading a batch of datagrams would: the
            // eager copies a node forwards to one peer within the millisecond leave in one
            // message. Anything else (a timer, a write, a fault) first lets everyone send.
            // Sending comes before the next event is taken: what it sends may arrive before
            // that event.
            if !self
                .queue
                .peek()
                .is_some_and(|(at, ev)| at == self.now && matches!(ev, Ev::Deliver { .. }))
            {
                self.send_unsent();
            }
            let Some((at, ev)) = self.queue.pop() else {
                break;
            };
            // Events are taken in time order: nothing may be scheduled before the one taken.
            assert!(
                at >= self.now,
                "virtual time went back from {} to {at}",
                self.now
            );
            if at > self.plan.deadline {
                break;
            }
            if self.cfg.progress_ms > 0 && at >= next_progress {
                next_progress = at + self.cfg.progress_ms;
                eprintln!(
                    "  t={:.1}s virtual  {:.1}s wall  {} updates  {} messages  {} queued",
                    (at - EPOCH_MS) as f64 / 1000.0,
                    started.elapsed().as_secs_f64(),
                    self.oracle.ops().len(),
                    self.messages_sent,
                    self.queue.len()
                );
            }
            self.now = at;
            self.handle(ev);
            if self.converged_at.is_some() {
                break;
            }
        }
        self.send_unsent();
        self.sample();
        self.finish()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, bytes } => self.deliver(to, from, &bytes),
            Ev::Timer { node, generation } => {
                let n = &mut self.nodes[node];
                if n.timer_gen != generation {
                    return;
                }
                n.timer = None;
                let local = n.local_now(self.now);
                if let Some(g) = n.gossip.as_mut() {
                    g.handle_timeout(local);
                }
                self.drain(node);
            }
            Ev::Update { index } => {
                self.update();
                let next = index + 1;
                if next < self.cfg.workload.updates {
                    let (w0, w1) = (self.plan.workload_start, self.plan.workload_end);
                    let n = self.cfg.workload.updates;
                    let span = w1 - w0;
                    let slot_ms = (span / n).max(1);
                    let at = w0 + next * span / n + self.workload.pick(slot_ms as usize) as u64;
                    self.queue
                        .push(at.max(self.now).min(w1 - 1), Ev::Update { index: next });
                }
            }
            Ev::Broadcast { node } => {
                if self.nodes[node].status == Status::Up {
                    let key = Key::new(crdt_types::Kind::Cart, format!("broadcast-{node}"));
                    let intent = Intent::CartAdd {
                        sku: "item".into(),
                        n: 1,
                    };
                    self.issue(node, key, intent);
                }
            }
            Ev::Fault(i) => {
                let fault = self.plan.faults[i].fault.clone();
                self.apply_fault(fault);
            }
            Ev::LeaveDone { node } => {
                let n = &mut self.nodes[node];
                let local = n.local_now(self.now);
                if let Some(g) = n.gossip.as_mut() {
                    g.leave(local);
                }
                self.drain(node);
                let n = &mut self.nodes[node];
                n.retire_gossip();
                n.status = Status::Left;
                self.deliveries.forget(node);
                self.check_converged();
            }
            Ev::Heal => {
                self.healed = true;
                self.check_converged();
            }
            Ev::Sample => {
                self.sample();
                self.queue.push(self.now + self.cfg.sample_ms, Ev::Sample);
            }
        }
    }

    fn members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&s| self.nodes[s].status == Status::Up)
            .collect()
    }

    fn sample(&mut self) {
        let t = (self.now - EPOCH_MS) as f64 / 1000.0;
        let members = self.members();
        if members.is_empty() || self.deliveries.is_empty() {
            self.agreement.push((t, 1.0, 1.0));
            return;
        }
        let complete = members
            .iter()
            .filter(|&&m| self.deliveries.complete(m))
            .count();
        let held: f64 = members.iter().map(|&m| self.deliveries.held_share(m)).sum();
        let n = members.len() as f64;
        self.agreement.push((t, complete as f64 / n, held / n));
    }

    fn check_converged(&mut self) {
        if !self.healed || self.converged_at.is_some() || self.now < self.plan.last_heal {
            return;
        }
        let all = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.status != Status::Left)
            .all(|(s, n)| n.status == Status::Up && self.deliveries.complete(s));
        if all {
            self.converged_at = Some(self.now);
        }
    }

    fn deliver(&mut self, to: usize, from: usize, bytes: &[u8]) {
        let from_addr = self.nodes[from].addr;
        let n = &mut self.nodes[to];
        if !matches!(n.status, Status::Up | Status::Leaving) {
            return;
        }
        let local = n.local_now(self.now);
        let SimNode { gossip, store, .. } = n;
        if let Some(g) = gossip.as_mut() {
            // The simulated network authenticates no one (no TLS): `None`.
            g.handle_message(local, from_addr, None, bytes, &*store);
        }
        self.settle(to);
        if to >= self.unsent_flag.len() {
            self.unsent_flag.resize(to + 1, false);
        }
        if !self.unsent_flag[to] {
            self.unsent_flag[to] = true;
            self.unsent.push(to);
        }
    }

    /// Lets the nodes that took messages in this millisecond send what they queued.
    fn send_unsent(&mut self) {
        let mut unsent = std::mem::take(&mut self.unsent);
        for &slot in &unsent {
            self.unsent_flag[slot] = false;
            self.transmit(slot);
        }
        unsent.clear();
        self.unsent = unsent;
    }

    /// Sends what the node wants sent, applies what it hands out, and re-arms its timer.
    fn drain(&mut self, slot: usize) {
        self.transmit(slot);
        self.settle(slot);
    }

    /// Hands what the node wants sent to the network.
    fn transmit(&mut self, slot: usize) {
        let now = self.now;
        let Some(g) = self.nodes[slot].gossip.as_mut() else {
            return;
        };
        while let Some(t) = g.poll_transmit() {
            self.bytes_sent += t.bytes.len() as u64;
            self.messages_sent += 1;
            let Some(to) = addr_slot(t.to).filter(|&s| s < self.network.nodes()) else {
                continue;
            };
            if let Fate::Arrives(at) = self.network.send(now, slot, to, t.bytes.len()) {
                self.queue.push(
                    at,
                    Ev::Deliver {
                        to,
                        from: slot,
                        bytes: t.bytes,
                    },
                );
            }
        }
    }

    /// Applies what the node hands out and re-arms its timer.
    fn settle(&mut self, slot: usize) {
        let now = self.now;
        let mut events = std::mem::take(&mut self.event_buf);
        {
            let n = &mut self.nodes[slot];
            let Some(g) = n.gossip.as_mut() else {
                self.event_buf = events;
                return;
            };
            g.take_events(&mut events);
        }
        while let Some(e) = events.pop_front() {
            self.on_event(slot, e);
        }
        self.event_buf = events;
        let n = &mut self.nodes[slot];
        if let Some(deadline) = n.gossip.as_ref().and_then(|g| g.poll_timeout()) {
            let at = n.virtual_time(deadline).max(now);
            if n.timer != Some(at) {
                n.timer = Some(at);
                n.timer_gen += 1;
                self.queue.push(
                    at,
                    Ev::Timer {
                        node: slot,
                        generation: n.timer_gen,
                    },
                );
            }
        }
    }

    fn on_event(&mut self, slot: usize, event: Event<ObjectDelta>) {
        let now = self.now;
        let region = self.nodes[slot].region;
        let n = &mut self.nodes[slot];
        let SimNode { gossip, store, .. } = n;
        if gossip.is_none() {
            return;
        }
        match event {
            Event::Apply(delta, _) => {
                let dot = delta.dot();
                match store.apply_delta(&delta.key, delta.payload, dot, delta.stamp) {
                    Ok(true) => {}
                    // Gossip hands each delta out once; a second time would double a counter.
                    Ok(false) => self.failures.push(format!(
                        "{} was handed delta {dot:?} of {} a second time",
                        n.name, delta.key
                    )),
                    Err(e) => self.failures.push(format!(
                        "{} refused delta {dot:?} of {}: {e}",
                        n.name, delta.key
                    )),
                }
                self.deliveries.hops.record(delta.hops as u64);
                if let Some(op) = self.oracle.by_dot(&dot) {
                    self.observe(slot, region, op, now);
                }
            }
            Event::ApplyState { key, payload, .. } => {
                if let Err(e) = store.apply_state(&key, payload) {
                    self.failures
                        .push(format!("{} refused state of {key}: {e}", n.name));
                }
                // A key's causal context claims exactly the updates its state reflects.
                if let Some(Object::Cart(c)) = store.get(&key) {
                    let held: Vec<OpId> = self.oracle.observed(&key, |d| c.context().contains(d));
                    for op in held {
                        self.observe(slot, region, op, now);
                    }
                }
            }
            Event::AdoptDelivered { vv, .. } => {
                store.adopt_delivered(&vv);
                let held: Vec<OpId> = (0..self.oracle.ops().len() as OpId)
                    .filter(|&id| {
                        !self.deliveries.holds(slot, id) && vv.contains(&self.oracle.op(id).dot)
                    })
                    .collect();
                for op in held {
                    self.observe(slot, region, op, now);
                }
            }
            Event::MemberUp(_) | Event::MemberSuspect(_) | Event::MemberDown(_) => {}
        }
    }

    fn observe(&mut self, slot: usize, region: usize, op: OpId, at: Millis) {
        if self.deliveries.observe(slot, region, op, at)
            && self.healed
            && self.deliveries.complete(slot)
        {
            self.check_converged();
        }
    }

    fn update(&mut self) {
        let up: Vec<usize> = self.members();
        if up.is_empty() {
            return;
        }
        // A write refused by its origin (a revoked session) is not an update: draw again.
        for _ in 0..16 {
            let slot = up[self.workload.pick(up.len())];
            let (key, intent) = self.workload.next_intent();
            if self.issue(slot, key, intent) {
                self.workload.count_issued();
                return;
            }
        }
    }

    /// Carries out `intent` on node `slot`'s store, publishes the delta and records the
    /// acknowledged update with the oracle. Returns `false` if the origin refused it.
    fn issue(&mut self, slot: usize, key: Key, intent: Intent) -> bool {
        let now = self.now;
        let ttl = self.workload.session_ttl_ms();
        let n = &mut self.nodes[slot];
        let local = n.local_now(now);
        let region = n.region;
        let SimNode { gossip, store, .. } = n;
        let Some(g) = gossip.as_mut() else {
            return false;
        };
        let current = store.read(&key);
        let exists = match (&current, view_of(&current)) {
            (Object::Session(s), _) if s.is_revoked() => return false,
            (Object::Session(_), crate::oracle::View::Session(v)) => v.is_some(),
            _ => true,
        };
        if intent == Intent::SessionTouch && !exists {
            return false;
        }
        let Ok(tag) = g.next_tag(local) else {
            return false;
        };
        let key_ctx = match &current {
            Object::Cart(c) => Some(c.context().clone()),
            _ => None,
        };
        let observed = self.oracle.observed(&key, |d| {
            g.has_delivered(d) || key_ctx.as_ref().is_some_and(|c| c.contains(d))
        });
        let made = store.write(&key, tag.stamp, |obj| {
            mutate(obj, &key, &intent, tag, ttl, exists)
        });
        let (delta, op) = match made {
            Ok(x) => x,
            Err(e) => {
                // Every tag must be published: an empty delta stands in for the failed write.
                let bottom = Object::new(key.kind).to_delta();
                store.record_own(tag.dot);
                let _ = g.publish(local, key.clone(), bottom, tag);
                self.failures.push(format!(
                    "{} refused {intent:?} on {key}: {e}",
                    self.nodes[slot].name
                ));
                self.drain(slot);
                return false;
            }
        };
        self.delta_bytes += delta.encoded_len() as u64;
        store.record_own(tag.dot);
        if let Err(e) = g.publish(local, key.clone(), delta, tag) {
            self.failures.push(format!("publish refused: {e}"));
        }
        let id = self
            .oracle
            .record(key.clone(), op, tag.dot, tag.stamp, slot, now, observed);
        self.deliveries.issued(id, slot, region, now);
        // Read-your-writes: the origin reads what the oracle says its history gives.
        let mut mine = self.oracle.op(id).observed.clone();
        mine.push(id);
        let want = self.oracle.expected(&key, &mine);
        let got = view_of(&self.nodes[slot].store.read(&key));
        if got != want {
            self.ryw_violations += 1;
            if self.ryw_violations as usize <= TRACED_RYW {
                let name = |s: usize| self.nodes[s].name.clone();
                self.failures.push(format!(
                    "read-your-writes: after #{id} {} reads {got:?} on {key}, oracle expects {want:?}\n{}",
                    self.nodes[slot].name,
                    self.oracle.trace(&key, &name, EPOCH_MS)
                ));
            }
        }
        self.drain(slot);
        true
    }

    fn apply_fault(&mut self, fault: Fault) {
        if fault.apply_to_network(&mut self.network) {
            return;
        }
        match fault {
            Fault::Crash { node, lose_data } => {
                if self.nodes[node].status != Status::Up {
                    return;
                }
                self.nodes[node].crash(node, lose_data, &self.rng);
                if lose_data {
                    self.deliveries.forget(node);
                    if let Some(bug) = self.cfg.planted_bug {
                        self.nodes[node].store.plant_bug(bug);
                    }
                }
            }
            Fault::Restart { node } if self.nodes[node].status == Status::Crashed => {
                self.start_node(node);
            }
            Fault::ClockSkew { node, offset_ms } => {
                let n = &mut self.nodes[node];
                n.skew_ms = offset_ms;
                // The pending timer was set in the old local time: re-arm it.
                n.timer = None;
                n.timer_gen += 1;
                self.drain(node);
            }
            Fault::Join { region } => {
                let slot = self.network.add_node(region);
                let count = self.nodes.iter().filter(|n| n.region == region).count() + 1;
                let name = format!("{}-{count}", self.cfg.regions.name(region));
                let mut node = SimNode::new(name, region, slot, &self.rng, &self.numbers);
                if let Some(bug) = self.cfg.planted_bug {
                    node.store.plant_bug(bug);
                }
                self.nodes.push(node);
                self.start_node(slot);
            }
            Fault::Leave { node, drain_ms } if self.nodes[node].status == Status::Up => {
                self.nodes[node].status = Status::Leaving;
                self.queue.push(self.now + drain_ms, Ev::LeaveDone { node });
            }
            _ => {}
        }
    }

    fn finish(mut self) -> Outcome {
        let members = self.members();
        let nodes = std::mem::take(&mut self.nodes);
        let verdict = checkers::check_final(&self.oracle, &nodes, &members, &self.deliveries);
        let all = self.deliveries.all_propagation();
        let updates = self.oracle.ops().len() as u64;
        let mut stats = gossip::Stats::default();
        for n in &nodes {
            let s = n.stats();
            stats.published += s.published;
            stats.delivered += s.delivered;
            stats.delivered_by_sync += s.delivered_by_sync;
            stats.duplicates += s.duplicates;
            stats.sync_duplicates += s.sync_duplicates;
            stats.refused_drift += s.refused_drift;
            stats.state_entries_sent += s.state_entries_sent;
            stats.sent_membership.messages += s.sent_membership.messages;
            stats.sent_gossip.messages += s.sent_gossip.messages;
            stats.sent_sync.messages += s.sent_sync.messages;
            stats.eager_sent += s.eager_sent;
            stats.ihave_sent += s.ihave_sent;
            stats.grafts_sent += s.grafts_sent;
        }
        let broadcast = (self.cfg.scenario == Scenario::BroadcastOnce).then(|| {
            let cluster = self.deliveries.cluster_times(members.len() as u32);
            BroadcastFigures {
                cluster_convergence_p50_ms: cluster.quantile(0.5),
                cluster_convergence_p99_ms: cluster.quantile(0.99),
                hops_p50: self.deliveries.hops.quantile(0.5),
                hops_p99: self.deliveries.hops.quantile(0.99),
                duplicates_per_delivery: ratio(
                    stats.duplicates + stats.sync_duplicates,
                    stats.delivered,
                ),
                messages_per_delta: ratio(self.messages_sent, stats.published),
            }
        });
        let convergence_ms = self.converged_at.map(|t| t - self.plan.last_heal);
        let mut failures = self.failures;
        failures.extend(verdict.failures.iter().cloned());
        if convergence_ms.is_none() {
            let behind = members
                .iter()
                .filter(|&&m| !self.deliveries.complete(m))
                .count();
            failures.push(format!(
                "no convergence within {} ms of the last heal: {behind} of {} replicas miss updates",
                self.cfg.timing.settle_max_ms,
                members.len()
            ));
        }
        let converged =
            convergence_ms.is_some() && verdict.divergent_keys == 0 && verdict.lost_writes == 0;
        let network = self.network.stats();
        let report = Report {
            scenario: self.cfg.scenario.name().to_string(),
            seed: self.cfg.seed,
            nodes: self.cfg.nodes,
            regions: self.cfg.regions.len(),
            updates,
            converged,
            convergence_ms,
            p50_propagation_ms: all.quantile(0.5),
            p99_propagation_ms: all.quantile(0.99),
            lost_writes: verdict.lost_writes,
            resurrections: verdict.resurrections,
            bytes_sent: self.bytes_sent,
            bytes_per_update_per_node: ratio(self.bytes_sent, updates * self.cfg.nodes as u64),
            messages_sent: self.messages_sent,
            broadcast,
            latency_floor_ms: self.cfg.regions.latency_floor_ms(),
            delta_bytes_mean: ratio(self.delta_bytes, updates),
            virtual_ms: self.now - EPOCH_MS,
            writes_lost_with_data_dir: verdict.writes_lost_with_data_dir,
            divergent_keys: verdict.divergent_keys,
            revoke_violations: verdict.revoke_violations,
            read_your_writes_violations: self.ryw_violations,
            membership_messages: stats.sent_membership.messages,
            gossip_messages: stats.sent_gossip.messages,
            sync_messages: stats.sent_sync.messages,
            eager_sent: stats.eager_sent,
            ihave_sent: stats.ihave_sent,
            grafts_sent: stats.grafts_sent,
            dropped_partitioned: network.dropped_partitioned,
            dropped_lost: network.dropped_lost,
            refused_drift: stats.refused_drift,
            delivered_by_sync: stats.delivered_by_sync,
            state_entries_sent: stats.state_entries_sent,
            failures,
        };
        let r = self.cfg.regions.len();
        let mut pairs = Vec::new();
        for a in 0..r {
            for b in a..r {
                let mut h = self.deliveries.propagation(a, b).clone();
                if a != b {
                    h.merge(self.deliveries.propagation(b, a));
                }
                if h.count() > 0 {
                    let label = if a == b {
                        format!("within {}", self.cfg.regions.name(a))
                    } else {
                        format!(
                            "{} <-> {}",
                            self.cfg.regions.name(a),
                            self.cfg.regions.name(b)
                        )
                    };
                    pairs.push((label, h));
                }
            }
        }
        let secs = |t: Millis| (t - EPOCH_MS) as f64 / 1000.0;
        let plots = PlotData {
            pairs,
            agreement: self.agreement,
            fault_times: self.plan.faults.iter().map(|f| secs(f.at)).collect(),
            heal_time: secs(self.plan.last_heal),
        };
        if self.cfg.skip_teardown {
            std::mem::forget(nodes);
        }
        Outcome { report, plots }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        // Rounded to 1e-3 so the JSON stays short and stable.
        (a as f64 / b as f64 * 1000.0).round() / 1000.0
    }
}

/// Applies `intent` to the origin's object with `tag` and returns the delta and the
/// operation as the oracle records it.
fn mutate(
    obj: &mut Object,
    key: &Key,
    intent: &Intent,
    tag: crdt_types::Tag,
    ttl_ms: u64,
    exists: bool,
) -> Result<(ObjectDelta, Op), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match (intent, obj) {
        (Intent::CartAdd { sku, n }, Object::Cart(c)) => Ok((
            ObjectDelta::Cart(c.add(tag, sku, *n).map_err(|x| e(&x))?),
            Op::CartAdd {
                sku: sku.clone(),
                n: *n,
            },
        )),
        (Intent::CartSet { sku, qty }, Object::Cart(c)) => Ok((
            ObjectDelta::Cart(c.set_quantity(tag, sku, *qty).map_err(|x| e(&x))?),
            Op::CartSet {
                sku: sku.clone(),
                qty: *qty,
            },
        )),
        (Intent::CartRemove { sku }, Object::Cart(c)) => Ok((
            ObjectDelta::Cart(c.remove(sku).map_err(|x| e(&x))?),
            Op::CartRemove { sku: sku.clone() },
        )),
        (Intent::CartClear, Object::Cart(c)) => Ok((ObjectDelta::Cart(c.clear()), Op::CartClear)),
        (Intent::SessionPut { user_id, attrs }, Object::Session(s)) => {
            use crdt_types::Lattice;
            // A create must name its user.
            let user_id = match user_id {
                Some(u) => Some(u.clone()),
                None if !exists => Some(format!("user-of-{}", key.id)),
                None => None,
            };
            let mut delta = s.touch(tag, ttl_ms).map_err(|x| e(&x))?;
            if let Some(u) = &user_id {
                delta.join(s.set_user_id(tag, u).map_err(|x| e(&x))?);
            }
            for (name, value) in attrs {
                delta.join(s.set_attr(tag, name, value).map_err(|x| e(&x))?);
            }
            let expires_at_ms = tag.stamp.wall_ms().saturating_add(ttl_ms as i64);
            Ok((
                ObjectDelta::Session(delta),
                Op::SessionPut {
                    user_id,
                    attrs: attrs.clone(),
                    expires_at_ms: Some(expires_at_ms),
                },
            ))
        }
        (Intent::SessionTouch, Object::Session(s)) => {
            let delta = s.touch(tag, ttl_ms).map_err(|x| e(&x))?;
            let expires_at_ms = tag.stamp.wall_ms().saturating_add(ttl_ms as i64);
            Ok((
                ObjectDelta::Session(delta),
                Op::SessionTouch { expires_at_ms },
            ))
        }
        (Intent::SessionRevoke, Object::Session(s)) => {
            Ok((ObjectDelta::Session(s.revoke()), Op::SessionRevoke))
        }
        (intent, obj) => Err(format!("{intent:?} does not apply to a {:?}", obj.kind())),
    }
}
