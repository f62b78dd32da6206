//! Local operations: what the embedding API asks of one key, checked and applied to the key's
//! object with the tag the gossip core issued. It calls the CRDT mutators and must not touch
//! replication: the engine persists and publishes the delta an operation returns.

use crate::error::{InvalidInput, MeshError};
use crate::packed_cart::PackedCart;
use crdt_types::{
    Cart, DocDelta, DocEdit, Lattice, Object, ObjectDelta, PathSegment, Session, SessionView, Tag,
    validate_id,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// The per-object limit of local writes: a write that can grow an object (everything but
/// removes, clears and revocations) is refused with [`InvalidInput::ObjectTooLarge`] (HTTP
/// 400) when the object's encoding would be larger than this afterwards. The store keeps
/// objects up to [`crate::state::MAX_STORED_OBJECT_BYTES`] (3 MiB), so concurrent writes on
/// other nodes have room to join before a replica refuses them.
pub const MAX_OBJECT_BYTES: usize = 2 << 20;

/// What [`crate::Mesh::session_put`] changes. On a session that does not exist (or expired)
/// `user_id` and `ttl` are required; on a live one every field is optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionUpdate {
    /// Sets the user id (last writer wins).
    pub user_id: Option<String>,
    /// Sets these attributes (each last writer wins); others are kept.
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Extends the expiry to at least now plus this (concurrent extensions keep the maximum).
    pub ttl: Option<Duration>,
}

/// One local operation on one key.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    CartAdd { sku: String, n: u64 },
    CartSetQuantity { sku: String, q: u64 },
    CartRemove { sku: String },
    CartClear,
    SessionPut(SessionUpdate),
    SessionRevoke,
    DocChange(Vec<DocEdit>),
}

/// What an operation answers: the key's value after it (a cart's items packed: the caller
/// unpacks them, and the read view takes the same block if nothing changes the cart again
/// before the commit).
#[derive(Clone, Debug)]
pub(crate) enum Output {
    Cart(PackedCart),
    Session(Option<SessionView>),
    Doc(serde_json::Value),
    Unit,
}

/// The outcome of [`apply`]: the answer, and the tagged delta to persist and publish if a tag
/// was taken (an operation that fails after taking one publishes a bottom delta, so peers do
/// not wait for that sequence number forever).
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) tagged: Option<(Tag, ObjectDelta)>,
    pub(crate) result: Result<Output, MeshError>,
}

/// Validates an id or sku for the API.
pub(crate) fn check_id(what: &'static str, id: &str) -> Result<(), MeshError> {
    validate_id(id).map_err(|source| MeshError::Invalid(InvalidInput::Id { what, source }))
}

impl Op {
    /// A rough upper estimate of how much the operation can add to an object's encoding.
    pub(crate) fn input_bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        let json = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.len() + OVERHEAD,
            other => other.to_string().len() + OVERHEAD,
        };
        OVERHEAD
            + match self {
                Op::CartAdd { sku, .. }
                | Op::CartSetQuantity { sku, .. }
                | Op::CartRemove { sku } => sku.len(),
                Op::CartClear | Op::SessionRevoke => 0,
                Op::SessionPut(u) => {
                    u.user_id.as_ref().map_or(0, String::len)
                        + u.attrs
                            .iter()
                            .map(|(k, v)| k.len() + json(v))
                            .sum::<usize>()
                }
                Op::DocChange(edits) => edits
                    .iter()
                    .map(|e| {
                        let (path, value) = match e {
                            DocEdit::Set { path, value } | DocEdit::Insert { path, value, .. } => {
                                (path, json(value))
                            }
                            DocEdit::Delete { path } | DocEdit::Increment { path, .. } => (path, 0),
                        };
                        let path: usize = path
                            .iter()
                            .map(|p| match p {
                                PathSegment::Key(k) => k.len() + OVERHEAD,
                                PathSegment::Index(_) => OVERHEAD,
                            })
                            .sum();
                        value + path
                    })
                    .sum(),
            }
    }

    /// Whether the operation can make the object larger.
    pub(crate) fn grows(&self) -> bool {
        !matches!(
            self,
            Op::CartRemove { .. } | Op::CartClear | Op::SessionRevoke
        )
    }

    /// Checks what can be checked without a tag, on the committed or current object.
    pub(crate) fn precheck(&self, object: Option<&Object>, now_ms: i64) -> Result<(), MeshError> {
        if let (Op::SessionPut(update), session) = (self, object) {
            let session = match session {
                Some(Object::Session(s)) => Some(s),
                _ => None,
            };
            if session.is_some_and(Session::is_revoked) {
                return Err(MeshError::SessionRevoked);
            }
            let live = session.is_some_and(|s| s.is_live(now_ms));
            if !live && (update.user_id.is_none() || update.ttl.is_none()) {
                return Err(InvalidInput::IncompleteSession.into());
            }
        }
        Ok(())
    }
}

/// Applies `op` to `object`, taking a tag from `next_tag` when the operation writes something
/// (`scratch` is the buffer a cart answer is packed in; `before` is the cart's packing before
/// the operation, if known: an operation on one item then sums only that item again).
pub(crate) fn apply(
    op: Op,
    object: &mut Object,
    now_ms: i64,
    next_tag: &mut dyn FnMut() -> Result<Tag, crdt_types::ClockError>,
    scratch: &mut Vec<u8>,
    before: Option<&PackedCart>,
) -> Applied {
    let failed = |e: MeshError| Applied {
        tagged: None,
        result: Err(e),
    };
    match (op, object) {
        (Op::CartAdd { sku, n }, Object::Cart(cart)) => {
            let tag = match next_tag() {
                Ok(t) => t,
                Err(e) => return failed(e.into()),
            };
            let result = cart.add(tag, &sku, n);
            cart_result(tag, result, cart, scratch, before.map(|p| (p, &*sku)))
        }
        (Op::CartSetQuantity { sku, q }, Object::Cart(cart)) => {
            let tag = match next_tag() {
                Ok(t) => t,
                Err(e) => return failed(e.into()),
            };
            let result = cart.set_quantity(tag, &sku, q);
            cart_result(tag, result, cart, scratch, before.map(|p| (p, &*sku)))
        }
        (Op::CartRemove { sku }, Object::Cart(cart)) => {
            if let Err(e) = validate_id(&sku) {
                return failed(InvalidInput::from(crdt_types::CartError::from(e)).into());
            }
            if !cart.counters().any(|(s, _)| s == sku) {
                return untouched(cart, scratch, before);
            }
            let tag = match next_tag() {
                Ok(t) => t,
                Err(e) => return failed(e.into()),
            };
            let result = cart.remove(&sku);
            cart_result(tag, result, cart, scratch, before.map(|p| (p, &*sku)))
        }
        (Op::CartClear, Object::Cart(cart)) => {
            if cart.counters().next().is_none() {
                return untouched(cart, scratch, before);
            }
            let tag = match next_tag() {
                Ok(t) => t,
                Err(e) => return failed(e.into()),
            };
            let delta = cart.clear();
            cart_result(tag, Ok(delta), cart, scratch, None)
        }
        (Op::SessionPut(update), Object::Session(session)) => {
            let tag = match next_tag() {
                Ok(t) => t,
                Err(e) => return failed(e.into()),
            };
            // A failure part-way still publishes what was applied: the local state changed.
            let (delta, result) = put_session(session, tag, &update);
            Applied {
                tagged: Some((tag, ObjectDelta::Session(delta))),
                result: result.map(|()| Output::Session(session.view(now_ms))),
            }
        }
        (Op::SessionRevoke, Object::Session(session)) => {
            if session.is_revoked() {
                return Applied {
                    tagged: None,
                    result: Ok(Output::Unit),
                };
            }
            let delta = session.revoke();
            match next_tag() {
                Ok(tag) => Applied {
                    tagged: Some((tag, ObjectDelta::Session(delta))),
                    result: Ok(Output::Unit),
                },
                Err(e) => failed(e.into()),
            }
        }
        (Op::DocChange(edits), Object::Doc(doc)) => {
            let tag = match next_tag() {
                Ok(t) => t,
                Err(e) => return failed(e.into()),
            };
            match doc.apply_edits(tag, &edits) {
                Ok(delta) => Applied {
                    tagged: Some((tag, ObjectDelta::Doc(delta))),
                    result: Ok(Output::Doc(doc.to_json())),
                },
                Err(e) => Applied {
                    tagged: Some((tag, ObjectDelta::Doc(DocDelta::default()))),
                    result: Err(InvalidInput::from(e).into()),
                },
            }
        }
        (op, object) => {
            // The API builds every key with the kind its operations need.
            debug_assert!(false, "{op:?} on a {:?}", object.kind());
            failed(MeshError::Invalid(InvalidInput::IncompleteSession))
        }
    }
}

/// The outcome of a cart operation that took `tag`. `before` is the cart's packing before
/// it and the one sku it may have changed, if known.
fn cart_result(
    tag: Tag,
    result: Result<Cart, crdt_types::CartError>,
    cart: &Cart,
    scratch: &mut Vec<u8>,
    before: Option<(&PackedCart, &str)>,
) -> Applied {
    match result {
        Ok(delta) => Applied {
            tagged: Some((tag, ObjectDelta::Cart(delta))),
            result: Ok(Output::Cart(match before {
                Some((packed, sku)) => packed.patched(cart, sku, scratch),
                None => PackedCart::of(cart, scratch),
            })),
        },
        Err(e) => Applied {
            tagged: Some((tag, ObjectDelta::Cart(Cart::new()))),
            result: Err(InvalidInput::from(e).into()),
        },
    }
}

/// An operation that had nothing to change: no tag, no delta; the answer is the cart as it
/// was (`before`, if known).
fn untouched(cart: &Cart, scratch: &mut Vec<u8>, before: Option<&PackedCart>) -> Applied {
    Applied {
        tagged: None,
        result: Ok(Output::Cart(
            before.map_or_else(|| PackedCart::of(cart, scratch), PackedCart::clone),
        )),
    }
}

/// Applies every field of `update` with one tag; returns the joined delta of what was applied
/// and whether every field was.
fn put_session(
    session: &mut Session,
    tag: Tag,
    update: &SessionUpdate,
) -> (Session, Result<(), MeshError>) {
    let mut delta = Session::new();
    let result = (|| {
        if let Some(user) = &update.user_id {
            delta.join(session.set_user_id(tag, user)?);
        }
        for (name, value) in &update.attrs {
            delta.join(session.set_attr(tag, name, value)?);
        }
        if let Some(ttl) = update.ttl {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            delta.join(session.touch(tag, ms)?);
        }
        Ok(())
    })();
    let result = result.map_err(|e| match e {
        crdt_types::SessionError::Revoked => MeshError::SessionRevoked,
        other => InvalidInput::from(other).into(),
    });
    (delta, result)
}
