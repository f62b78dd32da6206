//! One established peer connection and everything read from it: datagrams, unidirectional and
//! bidirectional streams, turned into [`Inbound`] messages. It never dials and never decides
//! which connection a peer's outgoing traffic uses (that is `peer`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use tokio::sync::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, warn};

use super::frame::{self, FrameError};
use super::stats::bump;
use super::{Channel, Inbound, Shared};
use crate::tls::{self, TlsError};

/// An authenticated connection to a peer, shared by its readers and (if chosen) its writers.
#[derive(Debug)]
pub(crate) struct PeerConn {
    pub(crate) conn: Connection,
    /// The peer's gossip address: the address it listens on, which is also the source address
    /// of every connection it dials, since one endpoint serves both roles.
    pub(crate) addr: SocketAddr,
    /// The node id its certificate names.
    pub(crate) node_id: Arc<str>,
    /// Whether this node dialed it.
    pub(crate) outbound: bool,
    /// Whether this is the connection both ends prefer when there are two (simultaneous dials):
    /// the one dialed by the node with the smaller id.
    pub(crate) preferred: bool,
    pub(crate) established: Instant,
    /// This side's sending half of the anti-entropy stream, once opened or accepted.
    pub(crate) sync: Mutex<Option<SendStream>>,
}

impl PeerConn {
    /// Wraps a connection whose handshake completed, reading the peer's node id from its
    /// certificate.
    pub(crate) fn new(
        conn: Connection,
        addr: SocketAddr,
        outbound: bool,
        local_node_id: &str,
    ) -> Result<Self, TlsError> {
        let certs = conn
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or(TlsError::NoCertificate)?;
        let end_entity = certs.first().ok_or(TlsError::NoCertificate)?;
        let node_id: Arc<str> = tls::node_id_from_cert(end_entity)?.into();
        let preferred = match local_node_id.cmp(&node_id) {
            std::cmp::Ordering::Less => outbound,
            std::cmp::Ordering::Greater => !outbound,
            // Two nodes claiming one id (possible only in insecure-dev): no preference.
            std::cmp::Ordering::Equal => true,
        };
        Ok(Self {
            conn,
            addr,
            node_id,
            outbound,
            preferred,
            established: Instant::now(),
            sync: Mutex::new(None),
        })
    }

    /// Whether the connection is still open.
    pub(crate) fn is_alive(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

/// Whether a connection error means the peer was refused, or refused us, for its identity
/// (TLS alert, or our identity close codes) rather than for reachability.
pub(crate) fn is_identity_rejection(error: &ConnectionError) -> bool {
    let is_tls = |code: u64| (0x100..0x200).contains(&code);
    match error {
        ConnectionError::TransportError(e) => is_tls(e.code.into()),
        ConnectionError::ConnectionClosed(close) => is_tls(close.error_code.into()),
        ConnectionError::ApplicationClosed(close) => {
            close.error_code == frame::CLOSE_WRONG_NODE
                || close.error_code == frame::CLOSE_NO_IDENTITY
        }
        _ => false,
    }
}

/// Spawns the task that reads everything the peer sends on `pc` until it closes.
///
/// The three accept loops end independently: once the connection closes, streams the peer had
/// already sent in full can still be accepted and read to their end, so a peer's graceful
/// shutdown loses nothing it flushed.
pub(crate) fn serve(shared: &Arc<Shared>, pc: Arc<PeerConn>) {
    let shared = shared.clone();
    shared.runtime.clone().spawn(async move {
        let datagrams = async {
            while let Ok(bytes) = pc.conn.read_datagram().await {
                deliver_datagram(&shared, &pc, bytes);
            }
        };
        let unis = async {
            while let Ok(recv) = pc.conn.accept_uni().await {
                let task = read_stream(shared.clone(), pc.clone(), recv, false);
                shared.runtime.spawn(task);
            }
        };
        let bis = async {
            while let Ok((send, recv)) = pc.conn.accept_bi().await {
                let task = accept_sync(shared.clone(), pc.clone(), send, recv);
                shared.runtime.spawn(task);
            }
        };
        tokio::join!(datagrams, unis, bis);
        debug!(peer = %pc.addr, node_id = %pc.node_id, "connection reader finished");
    });
}

/// A membership datagram: delivered if the inbound queue has room, else dropped and counted
/// (datagrams are unreliable anyway, and a reader must not stall the connection).
fn deliver_datagram(shared: &Shared, pc: &PeerConn, bytes: Bytes) {
    if bytes.len() > shared.config.max_frame_size {
        bump(&shared.stats.frames_oversized);
        warn!(peer = %pc.addr, node_id = %pc.node_id, len = bytes.len(), "oversized datagram dropped");
        return;
    }
    let len = bytes.len();
    match shared
        .inbound
        .try_send(inbound(pc, Channel::Membership, bytes))
    {
        Ok(()) => shared.stats.membership.received(len),
        Err(TrySendError::Full(_)) => bump(&shared.stats.inbound_dropped),
        Err(TrySendError::Closed(_)) => {}
    }
}

fn inbound(pc: &PeerConn, channel: Channel, bytes: Bytes) -> Inbound {
    Inbound {
        from: pc.addr,
        node_id: pc.node_id.clone(),
        channel,
        bytes,
    }
}

/// The peer opened an anti-entropy stream: read it, and answer on it if this side has no
/// anti-entropy stream on this connection yet (so one stream carries both directions).
async fn accept_sync(
    shared: Arc<Shared>,
    pc: Arc<PeerConn>,
    mut send: SendStream,
    recv: RecvStream,
) {
    {
        let mut slot = pc.sync.lock().await;
        if slot.is_none() && send.write_all(&[Channel::Sync.tag()]).await.is_ok() {
            *slot = Some(send);
        } else {
            let _ = send.finish();
        }
    }
    read_stream(shared, pc, recv, true).await;
}

/// Reads one stream to its end, delivering each frame; a bad frame stops the stream and is
/// counted, and never affects the connection or other streams.
pub(crate) async fn read_stream(
    shared: Arc<Shared>,
    pc: Arc<PeerConn>,
    mut recv: RecvStream,
    bidirectional: bool,
) {
    let result = read_frames(&shared, &pc, &mut recv, bidirectional).await;
    let Err(error) = result else { return };
    let code = match &error {
        FrameError::Oversized { .. } => {
            bump(&shared.stats.frames_oversized);
            frame::STOP_OVERSIZED
        }
        e if e.is_malformed() => {
            bump(&shared.stats.frames_malformed);
            frame::STOP_MALFORMED
        }
        _ => {
            debug!(peer = %pc.addr, node_id = %pc.node_id, %error, "stream read ended");
            return;
        }
    };
    warn!(peer = %pc.addr, node_id = %pc.node_id, %error, "refusing stream");
    let _ = recv.stop(code);
}

async fn read_frames(
    shared: &Shared,
    pc: &PeerConn,
    recv: &mut RecvStream,
    bidirectional: bool,
) -> Result<(), FrameError> {
    let Some(channel) = frame::read_tag(recv).await? else {
        return Ok(());
    };
    match (channel, bidirectional) {
        (Channel::Sync, true) | (Channel::Membership | Channel::Delta, false) => {}
        (channel, true) => return Err(FrameError::WrongStream(channel, "bidirectional")),
        (channel, false) => return Err(FrameError::WrongStream(channel, "unidirectional")),
    }
    let counters = shared.stats.channel(channel);
    while let Some(bytes) = frame::read_frame(recv, shared.config.max_frame_size).await? {
        let len = bytes.len();
        // Awaiting here is the backpressure: a slow consumer stops reading, QUIC flow control
        // stops the peer's writer, and the peer's bounded queue starts dropping.
        if shared
            .inbound
            .send(inbound(pc, channel, bytes))
            .await
            .is_err()
        {
            return Ok(());
        }
        counters.received(len);
    }
    Ok(())
}
