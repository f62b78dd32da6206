//! The one wire and disk encoding of statemesh: bincode 2 (serde) behind a format version byte.
//!
//! Every message between nodes and every record in a node's store goes through [`encode`]
//! and [`decode`], so the codec is this file. Decoding untrusted bytes returns an error and
//! never panics; inputs over the size limit are refused before anything is decoded.
//!
//! What a forged length prefix can make the decoder allocate is bounded by the input's size,
//! not by the claim: bincode's claim limit is scaled to the input (a string or byte buffer
//! claiming more than 16 bytes per input byte is refused before its buffer exists), and
//! sequences and maps preallocate at most 1 MiB whatever length is claimed (serde's rule for a
//! `Vec`, which the stores' own visitors keep: `sorted_seq`).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of the encoding; the first byte of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

/// The largest encoded value accepted by default (4 MiB).
pub const MAX_ENCODED_BYTES: usize = 4 << 20;

/// How many bytes bincode may claim per input byte: a one-byte varint claims the width of its
/// integer type, at most 16 bytes (`u128`); a string claims exactly its length.
const CLAIM_PER_INPUT_BYTE: usize = 16;

/// Why bytes could not be decoded (or a value encoded).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The input is larger than the limit; nothing was decoded.
    #[error("encoded value is {len} bytes, over the {max} byte limit")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// The input is empty.
    #[error("empty input")]
    Empty,
    /// The version byte is not one this build understands.
    #[error("unknown format version {0} (this build reads {FORMAT_VERSION})")]
    Version(u8),
    /// The body is not a valid encoding of the expected type.
    #[error("malformed value: {0}")]
    Malformed(String),
    /// The value decoded but bytes were left over.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// The value could not be encoded (a map key that is not serializable, or over the limit).
    #[error("cannot encode: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Decodes `body` with a claim limit of at least [`CLAIM_PER_INPUT_BYTE`] times its length
/// (bincode takes the limit as a const generic, hence the buckets).
fn decode_body<T: DeserializeOwned>(
    body: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice;
    const K: usize = CLAIM_PER_INPUT_BYTE;
    match body.len() {
        0..=4_096 => decode_from_slice(body, standard().with_limit::<{ 4_096 * K }>()),
        4_097..=65_536 => decode_from_slice(body, standard().with_limit::<{ 65_536 * K }>()),
        65_537..=1_048_576 => decode_from_slice(body, standard().with_limit::<{ 1_048_576 * K }>()),
        _ => decode_from_slice(body, standard().with_limit::<{ MAX_ENCODED_BYTES * K }>()),
    }
}

/// What [`encode`] allocates before it writes: most deltas and messages fit.
const INITIAL_CAPACITY: usize = 128;

/// Encodes `value` as the version byte followed by its bincode body.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    // Room for a typical message up front: growing from one byte reallocated about ten times
    // per message (BENCHMARKS "simulations").
    let mut out = Vec::with_capacity(INITIAL_CAPACITY);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    if out.len() > MAX_ENCODED_BYTES {
        return Err(WireError::TooLarge {
            len: out.len(),
            max: MAX_ENCODED_BYTES,
        });
    }
    Ok(out)
}

/// The encoded size of `value` in bytes, version byte included (`usize::MAX` for a value
/// [`encode`] refuses as unencodable), counted without encoding it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    crate::wire_size::body_len(value).map_or(usize::MAX, |n| n.saturating_add(1))
}

/// Decodes a value written by [`encode`], refusing inputs over [`MAX_ENCODED_BYTES`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    decode_with_limit(bytes, MAX_ENCODED_BYTES)
}

/// Decodes a value written by [`encode`], refusing inputs over `max` bytes.
pub fn decode_with_limit<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    let max = max.min(MAX_ENCODED_BYTES);
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(WireError::Version(version));
    }
    let (value, read) = decode_body(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(WireError::Trailing(body.len() - read));
    }
    Ok(value)
}
