//! CPU and memory from `/proc`: the server's, the load generator's and everyone else's.
//!
//! The machine is shared (with the load generator, and with whatever else runs on it), so every
//! realtime result carries the CPU each part took during its measured window: a window where
//! "other" work took much CPU was disturbed, and its absolute figures are low.

use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

/// CPU counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    machine_total: u64,
    machine_busy: u64,
    machine_softirq: u64,
    cpus: u64,
    server: Option<u64>,
    generator: u64,
}

/// CPU used between two samples, in percent of one core (200 = both cores of a 2-core machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuUse {
    /// The server under test (absent when its pid was not given).
    pub server_cpu_percent: Option<f64>,
    /// This load generator.
    pub generator_cpu_percent: f64,
    /// Everything the machine did.
    pub machine_cpu_percent: f64,
    /// The kernel's deferred network work (softirq), counted to no process: on loopback much
    /// of the sockets' receive path, for the server and the generator alike.
    pub softirq_cpu_percent: f64,
    /// The machine minus the server, the generator and softirq: other work skewing the figures.
    pub other_cpu_percent: f64,
}

impl CpuSample {
    /// Reads the counters now; `server` is the pid of the server under test, if known.
    pub fn now(server: Option<u32>) -> anyhow::Result<Self> {
        Self::now_all(server.as_slice())
    }

    /// Reads the counters now, the server's being the sum over `servers` (several nodes and
    /// their store; none: unknown).
    pub fn now_all(servers: &[u32]) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let mut machine_total = 0;
        let mut machine_busy = 0;
        let mut machine_softirq = 0;
        let mut cpus = 0;
        for line in stat.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("cpu") => {
                    let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
                    machine_total = v.iter().take(8).sum();
                    // user nice system irq softirq steal: not idle, not iowait.
                    machine_busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
                    machine_softirq = v.get(6).copied().unwrap_or(0);
                }
                Some(name) if name.starts_with("cpu") => cpus += 1,
                _ => {}
            }
        }
        Ok(Self {
            at: Instant::now(),
            machine_total,
            machine_busy,
            machine_softirq,
            cpus: cpus.max(1),
            server: sum_over(servers, |pid| process_ticks(&pid.to_string())),
            generator: process_ticks("self").context("reading /proc/self/stat")?,
        })
    }

    /// What was used from `self` until `later`.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-6);
        let total = later.machine_total.saturating_sub(self.machine_total) as f64;
        // Clock ticks a second, from the counters themselves: every CPU ticks once per tick.
        let hz = (total / wall / self.cpus as f64).max(1.0);
        let percent = |ticks: u64| (1000.0 * ticks as f64 / hz / wall).round() / 10.0;
        let machine = percent(later.machine_busy.saturating_sub(self.machine_busy));
        let server = match (self.server, later.server) {
            (Some(a), Some(b)) => Some(percent(b.saturating_sub(a))),
            _ => None,
        };
        let generator = percent(later.generator.saturating_sub(self.generator));
        let softirq = percent(later.machine_softirq.saturating_sub(self.machine_softirq));
        let other = (machine - server.unwrap_or(0.0) - generator - softirq).max(0.0);
        CpuUse {
            server_cpu_percent: server,
            generator_cpu_percent: generator,
            machine_cpu_percent: machine,
            softirq_cpu_percent: softirq,
            other_cpu_percent: (other * 10.0).round() / 10.0,
        }
    }
}

/// utime + stime of `/proc/<pid>/stat`, in clock ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `read` of every pid, summed; `None` without pids or if any cannot be read.
pub fn sum_over(pids: &[u32], read: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| read(pid)).sum()
}

/// Resident memory of a process (`VmRSS`), KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory of a process (`VmHWM`), KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises this process's open-file limit to at least `wanted` (the hard limit too, where the
/// process may: root, or CAP_SYS_RESOURCE); returns the soft limit now in force.
pub fn raise_open_files(wanted: u64) -> anyhow::Result<u64> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE
        .get()
        .context("reading the open-file limit")?;
    if soft >= wanted {
        return Ok(soft);
    }
    if hard < wanted && Resource::NOFILE.set(wanted, wanted).is_ok() {
        return Ok(wanted);
    }
    Resource::NOFILE
        .set(wanted.min(hard), hard)
        .context("raising the open-file limit")?;
    Ok(wanted.min(hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen_using_cpu_and_memory() -> anyhow::Result<()> {
        let me = std::process::id();
        let a = CpuSample::now(Some(me))?;
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let b = CpuSample::now(Some(me))?;
        let used = a.until(&b);
        // The spinning thread used most of a core; as the "server" and the generator both.
        assert!(used.generator_cpu_percent > 30.0, "{used:?}");
        assert_eq!(used.server_cpu_percent, Some(used.generator_cpu_percent));
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(peak_rss_kib(me) >= rss_kib(me));
        assert_eq!(rss_kib(u32::MAX), None);
        Ok(())
    }

    #[test]
    fn open_file_limit_is_at_least_what_was_asked_when_allowed() -> anyhow::Result<()> {
        let now = raise_open_files(256)?;
        assert!(now >= 256);
        Ok(())
    }
}
