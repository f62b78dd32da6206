//! The discrete-event queue: what happens next in virtual time, in a total, seed-independent order.
//!
//! Events are ordered by `(time, sequence number)`: two events at the same millisecond run in
//! the order they were scheduled, so the order never depends on heap internals or on hashing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Virtual time: Unix milliseconds. Runs start at [`EPOCH_MS`], a real date, because the HLC
/// cannot stamp times before 2024.
pub type Millis = u64;

/// Where virtual time starts: 2026-09-21T12:26:40Z.
pub const EPOCH_MS: Millis = 1_790_000_000_000;

/// A priority queue of events keyed by virtual time, FIFO among equal times.
///
/// The heap holds only `(time, sequence number, slot)`, 24 bytes, so sifting moves little; the
/// events wait in `slots` (reused once popped). `(time, sequence number)` is unique, so the
/// slot never decides the order.
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(Millis, u64, u32)>>,
    slots: Vec<Option<E>>,
    free: Vec<u32>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `at`.
    pub fn push(&mut self, at: Millis, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(event);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 pending events");
                self.slots.push(Some(event));
                slot
            }
        };
        self.heap.push(Reverse((at, seq, slot)));
    }

    /// Removes and returns the earliest event.
    pub fn pop(&mut self) -> Option<(Millis, E)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        let event = self.slots[slot as usize]
            .take()
            .expect("a queued slot holds its event");
        self.free.push(slot);
        Some((at, event))
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The earliest event and its time, left in the queue.
    pub fn peek(&self) -> Option<(Millis, &E)> {
        let Reverse((at, _, slot)) = self.heap.peek()?;
        self.slots[*slot as usize].as_ref().map(|e| (*at, e))
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_insertion_order() {
        let mut q = EventQueue::new();
        q.push(5, "c");
        q.push(1, "a");
        q.push(5, "d");
        q.push(1, "b");
        assert_eq!(q.peek(), Some((1, &"a")));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (1, "b"), (5, "c"), (5, "d")]);
        assert_eq!(q.peek(), None);
    }

    #[test]
    fn reused_slots_keep_time_then_insertion_order() {
        let mut q = EventQueue::new();
        // Reference: pending (time, push order), the earliest popped first.
        let mut pending: Vec<(Millis, u64)> = Vec::new();
        let pop_both = |q: &mut EventQueue<u64>, pending: &mut Vec<(Millis, u64)>| {
            let i = (0..pending.len()).min_by_key(|&i| pending[i]).unwrap();
            let want = pending.remove(i);
            assert_eq!(q.pop(), Some(want));
        };
        // Interleave pushes and pops so freed slots are reused out of order.
        for i in 0u64..300 {
            let at = (i * 7919) % 13 + i / 10;
            q.push(at, i);
            pending.push((at, i));
            if i % 3 == 0 {
                pop_both(&mut q, &mut pending);
            }
        }
        while !pending.is_empty() {
            pop_both(&mut q, &mut pending);
        }
        assert!(q.is_empty() && q.pop().is_none());
    }
}
