//! Keys: which replicated object a delta or a read is about.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of a replicated object; also the first path segment of its key (CONTRACT §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `carts/{id}`.
    Cart,
    /// `sessions/{id}`.
    Session,
    /// `docs/{id}`.
    Doc,
}

impl Kind {
    /// The path segment: `carts`, `sessions` or `docs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cart => "carts",
            Kind::Session => "sessions",
            Kind::Doc => "docs",
        }
    }

    /// Parses a path segment (`carts`, `sessions`, `docs`).
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "carts" => Some(Kind::Cart),
            "sessions" => Some(Kind::Session),
            "docs" => Some(Kind::Doc),
            _ => None,
        }
    }
}

/// Why an id or sku is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty string.
    #[error("must not be empty")]
    Empty,
    /// Over 256 bytes of UTF-8.
    #[error("is {0} bytes, over the 256 byte limit")]
    TooLong(usize),
    /// Contains a control character.
    #[error("contains a control character")]
    Control,
}

/// The longest id or sku, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 256;

/// Checks an id or sku: 1 to 256 bytes of UTF-8 without control characters (CONTRACT §2).
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong(s.len()));
    }
    // Most ids are ASCII, where a control character is a byte below 0x20 or 0x7f: one test a
    // byte. Only an id with other bytes is decoded (the C1 controls are not ASCII).
    if s.bytes().any(|b| !(0x20..0x7f).contains(&b)) && s.chars().any(char::is_control) {
        return Err(IdError::Control);
    }
    Ok(())
}

/// The name of one replicated object: its kind and id, ordered kind first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// What type of object.
    pub kind: Kind,
    /// The user's id for it (validated with [`validate_id`] at the edges).
    #[serde(deserialize_with = "id_from_str")]
    pub id: String,
}

/// Decodes an id as a string the decoder may lend (bincode's slice decoder does): one copy
/// into a block of its length, where decoding a `String` had the decoder allocate and zero a
/// buffer, copy the bytes into it, and only then check them.
fn id_from_str<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Visit;
    impl serde::de::Visitor<'_> for Visit {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<String, E> {
            Ok(s.to_owned())
        }
        fn visit_string<E: serde::de::Error>(self, s: String) -> Result<String, E> {
            Ok(s)
        }
    }
    deserializer.deserialize_str(Visit)
}

impl Key {
    /// `kind/id`.
    pub fn new(kind: Kind, id: impl Into<String>) -> Self {
        Key {
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_contract() {
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id(&"a".repeat(256)), Ok(()));
        assert_eq!(validate_id(&"a".repeat(257)), Err(IdError::TooLong(257)));
        assert_eq!(validate_id("a\nb"), Err(IdError::Control));
        assert_eq!(validate_id("sku-ünïcode 42"), Ok(()));
        for control in ["\u{0}", "\u{1f}", "\u{7f}", "\u{85}", "\u{9f}"] {
            let id = format!("sku-{control}-ü");
            assert_eq!(validate_id(&id), Err(IdError::Control), "{id:?}");
            assert_eq!(
                validate_id(&id[..id.len() - 2]),
                Err(IdError::Control),
                "{id:?}"
            );
        }
        assert_eq!(validate_id(" ~\u{a0}\u{10ffff}"), Ok(()));
    }

    #[test]
    fn kinds_round_trip_through_their_path_segment() {
        for k in [Kind::Cart, Kind::Session, Kind::Doc] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("users"), None);
    }
}
