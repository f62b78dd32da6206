//! The load generator's CPU accounting: user plus system time of this process and of its
//! threads by name, and how long those threads waited for a core, read from Linux's
//! `/proc/self`.

/// CPU time (user plus system) this process used so far, in seconds, in total (exited threads
/// included) and by thread name (live threads only), from Linux's `/proc/self` (empty
/// elsewhere). Differences over the measured window give CPU time per acknowledged write, a
/// figure less sensitive to other jobs on the machine than writes per second.
pub struct CpuTimes {
    /// The whole process.
    pub total_s: f64,
    /// Live threads, summed by name (`engine-origin`, `store-origin`, `tokio-runtime-w`...).
    pub by_thread: std::collections::BTreeMap<String, f64>,
    /// Live threads by name: seconds spent runnable but waiting for a core (the second field
    /// of `/proc/<tid>/schedstat`). Against `by_thread` it tells a thread short of CPU (the
    /// two cores taken) from one with too much work (BENCHMARKS "mesh-node": the lag bursts).
    pub wait_by_thread: std::collections::BTreeMap<String, f64>,
}

impl CpuTimes {
    /// Reads the process's and its threads' CPU times now.
    pub fn now() -> Self {
        let total_s = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| stat_cpu_s(&s))
            .unwrap_or(f64::NAN);
        let mut by_thread = std::collections::BTreeMap::new();
        let mut wait_by_thread = std::collections::BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let name = name.trim();
                let cpu = std::fs::read_to_string(path.join("stat"))
                    .ok()
                    .and_then(|s| stat_cpu_s(&s));
                if let Some(cpu) = cpu {
                    *by_thread.entry(name.to_owned()).or_insert(0.0) += cpu;
                }
                let wait = std::fs::read_to_string(path.join("schedstat"))
                    .ok()
                    .and_then(|s| schedstat_wait_s(&s));
                if let Some(wait) = wait {
                    *wait_by_thread.entry(name.to_owned()).or_insert(0.0) += wait;
                }
            }
        }
        CpuTimes {
            total_s,
            by_thread,
            wait_by_thread,
        }
    }

    /// What was used from `earlier` to `self`, as JSON: `total_s`, `by_thread` and
    /// `wait_by_thread` (seconds).
    pub fn since(&self, earlier: &CpuTimes) -> serde_json::Value {
        serde_json::json!({
            "total_s": self.total_s - earlier.total_s,
            "by_thread": differences(&self.by_thread, &earlier.by_thread),
            "wait_by_thread": differences(&self.wait_by_thread, &earlier.wait_by_thread),
        })
    }
}

/// `now - earlier` per thread name, as a JSON object (a name new since `earlier` counts from 0).
fn differences(
    now: &std::collections::BTreeMap<String, f64>,
    earlier: &std::collections::BTreeMap<String, f64>,
) -> serde_json::Map<String, serde_json::Value> {
    now.iter()
        .map(|(name, s)| {
            let before = earlier.get(name).copied().unwrap_or(0.0);
            (name.clone(), serde_json::json!(s - before))
        })
        .collect()
}

/// The run-queue wait of a `/proc/.../schedstat` line (on-CPU ns, waiting ns, timeslices), in
/// seconds.
fn schedstat_wait_s(schedstat: &str) -> Option<f64> {
    let wait_ns: u64 = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(wait_ns as f64 / 1e9)
}

/// utime + stime of a `/proc/.../stat` line, in seconds (clock ticks of 1/100 s, Linux's
/// fixed `USER_HZ`).
fn stat_cpu_s(stat: &str) -> Option<f64> {
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid (4), ..., utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}
