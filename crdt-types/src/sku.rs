//! `Sku`: the key of a cart item, a short string stored inline and compared as integers.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Skus up to this many bytes live inside the key, with no heap block (the key is then as
/// large as a `String`: 24 bytes).
const INLINE: usize = 22;

/// A cart item's sku: UTF-8, up to [`INLINE`] bytes inline (most skus), longer ones on the
/// heap. A cart delta is one item, so an inline key is what spares it a heap block to
/// allocate when decoded and to free once merged; two inline keys compare as three pairs of
/// big-endian words, with no pointer to follow and no `memcmp` call.
///
/// Ordered, encoded, hashed and shown exactly as the `String` it holds, so a cart's order,
/// bytes and hash do not depend on this representation.
#[derive(Clone)]
pub(crate) struct Sku(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is the sku, the rest zeros.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer than [`INLINE`] bytes.
    Heap(Box<str>),
}

/// The big-endian word of `bytes[at..at + 8]`: comparing such words compares the bytes.
#[inline]
fn word(bytes: &[u8; INLINE], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(w)
}

impl Sku {
    /// The sku's bytes.
    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// Whether the sku is kept inline (owns no heap block).
    #[inline(always)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }

    /// The sku as a string.
    pub(crate) fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever built from a `&str` (below), so always valid UTF-8.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }
}

/// `src` (at most [`INLINE`] bytes) followed by zeros, copied as two fixed-size pieces that
/// overlap (no `memcpy` or `memset` call for a length known only at run time).
#[inline]
fn padded(src: &[u8]) -> [u8; INLINE] {
    /// Copies `src[..N]` and `src[n - N..]` (`N <= n <= 2 * N`) to the same places of `dst`.
    #[inline(always)]
    fn ends<const N: usize>(dst: &mut [u8; INLINE], src: &[u8]) {
        let n = src.len();
        dst[..N].copy_from_slice(&src[..N]);
        dst[n - N..n].copy_from_slice(&src[n - N..]);
    }
    let mut dst = [0u8; INLINE];
    match src.len() {
        0 => {}
        1..4 => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
        4..8 => ends::<4>(&mut dst, src),
        8..=16 => ends::<8>(&mut dst, src),
        _ => ends::<16>(&mut dst, src),
    }
    dst
}

impl From<&str> for Sku {
    fn from(s: &str) -> Self {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= INLINE => Sku(Repr::Inline {
                len,
                bytes: padded(s.as_bytes()),
            }),
            _ => Sku(Repr::Heap(s.into())),
        }
    }
}

impl Ord for Sku {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            // Zero padding sorts below every byte, so equal padded words mean one sku is a
            // prefix of the other (or they are equal): the shorter sorts first, as in `str`.
            // The third word overlaps the second; its first two bytes are equal by then.
            (Repr::Inline { len: a, bytes: x }, Repr::Inline { len: b, bytes: y }) => (word(x, 0)
                .cmp(&word(y, 0)))
            .then_with(|| word(x, 8).cmp(&word(y, 8)))
            .then_with(|| word(x, INLINE - 8).cmp(&word(y, INLINE - 8)))
            .then_with(|| a.cmp(b)),
            _ => cmp_long(self, other),
        }
    }
}

/// [`Sku::cmp`] when either sku is on the heap: as strings.
#[cold]
#[inline(never)]
fn cmp_long(a: &Sku, b: &Sku) -> Ordering {
    a.as_str().cmp(b.as_str())
}

impl PartialOrd for Sku {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Sku {
    #[inline(always)]
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            // Padded with zeros: equal skus have equal lengths and arrays, compared as the
            // three (overlapping) words `cmp` reads, with no `bcmp` call.
            (Repr::Inline { len: a, bytes: x }, Repr::Inline { len: b, bytes: y }) => {
                a == b
                    && word(x, 0) == word(y, 0)
                    && word(x, 8) == word(y, 8)
                    && word(x, INLINE - 8) == word(y, INLINE - 8)
            }
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Sku {}

impl Hash for Sku {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the `String` it replaces (`str` writes its bytes then 0xff), without checking
        // the UTF-8 again.
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl fmt::Debug for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Sku {
    /// The sku of `bytes` if they are UTF-8: an ASCII sku (most) is checked a word at a time
    /// and kept inline as it is, with no `str` built on the way.
    fn from_utf8(bytes: &[u8]) -> Option<Sku> {
        if bytes.len() <= INLINE && bytes.is_ascii() {
            return Some(Sku(Repr::Inline {
                len: bytes.len() as u8,
                bytes: padded(bytes),
            }));
        }
        std::str::from_utf8(bytes).ok().map(Sku::from)
    }
}

/// The wire codec (bincode, the only compact format here) writes a string and a byte string
/// alike: its length, then its bytes. So a compact serializer is handed the sku's bytes, which
/// it writes as a string would be written, without the UTF-8 check a `&str` of the inline
/// bytes costs; a human-readable one (JSON) gets the string.
impl Serialize for Sku {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(self.as_str())
        } else {
            serializer.serialize_bytes(self.as_bytes())
        }
    }
}

/// Decoded as it is encoded: from a compact format as the bytes of a string (the same bytes
/// a string reads), checked to be UTF-8 here, from a human-readable one as a string.
impl<'de> Deserialize<'de> for Sku {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Sku;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Sku, E> {
                Ok(Sku::from(s))
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Sku, E> {
                Sku::from_utf8(b).ok_or_else(|| E::custom("a sku is not UTF-8"))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visit)
        } else {
            deserializer.deserialize_bytes(Visit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_compares_as_str() {
        let words = [
            "",
            "a",
            "a\u{0}",
            "a\u{0}\u{0}",
            "ab",
            "b",
            "sku-00009",
            "sku-00010",
            "sku-0001",
            "0123456789abcdefghijkl",
            "0123456789abcdefghijk",
            "0123456789abcdefghijkm",
            "0123456789abcdefghijklm",
            "0123456789abcdefghijkla",
            "0123456789abcdefghijk\u{0}",
            "0123456789abcdefghijkl\u{0}",
            "ü",
            "zzzzzzzzzzzzzzzzzzzzzzzzzz",
            "zzzzzzzzzzzzzzzzzzzzzz",
        ];
        let lengths: Vec<String> = (0..=23)
            .map(|n| "abcdefghijklmnopqrstuvwxyz"[..n].to_owned())
            .collect();
        for a in words
            .iter()
            .copied()
            .chain(lengths.iter().map(String::as_str))
        {
            let sa = Sku::from(a);
            assert_eq!(sa.as_str(), a);
            for b in words {
                let sb = Sku::from(b);
                assert_eq!(sa.cmp(&sb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(sa == sb, a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn hashes_encodes_and_decodes_as_string() {
        use std::collections::hash_map::DefaultHasher;
        for s in ["apple", "0123456789abcdefghijklmnopq"] {
            let hash = |v: &dyn Fn(&mut DefaultHasher)| {
                let mut h = DefaultHasher::new();
                v(&mut h);
                h.finish()
            };
            let sku = Sku::from(s);
            assert_eq!(hash(&|h| sku.hash(h)), hash(&|h| s.to_owned().hash(h)));
            let bytes = crate::wire::encode(&sku).expect("encodes");
            assert_eq!(bytes, crate::wire::encode(&s.to_owned()).expect("encodes"));
            let back: Sku = crate::wire::decode(&bytes).expect("decodes");
            assert_eq!(back.as_str(), s);
            assert_eq!(crate::wire::encoded_len(&sku), bytes.len());
            let json = serde_json::to_string(&sku).expect("encodes");
            assert_eq!(json, serde_json::to_string(s).expect("encodes"));
            let back: Sku = serde_json::from_str(&json).expect("decodes");
            assert_eq!(back.as_str(), s);
        }
        // Bytes that are not UTF-8 do not decode, inline or not.
        for bad in [&b"sku-\xff"[..], &[b'a'; 30][..]] {
            let mut bytes = crate::wire::encode(&bad.to_vec()).expect("encodes");
            if bad.len() == 30 {
                let last = bytes.len() - 1;
                bytes[last] = 0xc3;
            }
            assert!(crate::wire::decode::<Sku>(&bytes).is_err(), "{bad:?}");
        }
        for ok in ["ü-sku", "0123456789abcdefghijklmnopqü"] {
            let bytes = crate::wire::encode(&ok.to_owned()).expect("encodes");
            let back: Sku = crate::wire::decode(&bytes).expect("decodes");
            assert_eq!(back.as_str(), ok);
        }
    }
}
