//! HLC stamps: a hybrid logical clock timestamp plus the replica that made it, totally ordered.

use crate::ReplicaId;
use hlc_gen::HlcTimestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A hybrid logical clock reading (hlc-gen's 64-bit layout: 42 bits of milliseconds since
/// 2024-01-01, 22 bits of logical counter) tagged with its replica.
///
/// Ordered by `(hlc, replica)`, so two stamps are never equal unless they are the same event:
/// this is the last-writer-wins order of CONTRACT §1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Stamp {
    /// The raw hlc-gen timestamp (`HlcTimestamp::as_u64`).
    pub hlc: u64,
    /// The replica whose clock produced it; breaks ties.
    pub replica: ReplicaId,
}

impl Stamp {
    /// Builds a stamp from an hlc-gen timestamp.
    pub fn new(hlc: HlcTimestamp, replica: ReplicaId) -> Self {
        Stamp {
            hlc: hlc.as_u64(),
            replica,
        }
    }

    /// The hlc-gen view of the timestamp part.
    pub fn hlc(&self) -> HlcTimestamp {
        // Every u64 is a valid layout: the conversion only checks the field widths.
        HlcTimestamp::try_from(self.hlc).unwrap_or_default()
    }

    /// The physical part in Unix milliseconds.
    pub fn wall_ms(&self) -> i64 {
        self.hlc().timestamp()
    }

    /// The logical counter part.
    pub fn logical(&self) -> u64 {
        self.hlc().count()
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}@{:?}",
            self.wall_ms(),
            self.logical(),
            self.replica
        )
    }
}
