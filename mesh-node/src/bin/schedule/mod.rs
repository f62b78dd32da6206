//! The open-loop schedule of `loadgen --rate N`: writes start at fixed times, N a second
//! across the writers, and each write is timed from its scheduled start, so a stall that
//! delays the writes behind it shows in their latency instead of thinning the load
//! (no coordinated omission).
//!
//! Write `i` of the whole run (counted across writers) is due `i / N` seconds after the load
//! starts; writer `w` of `W` makes writes `w`, `w + W`, `w + 2W`, ... A writer keeps one
//! write in flight: a write whose due time passes while the writer's previous write is still
//! unanswered is *behind schedule*, issued as soon as that answer comes, and still timed from
//! its due time.

use std::time::Duration;

/// Due times of a fixed total rate shared round-robin by a number of writers.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Writes a second across all writers (at least 1).
    rate: u64,
    /// Writers sharing the schedule (at least 1).
    writers: u64,
}

impl Schedule {
    /// `rate` writes a second shared by `writers` writers (both at least 1).
    pub fn new(rate: u64, writers: u64) -> Self {
        Self {
            rate: rate.max(1),
            writers: writers.max(1),
        }
    }

    /// When write `i` of the run is due, after the load's start.
    pub fn due(&self, i: u64) -> Duration {
        let nanos = u128::from(i) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The index in the run of writer `writer`'s `k`-th write (from 0).
    pub fn index(&self, writer: u64, k: u64) -> u64 {
        k.saturating_mul(self.writers).saturating_add(writer)
    }

    /// The first write of the run due at or after `t`.
    fn first_due_at_or_after(&self, t: Duration) -> u64 {
        // due(i) >= t  <=>  i * 1e9 / rate >= t_ns  <=>  i >= ceil(t_ns * rate / 1e9).
        let scaled = t.as_nanos() * u128::from(self.rate);
        u64::try_from(scaled.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
    }

    /// Writes of the run due in `[from, to)`: the offered load of that window.
    pub fn due_in(&self, from: Duration, to: Duration) -> u64 {
        self.first_due_at_or_after(to)
            .saturating_sub(self.first_due_at_or_after(from))
    }
}

/// One write on the schedule: when it was due, issued and acknowledged, after the load's
/// start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// When the schedule said to start it.
    pub due: Duration,
    /// When the writer started it (never before `due`).
    pub issued: Duration,
    /// When it was acknowledged.
    pub acked: Duration,
    /// Whether it was due while the writer's previous write was still unanswered.
    pub behind: bool,
}

impl Timed {
    /// Acknowledgement latency counted from the due time: what a caller arriving on schedule
    /// waited, queueing behind a slow write included.
    pub fn latency(&self) -> Duration {
        self.acked.saturating_sub(self.due)
    }

    /// How late the writer started the write (the generator's timer, or waiting for the
    /// previous answer when behind).
    pub fn issue_delay(&self) -> Duration {
        self.issued.saturating_sub(self.due)
    }
}

/// One writer's place on the schedule.
#[derive(Debug, Clone)]
pub struct WriterClock {
    schedule: Schedule,
    writer: u64,
    /// The writer's next write (its own count, from 0).
    k: u64,
    /// When the writer's previous write was acknowledged (zero before the first).
    previous_acked: Duration,
}

impl WriterClock {
    /// Writer `writer`'s clock on `schedule`, before its first write.
    pub fn new(schedule: Schedule, writer: u64) -> Self {
        Self {
            schedule,
            writer,
            k: 0,
            previous_acked: Duration::ZERO,
        }
    }

    /// When the writer's next write is due.
    pub fn next_due(&self) -> Duration {
        self.schedule.due(self.schedule.index(self.writer, self.k))
    }

    /// Records the next write, issued at `issued` and acknowledged at `acked`, and moves the
    /// clock on to the one after it.
    pub fn record(&mut self, issued: Duration, acked: Duration) -> Timed {
        let due = self.next_due();
        let timed = Timed {
            due,
            issued: issued.max(due),
            acked: acked.max(issued).max(due),
            behind: self.k > 0 && self.previous_acked > due,
        };
        self.previous_acked = timed.acked;
        self.k += 1;
        timed
    }
}

/// What the open-loop writers report for the measured window: the writes due in it.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Latencies from the due time of the window's acknowledged writes (unsorted).
    pub latencies: Vec<Duration>,
    /// Issue delays of the same writes (unsorted).
    pub issue_delays: Vec<Duration>,
    /// Of them, those due while their writer's previous write was still unanswered.
    pub behind: u64,
}

impl Tally {
    /// Adds `t` if it was due in `[from, to)`.
    pub fn add(&mut self, t: &Timed, from: Duration, to: Duration) {
        if t.due < from || t.due >= to {
            return;
        }
        self.latencies.push(t.latency());
        self.issue_delays.push(t.issue_delay());
        self.behind += u64::from(t.behind);
    }

    /// Joins another writer's tally into this one.
    pub fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.issue_delays.extend(other.issue_delays);
        self.behind += other.behind;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn writers_share_the_rate_round_robin_at_even_spacing() {
        // 1,000 a second over 4 writers: one write a ms overall, each writer every 4 ms.
        let s = Schedule::new(1_000, 4);
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|w| (0..5).map(move |k| s.due(s.index(w, k))))
            .collect();
        all.sort();
        assert_eq!(all, (0..20).map(ms).collect::<Vec<_>>());
        let mut c = WriterClock::new(s, 3);
        assert_eq!(c.next_due(), ms(3));
        c.record(ms(3), ms(4));
        assert_eq!(c.next_due(), ms(7));
    }

    #[test]
    fn due_times_of_a_rate_that_does_not_divide_a_second_do_not_drift() {
        let s = Schedule::new(3, 1);
        assert_eq!(s.due(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.due(3), Duration::from_secs(1));
        assert_eq!(s.due(3_000), Duration::from_secs(1_000));
    }

    #[test]
    fn the_writes_due_in_a_window_are_its_offered_load() {
        let s = Schedule::new(50_000, 256);
        assert_eq!(
            s.due_in(Duration::from_secs(2), Duration::from_secs(12)),
            500_000
        );
        // Half-open: write 1 (due at 20 us) is in [20 us, 40 us), write 2 is not.
        assert_eq!(
            s.due_in(Duration::from_micros(20), Duration::from_micros(40)),
            1
        );
        let s = Schedule::new(3, 1);
        assert_eq!(s.due_in(Duration::ZERO, Duration::from_secs(1)), 3);
        assert_eq!(s.due_in(Duration::from_secs(1), Duration::from_secs(1)), 0);
        // Counting agrees with the due times themselves.
        let s = Schedule::new(7_919, 13);
        let (from, to) = (
            Duration::from_micros(12_345),
            Duration::from_micros(987_654),
        );
        let counted = (0..10_000)
            .filter(|&i| (from..to).contains(&s.due(i)))
            .count();
        assert_eq!(s.due_in(from, to), counted as u64);
    }

    #[test]
    fn a_writer_that_keeps_up_is_never_behind_and_is_timed_from_the_due_time() {
        // Due every 10 ms, answered 3 ms after issue, issued 1 ms late (the timer).
        let mut c = WriterClock::new(Schedule::new(100, 1), 0);
        for k in 0..5 {
            let due = ms(10 * k);
            let t = c.record(due + ms(1), due + ms(4));
            assert!(!t.behind);
            assert_eq!(t.latency(), ms(4));
            assert_eq!(t.issue_delay(), ms(1));
        }
    }

    #[test]
    fn a_stall_delays_the_writes_behind_it_and_they_count_from_their_due_times() {
        // Due every 10 ms; the first write takes 35 ms, the rest 2 ms each, each issued as
        // soon as the writer is free (or at its due time).
        let mut c = WriterClock::new(Schedule::new(100, 1), 0);
        let mut free = Duration::ZERO;
        let mut timed = Vec::new();
        for k in 0..6 {
            let issued = c.next_due().max(free);
            let took = if k == 0 { ms(35) } else { ms(2) };
            let t = c.record(issued, issued + took);
            free = t.acked;
            timed.push(t);
        }
        let behind: Vec<bool> = timed.iter().map(|t| t.behind).collect();
        assert_eq!(behind, [false, true, true, true, true, false]);
        let latencies: Vec<Duration> = timed.iter().map(Timed::latency).collect();
        // 35; due 10, issued 35, acked 37: 27; due 20: 19; due 30: 11; due 40, issued 41
        // (the writer still busy): 3; due 50, issued on time: 2.
        assert_eq!(latencies, [ms(35), ms(27), ms(19), ms(11), ms(3), ms(2)]);
        // Timed from issue, the stall would have hidden in one write (2 ms for the rest).
        assert!(timed[1..4].iter().all(|t| t.acked - t.issued == ms(2)));
    }

    #[test]
    fn the_tally_keeps_only_the_writes_due_in_the_window() {
        let mut c = WriterClock::new(Schedule::new(100, 1), 0);
        let mut tally = Tally::default();
        let mut free = Duration::ZERO;
        for k in 0..10 {
            let issued = c.next_due().max(free);
            let took = if k == 3 { ms(25) } else { ms(1) };
            let t = c.record(issued, issued + took);
            free = t.acked;
            tally.add(&t, ms(20), ms(60));
        }
        // Due 20, 30 (took 25: acked 55), 40 (behind, 55 -> 56), 50 (behind, 56 -> 57).
        assert_eq!(tally.latencies, [ms(1), ms(25), ms(16), ms(7)]);
        assert_eq!(tally.behind, 2);
        let mut other = Tally::default();
        other.merge(tally.clone());
        other.merge(tally);
        assert_eq!((other.latencies.len(), other.behind), (8, 4));
    }
}
