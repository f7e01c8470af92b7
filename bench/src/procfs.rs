//! What the runner and the probes read from `/proc`: CPU time (utime + stime) and
//! resident memory of a process and its descendants (nginx is a master and workers).

use std::fs;
use std::io;

/// Linux reports utime/stime in USER_HZ ticks, which is 100 on every architecture
/// this runs on (it is part of the user-space ABI, independent of the kernel's HZ).
pub(crate) const TICKS_PER_SEC: u64 = 100;

struct Stat {
    ppid: u32,
    cpu_ticks: u64,
}

fn stat(pid: u32) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc stat"))
    };
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    Ok(Stat {
        ppid: u32::try_from(num(1)?).unwrap_or(0),
        cpu_ticks: num(11)? + num(12)?,
    })
}

/// `pid` and every process below it.
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let Ok(dir) = fs::read_dir("/proc") else {
        return all;
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat(p).ok()?.ppid)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    all
}

/// CPU seconds used so far by `pids` (processes that have exited count as zero).
pub(crate) fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|&p| stat(p).ok())
        .map(|s| s.cpu_ticks)
        .sum();
    ticks as f64 / TICKS_PER_SEC as f64
}

/// Resident set size of `pids`, in bytes.
pub(crate) fn rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .sum()
}

/// CPU seconds of this process so far.
pub(crate) fn self_cpu_seconds() -> f64 {
    cpu_seconds(&[std::process::id()])
}

/// The kernel's TCP memory in bytes (`/proc/net/sockstat`, `TCP: ... mem N` pages).
pub(crate) fn kernel_tcp_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse::<u64>().ok().map(|pages| pages * 4096);
        }
    }
    None
}

/// The kernel's slab memory in bytes (`/proc/meminfo` `Slab:`): socket, file and
/// epoll structures live there, outside any process's RSS.
pub(crate) fn kernel_slab_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("Slab:"))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Busy and total ticks of the given CPUs since boot (`/proc/stat`): busy is
/// everything but idle and iowait, so it includes interrupt and softirq time that
/// no process is charged for.
pub(crate) fn cpu_busy_ticks(cpus: &[usize]) -> (u64, u64) {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let (mut busy, mut total) = (0, 0);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(n) = words
            .next()
            .and_then(|w| w.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !cpus.contains(&n) {
            continue;
        }
        let v: Vec<u64> = words.take(8).filter_map(|w| w.parse().ok()).collect();
        if v.len() == 8 {
            // user nice system idle iowait irq softirq steal
            busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
            total += v.iter().sum::<u64>();
        }
    }
    (busy, total)
}

/// The `ksoftirqd/N` kernel threads of the given CPUs: when loopback traffic is
/// heavy the kernel defers packet processing to them, and that time is charged to
/// them rather than to the process that wrote.
pub(crate) fn ksoftirqd(cpus: &[usize]) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| {
                c.trim()
                    .strip_prefix("ksoftirqd/")
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| cpus.contains(&n))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(rss_bytes(&[me]) > 0);
        assert!(cpu_seconds(&[me]) >= 0.0);
    }
}
