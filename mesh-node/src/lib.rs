//! The statemesh node runtime: drives the gossip core over real sockets, disks and time, and
//! offers the embedding API edge services use.
//!
//! A node is a [`Mesh`]: start one with [`Mesh::builder`], write and read carts, sessions and
//! documents through it, [`subscribe`](Mesh::subscribe) to changes for cache invalidation, and
//! [`shutdown`](Mesh::shutdown) when done. A write returns once it is durable in the node's
//! store; it then spreads to the other nodes as a CRDT delta, and every replica converges
//! (CONTRACT §1).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! # runtime.block_on(async {
//! use mesh_node::Mesh;
//!
//! let dir = tempfile::tempdir()?;
//! let mesh = Mesh::builder()
//!     .node_id("edge-1")
//!     .region("eu-west")
//!     .gossip_addr("127.0.0.1:0".parse()?)
//!     .data_dir(dir.path())
//!     .insecure_dev() // local development only: peers are not authenticated
//!     .start()
//!     .await?;
//!
//! mesh.cart_add("cart-42", "sku-apple", 2).await?;
//! let cart = mesh.cart_set_quantity("cart-42", "sku-pear", 1).await?;
//! assert_eq!(cart.items().collect::<Vec<_>>(), [("sku-apple", 2), ("sku-pear", 1)]);
//! assert_eq!(mesh.cart("cart-42")?.items[0].qty, 2);
//!
//! mesh.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! Inside, one engine thread owns the gossip core ([`gossip::Node`]), the replica state and
//! the store, and drives them in batches: inputs, local operations, one commit (durable when it holds local writes), then
//! answers, publication and transmits (the private `engine` module documents the loop). Modules:
//! [`certs`] (cluster CA and node certificates), [`tls`] (the mutual-TLS policy),
//! [`transport`] (QUIC peer links), [`store`] (the redb data directory), [`inspect`] (what
//! `inspect` returns), [`http`] (the HTTP API of CONTRACT §2), [`metrics`] (the Prometheus
//! exposition), [`settings`] (flags and TOML file of `mesh-node run`), [`run`] (a node served
//! over HTTP until a stop signal), [`shutdown`] (stop signals and draining), and the private `engine`, `state`, `view`, `ops`, `builder`, `mesh`,
//! `subscribe` and `member` modules behind the re-exports below.

mod builder;
pub mod certs;
mod committer;
mod config;
mod delta;
pub mod demo;
mod engine;
mod error;
pub mod http;
pub mod inspect;
mod key_index;
mod member;
mod mesh;
pub mod metrics;
mod ops;
mod packed_cart;
pub mod run;
pub mod settings;
pub mod shutdown;
mod state;
pub mod store;
mod subscribe;
pub mod tls;
pub mod transport;
mod view;
mod write_stages;

pub use builder::MeshBuilder;
pub use certs::TlsIdentity;
pub use config::loopback_gossip_config;
pub use delta::MeshDelta;
pub use error::{InvalidInput, MeshError, StartError};
pub use inspect::Inspection;
pub use member::{Member, MemberStatus};
pub use mesh::{Mesh, NodeStats};
pub use ops::{MAX_OBJECT_BYTES, SessionUpdate};
pub use packed_cart::{Items, PackedCart};
pub use state::MAX_STORED_OBJECT_BYTES;
pub use subscribe::{Change, ChangeFilter, ChangeSource, Subscription, SubscriptionError};
pub use write_stages::WriteStages;

pub use crdt_types::{CartView, DocEdit, Item, Key, Kind, PathSegment, ReplicaId, SessionView};
