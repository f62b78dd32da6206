//! What the two load generators (`loadgen`, `loadgen-http`) share: the runtime and report
//! skeleton of `main`, percentiles, a poison-tolerant lock and the writers' key spread.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `m`, taking the data of a poisoned lock as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `p` quantile of `sorted` durations, in milliseconds (NaN when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// A tiny xorshift generator: writers need spread, not quality.
pub struct Spread(pub u64);

impl Spread {
    /// The next number below `bound`.
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// The body of a load generator's `main`: runs `run` on a multi-threaded runtime, prints its
/// report with `print` and writes it as JSON to `json` if given. Errors go to stderr as
/// `name: error` with exit status 1.
pub fn main<Fut>(
    name: &str,
    json: Option<PathBuf>,
    run: impl FnOnce() -> Fut,
    print: impl FnOnce(&serde_json::Value),
) -> ExitCode
where
    Fut: Future<Output = Result<serde_json::Value, String>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(run()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    print(&report);
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("{name}: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// A number of `report` (NaN when absent).
pub fn num(report: &serde_json::Value, key: &str) -> f64 {
    report[key].as_f64().unwrap_or(f64::NAN)
}
