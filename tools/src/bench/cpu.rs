//! Where the CPU went during a benchmark phase: per thread of this process (from
//! `/proc/self/task/*/schedstat`, nanoseconds on CPU) and for the whole machine (`/proc/stat`).
//!
//! On a 2-core machine the engine's throughput is bounded by CPU as often as by the disk; the
//! split says which stage to work on (the putting threads, the engine's writer, the kernel's
//! io_uring workers copying into the page cache, writeback).
//!
//! A kernel io_uring worker that exits during the phase (idle workers time out) is missing from
//! the second snapshot, so its time is not counted: the split is a lower bound per stage.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// CPU time of one thread, read from `/proc`.
#[derive(Debug, Clone)]
struct ThreadTime {
    comm: String,
    on_cpu_ns: u64,
}

/// CPU counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    threads: BTreeMap<u32, ThreadTime>,
    /// Busy and total jiffies of all CPUs (`/proc/stat`'s first line).
    machine_busy: u64,
    machine_total: u64,
}

/// CPU used between two snapshots, by stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuSplit {
    /// Nanoseconds on CPU per thread group (`put`, `tern-writer`, `io_uring workers`, ...).
    pub groups: BTreeMap<String, u64>,
    /// Share of all CPUs' time the machine was busy (any process, the kernel included).
    pub machine_busy_fraction: f64,
    pub cpus: usize,
}

impl CpuSnapshot {
    /// Read the counters now. Anything `/proc` does not offer is left out (the split is a
    /// diagnostic; it never fails a benchmark).
    pub fn take() -> CpuSnapshot {
        let mut snap = CpuSnapshot::default();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let path = entry.path();
                let comm = std::fs::read_to_string(path.join("comm"))
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_default();
                let on_cpu_ns = std::fs::read_to_string(path.join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok());
                if let Some(on_cpu_ns) = on_cpu_ns {
                    snap.threads.insert(tid, ThreadTime { comm, on_cpu_ns });
                }
            }
        }
        if let Some((busy, total)) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| machine_jiffies(&s))
        {
            snap.machine_busy = busy;
            snap.machine_total = total;
        }
        snap
    }
}

/// Busy and total jiffies from the `cpu ` line of `/proc/stat` (idle and iowait count as not
/// busy; steal is left out of both).
fn machine_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    if v.len() < 7 {
        return None;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6];
    Some((busy, busy + v[3] + v[4]))
}

/// The group a thread's CPU time is reported under.
fn group_of(comm: &str) -> String {
    if comm.starts_with("iou-wrk") || comm.starts_with("iou-sqp") {
        "io_uring workers (kernel)".into()
    } else if comm.starts_with("put-") {
        "putting threads".into()
    } else if comm.starts_with("tern-") {
        comm.to_owned()
    } else {
        "other threads".into()
    }
}

/// CPU used from `before` to `after`; `extra` adds the putting threads, which measure
/// themselves (they may have exited before `after` was taken, so `/proc`'s view of them is
/// ignored).
pub fn split(before: &CpuSnapshot, after: &CpuSnapshot, extra: &[(&str, Duration)]) -> CpuSplit {
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, t) in &after.threads {
        if t.comm.starts_with("put-") {
            continue;
        }
        let start = before.threads.get(tid).map_or(0, |b| b.on_cpu_ns);
        let used = t.on_cpu_ns.saturating_sub(start);
        if used > 0 {
            *groups.entry(group_of(&t.comm)).or_default() += used;
        }
    }
    for (name, d) in extra {
        *groups.entry(group_of(name)).or_default() += d.as_nanos() as u64;
    }
    let total = after.machine_total.saturating_sub(before.machine_total);
    let busy = after.machine_busy.saturating_sub(before.machine_busy);
    CpuSplit {
        groups,
        machine_busy_fraction: if total > 0 {
            busy as f64 / total as f64
        } else {
            0.0
        },
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// CPU time this thread has used so far (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl CpuSplit {
    /// One line per group, as ns of CPU per message, largest first.
    pub fn lines(&self, messages: u64, elapsed_s: f64) -> Vec<String> {
        let mut groups: Vec<(&String, &u64)> = self.groups.iter().collect();
        groups.sort_by(|a, b| b.1.cmp(a.1));
        let per = |ns: u64| ns as f64 / messages.max(1) as f64;
        let mut out = vec![format!(
            "machine busy {:.0}% of {} CPUs",
            self.machine_busy_fraction * 100.0,
            self.cpus
        )];
        for (name, ns) in groups {
            out.push(format!(
                "{name}: {:.0} ns/msg ({:.0}% of one CPU)",
                per(*ns),
                *ns as f64 / 1e9 / elapsed_s.max(1e-9) * 100.0
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_jiffies_reads_the_cpu_line() {
        let stat = "cpu  10 2 30 400 5 6 7 8 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(machine_jiffies(stat), Some((55, 460)));
        assert_eq!(machine_jiffies("cpu0 1 2 3\n"), None);
        assert_eq!(machine_jiffies("cpu  1 2 3\n"), None);
    }

    #[test]
    fn split_charges_only_the_time_used_between_snapshots() {
        let mut before = CpuSnapshot::default();
        before.threads.insert(
            1,
            ThreadTime {
                comm: "tern-writer".into(),
                on_cpu_ns: 1_000,
            },
        );
        let mut after = before.clone();
        after.threads.get_mut(&1).expect("thread 1").on_cpu_ns = 4_000;
        after.threads.insert(
            2,
            ThreadTime {
                comm: "iou-wrk-7".into(),
                on_cpu_ns: 500,
            },
        );
        after.threads.insert(
            3,
            ThreadTime {
                comm: "put-0".into(),
                on_cpu_ns: 9_999,
            },
        );
        let s = split(&before, &after, &[("put-0", Duration::from_nanos(2_000))]);
        assert_eq!(s.groups["tern-writer"], 3_000);
        assert_eq!(s.groups["io_uring workers (kernel)"], 500);
        assert_eq!(s.groups["putting threads"], 2_000);
    }
}
