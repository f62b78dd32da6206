//! Fault injection for tests: a partition switchboard and the UDP socket wrapper that obeys it.
//! It drops packets only; it never reorders, delays or corrupts them.
//!
//! Dropping whole UDP packets (rather than frames) makes a blocked peer look exactly like a
//! network partition to QUIC: retransmissions, idle timeouts and reconnects all happen for real.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use super::canonical;
use super::stats::{TransportStats, bump};

/// Which peers are cut off from this node. **For fault injection in tests only.**
///
/// Blocking a peer drops every UDP packet to and from its address, in both directions, on this
/// node. Blocking on one node is enough to partition a pair.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fast path: false while nothing is blocked, so healthy nodes never take the lock.
    active: AtomicBool,
    all: AtomicBool,
    blocked: RwLock<HashSet<SocketAddr>>,
}

impl Faults {
    /// Cuts this node off from `peer` (its gossip address) until [`Faults::unblock`] or
    /// [`Faults::heal`].
    pub fn block(&self, peer: SocketAddr) {
        self.update(|set| {
            set.insert(canonical(peer));
        });
    }

    /// Reconnects this node to `peer`; a [`Faults::block_all`] stays in force.
    pub fn unblock(&self, peer: SocketAddr) {
        self.update(|set| {
            set.remove(&canonical(peer));
        });
    }

    /// Cuts this node off from every peer.
    pub fn block_all(&self) {
        self.all.store(true, Ordering::SeqCst);
        self.update(|_| {});
    }

    /// Lifts every block.
    pub fn heal(&self) {
        self.all.store(false, Ordering::SeqCst);
        self.update(HashSet::clear);
    }

    /// Whether packets to or from `peer` are currently dropped.
    pub fn is_blocked(&self, peer: SocketAddr) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        self.all.load(Ordering::Acquire)
            || self
                .blocked
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&canonical(peer))
    }

    fn update(&self, change: impl FnOnce(&mut HashSet<SocketAddr>)) {
        let mut set = self.blocked.write().unwrap_or_else(PoisonError::into_inner);
        change(&mut set);
        let active = self.all.load(Ordering::SeqCst) || !set.is_empty();
        self.active.store(active, Ordering::Release);
    }
}

/// A UDP socket that drops the packets [`Faults`] says to, and passes everything else through.
pub(crate) struct FaultySocket {
    pub(crate) inner: Arc<dyn AsyncUdpSocket>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) stats: Arc<TransportStats>,
}

impl fmt::Debug for FaultySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultySocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.faults.is_blocked(transmit.destination) {
            // Report success: a partitioned network does not tell the sender either.
            bump(&self.stats.fault_dropped_packets);
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let received = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let kept = self.drop_blocked(&mut bufs[..received], &mut meta[..received]);
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything was dropped: poll again, which either yields more packets or registers
            // the waker and returns Pending.
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

impl FaultySocket {
    /// Compacts received packets in place, keeping those from unblocked peers; returns how many
    /// remain at the front of `bufs` and `meta`.
    fn drop_blocked(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut kept = 0;
        for i in 0..meta.len() {
            if self.faults.is_blocked(meta[i].addr) {
                bump(&self.stats.fault_dropped_packets);
                continue;
            }
            if kept != i {
                let len = meta[i].len;
                let (front, back) = bufs.split_at_mut(i);
                let (Some(dst), Some(src)) = (front[kept].get_mut(..len), back[0].get(..len))
                else {
                    // Buffers of unequal size (never the case in quinn): drop the packet.
                    bump(&self.stats.fault_dropped_packets);
                    continue;
                };
                dst.copy_from_slice(src);
                meta[kept] = meta[i];
            }
            kept += 1;
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_unblock_heal() {
        let faults = Faults::default();
        let a: SocketAddr = "127.0.0.1:1000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2000".parse().expect("addr");
        assert!(!faults.is_blocked(a));
        faults.block(a);
        assert!(faults.is_blocked(a) && !faults.is_blocked(b));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1000".parse().expect("addr");
        assert!(faults.is_blocked(mapped), "v4-mapped v6 is the same peer");
        faults.unblock(a);
        assert!(!faults.is_blocked(a));
        faults.block_all();
        faults.unblock(b);
        assert!(faults.is_blocked(a) && faults.is_blocked(b));
        faults.heal();
        assert!(!faults.is_blocked(a) && !faults.is_blocked(b));
    }
}
