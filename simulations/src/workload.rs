//! The workload: which user operation of CONTRACT §1 comes next and on which key, at a chosen
//! rate. It decides intentions only; the driver carries them out on a node's real store.

use crate::queue::Millis;
use crate::rng::SimRng;
use crdt_types::{Key, Kind};
use serde_json::Value;
use std::collections::BTreeMap;

/// Workload tunables (CLI flags).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    /// Number of updates to issue.
    pub updates: u64,
    /// Number of carts written to.
    pub carts: usize,
    /// Number of session slots (a revoked session's slot moves on to a new session id).
    pub sessions: usize,
    /// Number of distinct skus.
    pub skus: usize,
    /// Session time to live, in ms.
    pub session_ttl_ms: u64,
}

impl WorkloadConfig {
    /// Defaults scaled to `updates`: about 20 updates per key, so keys see real concurrency.
    pub fn for_updates(updates: u64) -> Self {
        let keys = (updates / 20).max(4) as usize;
        WorkloadConfig {
            updates,
            carts: (keys * 3 / 4).max(2),
            sessions: (keys / 4).max(2),
            skus: 8,
            session_ttl_ms: 3_600_000,
        }
    }
}

/// One intended operation, before a node carries it out.
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// `add(sku, n)`.
    CartAdd {
        /// Item.
        sku: String,
        /// Increment.
        n: u64,
    },
    /// `set_quantity(sku, qty)`.
    CartSet {
        /// Item.
        sku: String,
        /// Wanted quantity.
        qty: u64,
    },
    /// `remove(sku)`.
    CartRemove {
        /// Item.
        sku: String,
    },
    /// `clear()`.
    CartClear,
    /// Create or update a session: the user id is set on create (and sometimes after).
    SessionPut {
        /// The user id to write, if any.
        user_id: Option<String>,
        /// Attributes to write.
        attrs: BTreeMap<String, Value>,
    },
    /// Extend the session's expiry by the TTL.
    SessionTouch,
    /// Log out.
    SessionRevoke,
}

/// Generates intents and their keys, and the times they happen at.
pub struct Workload {
    config: WorkloadConfig,
    rng: SimRng,
    /// Per session slot, the generation of its current session id.
    generation: Vec<u32>,
    issued: u64,
}

const ATTRS: [&str; 4] = ["theme", "locale", "cart", "visits"];

impl Workload {
    /// A workload drawing from `rng`.
    pub fn new(config: WorkloadConfig, rng: SimRng) -> Self {
        let sessions = config.sessions;
        Workload {
            config,
            rng,
            generation: vec![0; sessions],
            issued: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// Whether every update has been handed out.
    pub fn done(&self) -> bool {
        self.issued >= self.config.updates
    }

    /// Counts one update as issued (the driver calls it when a node acknowledged it).
    pub fn count_issued(&mut self) {
        self.issued += 1;
    }

    /// The gap before the next update, for `updates` spread over `duration_ms` (Poisson).
    pub fn next_gap(&mut self, duration_ms: Millis) -> Millis {
        let mean = duration_ms as f64 / self.config.updates.max(1) as f64;
        self.rng.exponential(mean).round() as Millis
    }

    /// A random choice among `n` things (nodes, for the driver).
    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.index(n)
    }

    /// The next intended operation and its key.
    pub fn next_intent(&mut self) -> (Key, Intent) {
        let r = &mut self.rng;
        let sku = format!("sku-{}", r.index(self.config.skus));
        if r.chance(0.75) {
            let key = Key::new(Kind::Cart, format!("cart-{}", r.index(self.config.carts)));
            let roll = r.below(100);
            let intent = match roll {
                0..=54 => Intent::CartAdd {
                    sku,
                    n: r.range(1, 3),
                },
                55..=74 => Intent::CartSet {
                    sku,
                    qty: r.range(0, 5),
                },
                75..=94 => Intent::CartRemove { sku },
                _ => Intent::CartClear,
            };
            return (key, intent);
        }
        let slot = r.index(self.config.sessions);
        let mut generation = self.generation[slot];
        // A stale client still writing to a session that was logged out: revoke must win.
        if generation > 0 && r.chance(0.1) {
            generation -= 1;
        }
        let key = Key::new(Kind::Session, format!("session-{slot}-{generation}"));
        let roll = r.below(100);
        let intent = match roll {
            0..=59 => {
                let mut attrs = BTreeMap::new();
                let name = ATTRS[r.index(ATTRS.len())];
                attrs.insert(name.to_string(), Value::from(r.below(1000)));
                Intent::SessionPut {
                    user_id: r.chance(0.2).then(|| format!("user-{}", r.below(50))),
                    attrs,
                }
            }
            60..=89 => Intent::SessionTouch,
            _ => {
                if generation == self.generation[slot] {
                    self.generation[slot] += 1;
                }
                Intent::SessionRevoke
            }
        };
        (key, intent)
    }

    /// The session TTL.
    pub fn session_ttl_ms(&self) -> u64 {
        self.config.session_ttl_ms
    }
}
