//! Outgoing traffic to one peer address: its bounded send queues, the connection they use, and
//! the dialer that (re)establishes that connection with backoff. It reads nothing from the
//! network (that is `conn`).
//!
//! Per peer there are three queues, one per channel, each drained by its own writer task, so a
//! membership probe never waits behind a large delta or an anti-entropy exchange. A dial happens
//! only when a writer holds a frame and there is no live connection: idle peers cost nothing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use quinn::{ConnectionError, SendDatagramError, SendStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::conn::{self, PeerConn, is_identity_rejection};
use super::frame;
use super::stats::{add, bump};
use super::{Channel, SendOutcome, Shared};
use crate::tls::{self, TlsError};

/// Frames a writer coalesces into one stream write when its queue has a backlog.
const MAX_BATCH_FRAMES: usize = 64;
/// Payload bytes a writer coalesces into one stream write.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The transport's handle on one peer: the sending ends of its queues and its writer tasks.
pub(crate) struct PeerHandle {
    queues: [mpsc::Sender<Bytes>; 3],
    pub(crate) link: Arc<PeerLink>,
    writers: Vec<JoinHandle<()>>,
}

impl PeerHandle {
    /// Creates the link to `addr` and spawns its dialer and writers.
    pub(crate) fn spawn(shared: &Arc<Shared>, addr: SocketAddr, seed: u64) -> Self {
        let (current, _) = watch::channel(None);
        let (state, _) = watch::channel(LinkState::Open);
        let link = Arc::new(PeerLink {
            addr,
            expected: Mutex::new(None),
            current,
            want: Notify::new(),
            state,
        });
        let capacity = shared.config.peer_queue_capacity;
        let mut writers = Vec::with_capacity(Channel::ALL.len());
        let queues = Channel::ALL.map(|channel| {
            let (tx, rx) = mpsc::channel(capacity);
            let task = run_writer(shared.clone(), link.clone(), channel, rx);
            writers.push(shared.runtime.spawn(task));
            tx
        });
        shared
            .runtime
            .spawn(run_connector(shared.clone(), link.clone(), seed));
        Self {
            queues,
            link,
            writers,
        }
    }

    /// Enqueues a frame without waiting; a full queue drops it.
    pub(crate) fn enqueue(&self, channel: Channel, bytes: Bytes) -> SendOutcome {
        match self.queues[channel.index()].try_send(bytes) {
            Ok(()) => SendOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => SendOutcome::Dropped,
            Err(mpsc::error::TrySendError::Closed(_)) => SendOutcome::Closed,
        }
    }

    /// Frames waiting in this peer's queue for `channel` (for metrics).
    pub(crate) fn queued(&self, channel: Channel) -> usize {
        let queue = &self.queues[channel.index()];
        queue.max_capacity() - queue.capacity()
    }

    /// Closes the queues and puts the link in [`LinkState::Draining`]; returns the writer
    /// tasks, which finish once they have written (or given up on) what was queued.
    pub(crate) fn close_queues(self) -> (Arc<PeerLink>, Vec<JoinHandle<()>>) {
        self.link.state.send_if_modified(|state| {
            let open = *state == LinkState::Open;
            if open {
                *state = LinkState::Draining;
            }
            open
        });
        (self.link, self.writers)
    }
}

/// The life of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Sending and dialing as needed.
    Open,
    /// Queues closed: writers flush what is queued; the dialer completes a dial in progress but
    /// retries nothing, and retires the link once it cannot connect.
    Draining,
    /// Every task of the link stops; frames still held are lost.
    Retired,
}

/// What the dialer, the writers and the acceptor share about one peer address.
pub(crate) struct PeerLink {
    pub(crate) addr: SocketAddr,
    /// The node id senders last said should be at this address, if any.
    expected: Mutex<Option<Arc<str>>>,
    /// The connection outgoing traffic uses, dialed or accepted.
    current: watch::Sender<Option<Arc<PeerConn>>>,
    /// A writer has a frame and no live connection.
    want: Notify,
    /// Open, draining or retired (peer forgotten or transport shut down).
    state: watch::Sender<LinkState>,
}

impl PeerLink {
    /// Records that `node_id` should be at this address: connections naming another node are
    /// no longer used to send, and the next dial verifies this id in the handshake.
    pub(crate) fn expect(&self, node_id: &str) {
        let mut expected = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        if expected.as_deref() != Some(node_id) {
            *expected = Some(node_id.into());
        }
    }

    fn expected(&self) -> Option<Arc<str>> {
        self.expected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `pc` is the node senders expect here (or nothing in particular is expected).
    fn accepts(&self, pc: &PeerConn) -> bool {
        self.expected().is_none_or(|id| id == pc.node_id)
    }

    /// The live connection outgoing traffic uses, if any.
    pub(crate) fn current(&self) -> Option<Arc<PeerConn>> {
        self.current
            .borrow()
            .as_ref()
            .filter(|pc| pc.is_alive())
            .cloned()
    }

    /// Offers a new connection for outgoing traffic. It is taken if there is no live one, or if
    /// it is the preferred one of a simultaneous-dial pair; a displaced connection that is not
    /// preferred is closed, so both ends settle on the same connection. A refused newcomer is
    /// left open: the peer may be sending on it.
    pub(crate) fn offer(&self, pc: Arc<PeerConn>) {
        if !self.accepts(&pc) {
            debug!(peer = %self.addr, node_id = %pc.node_id, expected = ?self.expected(),
                "not sending on a connection from an unexpected node");
            return;
        }
        let mut displaced = None;
        self.current.send_if_modified(|current| {
            let keep_current = current
                .as_ref()
                .filter(|c| c.is_alive())
                .is_some_and(|c| c.preferred || !pc.preferred);
            if keep_current {
                return false;
            }
            displaced = current.replace(pc.clone());
            true
        });
        if let Some(old) = displaced.filter(|old| old.is_alive() && !old.preferred) {
            old.conn
                .close(frame::CLOSE_DUPLICATE, b"duplicate connection");
        }
    }

    /// Forgets `pc` as the outgoing connection if it still is.
    fn clear_if(&self, pc: &Arc<PeerConn>) {
        self.current.send_if_modified(|current| {
            let same = current.as_ref().is_some_and(|c| Arc::ptr_eq(c, pc));
            if same {
                *current = None;
            }
            same
        });
    }

    /// Retires the link: its tasks stop and its connection is no longer used to send.
    pub(crate) fn retire(&self) {
        self.state.send_replace(LinkState::Retired);
    }

    /// Waits for a live connection, asking the dialer for one; `None` once the link is retired.
    async fn connection(&self) -> Option<Arc<PeerConn>> {
        let mut current = self.current.subscribe();
        let mut state = self.state.subscribe();
        loop {
            if *state.borrow_and_update() == LinkState::Retired {
                return None;
            }
            let live = current
                .borrow_and_update()
                .as_ref()
                .filter(|pc| pc.is_alive())
                .cloned();
            if live.is_some() {
                return live;
            }
            self.want.notify_one();
            tokio::select! {
                changed = current.changed() => if changed.is_err() { return None },
                _ = state.changed() => {}
            }
        }
    }
}

/// Why a frame batch could not be handed to QUIC.
#[derive(Debug, thiserror::Error)]
enum WriteFailure {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Closed(#[from] quinn::ClosedStream),
    #[error("link retired")]
    Retired,
}

/// Drains one channel's queue to the peer, coalescing backlog into one stream write.
async fn run_writer(
    shared: Arc<Shared>,
    link: Arc<PeerLink>,
    channel: Channel,
    mut queue: mpsc::Receiver<Bytes>,
) {
    let counters = shared.stats.channel(channel);
    let mut batch = Vec::new();
    let mut last_stream: Option<SendStream> = None;
    while let Some(first) = queue.recv().await {
        batch.clear();
        batch.push(first);
        if channel != Channel::Membership {
            let mut bytes = batch[0].len();
            while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
                let Ok(next) = queue.try_recv() else { break };
                bytes += next.len();
                batch.push(next);
            }
        }
        let result = write_batch(&shared, &link, channel, &batch).await;
        match result {
            Ok(stream) => {
                batch.iter().for_each(|b| counters.sent(b.len()));
                last_stream = stream.or(last_stream);
            }
            Err(WriteFailure::Retired) => {
                add(&shared.stats.frames_lost, batch.len() + queue.len());
                return;
            }
            Err(error) => {
                add(&shared.stats.frames_lost, batch.len());
                debug!(peer = %link.addr, ?channel, frames = batch.len(), %error, "frames lost");
            }
        }
    }
    // The queue is closed and drained (shutdown): give the peer a bounded chance to acknowledge
    // the last stream before the endpoint closes.
    let mut state = link.state.subscribe();
    if let Some(stream) = last_stream {
        tokio::select! {
            _ = stream.stopped() => {}
            _ = state.wait_for(|s| *s == LinkState::Retired) => {}
        }
    }
    let sync_stream = match (channel, link.current()) {
        (Channel::Sync, Some(pc)) => pc.sync.lock().await.take(),
        _ => None,
    };
    if let Some(mut stream) = sync_stream {
        let _ = stream.finish();
        tokio::select! {
            _ = stream.stopped() => {}
            _ = state.wait_for(|s| *s == LinkState::Retired) => {}
        }
    }
}

/// Writes a batch on the peer's connection, per the channel's mapping onto QUIC; returns the
/// finished unidirectional stream, if one was used.
async fn write_batch(
    shared: &Arc<Shared>,
    link: &PeerLink,
    channel: Channel,
    batch: &[Bytes],
) -> Result<Option<SendStream>, WriteFailure> {
    let pc = link.connection().await.ok_or(WriteFailure::Retired)?;
    if !link.accepts(&pc) {
        warn!(peer = %link.addr, node_id = %pc.node_id, expected = ?link.expected(),
            "peer is not the expected node; closing the connection");
        bump(&shared.stats.handshake_failures);
        pc.conn
            .close(frame::CLOSE_WRONG_NODE, b"unexpected node id");
        link.clear_if(&pc);
        return Err(ConnectionError::LocallyClosed.into());
    }
    match channel {
        Channel::Membership => send_membership(shared, &pc, batch).await,
        Channel::Delta => send_uni(&pc, Channel::Delta, batch).await.map(Some),
        Channel::Sync => send_sync(shared, &pc, batch).await.map(|()| None),
    }
}

/// A membership message goes as a datagram, or on its own stream if it does not fit in one.
async fn send_membership(
    shared: &Shared,
    pc: &PeerConn,
    batch: &[Bytes],
) -> Result<Option<SendStream>, WriteFailure> {
    for payload in batch {
        let fits = pc
            .conn
            .max_datagram_size()
            .is_some_and(|max| payload.len() <= max);
        if fits {
            match pc.conn.send_datagram(payload.clone()) {
                Ok(()) => continue,
                Err(SendDatagramError::ConnectionLost(e)) => return Err(e.into()),
                Err(_) => {}
            }
        }
        bump(&shared.stats.datagram_fallbacks);
        send_uni(pc, Channel::Membership, std::slice::from_ref(payload)).await?;
    }
    Ok(None)
}

/// Opens a unidirectional stream, writes the channel tag and the frames, and finishes it.
async fn send_uni(
    pc: &PeerConn,
    channel: Channel,
    batch: &[Bytes],
) -> Result<SendStream, WriteFailure> {
    let mut stream = pc.conn.open_uni().await?;
    let mut chunks = Vec::with_capacity(1 + 2 * batch.len());
    chunks.push(channel.tag_bytes());
    frame::encode_frames(&mut chunks, batch.iter());
    stream.write_all_chunks(&mut chunks).await?;
    stream.finish()?;
    Ok(stream)
}

/// Writes frames on the connection's anti-entropy stream, opening it (and a reader for the
/// peer's answers on it) the first time.
async fn send_sync(
    shared: &Arc<Shared>,
    pc: &Arc<PeerConn>,
    batch: &[Bytes],
) -> Result<(), WriteFailure> {
    let mut slot = pc.sync.lock().await;
    if slot.is_none() {
        let (mut send, recv) = pc.conn.open_bi().await?;
        send.write_all(&[Channel::Sync.tag()]).await?;
        shared
            .runtime
            .spawn(conn::read_stream(shared.clone(), pc.clone(), recv, true));
        *slot = Some(send);
    }
    let Some(stream) = slot.as_mut() else {
        return Err(ConnectionError::LocallyClosed.into());
    };
    let mut chunks = Vec::with_capacity(2 * batch.len());
    frame::encode_frames(&mut chunks, batch.iter());
    if let Err(error) = stream.write_all_chunks(&mut chunks).await {
        // The next batch opens a fresh stream.
        *slot = None;
        return Err(error.into());
    }
    Ok(())
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("cannot dial: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("handshake timed out")]
    Timeout,
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("peer has no usable node identity: {0}")]
    Identity(#[from] TlsError),
    #[error("peer is node {presented:?}, expected {expected:?}")]
    WrongNode {
        expected: Arc<str>,
        presented: Arc<str>,
    },
}

impl DialError {
    /// Whether the peer was refused, or refused us, over identity rather than reachability.
    fn is_identity(&self) -> bool {
        match self {
            Self::Connection(e) => is_identity_rejection(e),
            Self::Identity(_) | Self::WrongNode { .. } => true,
            Self::Connect(_) | Self::Timeout => false,
        }
    }
}

/// Dials the peer, verifying in the handshake that it is the expected node if one is expected.
async fn dial(shared: &Shared, link: &PeerLink) -> Result<Arc<PeerConn>, DialError> {
    let expected = link.expected();
    let server_name = expected.as_deref().unwrap_or(tls::ANY_NODE);
    let connecting = shared.endpoint.connect(link.addr, server_name)?;
    let conn = tokio::time::timeout(shared.config.connect_timeout, connecting)
        .await
        .map_err(|_| DialError::Timeout)??;
    let pc = PeerConn::new(conn.clone(), link.addr, true, &shared.local_node_id)
        .inspect_err(|_| conn.close(frame::CLOSE_NO_IDENTITY, b"no node identity"))?;
    // The TLS verifier already checked this in cluster mode; insecure-dev relies on this check.
    if let Some(expected) = expected.filter(|id| *id != pc.node_id) {
        conn.close(frame::CLOSE_WRONG_NODE, b"unexpected node id");
        return Err(DialError::WrongNode {
            expected,
            presented: pc.node_id.clone(),
        });
    }
    Ok(Arc::new(pc))
}

/// Keeps the link connected while writers want it: dials on demand, waits out a backoff after a
/// failed dial or a lost connection, and watches the current connection until it closes. While
/// draining it retries nothing: once it cannot connect, it retires the link so writers give up.
async fn run_connector(shared: Arc<Shared>, link: Arc<PeerLink>, seed: u64) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max, seed);
    let mut retry_after: Option<Duration> = None;
    let mut current = link.current.subscribe();
    let mut state = link.state.subscribe();
    loop {
        let live = current
            .borrow_and_update()
            .as_ref()
            .filter(|pc| pc.is_alive())
            .cloned();
        if let Some(pc) = live {
            let reason = tokio::select! {
                reason = pc.conn.closed() => reason,
                changed = current.changed() => {
                    if changed.is_err() { return }
                    continue;
                }
                _ = state.wait_for(|s| *s == LinkState::Retired) => return,
            };
            link.clear_if(&pc);
            if *state.borrow() == LinkState::Retired {
                return;
            }
            retry_after = Some(connection_lost(&shared, &link, &pc, &reason, &mut backoff));
            continue;
        }

        // Copied out: the borrow must not be held while `retire` writes the state.
        let link_state = *state.borrow_and_update();
        match link_state {
            LinkState::Open => {}
            LinkState::Draining if retry_after.is_none() => {}
            LinkState::Draining | LinkState::Retired => {
                link.retire();
                return;
            }
        }
        tokio::select! {
            _ = link.want.notified() => {}
            changed = current.changed() => {
                if changed.is_err() { return }
                continue;
            }
            changed = state.changed() => {
                if changed.is_err() { return }
                continue;
            }
        }
        if let Some(delay) = retry_after.take() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                changed = state.changed() => {
                    if changed.is_err() { return }
                    // Draining or retired: the loop head gives up.
                    retry_after = Some(Duration::ZERO);
                    continue;
                }
            }
            if link.current().is_some() {
                continue;
            }
            bump(&shared.stats.reconnects);
        }
        match dial(&shared, &link).await {
            Ok(pc) => {
                bump(&shared.stats.connections_dialed);
                info!(peer = %link.addr, node_id = %pc.node_id, "connected to peer");
                conn::serve(&shared, pc.clone());
                link.offer(pc);
            }
            Err(error) => {
                let counter = match error.is_identity() {
                    true => &shared.stats.handshake_failures,
                    false => &shared.stats.dial_failures,
                };
                bump(counter);
                let delay = backoff.next_delay();
                warn!(peer = %link.addr, expected_node_id = ?link.expected(), %error,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "dial failed");
                retry_after = Some(delay);
                // The writers that asked are still waiting.
                link.want.notify_one();
            }
        }
    }
}

/// Logs a lost connection and returns how long to wait before redialing: nothing after a
/// connection that proved stable, the next backoff step after one that died young.
fn connection_lost(
    shared: &Shared,
    link: &PeerLink,
    pc: &PeerConn,
    reason: &ConnectionError,
    backoff: &mut Backoff,
) -> Duration {
    let lived = pc.established.elapsed();
    if is_identity_rejection(reason) {
        // In TLS 1.3 a client learns that the server refused its certificate only after its
        // own handshake completed, so this is where that refusal shows up.
        bump(&shared.stats.handshake_failures);
        warn!(peer = %link.addr, node_id = %pc.node_id, %reason, "peer refused the connection");
    } else {
        info!(peer = %link.addr, node_id = %pc.node_id, %reason, outbound = pc.outbound,
            lived_ms = u64::try_from(lived.as_millis()).unwrap_or(u64::MAX),
            "connection to peer lost");
    }
    if lived >= shared.config.backoff_max {
        backoff.reset();
        Duration::ZERO
    } else {
        backoff.next_delay()
    }
}
