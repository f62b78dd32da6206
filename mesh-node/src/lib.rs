//! The statemesh node runtime: drives the gossip core over real sockets, disks and time.
//!
//! Built so far: [`certs`] (cluster CA and node certificates), [`tls`] (mutual-TLS policy) and
//! [`transport`] (QUIC peer links). The store, embedding API and CLI are to come (issues 5, 6).

pub mod certs;
pub mod tls;
pub mod transport;
