//! The origins of a per-origin hash table, listed in replica order: what lets a table keyed by
//! origin (one hash lookup a question, where a `BTreeMap` of 1000 origins walks three cold
//! nodes) still be walked in replica order, as digests and repair plans are. It holds the ids
//! only, and must not hold what the table keeps for them.

use crdt_types::ReplicaId;

/// The most origins kept out of replica order, below 8 times as many in order.
const MAX_UNSORTED: usize = 32;

/// The origins seen, the first `sorted` in replica order and the newer ones after them as they
/// came, so a walk in replica order costs a sort of a copy of the few new ones and one merge.
/// A new origin is appended; the tail is merged in once it outgrows an eighth of the prefix.
/// (Kept sorted at every insert, each new origin would shift half the vector: at 1000 origins,
/// where every delivery of a broadcast is a new origin, 4 KB moved per delivery.)
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginOrder {
    order: Vec<ReplicaId>,
    sorted: usize,
}

impl OriginOrder {
    /// Adds an origin the order does not hold yet (the caller's table just gained it).
    pub(crate) fn push(&mut self, replica: ReplicaId) {
        self.order.push(replica);
        if self.order.len() - self.sorted > MAX_UNSORTED.max(self.sorted / 8) {
            let len = self.order.len();
            let mut merged = Vec::with_capacity(len + MAX_UNSORTED.max(len / 8) + 1);
            merged.extend(self.iter());
            self.order = merged;
            self.sorted = len;
        }
    }

    /// The origins in ascending replica order.
    pub(crate) fn iter(&self) -> Ascending<'_> {
        let mut tail = self.order[self.sorted..].to_vec();
        tail.sort_unstable();
        Ascending {
            prefix: &self.order[..self.sorted],
            tail,
            i: 0,
            j: 0,
        }
    }
}

/// [`OriginOrder::iter`]: a merge of the sorted prefix and a sorted copy of the tail.
pub(crate) struct Ascending<'a> {
    prefix: &'a [ReplicaId],
    tail: Vec<ReplicaId>,
    i: usize,
    j: usize,
}

impl Iterator for Ascending<'_> {
    type Item = ReplicaId;

    fn next(&mut self) -> Option<ReplicaId> {
        let next = match (self.prefix.get(self.i), self.tail.get(self.j)) {
            (Some(&a), Some(&b)) if b < a => {
                self.j += 1;
                b
            }
            (Some(&a), _) => {
                self.i += 1;
                a
            }
            (None, Some(&b)) => {
                self.j += 1;
                b
            }
            (None, None) => return None,
        };
        Some(next)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.prefix.len() - self.i + self.tail.len() - self.j;
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_origin_in_ascending_order_between_and_after_merges() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut order = OriginOrder::default();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = ReplicaId(x % 100_000);
            if seen.insert(r) {
                order.push(r);
            }
            if i % 37 == 0 || i == 1999 {
                let listed: Vec<ReplicaId> = order.iter().collect();
                assert_eq!(
                    listed,
                    seen.iter().copied().collect::<Vec<_>>(),
                    "after {i}"
                );
            }
        }
        // Some origins are still in the unsorted tail, or the test would not test the merge.
        assert!(order.sorted < order.order.len() && order.sorted > 0);
    }
}
