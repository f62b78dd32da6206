//! The size of a value's wire encoding, counted without encoding it.
//!
//! A serde serializer that adds up what bincode 2's serde encoder (standard configuration:
//! variable-length integers, little endian) would write for each call, instead of running the
//! encoder into a writer that only counts: gossip asks the size of every payload it batches,
//! and encoding one just to count it took about 600 instructions for a one-add cart delta.
//! `tests/wire.rs` checks the count against the encoding on every type that travels.

use serde::ser::{self, Serialize};
use std::fmt;

/// The largest integer bincode writes in one byte; larger ones get a marker byte first.
const SINGLE_BYTE_MAX: u64 = 250;

/// The bytes bincode's varint takes for `v`.
#[inline]
fn varint(v: u64) -> usize {
    if v <= SINGLE_BYTE_MAX {
        1
    } else if v <= u64::from(u16::MAX) {
        3
    } else if v <= u64::from(u32::MAX) {
        5
    } else {
        9
    }
}

/// The bytes bincode's varint takes for `v` (a `u128`: one more width).
fn varint_u128(v: u128) -> usize {
    u64::try_from(v).map_or(17, varint)
}

/// The unsigned integer bincode zigzag-encodes a signed `v` as.
#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The bytes `value` encodes to in the bincode body (no version byte), or `None` where the
/// encoder would fail (a sequence without a length, `collect_str`, a serializer's own error).
pub(crate) fn body_len<T: Serialize + ?Sized>(value: &T) -> Option<usize> {
    let mut size = Size(0);
    value.serialize(&mut size).ok()?;
    Some(size.0)
}

/// The running count.
struct Size(usize);

/// Why a value has no encoding (the encoder would have failed).
#[derive(Debug)]
struct NoEncoding;

impl fmt::Display for NoEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the value cannot be encoded")
    }
}

impl std::error::Error for NoEncoding {}

impl ser::Error for NoEncoding {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NoEncoding
    }
}

impl Size {
    #[inline]
    fn add(&mut self, n: usize) -> Result<(), NoEncoding> {
        self.0 = self.0.saturating_add(n);
        Ok(())
    }
}

impl<'a> ser::Serializer for &'a mut Size {
    type Ok = ();
    type Error = NoEncoding;
    type SerializeSeq = &'a mut Size;
    type SerializeTuple = &'a mut Size;
    type SerializeTupleStruct = &'a mut Size;
    type SerializeTupleVariant = &'a mut Size;
    type SerializeMap = &'a mut Size;
    type SerializeStruct = &'a mut Size;
    type SerializeStructVariant = &'a mut Size;

    fn serialize_bool(self, _: bool) -> Result<(), NoEncoding> {
        self.add(1)
    }
    fn serialize_i8(self, _: i8) -> Result<(), NoEncoding> {
        self.add(1)
    }
    fn serialize_i16(self, v: i16) -> Result<(), NoEncoding> {
        self.add(varint(zigzag(i64::from(v))))
    }
    fn serialize_i32(self, v: i32) -> Result<(), NoEncoding> {
        self.add(varint(zigzag(i64::from(v))))
    }
    fn serialize_i64(self, v: i64) -> Result<(), NoEncoding> {
        self.add(varint(zigzag(v)))
    }
    fn serialize_i128(self, v: i128) -> Result<(), NoEncoding> {
        self.add(varint_u128(((v << 1) ^ (v >> 127)) as u128))
    }
    fn serialize_u8(self, _: u8) -> Result<(), NoEncoding> {
        self.add(1)
    }
    fn serialize_u16(self, v: u16) -> Result<(), NoEncoding> {
        self.add(varint(u64::from(v)))
    }
    fn serialize_u32(self, v: u32) -> Result<(), NoEncoding> {
        self.add(varint(u64::from(v)))
    }
    fn serialize_u64(self, v: u64) -> Result<(), NoEncoding> {
        self.add(varint(v))
    }
    fn serialize_u128(self, v: u128) -> Result<(), NoEncoding> {
        self.add(varint_u128(v))
    }
    fn serialize_f32(self, _: f32) -> Result<(), NoEncoding> {
        self.add(4)
    }
    fn serialize_f64(self, _: f64) -> Result<(), NoEncoding> {
        self.add(8)
    }
    fn serialize_char(self, v: char) -> Result<(), NoEncoding> {
        self.add(v.len_utf8())
    }
    fn serialize_str(self, v: &str) -> Result<(), NoEncoding> {
        self.add(varint(v.len() as u64).saturating_add(v.len()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), NoEncoding> {
        self.add(varint(v.len() as u64).saturating_add(v.len()))
    }
    fn serialize_none(self) -> Result<(), NoEncoding> {
        self.add(1)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), NoEncoding> {
        self.add(1)?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), NoEncoding> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), NoEncoding> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
    ) -> Result<(), NoEncoding> {
        self.add(varint(u64::from(index)))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), NoEncoding> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), NoEncoding> {
        self.add(varint(u64::from(index)))?;
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, NoEncoding> {
        // bincode writes the length first, so it refuses a sequence without one.
        self.add(varint(len.ok_or(NoEncoding)? as u64))?;
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, NoEncoding> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, NoEncoding> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, NoEncoding> {
        self.add(varint(u64::from(index)))?;
        Ok(self)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self, NoEncoding> {
        // A length, then the entries: as a sequence.
        self.serialize_seq(len)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, NoEncoding> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, NoEncoding> {
        // The variant index, then the fields: as a tuple variant.
        self.serialize_tuple_variant(name, index, variant, len)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> Result<(), NoEncoding> {
        // As bincode's serde encoder: refused.
        Err(NoEncoding)
    }
    fn is_human_readable(&self) -> bool {
        // As bincode's: types choose their compact form.
        false
    }
}

/// One element, field or entry of a compound value: its own size.
macro_rules! compound {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for &mut Size {
            type Ok = ();
            type Error = NoEncoding;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NoEncoding> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), NoEncoding> {
                Ok(())
            }
        }
    )*};
}
compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Size {
    type Ok = ();
    type Error = NoEncoding;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), NoEncoding> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NoEncoding> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), NoEncoding> {
        Ok(())
    }
}

/// A struct's field: its value's size (bincode writes no names).
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for &mut Size {
            type Ok = ();
            type Error = NoEncoding;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), NoEncoding> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), NoEncoding> {
                Ok(())
            }
        }
    )*};
}
fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;

    /// `body_len` against the encoder's output.
    fn same<T: Serialize + ?Sized + fmt::Debug>(value: &T) {
        let encoded = crate::wire::encode(value).map(|b| b.len() - 1).ok();
        assert_eq!(body_len(value), encoded, "{value:?}");
    }

    #[test]
    fn counts_what_bincode_writes_for_every_serde_shape() {
        for v in [
            0u64,
            250,
            251,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            same(&v);
            same(&(v as u16));
            same(&(v as u32));
            same(&(v as i64));
            same(&(v as i64).wrapping_neg());
            same(&(v as i16));
            same(&(v as i32).wrapping_neg());
            same(&u128::from(v));
            same(&(u128::from(v) << 64));
            same(&(-(i128::from(v) << 63)));
        }
        same(&(true, 7u8, -3i8, 1.5f32, 2.5f64, 'a', 'é', '€', '😀'));
        same(&("", "héllo".to_owned(), vec![1u8; 300]));
        same(&serde_bytes_like(&[9u8; 260]));
        same(&(None::<u64>, Some(300u64), (), [1u64, 2, 3]));
        same(&std::collections::BTreeMap::from([(1u64, "a"), (300, "b")]));
        #[derive(serde::Serialize, Debug)]
        enum E {
            Unit,
            New(u64),
            Tuple(u8, String),
            Struct { a: u64, b: Vec<u16> },
        }
        #[derive(serde::Serialize, Debug)]
        struct Unit;
        #[derive(serde::Serialize, Debug)]
        struct Tuple(u64, i64);
        same(&(
            E::Unit,
            E::New(1000),
            E::Tuple(1, "x".into()),
            Unit,
            Tuple(3, -4),
        ));
        same(&E::Struct {
            a: 1 << 40,
            b: vec![1, 1000],
        });
        // What bincode refuses, this refuses.
        struct NoLen;
        impl Serialize for NoLen {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use ser::SerializeSeq;
                let mut seq = s.serialize_seq(None)?;
                seq.serialize_element(&1u8)?;
                seq.end()
            }
        }
        assert_eq!(body_len(&NoLen), None);
        assert!(crate::wire::encode(&NoLen).is_err());
    }

    /// A byte string serialised with `serialize_bytes`.
    fn serde_bytes_like(b: &[u8]) -> impl Serialize + fmt::Debug + '_ {
        #[derive(Debug)]
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(b)
    }
}
