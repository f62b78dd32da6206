//! Measurement containers: exact millisecond histograms and the per-region-pair
//! propagation table the report and the plots read.

/// A histogram of non-negative integer samples (ms, hops, ...) with one bucket per value up to
/// a cap and one overflow bucket, so quantiles are exact below the cap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    overflow: u64,
    total: u64,
    sum: u128,
    max: u64,
}

/// Values at or above this land in the overflow bucket (10 minutes of virtual time).
const CAP: u64 = 600_000;

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `n` samples of the same value.
    pub fn record_n(&mut self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        if value >= CAP {
            self.overflow += n;
        } else {
            let i = value as usize;
            if i >= self.counts.len() {
                self.counts.resize(i + 1, 0);
            }
            self.counts[i] += n;
        }
        self.total += n;
        self.sum += value as u128 * n as u128;
        self.max = self.max.max(value);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.overflow += other.overflow;
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest sample (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The nearest-rank quantile `q` in `[0, 1]` (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (v, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return v as u64;
            }
        }
        self.max
    }

    /// `(value, fraction of samples <= value)` at every value that has samples, for CDF plots.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        let mut seen = 0;
        for (v, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                seen += c;
                out.push((v as u64, seen as f64 / self.total as f64));
            }
        }
        if self.overflow > 0 {
            out.push((self.max, 1.0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!(Histogram::new().quantile(0.5), 0);
        let cdf = h.cdf();
        assert_eq!(cdf.last(), Some(&(100, 1.0)));
        h.record(CAP + 5);
        assert_eq!(h.quantile(1.0), CAP + 5);
    }
}
