//! Examples of embedding statemesh.
//!
//! [`edge`] is an edge service that embeds a node in its own process and serves a cart page
//! from it: writes go through the node (durable locally, then replicated), reads come from the
//! node's committed state, and rendered pages are cached until the node reports a change to
//! the cart, local or remote. Run it with `cargo run -p examples --bin edge_service -- --help`.

pub mod edge;
