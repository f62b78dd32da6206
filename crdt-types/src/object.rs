//! `Object` and `ObjectDelta`: the state of one key and a change to it, as the gossip layer,
//! the store and the simulator move them around.

use crate::{Cart, DocDelta, DocError, Document, Kind, Lattice, Session, VersionVector, wire};
use serde::{Deserialize, Serialize};

/// Why a delta could not be applied to an object. The object is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The delta is for another kind of object than the one stored under the key.
    #[error("a {delta:?} delta cannot apply to a {object:?} object")]
    KindMismatch {
        /// The stored object's kind.
        object: Kind,
        /// The delta's kind.
        delta: Kind,
    },
    /// The delta breaks a structural invariant (a store dot missing from its context); only
    /// a corrupted or forged delta can.
    #[error("malformed {0:?} delta")]
    Malformed(Kind),
    /// A document change was invalid or refused.
    #[error(transparent)]
    Doc(#[from] DocError),
}

/// The replicated state of one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Object {
    /// `carts/{id}`.
    Cart(Cart),
    /// `sessions/{id}`.
    Session(Session),
    /// `docs/{id}`.
    Doc(Document),
}

/// One change to a key: what a mutator returned, or a full state shipped as a delta.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ObjectDelta {
    /// A cart delta (itself a cart).
    Cart(Cart),
    /// A session delta (itself a session).
    Session(Session),
    /// Document changes.
    Doc(DocDelta),
}

impl ObjectDelta {
    /// The kind of object the delta applies to.
    pub fn kind(&self) -> Kind {
        match self {
            ObjectDelta::Cart(_) => Kind::Cart,
            ObjectDelta::Session(_) => Kind::Session,
            ObjectDelta::Doc(_) => Kind::Doc,
        }
    }

    /// The size of the delta in the wire encoding, in bytes.
    pub fn encoded_len(&self) -> usize {
        wire::encoded_len(self)
    }

    /// Merges `other` into this delta (a delta group), so several deltas of one key can travel
    /// as one. Fails on a kind mismatch, leaving `self` unchanged.
    pub fn join(&mut self, other: ObjectDelta) -> Result<(), ApplyError> {
        match (self, other) {
            (ObjectDelta::Cart(a), ObjectDelta::Cart(b)) => a.join(b),
            (ObjectDelta::Session(a), ObjectDelta::Session(b)) => a.join(b),
            (ObjectDelta::Doc(a), ObjectDelta::Doc(b)) => a.join(b),
            (a, b) => {
                return Err(ApplyError::KindMismatch {
                    object: a.kind(),
                    delta: b.kind(),
                });
            }
        }
        Ok(())
    }
}

impl Object {
    /// The empty object of `kind` (what an unknown key reads as).
    pub fn new(kind: Kind) -> Self {
        match kind {
            Kind::Cart => Object::Cart(Cart::new()),
            Kind::Session => Object::Session(Session::new()),
            Kind::Doc => Object::Doc(Document::new()),
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Cart(_) => Kind::Cart,
            Object::Session(_) => Kind::Session,
            Object::Doc(_) => Kind::Doc,
        }
    }

    /// Merges a delta (local or remote, in any order, any number of times).
    pub fn apply(&mut self, delta: ObjectDelta) -> Result<(), ApplyError> {
        match (self, delta) {
            (Object::Cart(c), ObjectDelta::Cart(d)) => {
                if !d.is_well_formed() {
                    return Err(ApplyError::Malformed(Kind::Cart));
                }
                c.join(d);
            }
            (Object::Session(s), ObjectDelta::Session(d)) => s.join(d),
            (Object::Doc(doc), ObjectDelta::Doc(d)) => doc.apply(d)?,
            (o, d) => {
                return Err(ApplyError::KindMismatch {
                    object: o.kind(),
                    delta: d.kind(),
                });
            }
        }
        Ok(())
    }

    /// The full state as a delta, for anti-entropy state transfer.
    pub fn to_delta(&self) -> ObjectDelta {
        match self {
            Object::Cart(c) => ObjectDelta::Cart(c.clone()),
            Object::Session(s) => ObjectDelta::Session(s.clone()),
            Object::Doc(d) => ObjectDelta::Doc(d.full_delta()),
        }
    }

    /// Folds the node's delivered vector into causal contexts (see
    /// [`CausalContext::compact_stable`](crate::CausalContext::compact_stable)); a no-op for
    /// kinds without one.
    pub fn compact(&mut self, delivered: &VersionVector) {
        if let Object::Cart(c) = self {
            c.compact(delivered);
        }
    }

    /// The size of the object in the wire encoding, in bytes.
    pub fn encoded_len(&self) -> usize {
        wire::encoded_len(self)
    }
}
