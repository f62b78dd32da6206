//! `Mesh::builder()`: a node's settings, checked, and the start-up that opens the store, binds
//! the transport, restores the gossip core and starts the engine. It wires parts together and
//! must not hold protocol or storage logic.

use crate::certs::{self, TlsIdentity};
use crate::delta::GossipNode;
use crate::engine::{self, Command, Counters, Engine, Limits, Shared};
use crate::error::StartError;
use crate::inspect::Directory;
use crate::member::{Member, MemberStatus};
use crate::mesh::{Inner, Mesh};
use crate::state::State;
use crate::store::{LogLimits, Store, random_seed};
use crate::tls::TlsConfig;
use crate::transport::{Transport, TransportConfig};
use crate::view::View;
use gossip::{Identity, Restored};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

/// Commands (local operations) waiting for the engine before callers wait to enqueue.
const COMMAND_QUEUE: usize = 16_384;

/// How the node authenticates peers.
enum TlsChoice {
    Mutual(Box<TlsIdentity>),
    InsecureDev,
}

/// Settings of a node; [`MeshBuilder::start`] checks them and starts it.
///
/// Required: [`node_id`](Self::node_id), [`region`](Self::region),
/// [`data_dir`](Self::data_dir), and one of [`tls`](Self::tls) or
/// [`insecure_dev`](Self::insecure_dev).
pub struct MeshBuilder {
    node_id: Option<String>,
    region: Option<String>,
    gossip_addr: SocketAddr,
    advertise_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    tls: Option<TlsChoice>,
    seeds: Vec<SocketAddr>,
    max_clock_drift_ms: Option<u64>,
    gossip_config: Option<gossip::Config>,
    transport_config: TransportConfig,
    subscription_capacity: usize,
    limits: Limits,
}

impl std::fmt::Debug for MeshBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshBuilder")
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("gossip_addr", &self.gossip_addr)
            .field("data_dir", &self.data_dir)
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl Default for MeshBuilder {
    fn default() -> Self {
        MeshBuilder {
            node_id: None,
            region: None,
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise_addr: None,
            data_dir: None,
            tls: None,
            seeds: Vec::new(),
            max_clock_drift_ms: None,
            gossip_config: None,
            transport_config: TransportConfig::default(),
            subscription_capacity: 4096,
            limits: Limits::default(),
        }
    }
}

impl MeshBuilder {
    /// The node id (1..=63 characters of `[A-Za-z0-9-]`); with [`tls`](Self::tls) it must be
    /// the one the certificate names.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// The region the node runs in (same character rules as node ids).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The UDP address to bind for gossip (default `127.0.0.1:7946`; port 0 picks one, see
    /// [`Mesh::local_addr`]).
    pub fn gossip_addr(mut self, addr: SocketAddr) -> Self {
        self.gossip_addr = addr;
        self
    }

    /// The address peers reach this node at, when it is not the bound one (required when
    /// binding an unspecified address such as `0.0.0.0`).
    pub fn advertise_addr(mut self, addr: SocketAddr) -> Self {
        self.advertise_addr = Some(addr);
        self
    }

    /// The data directory (created if missing). One node per directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Mutual TLS with the cluster CA: the production setting.
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(TlsChoice::Mutual(Box::new(identity)));
        self
    }

    /// **Local development only**: no peer authentication (see
    /// [`TlsConfig::insecure_dev`](crate::tls::TlsConfig::insecure_dev)).
    pub fn insecure_dev(mut self) -> Self {
        self.tls = Some(TlsChoice::InsecureDev);
        self
    }

    /// Gossip addresses of nodes to join through. Peers remembered in the data directory are
    /// tried too.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds.extend(seeds);
        self
    }

    /// How far ahead of this node's clock a remote stamp may be before its delta is refused
    /// (CONTRACT §1 "Clocks", default 500 ms).
    pub fn max_clock_drift_ms(mut self, ms: u64) -> Self {
        self.max_clock_drift_ms = Some(ms);
        self
    }

    /// The gossip tuning (default `gossip::Config::wan`; see also
    /// [`loopback_gossip_config`](crate::loopback_gossip_config)).
    /// [`max_clock_drift_ms`](Self::max_clock_drift_ms) still applies on top.
    pub fn gossip_config(mut self, config: gossip::Config) -> Self {
        self.gossip_config = Some(config);
        self
    }

    /// The transport's limits and timers.
    pub fn transport_config(mut self, config: TransportConfig) -> Self {
        self.transport_config = config;
        self
    }

    /// Commits whose changes are buffered per subscriber before it lags (default 4096; the
    /// engine sends each commit's changes as one message).
    pub fn subscription_capacity(mut self, n: usize) -> Self {
        self.subscription_capacity = n.max(1);
        self
    }

    /// At most this many local operations share one commit (default 4096).
    pub fn max_batch_ops(mut self, n: usize) -> Self {
        self.limits.max_ops = n.max(1);
        self
    }

    /// Checkpoint pacing (default: after 65 536 changed keys, 500 000 logged deltas or 30 s,
    /// each checkpoint's writes spread over half that period): objects are written to the
    /// store by checkpoints, and a restart replays the log written since the last one.
    pub fn checkpoint_every(mut self, keys: usize, interval: std::time::Duration) -> Self {
        self.limits.checkpoint_keys = keys.max(1);
        self.limits.checkpoint_interval = interval;
        self
    }

    /// Also start a checkpoint once this many deltas and states were logged since the last one
    /// started (default 500 000): this bounds the log a restart replays.
    pub fn checkpoint_after_logged(mut self, entries: usize) -> Self {
        self.limits.checkpoint_log_entries = entries.max(1);
        self
    }

    /// How long received deltas (a commit holding no local write) may stay committed
    /// non-durably (default 500 ms). Local writes are always committed durably before they
    /// are acknowledged, and each durable commit also persists everything received before
    /// it; a crash loses at most this much received data, which the node then fetches again
    /// from its peers. Zero makes every commit durable (one fsync per commit).
    pub fn replicated_sync(mut self, bound: std::time::Duration) -> Self {
        self.limits.replicated_sync = bound;
        self
    }

    /// Opens the data directory, binds the transport, joins through the seeds and starts the
    /// engine. Must be called within a tokio runtime (of any flavour: the engine runs on a
    /// thread of its own).
    pub async fn start(self) -> Result<Mesh, StartError> {
        let config_err = |m: String| StartError::Config(m);
        let node_id = self
            .node_id
            .ok_or_else(|| config_err("node_id is required".into()))?;
        certs::validate_node_id(&node_id).map_err(|e| config_err(e.to_string()))?;
        let region = self
            .region
            .ok_or_else(|| config_err("region is required".into()))?;
        certs::validate_node_id(&region).map_err(|e| config_err(format!("region: {e}")))?;
        let data_dir = self
            .data_dir
            .ok_or_else(|| config_err("data_dir is required".into()))?;
        let tls = match self.tls {
            Some(TlsChoice::Mutual(identity)) => {
                let named = identity.node_id()?;
                if named != node_id {
                    return Err(config_err(format!(
                        "the certificate names node {named:?}, not {node_id:?}"
                    )));
                }
                TlsConfig::mutual(&identity)?
            }
            Some(TlsChoice::InsecureDev) => TlsConfig::insecure_dev(&node_id)?,
            None => {
                return Err(config_err(
                    "choose tls(identity) or, for local development only, insecure_dev()".into(),
                ));
            }
        };
        let mut config = self
            .gossip_config
            .unwrap_or_else(|| gossip::Config::wan(self.seeds.len() as u32 + 1));
        if let Some(ms) = self.max_clock_drift_ms {
            config.max_clock_drift_ms = ms;
        }
        let limits = LogLimits {
            max_entries: config.log_max_entries,
            max_bytes: config.log_max_bytes,
        };

        let open_id = node_id.clone();
        let (store, mut loaded, state) = tokio::task::spawn_blocking(move || {
            let opening = std::time::Instant::now();
            let (mut store, mut loaded) = Store::open(&data_dir, &open_id, limits)?;
            let read_ms = opening.elapsed().as_millis() as u64;
            let (objects, replayed) = (
                loaded.objects.len(),
                loaded.replay.iter().map(|s| s.deltas.len()).sum::<usize>(),
            );
            // The checkpoint plus the log replayed: what the gossip core counts as delivered.
            let state = State::from_loaded(&mut loaded);
            tracing::info!(
                objects,
                replayed,
                read_ms,
                total_ms = opening.elapsed().as_millis() as u64,
                "opened the store: checkpointed objects, log deltas replayed"
            );
            store.ensure_cursor_ceiling(state.next_cursor())?;
            Ok::<_, StartError>((store, loaded, state))
        })
        .await
        .map_err(|e| StartError::System(format!("store opener: {e}")))??;

        let (transport, inbound) =
            Transport::bind(self.gossip_addr, tls, self.transport_config).await?;
        let addr = self
            .advertise_addr
            .unwrap_or_else(|| transport.local_addr());
        if addr.ip().is_unspecified() {
            transport.shutdown().await;
            return Err(config_err(format!(
                "bound to {addr}: set advertise_addr to the address peers reach this node at"
            )));
        }

        let now = engine::now_ms();
        let identity = Identity::new(
            node_id.clone(),
            region.clone(),
            addr,
            loaded.replica,
            u64::try_from(now).unwrap_or(0),
        );
        let restored = Restored {
            delivered: state.applied().clone(),
            log: std::mem::take(&mut loaded.log),
            last_stamp: state.last_stamp(),
        };
        let seed = random_seed().map_err(|e| StartError::System(format!("randomness: {e}")))?;
        let mut node = GossipNode::new(config, identity, restored, seed);
        let mut directory = Directory::new();
        directory.insert(loaded.replica, (node_id.clone(), region.clone()));
        let mut seeds = self.seeds;
        for peer in &loaded.peers {
            directory.insert(peer.replica, (peer.node_id.clone(), peer.region.clone()));
            seeds.push(peer.addr);
        }
        seeds.sort();
        seeds.dedup();
        for seed in seeds.into_iter().filter(|s| *s != addr) {
            node.add_seed(now, seed);
        }

        let replica = loaded.replica;
        let view = Arc::new(View::new(state.snapshot_all()));
        let (changes, _) = broadcast::channel(self.subscription_capacity);
        let shared = Arc::new(Shared {
            view,
            changes,
            changes_sent: AtomicU64::new(0),
            failure: OnceLock::new(),
            counters: Counters::default(),
            gossip_stats: Mutex::new(gossip::Stats::default()),
            #[cfg(test)]
            hold_appends: std::sync::atomic::AtomicBool::new(false),
        });
        let me = Member {
            node_id: node_id.clone(),
            region: region.clone(),
            addr,
            state: MemberStatus::Alive,
        };
        let engine = Engine::new(
            node,
            state,
            store,
            transport.clone(),
            shared.clone(),
            self.limits,
            me,
            directory,
        )
        .map_err(|e| StartError::System(format!("commit thread: {e}")))?;
        let (commands, command_rx) = mpsc::channel::<Command>(COMMAND_QUEUE);
        let span = tracing::info_span!("node", node = %node_id, region = %region);
        let thread = std::thread::Builder::new()
            .name(format!("engine-{node_id}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the engine's runtime");
                        return;
                    }
                };
                runtime.block_on(engine.run(command_rx, inbound).instrument(span));
            })
            .map_err(|e| StartError::System(format!("engine thread: {e}")))?;
        tracing::info!(node = %node_id, region = %region, %addr, replica = %replica, "node started");
        Ok(Mesh {
            inner: Arc::new(Inner {
                node_id,
                region,
                replica,
                addr,
                commands,
                shared,
                transport,
                closing: AtomicBool::new(false),
                engine_thread: Mutex::new(Some(thread)),
                shutdown: tokio::sync::Mutex::new(false),
            }),
        })
    }
}
