//! The QUIC transport between nodes: one quinn endpoint per node that both dials and accepts,
//! carrying opaque frames on three channels. It owns sockets, connections and queues; it never
//! interprets a payload (the gossip core does).
//!
//! Channels map onto QUIC the way Corrosion splits its traffic:
//! - [`Channel::Membership`]: unreliable datagrams (a stream if a message exceeds the datagram
//!   size), for SWIM probes that are useless once late;
//! - [`Channel::Delta`]: unidirectional streams, one per batch of frames, so a lost packet delays
//!   only its own batch;
//! - [`Channel::Sync`]: one bidirectional stream per connection for anti-entropy.
//!
//! Sending never blocks and never buffers without bound: each peer has a bounded queue per
//! channel and a full queue drops the frame ([`SendOutcome::Dropped`]); the gossip core repairs
//! losses with anti-entropy. Receiving applies backpressure instead: stream readers wait for room
//! in the inbound queue, which stalls the peer through QUIC flow control.
//!
//! Addressing: a node's outgoing connections leave from its listening socket, so the remote
//! address of any connection is the peer's gossip address, and [`Inbound::from`] is an address
//! one can send back to. (This holds on networks without NAT between nodes; connection migration
//! is disabled so it stays true.) There is one connection per peer for sending; when two nodes
//! dial each other at once, both settle on the one dialed by the smaller node id and the other
//! is closed, which can lose frames in flight on it.

mod backoff;
mod conn;
mod faults;
mod frame;
mod peer;
mod stats;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use faults::Faults;
pub use stats::{ChannelStats, StatsSnapshot, TransportStats};

use crate::tls::TlsConfig;
use conn::PeerConn;
use faults::FaultySocket;
use peer::PeerHandle;
use stats::bump;

/// Incoming unidirectional streams a peer may have open at once (delta batches in flight).
const MAX_INCOMING_UNI_STREAMS: u32 = 128;
/// Incoming bidirectional streams a peer may have open at once (normally one: anti-entropy).
const MAX_INCOMING_BI_STREAMS: u32 = 4;

/// The three kinds of traffic, each with its own queue per peer and its own QUIC mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// SWIM membership messages: datagrams, loss-tolerant.
    Membership,
    /// Delta dissemination: reliable, on unidirectional streams.
    Delta,
    /// Anti-entropy exchanges: reliable, on the bidirectional stream of the connection.
    Sync,
}

impl Channel {
    /// Every channel, in queue order.
    pub const ALL: [Channel; 3] = [Channel::Membership, Channel::Delta, Channel::Sync];

    fn index(self) -> usize {
        match self {
            Channel::Membership => 0,
            Channel::Delta => 1,
            Channel::Sync => 2,
        }
    }

    /// The byte that opens a stream of this channel on the wire (0 is never valid).
    pub(crate) fn tag(self) -> u8 {
        match self {
            Channel::Membership => 1,
            Channel::Delta => 2,
            Channel::Sync => 3,
        }
    }

    fn tag_bytes(self) -> Bytes {
        match self {
            Channel::Membership => Bytes::from_static(&[1]),
            Channel::Delta => Bytes::from_static(&[2]),
            Channel::Sync => Bytes::from_static(&[3]),
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        Channel::ALL.into_iter().find(|c| c.tag() == tag)
    }
}

/// A frame received from a peer.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The peer's gossip address (its listening address), usable with [`Transport::send`].
    pub from: SocketAddr,
    /// The node id the peer's certificate names (unauthenticated in insecure-dev mode).
    pub node_id: Arc<str>,
    /// The channel it arrived on.
    pub channel: Channel,
    /// The frame's payload.
    pub bytes: Bytes,
}

/// What became of a frame handed to [`Transport::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for the peer; delivery is still not guaranteed.
    Queued,
    /// The peer's queue for that channel was full: dropped and counted (backpressure).
    Dropped,
    /// Larger than the maximum frame size: refused and counted.
    TooLarge,
    /// The transport is shutting down.
    Closed,
}

/// Limits and timers of a transport; [`TransportConfig::default`] suits a WAN mesh.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest frame payload sent or accepted, in bytes (at most `u32::MAX`). Default 4 MiB.
    pub max_frame_size: usize,
    /// Frames queued per peer and per channel before sends are dropped. Default 1024.
    pub peer_queue_capacity: usize,
    /// Frames received but not yet taken by the application. Default 8192.
    pub inbound_queue_capacity: usize,
    /// First reconnect delay. Default 50 ms.
    pub backoff_min: Duration,
    /// Largest reconnect delay; a connection that lived this long resets the backoff. Default 5 s.
    pub backoff_max: Duration,
    /// Give up a dial whose handshake takes longer. Default 5 s.
    pub connect_timeout: Duration,
    /// Close a connection that heard nothing for this long. Default 10 s.
    pub idle_timeout: Duration,
    /// Ping an idle connection this often, so it stays open and a dead peer is noticed.
    /// Default 2 s.
    pub keep_alive_interval: Duration,
    /// How long [`Transport::shutdown`] waits for queued frames to go out and connections to
    /// close. Default 2 s.
    pub shutdown_timeout: Duration,
    /// UDP receive and send buffer asked of the kernel, in bytes (Linux caps it at
    /// `net.core.rmem_max` / `wmem_max`). Default 4 MiB: with the kernel's default of about
    /// 208 KiB a loaded node's socket overflows, and every dropped datagram costs QUIC a loss
    /// recovery that stalls the stream behind it (BENCHMARKS "mesh-node").
    pub socket_buffer_size: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_frame_size: 4 << 20,
            peer_queue_capacity: 1024,
            inbound_queue_capacity: 8192,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(2),
            socket_buffer_size: 4 << 20,
        }
    }
}

impl TransportConfig {
    fn validate(&self) -> Result<(), TransportError> {
        let invalid = |msg: &str| Err(TransportError::Config(msg.to_owned()));
        if self.max_frame_size == 0 || u32::try_from(self.max_frame_size).is_err() {
            return invalid("max_frame_size must be between 1 and u32::MAX");
        }
        if self.peer_queue_capacity == 0 || self.inbound_queue_capacity == 0 {
            return invalid("queue capacities must be at least 1");
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return invalid("backoff_min must be positive and at most backoff_max");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout must be positive");
        }
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval >= self.idle_timeout {
            return invalid("keep_alive_interval must be positive and below idle_timeout");
        }
        Ok(())
    }
}

/// Errors from binding a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration is inconsistent.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// The socket could not be bound or set up.
    #[error("cannot bind: {0}")]
    Io(#[from] io::Error),
    /// The TLS configuration lacks the cipher suite QUIC needs for its initial packets.
    #[error("tls configuration unusable for QUIC: {0}")]
    Tls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// State shared by the handle, the accept loop and every per-peer and per-connection task.
pub(crate) struct Shared {
    endpoint: quinn::Endpoint,
    pub(crate) config: TransportConfig,
    pub(crate) local_node_id: Arc<str>,
    pub(crate) stats: Arc<TransportStats>,
    faults: Arc<Faults>,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    peers: RwLock<HashMap<SocketAddr, PeerHandle>>,
    /// Set first on shutdown: no new sends, no new peers.
    closing: AtomicBool,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Seeds each link's backoff jitter differently.
    seeds: std::collections::hash_map::RandomState,
}

impl Shared {
    /// The handle on `addr`'s link, created if new; `None` while shutting down.
    fn with_link<R>(
        self: &Arc<Self>,
        addr: SocketAddr,
        f: impl FnOnce(&PeerHandle) -> R,
    ) -> Option<R> {
        {
            let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(handle) = peers.get(&addr) {
                return Some(f(handle));
            }
        }
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that shutdown takes to drain the map, so no link outlives it.
        if self.closing.load(Ordering::SeqCst) {
            return None;
        }
        let handle = peers.entry(addr).or_insert_with(|| {
            let mut hasher = self.seeds.build_hasher();
            hasher.write(addr.to_string().as_bytes());
            PeerHandle::spawn(self, addr, hasher.finish())
        });
        Some(f(handle))
    }

    /// Stops everything at once (no draining): used when the last handle is dropped.
    fn abort(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let peers =
            std::mem::take(&mut *self.peers.write().unwrap_or_else(PoisonError::into_inner));
        for (_, handle) in peers {
            handle.link.retire();
        }
        self.endpoint.close(frame::CLOSE_SHUTDOWN, b"shutdown");
    }
}

/// Closes the endpoint when the last [`Transport`] clone is dropped without `shutdown`.
struct DropGuard(Arc<Shared>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A node's QUIC transport: cheap to clone, every clone drives the same endpoint.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.local_addr())
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds a UDP socket on `addr` and starts accepting peers; returns the transport and the
    /// queue of frames received from peers. Must be called within a tokio runtime.
    ///
    /// If the receiver is dropped, incoming frames are discarded.
    pub async fn bind(
        addr: SocketAddr,
        tls: TlsConfig,
        config: TransportConfig,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        config.validate()?;
        let quic = quic_transport_config(&config)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(tls.server_config())?,
        ));
        server_config.transport_config(quic.clone());
        server_config.migration(false);
        let mut client_config =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls.client_config())?));
        client_config.transport_config(quic);

        let stats = Arc::new(TransportStats::default());
        let faults = Arc::new(Faults::default());
        let socket = bind_udp(addr, config.socket_buffer_size)?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let socket = Arc::new(FaultySocket {
            inner: runtime.wrap_udp_socket(socket)?,
            faults: faults.clone(),
            stats: stats.clone(),
        });
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            runtime,
        )?;
        endpoint.set_default_client_config(client_config);

        let (inbound, inbound_rx) = mpsc::channel(config.inbound_queue_capacity);
        let shared = Arc::new(Shared {
            endpoint,
            config,
            local_node_id: tls.node_id().into(),
            stats,
            faults,
            inbound,
            peers: RwLock::new(HashMap::new()),
            closing: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
            seeds: Default::default(),
        });
        shared.runtime.spawn(accept_loop(shared.clone()));
        if tls.is_insecure() {
            warn!(node_id = %shared.local_node_id, "transport running in INSECURE dev mode: peers are not authenticated");
        }
        let transport = Self {
            _guard: Arc::new(DropGuard(shared.clone())),
            shared,
        };
        info!(addr = %transport.local_addr(), node_id = %transport.node_id(), "transport bound");
        Ok((transport, inbound_rx))
    }

    /// The bound address (with the actual port when bound to port 0): this node's gossip address.
    pub fn local_addr(&self) -> SocketAddr {
        // The endpoint holds the socket for its whole life; the fallback is unreachable.
        self.shared
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// This node's id, as its certificate names it.
    pub fn node_id(&self) -> &str {
        &self.shared.local_node_id
    }

    /// Enqueues `bytes` for the peer at `to` on `channel`, without waiting.
    ///
    /// `expected_node_id`, if given, is the node that must be at `to`: a dial verifies it in
    /// the TLS handshake, and a connection from any other node is not used to send. The first
    /// send to an address starts its connection; frames wait in the peer's bounded queue until
    /// it is up, and a full queue drops.
    pub fn send(
        &self,
        to: SocketAddr,
        expected_node_id: Option<&str>,
        channel: Channel,
        bytes: Bytes,
    ) -> SendOutcome {
        let shared = &self.shared;
        if shared.closing.load(Ordering::Relaxed) {
            return SendOutcome::Closed;
        }
        if bytes.len() > shared.config.max_frame_size {
            bump(&shared.stats.refused_too_large);
            return SendOutcome::TooLarge;
        }
        let outcome = shared.with_link(canonical(to), |handle| {
            if let Some(node_id) = expected_node_id {
                handle.link.expect(node_id);
            }
            handle.enqueue(channel, bytes)
        });
        let outcome = outcome.unwrap_or(SendOutcome::Closed);
        if outcome == SendOutcome::Dropped {
            bump(&shared.stats.dropped_queue_full);
        }
        outcome
    }

    /// The peers this node currently has a connection to send on: (gossip address, node id).
    pub fn connected_peers(&self) -> Vec<(SocketAddr, Arc<str>)> {
        let peers = self
            .shared
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut connected: Vec<_> = peers
            .values()
            .filter_map(|handle| handle.link.current())
            .map(|pc| (pc.addr, pc.node_id.clone()))
            .collect();
        connected.sort();
        connected
    }

    /// Drops the queues and connection of a peer that left the cluster, and stops dialing it.
    /// A later send or incoming connection starts afresh.
    pub fn forget(&self, peer: SocketAddr) {
        let removed = self
            .shared
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&canonical(peer));
        if let Some(handle) = removed {
            let (link, _writers) = handle.close_queues();
            if let Some(pc) = link.current() {
                pc.conn.close(frame::CLOSE_SHUTDOWN, b"forgotten");
            }
            link.retire();
        }
    }

    /// Frames received and not yet taken by the engine (a gauge, for metrics).
    pub fn inbound_queue_depth(&self) -> usize {
        let queue = &self.shared.inbound;
        queue.max_capacity() - queue.capacity()
    }

    /// Frames waiting to be written on `channel`, summed over every peer (a gauge, for
    /// metrics).
    pub fn outbound_queue_depth(&self, channel: Channel) -> usize {
        self.shared
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|handle| handle.queued(channel))
            .sum()
    }

    /// The transport's live counters.
    pub fn stats(&self) -> &TransportStats {
        &self.shared.stats
    }

    /// **Fault injection, for tests only**: the switchboard that partitions this node from
    /// chosen peers by dropping their UDP packets both ways.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Stops the transport gracefully: refuses new sends, lets each writer flush its queue,
    /// closes every connection and waits for the peers to acknowledge the close, all within
    /// [`TransportConfig::shutdown_timeout`]. Frames still queued after that are lost.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        if shared.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        let deadline = Instant::now() + shared.config.shutdown_timeout;
        let handles: Vec<PeerHandle> = shared
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, handle)| handle)
            .collect();
        let mut links = Vec::with_capacity(handles.len());
        let mut writers = Vec::new();
        for handle in handles {
            let (link, tasks) = handle.close_queues();
            links.push(link);
            writers.extend(tasks);
        }
        for writer in writers {
            if tokio::time::timeout_at(deadline, writer).await.is_err() {
                debug!("shutdown deadline reached with frames still queued");
                break;
            }
        }
        for link in &links {
            link.retire();
        }
        shared.endpoint.close(frame::CLOSE_SHUTDOWN, b"shutdown");
        let grace = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        if tokio::time::timeout(grace, shared.endpoint.wait_idle())
            .await
            .is_err()
        {
            debug!("connections still closing at shutdown deadline");
        }
        info!(addr = %self.local_addr(), node_id = %self.node_id(), "transport shut down");
    }
}

/// A non-blocking UDP socket on `addr` whose kernel buffers were asked to hold `buffer` bytes.
/// The kernel may grant less (its maximum); the sizes granted are logged.
fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(buffer)),
        ("send", socket.set_send_buffer_size(buffer)),
    ] {
        if let Err(error) = result {
            warn!(%addr, %error, requested = buffer, "cannot size the UDP {what} buffer");
        }
    }
    debug!(
        %addr,
        requested = buffer,
        receive = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The QUIC limits shared by both roles.
fn quic_transport_config(
    config: &TransportConfig,
) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let idle = IdleTimeout::try_from(config.idle_timeout)
        .map_err(|_| TransportError::Config("idle_timeout is too large".into()))?;
    let mut quic = quinn::TransportConfig::default();
    quic.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.keep_alive_interval))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_INCOMING_UNI_STREAMS))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_INCOMING_BI_STREAMS));
    Ok(Arc::new(quic))
}

/// Accepts incoming connections until the endpoint closes.
async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.closing.load(Ordering::Relaxed) {
            incoming.refuse();
            continue;
        }
        shared
            .runtime
            .spawn(accept_connection(shared.clone(), incoming));
    }
}

/// Completes one incoming handshake, starts reading the connection, and offers it to the
/// peer's link so replies can reuse it.
async fn accept_connection(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let addr = canonical(incoming.remote_address());
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(error) => {
            bump(&shared.stats.handshake_failures);
            warn!(peer = %addr, %error, "refused incoming connection: handshake failed");
            return;
        }
    };
    let pc = match PeerConn::new(conn.clone(), addr, false, &shared.local_node_id) {
        Ok(pc) => Arc::new(pc),
        Err(error) => {
            bump(&shared.stats.handshake_failures);
            warn!(peer = %addr, %error, "refused incoming connection: no node identity");
            conn.close(frame::CLOSE_NO_IDENTITY, b"no node identity");
            return;
        }
    };
    bump(&shared.stats.connections_accepted);
    info!(peer = %addr, node_id = %pc.node_id, "accepted peer connection");
    conn::serve(&shared, pc.clone());
    shared.with_link(addr, |handle| handle.link.offer(pc));
}

/// The canonical form of an address, so a v4-mapped v6 address and its v4 form are one peer.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
