//! Readings from Linux `/proc`: CPU time of a process and of this thread, resident memory.

use std::fs;

/// CPU time (user + system) of every live thread of `pid`, in nanoseconds, from
/// `/proc/PID/task/*/schedstat` (first field: time on CPU). Nanosecond resolution, where
/// `utime + stime` in `/proc/PID/stat` counts 10 ms ticks; both are reported.
pub(crate) fn process_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between the listing and the read: it no longer counts.
        if let Ok(s) = fs::read_to_string(path) {
            total += first_u64(&s)?;
        }
    }
    Some(total)
}

/// CPU time of the calling thread in nanoseconds.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    first_u64(&fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// `utime + stime` of `pid` in clock ticks (`getconf CLK_TCK`), dead threads included.
pub(crate) fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11); // fields 14 and 15
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time the whole machine spent not idle, in clock ticks (`/proc/stat`, all CPUs):
/// user, nice, system, irq, softirq and steal (time the hypervisor gave to someone else).
pub(crate) fn machine_busy_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line.split_ascii_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    Some(f.get(..8)?.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum())
}

/// Resident set size of `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Number of threads of `pid`.
pub(crate) fn threads(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

fn first_u64(s: &str) -> Option<u64> {
    s.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(process_cpu_ns(pid).is_some());
        assert!(thread_cpu_ns().is_some());
        assert!(process_cpu_ticks(pid).is_some());
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(threads(pid).unwrap() >= 1);
        assert!(machine_busy_ticks().is_some());
    }
}
