//! Who is in the cluster: foca (SWIM with suspicion) wrapped for the node, our identity type,
//! and foca's codec on `crdt_types::wire`; it decides liveness and must not touch deltas.
//!
//! foca owns no socket or clock: a [`Runtime`] of ours collects the packets it wants sent, the
//! timers it wants set and the renames among its notifications, and the node's membership
//! wrapper drains them after every call into the node's outbox and timer list. Liveness changes are found by comparing
//! foca's member table before and after each call, which also yields *suspect* transitions
//! (foca only notifies up and down).

use crdt_types::{ReplicaId, wire};
use foca::{Codec, Foca, Header, Member, NoCustomBroadcast, Notification, Runtime, State, Timer};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// A member's identity in SWIM: node id, region, gossip address, replica id and a renewable
/// incarnation.
///
/// The address is the member's unique key ([`foca::Identity::addr`]): two identities with the
/// same address are two lives of the same member, and the one with the higher
/// `(incarnation, replica, node_id)` wins. Drivers set `incarnation` to something that grows
/// across restarts (the start time in Unix ms is the usual choice); foca renews it (+1)
/// when the cluster declared us down and we are still running.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The operator's node name (CONTRACT, ARCHITECTURE "Identity").
    pub node_id: String,
    /// The region the node runs in; dissemination keeps most links inside it.
    pub region: String,
    /// The gossip address peers send to.
    pub addr: SocketAddr,
    /// The replica id that mints this node's dots.
    pub replica: ReplicaId,
    /// Grows on every restart and every renewal.
    pub incarnation: u64,
}

impl Identity {
    /// An identity.
    pub fn new(
        node_id: impl Into<String>,
        region: impl Into<String>,
        addr: SocketAddr,
        replica: ReplicaId,
        incarnation: u64,
    ) -> Self {
        Identity {
            node_id: node_id.into(),
            region: region.into(),
            addr,
            replica,
            incarnation,
        }
    }

    /// A stand-in for a seed we only know the address of: foca accepts an announce addressed
    /// to any identity with the receiver's address.
    pub(crate) fn seed(addr: SocketAddr) -> Self {
        Identity::new("", "", addr, ReplicaId(0), 0)
    }

    fn rank(&self) -> (u64, ReplicaId, &str) {
        (self.incarnation, self.replica, &self.node_id)
    }
}

/// A member's key in foca (its gossip address), in a form foca compares fast: an IPv4
/// address and port packed into one integer, any other address as it is. Two keys are equal
/// exactly when the addresses are. foca finds a member by comparing this key with every
/// member in turn (`Members::apply`), so a formed start of 1000 nodes compares it 500,000
/// times per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKey {
    /// `(ip << 16) | port`.
    V4(u64),
    /// Any other address.
    Other(SocketAddr),
}

impl From<SocketAddr> for MemberKey {
    fn from(addr: SocketAddr) -> Self {
        match v4_order(&addr) {
            Some(k) => MemberKey::V4(k),
            None => MemberKey::Other(addr),
        }
    }
}

impl foca::Identity for Identity {
    type Addr = MemberKey;

    fn renew(&self) -> Option<Self> {
        Some(Identity {
            incarnation: self.incarnation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> MemberKey {
        MemberKey::from(self.addr)
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.rank() > adversary.rank()
    }
}

/// foca's [`Codec`] on `crdt_types::wire`: each header and member is one wire value behind a
/// two-byte big-endian length, so foca can read them one after the other.
#[derive(Clone, Copy, Debug, Default)]
pub struct WireCodec;

/// Why the [`WireCodec`] could not encode or decode an item.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The wire codec failed.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The output buffer cannot hold the item (foca then sends fewer updates).
    #[error("buffer full")]
    BufferFull,
    /// The input ends inside an item.
    #[error("truncated item")]
    Truncated,
}

/// The largest single header or member the codec accepts.
const MAX_ITEM_BYTES: usize = u16::MAX as usize;

fn put_framed<T: Serialize>(value: &T, mut buf: impl bytes::BufMut) -> Result<(), CodecError> {
    let bytes = wire::encode(value)?;
    let len = u16::try_from(bytes.len()).map_err(|_| CodecError::BufferFull)?;
    if buf.remaining_mut() < bytes.len() + 2 {
        return Err(CodecError::BufferFull);
    }
    buf.put_u16(len);
    buf.put_slice(&bytes);
    Ok(())
}

fn take_framed<T: serde::de::DeserializeOwned>(mut buf: impl bytes::Buf) -> Result<T, CodecError> {
    // foca hands us contiguous buffers, so the first chunk is everything.
    let chunk = buf.chunk();
    let (len, rest) = match chunk {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) as usize, rest),
        _ => return Err(CodecError::Truncated),
    };
    let item = rest.get(..len).ok_or(CodecError::Truncated)?;
    let value = wire::decode_with_limit(item, MAX_ITEM_BYTES)?;
    buf.advance(len + 2);
    Ok(value)
}

impl Codec<Identity> for WireCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<Identity>,
        buf: impl bytes::BufMut,
    ) -> Result<(), CodecError> {
        put_framed(header, buf)
    }

    fn decode_header(&mut self, buf: impl bytes::Buf) -> Result<Header<Identity>, CodecError> {
        take_framed(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<Identity>,
        buf: impl bytes::BufMut,
    ) -> Result<(), CodecError> {
        put_framed(member, buf)
    }

    fn decode_member(&mut self, buf: impl bytes::Buf) -> Result<Member<Identity>, CodecError> {
        take_framed(buf)
    }
}

/// How this node sees a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; still treated as live until the suspicion times out.
    Suspect,
    /// Declared down by the cluster.
    Down,
}

impl MemberState {
    /// `alive`, `suspect` or `down` (the `/v1/members` spelling, CONTRACT §2).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }

    /// Whether the member counts as live (alive or suspect).
    pub fn is_live(self) -> bool {
        !matches!(self, MemberState::Down)
    }

    fn from_foca(s: State) -> Self {
        match s {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down => MemberState::Down,
        }
    }
}

/// A member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its current identity.
    pub identity: Identity,
    /// Its state.
    pub state: MemberState,
}

/// A change of a member's state, found by comparing foca's table before and after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MemberChange {
    Up(MemberInfo),
    Suspect(MemberInfo),
    Down(MemberInfo),
}

type Swim = Foca<Identity, WireCodec, Xoshiro256PlusPlus, NoCustomBroadcast>;

/// What foca asked for during one call, in the order it asked: packets to send, timers to
/// set, and the addresses whose identity it renamed. Its other notifications (member up or
/// down) are not kept: the table comparison after the call finds them, so cloning an identity
/// into each would be wasted (a formed start brings up every member in one call).
#[derive(Default)]
struct Collected {
    sends: Vec<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<Identity>)>,
    renamed: Vec<SocketAddr>,
}

impl Runtime<Identity> for Collected {
    fn notify(&mut self, notification: Notification<'_, Identity>) {
        if let Notification::Rename(_, new) = notification {
            self.renamed.push(new.addr);
        }
    }

    fn send_to(&mut self, to: Identity, data: &[u8]) {
        self.sends.push((to.addr, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Identity>, after: Duration) {
        self.timers.push((after, event));
    }
}

/// foca plus its runtime, timers and the member table derived from it.
pub(crate) struct Membership {
    foca: Swim,
    runtime: Collected,
    timers: BTreeMap<(i64, u64), Timer<Identity>>,
    /// The earliest key of `timers`, kept as it changes: the node asks for it after every
    /// input, and finding the first key of a large map is a walk of cold nodes.
    first_timer: Option<i64>,
    timer_seq: u64,
    members: BTreeMap<SocketAddr, MemberInfo>,
    /// The address of the member each replica id belongs to.
    by_replica: BTreeMap<ReplicaId, SocketAddr>,
    /// `(address, incarnation, replica, state)` of each member in foca's list order, as of
    /// the last [`Membership::refresh`].
    order: Vec<(SocketAddr, u64, ReplicaId, MemberState)>,
    errors: u64,
}

/// What a membership call produced, for the node to act on.
#[derive(Default)]
pub(crate) struct Drained {
    pub sends: Vec<(SocketAddr, Vec<u8>)>,
    pub changes: Vec<MemberChange>,
}

impl Membership {
    pub(crate) fn new(identity: Identity, config: foca::Config, seed: u64) -> Self {
        let rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Membership {
            foca: Foca::new(identity, config, rng, WireCodec),
            runtime: Collected::default(),
            timers: BTreeMap::new(),
            first_timer: None,
            timer_seq: 0,
            members: BTreeMap::new(),
            by_replica: BTreeMap::new(),
            order: Vec::new(),
            errors: 0,
        }
    }

    /// Our current identity (foca may have renewed it).
    pub(crate) fn identity(&self) -> &Identity {
        self.foca.identity()
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.values()
    }

    /// The member at this address, if foca knows one (in any state).
    pub(crate) fn member(&self, addr: &SocketAddr) -> Option<&MemberInfo> {
        self.members.get(addr)
    }

    /// The member whose current identity has this replica id, if any.
    pub(crate) fn member_by_replica(&self, replica: ReplicaId) -> Option<&MemberInfo> {
        let addr = self.by_replica.get(&replica)?;
        self.members
            .get(addr)
            .filter(|m| m.identity.replica == replica)
    }

    pub(crate) fn live_count(&self) -> usize {
        self.foca.num_members()
    }

    /// foca errors so far (refused or malformed packets).
    pub(crate) fn errors(&self) -> u64 {
        self.errors
    }

    pub(crate) fn handle_data(&mut self, now: i64, data: &[u8]) -> Drained {
        let r = self.foca.handle_data(data, &mut self.runtime);
        self.count(r);
        self.drain(now)
    }

    pub(crate) fn announce(&mut self, now: i64, addr: SocketAddr) -> Drained {
        let r = self.foca.announce(Identity::seed(addr), &mut self.runtime);
        self.count(r);
        self.drain(now)
    }

    /// Adds members known from outside SWIM (see [`crate::Node::add_known_members`]) as
    /// alive, without broadcasting them. Our own address is skipped: foca would take an
    /// identity at it for a stale life of ours and declare it down.
    pub(crate) fn add_known(&mut self, now: i64, members: Vec<Identity>) -> Drained {
        let me = self.foca.identity().addr;
        let updates = members
            .into_iter()
            .filter(|m| m.addr != me)
            .map(Member::alive);
        let r = self.foca.apply_many(updates, false, &mut self.runtime);
        self.count(r);
        self.drain(now)
    }

    pub(crate) fn leave(&mut self, now: i64) -> Drained {
        let r = self.foca.leave_cluster(&mut self.runtime);
        self.count(r);
        self.drain(now)
    }

    /// The earliest foca timer.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.first_timer
    }

    /// Fires every foca timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: i64) -> Drained {
        let mut out = Drained::default();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.first_timer = self.timers.keys().next().map(|(t, _)| *t);
            let sends_only = sends_only(&timer);
            let r = self.foca.handle_timer(timer, &mut self.runtime);
            self.count(r);
            let d = if sends_only && !cfg!(debug_assertions) {
                self.drain_sends(now)
            } else {
                let d = self.drain(now);
                // Debug builds (every test) check the skip: should a foca release change what
                // these timers do, the tests fail here instead of members going unnoticed.
                debug_assert!(
                    !sends_only || d.changes.is_empty(),
                    "foca changed its members in a timer taken as sends-only"
                );
                d
            };
            out.sends.extend(d.sends);
            out.changes.extend(d.changes);
        }
        out
    }

    fn count(&mut self, r: Result<(), foca::Error>) {
        if let Err(e) = r {
            self.errors += 1;
            tracing::trace!(error = %e, "foca refused input");
        }
    }

    fn drain(&mut self, now: i64) -> Drained {
        let mut out = self.drain_sends(now);
        // Notifications are summarised by the table comparison below, except that a rename
        // (a new identity at a known address) is looked at in full there: the comparison's
        // fast path only sees the address, incarnation, replica and state.
        let renamed = std::mem::take(&mut self.runtime.renamed);
        out.changes = self.refresh(&renamed);
        out
    }

    /// What foca asked for besides member changes: its packets, and its timers (set).
    fn drain_sends(&mut self, now: i64) -> Drained {
        for (after, timer) in self.runtime.timers.drain(..) {
            let at = now.saturating_add(duration_ms(after));
            self.timer_seq += 1;
            self.timers.insert((at, self.timer_seq), timer);
            self.first_timer = Some(self.first_timer.map_or(at, |t| t.min(at)));
        }
        Drained {
            sends: std::mem::take(&mut self.runtime.sends),
            changes: Vec::new(),
        }
    }

    /// Compares foca's table with ours and returns what changed, in address order. Runs after
    /// every foca call, so it must be cheap per member: a member whose address, incarnation,
    /// replica and state are those cached at its position in foca's list at the last call is
    /// skipped without looking at its strings or at our table (`renamed`, from foca's
    /// notifications, names the addresses whose identity changed in any other field). It
    /// clones nothing for unchanged members, and looks for removed members only when the table
    /// sizes say one was removed.
    fn refresh(&mut self, renamed: &[SocketAddr]) -> Vec<MemberChange> {
        // Members listed beyond the cached order are new: room for them up front (a formed
        // start adds every member in one call).
        let added = self
            .foca
            .iter_membership_state()
            .len()
            .saturating_sub(self.order.len());
        let mut changes: Vec<(SocketAddr, MemberChange)> = Vec::with_capacity(added);
        let mut updates: Vec<MemberInfo> = Vec::with_capacity(added);
        self.order.reserve(added);
        let mut listed = 0usize;
        for (i, m) in self.foca.iter_membership_state().enumerate() {
            listed += 1;
            let id = m.id();
            let state = MemberState::from_foca(m.state());
            // The cheap fields first: most calls change nothing, and the address (an enum)
            // is the dearest to compare.
            let unchanged = self.order.get(i).is_some_and(|&(addr, inc, replica, st)| {
                st == state && inc == id.incarnation && replica == id.replica && addr == id.addr
            });
            if unchanged && (renamed.is_empty() || !renamed.contains(&id.addr)) {
                continue;
            }
            let key = (id.addr, id.incarnation, id.replica, state);
            match self.order.get_mut(i) {
                Some(k) => *k = key,
                None => self.order.push(key),
            }
            let before = self.members.get(&id.addr);
            let same_identity = before.is_some_and(|b| b.identity == *id);
            let before_state = before.filter(|_| same_identity).map(|b| b.state);
            if before_state == Some(state) {
                continue;
            }
            let info = MemberInfo {
                identity: id.clone(),
                state,
            };
            let change = match (before_state, state) {
                (_, MemberState::Alive) => Some(MemberChange::Up(info.clone())),
                (_, MemberState::Suspect) => Some(MemberChange::Suspect(info.clone())),
                (Some(_), MemberState::Down) => Some(MemberChange::Down(info.clone())),
                // A new identity we only learnt as down; if it replaced a live one, that one
                // is gone.
                (None, MemberState::Down) => before
                    .is_some_and(|b| b.state.is_live())
                    .then(|| MemberChange::Down(info.clone())),
            };
            if let Some(c) = change {
                changes.push((id.addr, c));
            }
            updates.push(info);
        }
        // foca lists each address once, so this is address order.
        let mut out: Vec<MemberChange> = by_address(changes, |(a, _)| *a)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        if self.members.is_empty() && self.by_replica.is_empty() {
            // The first call that lists members (a formed start: every member at once):
            // built in bulk, the same maps as the inserts below would make (foca lists each
            // address once; of two members with one replica id the later one is kept, as
            // there). Sorted first, the members' map is built without moving them again.
            self.by_replica = updates
                .iter()
                .map(|info| (info.identity.replica, info.identity.addr))
                .collect();
            self.members = by_address(updates, |info| info.identity.addr)
                .into_iter()
                .map(|info| (info.identity.addr, info))
                .collect();
            self.order.truncate(listed);
            return out;
        }
        for info in updates {
            let (addr, replica) = (info.identity.addr, info.identity.replica);
            if let Some(old) = self.members.insert(addr, info)
                && old.identity.replica != replica
                && self.by_replica.get(&old.identity.replica) == Some(&addr)
            {
                self.by_replica.remove(&old.identity.replica);
            }
            self.by_replica.insert(replica, addr);
        }
        self.order.truncate(listed);
        // Every listed address is in the table now: equal sizes mean nothing was removed.
        if self.members.len() != listed {
            let seen: BTreeSet<SocketAddr> = self
                .foca
                .iter_membership_state()
                .map(|m| m.id().addr)
                .collect();
            let gone: Vec<SocketAddr> = self
                .members
                .keys()
                .filter(|a| !seen.contains(a))
                .copied()
                .collect();
            for addr in gone {
                let Some(info) = self.members.remove(&addr) else {
                    continue;
                };
                if self.by_replica.get(&info.identity.replica) == Some(&addr) {
                    self.by_replica.remove(&info.identity.replica);
                }
                if info.state.is_live() {
                    out.push(MemberChange::Down(MemberInfo {
                        state: MemberState::Down,
                        ..info
                    }));
                }
            }
        }
        out
    }
}

/// Whether foca handles this timer by sending packets and setting timers only, never
/// changing or reordering its member list (foca 2.0's `handle_timer`: these choose members
/// through a shared borrow), so the table comparison after it can be skipped. It runs over
/// every member, and the periodic gossip timer (every 500 ms on the WAN preset) is most of
/// the timers a node handles.
fn sends_only(timer: &Timer<Identity>) -> bool {
    matches!(
        timer,
        Timer::PeriodicGossip(_)
            | Timer::PeriodicAnnounce(_)
            | Timer::PeriodicAnnounceDown(_)
            | Timer::SendIndirectProbe { .. }
    )
}

/// `items` in the order of their addresses (ties in their order), sorted through a list of
/// `(address, index)` pairs: the items (member identities, over a hundred bytes each) are
/// moved twice instead of at every step of the sort. When every address is IPv4 (the usual
/// case) the pairs are sorted on [`v4_order`], which orders as the addresses do and is
/// compared in one instruction instead of through `SocketAddr`'s enum and octets.
fn by_address<T>(items: Vec<T>, addr: impl Fn(&T) -> SocketAddr) -> Vec<T> {
    let packed: Option<Vec<(u64, usize)>> = items
        .iter()
        .enumerate()
        .map(|(i, t)| v4_order(&addr(t)).map(|k| (k, i)))
        .collect();
    let order: Vec<usize> = match packed {
        Some(mut pairs) => {
            pairs.sort_unstable();
            pairs.into_iter().map(|(_, i)| i).collect()
        }
        None => {
            let mut pairs: Vec<(SocketAddr, usize)> = items
                .iter()
                .enumerate()
                .map(|(i, t)| (addr(t), i))
                .collect();
            pairs.sort_unstable();
            pairs.into_iter().map(|(_, i)| i).collect()
        }
    };
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// An IPv4 address and port as one integer that orders as the `SocketAddr`s do (IP, then
/// port); `None` for any other address.
fn v4_order(addr: &SocketAddr) -> Option<u64> {
    match addr {
        SocketAddr::V4(a) => Some((u64::from(a.ip().to_bits()) << 16) | u64::from(a.port())),
        SocketAddr::V6(_) => None,
    }
}

/// The identity a foca packet says it comes from (its header's source), if the header decodes.
pub(crate) fn packet_source(packet: &[u8]) -> Option<Identity> {
    WireCodec.decode_header(packet).ok().map(|h| h.src)
}

fn duration_ms(d: Duration) -> i64 {
    // Round up so a timer never fires before foca asked for it.
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Message;

    fn id(port: u16) -> Identity {
        Identity::new(
            format!("n{port}"),
            "eu",
            SocketAddr::from(([127, 0, 0, 1], port)),
            ReplicaId(port as u64),
            7,
        )
    }

    #[test]
    fn codec_round_trips_and_reads_items_one_after_the_other() {
        let mut codec = WireCodec;
        let header = Header {
            src: id(1),
            src_incarnation: 3,
            dst: id(2),
            message: Message::Ping(9),
        };
        let member = Member::new(id(3), 2, State::Suspect);
        let mut buf = Vec::new();
        codec.encode_header(&header, &mut buf).unwrap();
        codec.encode_member(&member, &mut buf).unwrap();
        let mut rd = &buf[..];
        assert_eq!(codec.decode_header(&mut rd).unwrap(), header);
        assert_eq!(codec.decode_member(&mut rd).unwrap(), member);
        assert!(rd.is_empty());
    }

    #[test]
    fn codec_refuses_truncated_input_and_full_buffers() {
        let mut codec = WireCodec;
        let mut buf = Vec::new();
        codec
            .encode_member(&Member::alive(id(1)), &mut buf)
            .unwrap();
        for cut in 0..buf.len() {
            assert!(codec.decode_member(&buf[..cut]).is_err());
        }
        let mut small = [0u8; 8];
        assert!(matches!(
            codec.encode_member(&Member::alive(id(1)), &mut small[..]),
            Err(CodecError::BufferFull)
        ));
    }

    #[test]
    fn by_address_sorts_by_address_and_keeps_the_order_of_ties() {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let items = vec![
            (addr(9), 'a'),
            (addr(3), 'b'),
            (addr(9), 'c'),
            (addr(1), 'd'),
        ];
        let sorted: Vec<char> = by_address(items, |(a, _)| *a)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(sorted, vec!['d', 'b', 'a', 'c']);
    }

    #[test]
    fn by_address_orders_v4_and_mixed_lists_as_socket_addresses_order() {
        let addrs: Vec<SocketAddr> = [
            "10.0.0.2:7000",
            "10.0.0.1:7001",
            "9.255.255.255:65535",
            "10.0.0.1:7000",
            "10.0.0.1:7000",
            "0.0.0.0:0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let six: SocketAddr = "[::1]:7000".parse().unwrap();
        for list in [addrs.clone(), [vec![six], addrs].concat()] {
            let items: Vec<(SocketAddr, usize)> = list.iter().copied().zip(0..).collect();
            let mut expected = items.clone();
            expected.sort();
            assert_eq!(by_address(items, |(a, _)| *a), expected);
        }
    }

    #[test]
    fn member_keys_are_equal_exactly_when_the_addresses_are() {
        let addrs: Vec<SocketAddr> = [
            "10.0.0.1:7000",
            "10.0.0.1:7001",
            "10.0.0.2:7000",
            "0.1.0.0:0",
            "0.0.0.0:1",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:7000",
            "[::1]:7001",
            "[::ffff:10.0.0.1]:7000",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for a in &addrs {
            for b in &addrs {
                assert_eq!(
                    MemberKey::from(*a) == MemberKey::from(*b),
                    a == b,
                    "{a} {b}"
                );
            }
        }
    }

    #[test]
    fn renewal_wins_the_address_conflict() {
        use foca::Identity as _;
        let a = id(1);
        let b = a.renew().unwrap();
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }
}
