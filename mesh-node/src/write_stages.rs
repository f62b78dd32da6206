//! Where the time of a batch of local writes goes, stage by stage, from the callers' operations
//! arriving to their answers: summed over the batches that hold local writes, with a few clock
//! readings per batch and none per write, so a load generator can tell which stage a write's
//! acknowledgement waits for (BENCHMARKS "mesh-node").

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Time summed over the committed batches that held local writes, by stage, in the order a
/// batch goes through them (microseconds). Divided by `batches`, each is the stage's mean; the
/// stages from `gather` to `answer` add up to the mean time from one batch's answers to the
/// next one's, which is what a caller that waits for each answer sees per write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStages {
    /// Batches measured: committed batches holding at least one local write.
    pub batches: u64,
    /// Local operations those batches answered.
    pub ops: u64,
    /// From the answers of the batch committed before to this batch's submission: the callers'
    /// next operations arriving and being applied, including the linger for them (counted
    /// only when that batch held local writes too).
    pub gather_micros: u64,
    /// Applying the batch's local operations: within `gather_micros` for those that arrived
    /// after the previous batch's answers (with one write in flight per caller, all of them).
    pub apply_micros: u64,
    /// From the submission to the commit thread starting the append (the hand-off, and a
    /// checkpoint chunk or trimming step it was finishing).
    pub queued_micros: u64,
    /// The append on the commit thread: encoding the segment, the transaction and its fsync.
    pub append_micros: u64,
    /// From the end of the append to the engine taking its report.
    pub report_micros: u64,
    /// Publishing the batch's local deltas and handing the transmits to the transport.
    pub publish_micros: u64,
    /// Installing the batch in the read view and sending the answers.
    pub answer_micros: u64,
}

impl WriteStages {
    /// The stages of `self` less those of `earlier` (an earlier reading of the same node).
    pub fn since(&self, earlier: &WriteStages) -> WriteStages {
        WriteStages {
            batches: self.batches.saturating_sub(earlier.batches),
            ops: self.ops.saturating_sub(earlier.ops),
            gather_micros: self.gather_micros.saturating_sub(earlier.gather_micros),
            apply_micros: self.apply_micros.saturating_sub(earlier.apply_micros),
            queued_micros: self.queued_micros.saturating_sub(earlier.queued_micros),
            append_micros: self.append_micros.saturating_sub(earlier.append_micros),
            report_micros: self.report_micros.saturating_sub(earlier.report_micros),
            publish_micros: self.publish_micros.saturating_sub(earlier.publish_micros),
            answer_micros: self.answer_micros.saturating_sub(earlier.answer_micros),
        }
    }
}

/// A duration in whole microseconds, for the sums.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The engine's running sums of [`WriteStages`], readable from any handle.
#[derive(Debug, Default)]
pub(crate) struct StageCounters {
    batches: AtomicU64,
    ops: AtomicU64,
    gather: AtomicU64,
    apply: AtomicU64,
    queued: AtomicU64,
    append: AtomicU64,
    report: AtomicU64,
    publish: AtomicU64,
    answer: AtomicU64,
}

impl StageCounters {
    /// Adds one batch's stages (its `batches` field is ignored: one batch is counted).
    pub(crate) fn add(&self, batch: &WriteStages) {
        let add = |a: &AtomicU64, v: u64| a.fetch_add(v, Ordering::Relaxed);
        add(&self.batches, 1);
        add(&self.ops, batch.ops);
        add(&self.gather, batch.gather_micros);
        add(&self.apply, batch.apply_micros);
        add(&self.queued, batch.queued_micros);
        add(&self.append, batch.append_micros);
        add(&self.report, batch.report_micros);
        add(&self.publish, batch.publish_micros);
        add(&self.answer, batch.answer_micros);
    }

    /// The sums so far.
    pub(crate) fn snapshot(&self) -> WriteStages {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriteStages {
            batches: load(&self.batches),
            ops: load(&self.ops),
            gather_micros: load(&self.gather),
            apply_micros: load(&self.apply),
            queued_micros: load(&self.queued),
            append_micros: load(&self.append),
            report_micros: load(&self.report),
            publish_micros: load(&self.publish),
            answer_micros: load(&self.answer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sums_count_each_batch_once_and_subtract_stage_by_stage() {
        let counters = StageCounters::default();
        let batch = WriteStages {
            batches: 7,
            ops: 200,
            gather_micros: 1_500,
            apply_micros: 800,
            queued_micros: 40,
            append_micros: 1_200,
            report_micros: 30,
            publish_micros: 300,
            answer_micros: 100,
        };
        counters.add(&batch);
        let first = counters.snapshot();
        assert_eq!(
            first,
            WriteStages {
                batches: 1,
                ..batch
            }
        );
        counters.add(&batch);
        let second = counters.snapshot();
        assert_eq!(second.batches, 2);
        assert_eq!(second.append_micros, 2_400);
        assert_eq!(second.since(&first), first);
        assert_eq!(micros(Duration::from_nanos(1_999)), 1);
    }
}
