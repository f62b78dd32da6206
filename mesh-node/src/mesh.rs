//! `Mesh`: the cloneable handle an application embeds, with typed operations and reads for
//! carts, sessions and documents, membership, inspection, change subscriptions and shutdown.
//! It validates input and forwards writes to the engine; reads come from the committed view
//! without queueing behind writes. It must not touch the store or the gossip core itself.

use crate::builder::MeshBuilder;
use crate::engine::{self, Command, Shared};
use crate::error::{InvalidInput, MeshError};
use crate::inspect::{Inspection, value_json};
use crate::member::Member;
use crate::ops::{Op, Output, SessionUpdate, check_id};
use crate::packed_cart::PackedCart;
use crate::subscribe::{ChangeFilter, Subscription};
use crate::transport::{Faults, StatsSnapshot, Transport};
use crate::view::Committed;
use crate::write_stages::WriteStages;
use crdt_types::{
    CartError, CartView, DocEdit, Key, Kind, MAX_QUANTITY, Object, ReplicaId, SessionError,
    SessionView,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, oneshot};

/// A running statemesh node. Cheap to clone; every clone drives the same node.
///
/// Writes return once the change is durable in the local store (the meaning of
/// "acknowledged", CONTRACT §1) and then replicate in the background. Reads see every
/// acknowledged local write and the remote changes applied so far.
#[derive(Clone)]
pub struct Mesh {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) node_id: String,
    pub(crate) region: String,
    pub(crate) replica: ReplicaId,
    pub(crate) addr: SocketAddr,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) transport: Transport,
    pub(crate) closing: AtomicBool,
    pub(crate) engine_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held by the shutdown in progress; `true` once one completed.
    pub(crate) shutdown: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node_id", &self.inner.node_id)
            .field("region", &self.inner.region)
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// A node's counters: the gossip core's (refreshed about once a second), the transport's and
/// the engine's.
#[derive(Clone, Debug)]
pub struct NodeStats {
    /// The gossip core's counters and gauges.
    pub gossip: gossip::Stats,
    /// The transport's counters.
    pub transport: StatsSnapshot,
    /// Store commits (each one batch of operations and applied deltas).
    pub commits: u64,
    /// Durable store commits (`Durability::Immediate`): those holding a local write, raising
    /// the cursor ceiling or due by the replicated-sync bound, and empty ones of that bound.
    pub durable_commits: u64,
    /// Time spent committing, in microseconds.
    pub commit_micros: u64,
    /// Checkpoints completed (each one writes every key changed since the previous one).
    pub checkpoints: u64,
    /// Time spent writing checkpoint chunks, in microseconds.
    pub checkpoint_micros: u64,
    /// Local operations processed.
    pub local_ops: u64,
    /// Remote deltas applied.
    pub remote_deltas: u64,
    /// Key states applied from state transfers.
    pub remote_states: u64,
    /// Remote deltas or states refused as malformed or of the wrong kind.
    pub apply_errors: u64,
    /// Remote deltas or states refused because the object would outgrow the storage limit
    /// (`MAX_STORED_OBJECT_BYTES`): that key may differ from the nodes that accepted them.
    pub oversize_refused: u64,
    /// Messages the transport dropped because a peer's queue was full.
    pub transport_dropped: u64,
    /// Where the time of the batches holding local writes went, stage by stage (sums since
    /// start).
    pub write_stages: WriteStages,
}

fn cart_key(id: &str) -> Result<Key, MeshError> {
    check_id("cart id", id)?;
    Ok(Key::new(Kind::Cart, id))
}

fn session_key(id: &str) -> Result<Key, MeshError> {
    check_id("session id", id)?;
    Ok(Key::new(Kind::Session, id))
}

fn doc_key(id: &str) -> Result<Key, MeshError> {
    check_id("doc id", id)?;
    Ok(Key::new(Kind::Doc, id))
}

fn check_quantity(q: u64) -> Result<(), MeshError> {
    if q > MAX_QUANTITY {
        return Err(InvalidInput::Cart(CartError::QuantityTooLarge {
            got: q,
            max: MAX_QUANTITY,
        })
        .into());
    }
    Ok(())
}

fn cart_output(output: Output) -> PackedCart {
    match output {
        Output::Cart(packed) => packed,
        _ => PackedCart::default(),
    }
}

impl Mesh {
    /// A builder for a node.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// This node's region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The replica id of this node's data directory.
    pub fn replica(&self) -> ReplicaId {
        self.inner.replica
    }

    /// The gossip address peers reach this node at (with the actual port when bound to 0):
    /// what other nodes take as a seed.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn stopped(&self) -> MeshError {
        match self.inner.shared.failure.get() {
            Some(e) => MeshError::Storage(e.clone()),
            None => MeshError::ShuttingDown,
        }
    }

    async fn submit(&self, key: Key, op: Op) -> Result<Output, MeshError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(self.stopped());
        }
        let (reply, answer) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Op { key, op, reply })
            .await
            .is_err()
        {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn committed(&self, key: &Key) -> Option<Committed> {
        self.inner.shared.view.get(key)
    }

    /// The committed session or document of `key`.
    fn committed_object(&self, key: &Key) -> Option<Arc<Object>> {
        match self.committed(key)? {
            Committed::Object(object) => Some(object),
            Committed::Cart(_) => None,
        }
    }

    // ----- carts -----------------------------------------------------------------------------

    /// Adds `n >= 1` of `sku` to the cart; returns the cart after the add (packed, as the
    /// read view holds it: nothing is unpacked unless the caller reads it).
    pub async fn cart_add(
        &self,
        cart_id: &str,
        sku: &str,
        n: u64,
    ) -> Result<PackedCart, MeshError> {
        let key = cart_key(cart_id)?;
        check_id("sku", sku)?;
        if n == 0 {
            return Err(InvalidInput::Cart(CartError::ZeroQuantity).into());
        }
        check_quantity(n)?;
        let op = Op::CartAdd {
            sku: sku.to_owned(),
            n,
        };
        self.submit(key, op).await.map(cart_output)
    }

    /// Sets the quantity of `sku` to `q` as this node sees it (`0` removes it); concurrent
    /// changes on other nodes stay on top. Returns the cart after the set.
    pub async fn cart_set_quantity(
        &self,
        cart_id: &str,
        sku: &str,
        q: u64,
    ) -> Result<PackedCart, MeshError> {
        let key = cart_key(cart_id)?;
        check_id("sku", sku)?;
        check_quantity(q)?;
        let op = Op::CartSetQuantity {
            sku: sku.to_owned(),
            q,
        };
        self.submit(key, op).await.map(cart_output)
    }

    /// Removes `sku` as this node sees it (an add elsewhere that this node has not seen
    /// survives). Returns the cart after the remove.
    pub async fn cart_remove(&self, cart_id: &str, sku: &str) -> Result<PackedCart, MeshError> {
        let key = cart_key(cart_id)?;
        check_id("sku", sku)?;
        let op = Op::CartRemove {
            sku: sku.to_owned(),
        };
        self.submit(key, op).await.map(cart_output)
    }

    /// Removes every item as this node sees it. Returns the (empty, unless concurrent adds
    /// arrived) cart.
    pub async fn cart_clear(&self, cart_id: &str) -> Result<PackedCart, MeshError> {
        let key = cart_key(cart_id)?;
        self.submit(key, Op::CartClear).await.map(cart_output)
    }

    /// The cart as committed on this node (empty for an unknown cart).
    pub fn cart(&self, cart_id: &str) -> Result<CartView, MeshError> {
        let key = cart_key(cart_id)?;
        Ok(match self.committed(&key) {
            Some(Committed::Cart(packed)) => packed.to_view(),
            _ => CartView::default(),
        })
    }

    // ----- sessions --------------------------------------------------------------------------

    /// Creates or updates a session (see [`SessionUpdate`]); returns it, or `None` if the
    /// update left it expired. A revoked session gives [`MeshError::SessionRevoked`].
    pub async fn session_put(
        &self,
        session_id: &str,
        update: SessionUpdate,
    ) -> Result<Option<SessionView>, MeshError> {
        let key = session_key(session_id)?;
        if let Some(user) = &update.user_id {
            crdt_types::validate_id(user)
                .map_err(|e| InvalidInput::Session(SessionError::InvalidUserId(e)))?;
        }
        for name in update.attrs.keys() {
            crdt_types::validate_id(name)
                .map_err(|e| InvalidInput::Session(SessionError::InvalidAttr(e)))?;
        }
        match self.submit(key, Op::SessionPut(update)).await? {
            Output::Session(view) => Ok(view),
            _ => Ok(None),
        }
    }

    /// The session if it is live on this node (`None` when unknown, expired or revoked).
    pub fn session(&self, session_id: &str) -> Result<Option<SessionView>, MeshError> {
        let key = session_key(session_id)?;
        Ok(match self.committed_object(&key).as_deref() {
            Some(Object::Session(s)) => s.view(engine::now_ms()),
            _ => None,
        })
    }

    /// Revokes (logs out) a session: it reads as absent everywhere, for good. Idempotent.
    pub async fn session_revoke(&self, session_id: &str) -> Result<(), MeshError> {
        let key = session_key(session_id)?;
        self.submit(key, Op::SessionRevoke).await.map(|_| ())
    }

    // ----- documents -------------------------------------------------------------------------

    /// The document as JSON (`{}` for an unknown document).
    pub fn doc(&self, doc_id: &str) -> Result<serde_json::Value, MeshError> {
        let key = doc_key(doc_id)?;
        Ok(match self.committed_object(&key).as_deref() {
            Some(object @ Object::Doc(_)) => value_json(object, engine::now_ms()),
            _ => serde_json::Value::Object(serde_json::Map::new()),
        })
    }

    /// Applies a batch of edits atomically (all or none); returns the document after it.
    pub async fn doc_change(
        &self,
        doc_id: &str,
        edits: Vec<DocEdit>,
    ) -> Result<serde_json::Value, MeshError> {
        let key = doc_key(doc_id)?;
        match self.submit(key, Op::DocChange(edits)).await? {
            Output::Doc(json) => Ok(json),
            _ => Ok(serde_json::Value::Null),
        }
    }

    // ----- the node --------------------------------------------------------------------------

    /// Every member this node knows of, itself first, then by gossip address.
    pub fn members(&self) -> Vec<Member> {
        self.inner.shared.view.members()
    }

    /// A key's internals on this node (value, causal context, contributions, recent deltas).
    pub async fn inspect(&self, key: &Key) -> Result<Inspection, MeshError> {
        check_id("id", &key.id)?;
        let (reply, answer) = oneshot::channel();
        let command = Command::Inspect {
            key: key.clone(),
            reply,
        };
        if self.inner.commands.send(command).await.is_err() {
            return Err(self.stopped());
        }
        answer.await.map_err(|_| self.stopped())
    }

    /// A stream of committed changes (local and remote) to the keys `filter` selects, for
    /// cache invalidation. Changes made before the call are not replayed.
    pub fn subscribe(&self, filter: ChangeFilter) -> Subscription {
        let rx = self.inner.shared.changes.subscribe();
        let next = self.inner.shared.changes_sent.load(Ordering::Acquire);
        Subscription::new(rx, filter, next)
    }

    /// The node's counters.
    pub fn stats(&self) -> NodeStats {
        let c = &self.inner.shared.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        NodeStats {
            gossip: self
                .inner
                .shared
                .gossip_stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            transport: self.inner.transport.stats().snapshot(),
            commits: load(&c.commits),
            durable_commits: load(&c.durable_commits),
            commit_micros: load(&c.commit_micros),
            checkpoints: load(&c.checkpoints),
            checkpoint_micros: load(&c.checkpoint_micros),
            local_ops: load(&c.local_ops),
            remote_deltas: load(&c.remote_deltas),
            remote_states: load(&c.remote_states),
            apply_errors: load(&c.apply_errors),
            oversize_refused: load(&c.oversize_refused),
            transport_dropped: load(&c.transport_dropped),
            write_stages: c.stages.snapshot(),
        }
    }

    /// **Fault injection, for tests and the demo**: cut this node off from chosen peers (see
    /// [`Faults`]).
    pub fn faults(&self) -> &Faults {
        self.inner.transport.faults()
    }

    /// Stops the node cleanly: refuses new writes ([`MeshError::ShuttingDown`]), finishes and
    /// commits the writes already queued, leaves the membership, flushes and closes the
    /// transport, and closes the store. Reads keep answering from the last committed state.
    /// Calling it again (or from another clone) waits for the first call and returns.
    pub async fn shutdown(&self) {
        let mut done = self.inner.shutdown.lock().await;
        if *done {
            return;
        }
        self.inner.closing.store(true, Ordering::Release);
        let (reply, answer) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            // An error means the engine had already stopped (a storage failure).
            let _ = answer.await;
        }
        self.inner.transport.shutdown().await;
        let thread = self
            .inner
            .engine_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The engine has replied or stopped, so this is at most the store closing.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        *done = true;
        tracing::info!(node = %self.inner.node_id, "node shut down");
    }
}
