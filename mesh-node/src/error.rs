//! The errors of the embedding API, typed so that the HTTP layer can map them to status codes
//! (400 for invalid input, 404 for a revoked session, 503 while shutting down, 500 for storage
//! failures); it defines shapes only.

use crate::store::StoreError;
use crate::tls::TlsError;
use crate::transport::TransportError;
use crdt_types::{CartError, ClockError, DocError, IdError, SessionError};
use std::sync::Arc;

/// Why the input of an operation was refused. Nothing was written (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidInput {
    /// An id or sku is not 1 to 256 bytes of UTF-8 without control characters.
    #[error("invalid {what}: {source}")]
    Id {
        /// Which id: `cart id`, `sku`, `session id`, `doc id`.
        what: &'static str,
        /// What is wrong with it.
        source: IdError,
    },
    /// A cart operation's arguments were refused.
    #[error(transparent)]
    Cart(#[from] CartError),
    /// A session operation's arguments were refused.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A document edit was refused (bad path, too deep...).
    #[error(transparent)]
    Doc(#[from] DocError),
    /// A session that does not exist (or expired) needs both a user id and a time to live.
    #[error("a new session needs a user_id and a ttl")]
    IncompleteSession,
    /// The object would outgrow what one store record can hold.
    #[error("{key} is {bytes} bytes, at the limit of {max} bytes: no more growing writes")]
    ObjectTooLarge {
        /// The key.
        key: String,
        /// Its current encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// Why an operation of the embedding API failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MeshError {
    /// The input was refused; nothing was written (HTTP 400).
    #[error("invalid input: {0}")]
    Invalid(#[from] InvalidInput),
    /// The session was revoked: it reads as absent and cannot be changed (HTTP 404).
    #[error("session is revoked")]
    SessionRevoked,
    /// The node is shutting down or has stopped (HTTP 503).
    #[error("node is shutting down")]
    ShuttingDown,
    /// The store failed; the node stopped taking writes (HTTP 500).
    #[error("storage failure: {0}")]
    Storage(Arc<StoreError>),
    /// The system clock is outside what the hybrid logical clock can stamp (HTTP 500).
    #[error("clock: {0}")]
    Clock(#[from] ClockError),
}

impl MeshError {
    /// Whether the caller's input was at fault (a 4xx) rather than the node (a 5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(self, MeshError::Invalid(_) | MeshError::SessionRevoked)
    }
}

/// Why [`crate::MeshBuilder::start`] failed. Nothing keeps running after it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A builder setting is missing or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be opened, or is corrupt, foreign or of another format.
    #[error("data directory: {0}")]
    Store(#[from] StoreError),
    /// The TLS configuration could not be built.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The gossip socket could not be bound.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The operating system refused something the node needs (a thread, randomness).
    #[error("system: {0}")]
    System(String),
}
