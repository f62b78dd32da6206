//! Every message gossip nodes exchange, and their decoding from untrusted bytes; it defines
//! shapes and validation only and must not hold protocol decisions.
//!
//! One datagram is one [`Envelope`]: the sender's advertised address and replica, then a
//! [`Body`] on one of three channels (membership, dissemination, anti-entropy). Everything goes
//! through `crdt_types::wire` (a version byte, then bincode), and decoding refuses inputs over
//! a size limit before looking at them. [`Envelope::decode`] also checks what bincode cannot:
//! sequence numbers start at 1, ids are valid, a foca packet fits its size limit; a delta
//! travels encoded inside the message ([`EncodedDelta`]) and is checked when it is decoded.

use crate::Payload;
use crate::delivered::DigestContext;
use crdt_types::wire::{self, WireError};
use crdt_types::{Dot, Key, ReplicaId, Stamp, VersionVector};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// One delta of one origin: the unit that is disseminated, logged and applied.
///
/// `(origin, seq)` is the delta's dot: `seq` is the origin replica's delta sequence number,
/// which is also the dot its CRDT operation carries (ARCHITECTURE "Dots are delta sequence
/// numbers").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta<P> {
    /// The replica that made the operation.
    pub origin: ReplicaId,
    /// The origin's delta sequence number, from 1.
    pub seq: u64,
    /// The origin's HLC stamp for the operation.
    pub stamp: Stamp,
    /// How many links the delta crossed before reaching the node that holds this copy (0 at
    /// the origin).
    pub hops: u32,
    /// The object the delta changes.
    pub key: Key,
    /// The change itself.
    pub payload: P,
}

impl<P> Delta<P> {
    /// The delta's dot `(origin, seq)`.
    pub fn dot(&self) -> Dot {
        Dot::new(self.origin, self.seq)
    }
}

impl<P: Payload> Delta<P> {
    /// The delta's size in the wire encoding (header, key and payload), in bytes.
    pub fn encoded_len(&self) -> usize {
        // origin, seq, stamp and hops take at most 10 + 10 + 20 + 5 bytes as varints, the key
        // at most 1 + 10 + its id.
        56 + self.key.id.len() + self.payload.encoded_len()
    }
}

/// A delta as it travels and is logged: its hop count, and its other fields encoded once at
/// its origin and passed on as they are, so a node that logs or forwards a delta neither
/// clones its decoded form nor encodes it again.
///
/// On the wire: the hop count, then the length-prefixed `crdt_types::wire` encoding (version
/// byte included) of the delta's origin, sequence number, stamp, key and payload. Received
/// bytes are checked when the delta is decoded ([`EncodedDelta::decode`]), which
/// [`crate::Node`] does for every delta of a message before acting on any of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedDelta {
    /// How many links the delta crossed before reaching the node that holds this copy.
    pub hops: u32,
    /// The encoding of everything but the hop count: one allocation, its reference count
    /// in front of the bytes, shared by every copy (a `Bytes` is twice the size in every log
    /// entry, and its first clone allocates a second block for the count).
    #[serde(with = "body_bytes")]
    body: Arc<[u8]>,
}

/// The fields of a delta that [`EncodedDelta`] keeps encoded, for encoding (borrowed)...
#[derive(Serialize)]
struct BodyRef<'a, P> {
    origin: ReplicaId,
    seq: u64,
    stamp: &'a Stamp,
    key: &'a Key,
    payload: &'a P,
}

/// ...and for decoding (owned), in the same order.
#[derive(Deserialize)]
struct BodyOwned<P> {
    origin: ReplicaId,
    seq: u64,
    stamp: Stamp,
    key: Key,
    payload: P,
}

impl EncodedDelta {
    /// Encodes a delta (its hop count goes alongside the encoding).
    pub fn new<P: Payload>(delta: &Delta<P>) -> Result<Self, WireError> {
        let body = wire::encode(&BodyRef {
            origin: delta.origin,
            seq: delta.seq,
            stamp: &delta.stamp,
            key: &delta.key,
            payload: &delta.payload,
        })?;
        Ok(EncodedDelta {
            hops: delta.hops,
            body: Arc::from(body),
        })
    }

    /// Decodes and validates the delta (sequence number in range, valid key id); bytes from a
    /// peer are untrusted, so this is an error, never a panic.
    pub fn decode<P: Payload>(&self) -> Result<Delta<P>, DecodeError> {
        let b: BodyOwned<P> = wire::decode(&self.body)?;
        let delta = Delta {
            origin: b.origin,
            seq: b.seq,
            stamp: b.stamp,
            hops: self.hops,
            key: b.key,
            payload: b.payload,
        };
        dot_ok(&delta.dot())?;
        key_ok(&delta.key)?;
        Ok(delta)
    }

    /// This copy one link further on (the encoding is shared, not copied).
    pub fn next_hop(&self) -> Self {
        EncodedDelta {
            hops: self.hops.saturating_add(1),
            body: self.body.clone(),
        }
    }

    /// An upper bound of its size inside a message (item tag, hop count, length prefix and
    /// encoding), for batching, budgets and the log's byte bound.
    pub fn wire_len(&self) -> usize {
        11 + self.body.len()
    }
}

/// Serde for [`EncodedDelta`]'s body: one length-prefixed byte string.
mod body_bytes {
    use serde::{Deserializer, Serializer, de};
    use std::sync::Arc;

    pub(super) fn serialize<S: Serializer>(body: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(body)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Arc<[u8]>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an encoded delta")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Arc<[u8]>, E> {
                Ok(Arc::from(v))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Arc<[u8]>, E> {
                Ok(Arc::from(v))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// Serde for a membership packet: one byte string, the same bytes as the sequence of `u8`
/// serde makes of a `Vec<u8>` (bincode writes both as a length, then the bytes), read and
/// written in one piece instead of one element at a time.
mod packet_bytes {
    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(packet: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(packet)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a membership packet")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// An item of the dissemination channel (Plumtree).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GossipItem {
    /// Eager push of a delta (also the answer to a GRAFT).
    Delta(EncodedDelta),
    /// Lazy push: "I have these deltas". Empty: "I link to you, link back to me".
    IHave(Vec<Dot>),
    /// "Send me these deltas, and push to me eagerly from now on."
    Graft(Vec<Dot>),
    /// "I got that already: stop pushing this origin's deltas to me eagerly."
    Prune(ReplicaId),
}

/// A digest: the sender's delivered context, opening or answering an anti-entropy round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// Every delta the sender has applied (version vector plus out-of-order dots), encoded
    /// as the `CausalContext` of those dots.
    pub delivered: DigestContext,
    /// Whether the receiver should answer with its own digest (push-pull).
    pub reply: bool,
    /// When the sender is receiving a state transfer from the receiver: the cursor to go on
    /// from.
    pub state_cursor: Option<u64>,
}

/// One chunk of a state transfer: the current state of keys changed after a cursor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateChunk<P> {
    /// On the first chunk of a transfer: the sender's delivered vector when it read it, which
    /// the receiver adopts once the transfer is complete.
    pub snapshot: Option<VersionVector>,
    /// The sender's clock when it read the chunk; a chunk from a clock beyond the drift bound
    /// is refused.
    pub clock: Stamp,
    /// The cursor to continue from.
    pub next_cursor: u64,
    /// Whether this is the last chunk.
    pub done: bool,
    /// `(key, state)` pairs.
    pub entries: Vec<(Key, P)>,
}

/// An item of the anti-entropy channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SyncItem<P> {
    /// A digest.
    Digest(Digest),
    /// A delta from the delta log that the receiver's digest showed missing.
    Delta(EncodedDelta),
    /// A chunk of state, where the log no longer holds what the receiver misses.
    State(StateChunk<P>),
}

/// What a message carries; each variant travels on its own [`crate::Channel`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body<P> {
    /// A foca (SWIM) packet, itself encoded with [`crate::WireCodec`].
    Membership(#[serde(with = "packet_bytes")] Vec<u8>),
    /// Dissemination items, in order.
    Gossip(Vec<GossipItem>),
    /// Anti-entropy items, in order.
    Sync(Vec<SyncItem<P>>),
}

/// One message between two gossip nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// The sender's advertised gossip address (the one in its membership identity). Replies
    /// go there, whatever source address the transport saw.
    pub sender: SocketAddr,
    /// The sender's replica id.
    pub replica: ReplicaId,
    /// The content.
    pub body: Body<P>,
}

/// The largest sequence number (and cursor) a message may carry: far beyond any real count,
/// and far enough below `u64::MAX` that no arithmetic on it can overflow.
pub const MAX_SEQ: u64 = 1 << 62;

/// Why received bytes were dropped.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid encoding (or are over the size limit).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The encoding is valid but a field is not.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

impl<P: Payload> Envelope<P> {
    /// Encodes the message with `crdt_types::wire`.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(self)
    }

    /// Decodes and validates a message, refusing inputs over `max_bytes`.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Self, DecodeError> {
        let env: Envelope<P> = wire::decode_with_limit(bytes, max_bytes)?;
        env.validate()?;
        Ok(env)
    }

    /// Checks what bincode cannot, except the deltas' own fields, which
    /// [`EncodedDelta::decode`] checks.
    fn validate(&self) -> Result<(), DecodeError> {
        match &self.body {
            Body::Membership(b) if b.is_empty() => Err(DecodeError::Invalid("empty foca packet")),
            Body::Membership(_) => Ok(()),
            Body::Gossip(items) => items.iter().try_for_each(|i| match i {
                GossipItem::Delta(_) | GossipItem::Prune(_) => Ok(()),
                GossipItem::IHave(ds) | GossipItem::Graft(ds) => ds.iter().try_for_each(dot_ok),
            }),
            Body::Sync(items) => items.iter().try_for_each(|i| match i {
                SyncItem::Digest(d) => {
                    ctx_ok(&d.delivered)?;
                    d.state_cursor.map_or(Ok(()), seq_ok)
                }
                SyncItem::Delta(_) => Ok(()),
                SyncItem::State(c) => {
                    c.snapshot.as_ref().map_or(Ok(()), vv_ok)?;
                    c.entries.iter().try_for_each(|(k, _)| key_ok(k))
                }
            }),
        }
    }
}

fn seq_ok(c: u64) -> Result<(), DecodeError> {
    if c > MAX_SEQ {
        return Err(DecodeError::Invalid("sequence number out of range"));
    }
    Ok(())
}

fn dot_ok(d: &Dot) -> Result<(), DecodeError> {
    if d.counter == 0 {
        return Err(DecodeError::Invalid("sequence number 0"));
    }
    seq_ok(d.counter)
}

fn vv_ok(vv: &VersionVector) -> Result<(), DecodeError> {
    vv.iter().try_for_each(|(_, c)| seq_ok(c))
}

fn ctx_ok(cc: &DigestContext) -> Result<(), DecodeError> {
    vv_ok(cc.vv())?;
    cc.cloud().iter().try_for_each(dot_ok)
}

fn key_ok(k: &Key) -> Result<(), DecodeError> {
    crdt_types::validate_id(&k.id).map_err(|_| DecodeError::Invalid("invalid key id"))
}

/// The encoded size of an item inside a message body, for batching.
pub(crate) fn item_len<T: Serialize>(item: &T) -> usize {
    // `wire::encoded_len` counts the version byte, which only the envelope carries.
    wire::encoded_len(item).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_types::Kind;

    fn delta(seq: u64, key: &str, hops: u32) -> Delta<u64> {
        Delta {
            origin: ReplicaId(7),
            seq,
            stamp: Stamp::default(),
            hops,
            key: Key::new(Kind::Cart, key),
            payload: 42,
        }
    }

    #[test]
    fn an_encoded_delta_decodes_to_itself_one_hop_further_on() {
        let d = delta(3, "cart-1", 2);
        let e = EncodedDelta::new(&d).expect("encodes");
        assert_eq!(e.decode::<u64>().expect("decodes"), d);
        let next = e.next_hop();
        assert_eq!(next.hops, 3);
        assert_eq!(
            next.decode::<u64>().expect("decodes"),
            Delta { hops: 3, ..d }
        );
        // The encoding travels whole inside an envelope, and within its size bound.
        let env: Envelope<u64> = Envelope {
            sender: SocketAddr::from(([10, 0, 0, 1], 1)),
            replica: ReplicaId(1),
            body: Body::Gossip(vec![GossipItem::Delta(next.clone())]),
        };
        let bytes = env.encode().expect("encodes");
        assert!(item_len(&GossipItem::Delta(next.clone())) <= next.wire_len());
        let back = Envelope::<u64>::decode(&bytes, 1 << 20).expect("decodes");
        assert_eq!(back, env);
    }

    #[test]
    fn a_membership_packet_encodes_as_the_sequence_of_its_bytes() {
        // The bytes a plain `Vec<u8>` field makes (how the packet was encoded before it was
        // written as one byte string): the wire must not change.
        #[derive(Serialize)]
        enum Plain {
            Membership(Vec<u8>),
        }
        #[derive(Serialize)]
        struct PlainEnvelope {
            sender: SocketAddr,
            replica: ReplicaId,
            body: Plain,
        }
        for len in [1usize, 2, 127, 128, 300, 1400, 70_000] {
            let packet: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let sender = SocketAddr::from(([10, 0, 1, 2], 7946));
            let env: Envelope<u64> = Envelope {
                sender,
                replica: ReplicaId(9),
                body: Body::Membership(packet.clone()),
            };
            let bytes = env.encode().expect("encodes");
            let plain = PlainEnvelope {
                sender,
                replica: ReplicaId(9),
                body: Plain::Membership(packet),
            };
            assert_eq!(bytes, wire::encode(&plain).expect("encodes"), "len {len}");
            let back = Envelope::<u64>::decode(&bytes, 1 << 20).expect("decodes");
            assert_eq!(back, env);
            // A truncated packet does not decode.
            assert!(Envelope::<u64>::decode(&bytes[..bytes.len() - 1], 1 << 20).is_err());
        }
    }

    #[test]
    fn an_encoded_delta_with_invalid_fields_or_bytes_does_not_decode() {
        let zero = EncodedDelta::new(&delta(0, "k", 0)).expect("encodes");
        assert!(matches!(
            zero.decode::<u64>(),
            Err(DecodeError::Invalid("sequence number 0"))
        ));
        let bad_key = EncodedDelta::new(&delta(1, "", 0)).expect("encodes");
        assert!(matches!(
            bad_key.decode::<u64>(),
            Err(DecodeError::Invalid("invalid key id"))
        ));
        let good = EncodedDelta::new(&delta(1, "k", 0)).expect("encodes");
        for cut in 0..good.body.len() {
            let truncated = EncodedDelta {
                hops: 0,
                body: Arc::from(&good.body[..cut]),
            };
            assert!(truncated.decode::<u64>().is_err(), "cut at {cut}");
        }
    }
}
