//! The wire format of peer streams: the channel tag that opens a stream and the length-prefixed
//! frames that follow. It reads and writes bytes only; what a frame means is the gossip core's.
//!
//! ```text
//! stream   = tag frame*            tag: 1 byte, the channel (see `Channel::tag`)
//! frame    = length payload        length: u32 big-endian, at most the configured maximum
//! datagram = payload               one membership message, no header
//! ```
//!
//! A reader never allocates more than the maximum frame size for one frame, and reports an
//! oversized length before reading its payload.

use bytes::Bytes;
use quinn::{ReadError, ReadExactError, RecvStream, VarInt};

use super::Channel;

/// Bytes in a frame's length prefix.
pub(crate) const HEADER_LEN: usize = 4;

/// STOP_SENDING code: the stream carried a frame over the receiver's maximum.
pub(crate) const STOP_OVERSIZED: VarInt = VarInt::from_u32(1);
/// STOP_SENDING code: the stream's tag or framing was invalid.
pub(crate) const STOP_MALFORMED: VarInt = VarInt::from_u32(2);

/// Connection close code: orderly shutdown of the node.
pub(crate) const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
/// Connection close code: the peer's certificate names a node other than the expected one.
pub(crate) const CLOSE_WRONG_NODE: VarInt = VarInt::from_u32(3);
/// Connection close code: another connection to the same peer is kept instead of this one.
pub(crate) const CLOSE_DUPLICATE: VarInt = VarInt::from_u32(4);
/// Connection close code: the peer presented no usable node identity.
pub(crate) const CLOSE_NO_IDENTITY: VarInt = VarInt::from_u32(5);

/// Why a stream could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// A frame announced more bytes than the receiver accepts.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// The announced length.
        len: u64,
        /// The receiver's maximum.
        max: usize,
    },
    /// The stream ended inside a length prefix or a payload.
    #[error("stream ended inside a frame {0}")]
    Truncated(&'static str),
    /// The stream's first byte is not a known channel tag.
    #[error("unknown stream tag {0}")]
    UnknownTag(u8),
    /// The channel may not be carried on this kind of stream.
    #[error("{0:?} frames may not arrive on a {1} stream")]
    WrongStream(Channel, &'static str),
    /// The stream or connection failed underneath (reset, closed, timed out): not the peer's
    /// framing, so not counted as malformed.
    #[error("read failed: {0}")]
    Read(#[from] ReadError),
}

impl FrameError {
    /// Whether the error is the peer's fault in framing (counted as malformed).
    pub(crate) fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::Truncated(_) | Self::UnknownTag(_) | Self::WrongStream(..)
        )
    }
}

/// The length prefix of a payload; callers guarantee `len <= u32::MAX` (the maximum frame size
/// is validated to fit).
pub(crate) fn header(len: usize) -> [u8; HEADER_LEN] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// Appends `payloads` to `chunks` as frames, without copying the payloads.
pub(crate) fn encode_frames<'a>(
    chunks: &mut Vec<Bytes>,
    payloads: impl Iterator<Item = &'a Bytes>,
) {
    for payload in payloads {
        chunks.push(Bytes::copy_from_slice(&header(payload.len())));
        chunks.push(payload.clone());
    }
}

/// Reads a stream's channel tag; `None` if the stream ended without a byte.
pub(crate) async fn read_tag(recv: &mut RecvStream) -> Result<Option<Channel>, FrameError> {
    let mut tag = [0u8; 1];
    match recv.read_exact(&mut tag).await {
        Ok(()) => Channel::from_tag(tag[0])
            .map(Some)
            .ok_or(FrameError::UnknownTag(tag[0])),
        Err(ReadExactError::FinishedEarly(_)) => Ok(None),
        Err(ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

/// Reads the next frame's payload; `None` if the stream ended cleanly between frames.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    max_frame_size: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(_)) => return Err(FrameError::Truncated("header")),
        Err(ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let len = u64::from(u32::from_be_bytes(header));
    let len = match usize::try_from(len) {
        Ok(len) if len <= max_frame_size => len,
        _ => {
            return Err(FrameError::Oversized {
                len,
                max: max_frame_size,
            });
        }
    };
    let mut payload = vec![0u8; len];
    match recv.read_exact(&mut payload).await {
        Ok(()) => Ok(Some(Bytes::from(payload))),
        Err(ReadExactError::FinishedEarly(_)) => Err(FrameError::Truncated("payload")),
        Err(ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian_length() {
        assert_eq!(header(0), [0, 0, 0, 0]);
        assert_eq!(header(0x0102_0304), [1, 2, 3, 4]);
    }

    #[test]
    fn frames_are_header_then_payload() {
        let payloads = [Bytes::from_static(b"ab"), Bytes::new()];
        let mut chunks = Vec::new();
        encode_frames(&mut chunks, payloads.iter());
        let wire: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(wire, [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0]);
    }

    #[test]
    fn channel_tags_round_trip() {
        for channel in [Channel::Membership, Channel::Delta, Channel::Sync] {
            assert_eq!(Channel::from_tag(channel.tag()), Some(channel));
        }
        assert_eq!(Channel::from_tag(0), None);
        assert_eq!(Channel::from_tag(4), None);
    }
}
