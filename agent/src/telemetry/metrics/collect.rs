//! Host figures read from /proc and statvfs: cheaper than a general library on a 1 GiB host
//! (a sample reads a dozen small files and stats each real mount). Counters (CPU time, disk
//! and network bytes) are turned into per-interval figures against the previous sample, so
//! the first sample has none of them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use crate::telemetry::point::Point;

/// File system types reported per mount (real storage, not pseudo or overlay).
const REAL_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "zfs", "f2fs", "jfs", "reiserfs", "nfs", "nfs4",
];

#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

impl Cpu {
    fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// Keeps the previous counters between samples.
#[derive(Debug)]
pub(crate) struct Collector {
    processes: Vec<String>,
    prev_at: Option<Instant>,
    prev_cpu: Option<Cpu>,
    prev_disk: HashMap<String, [u64; 4]>,
    prev_net: HashMap<String, [u64; 8]>,
    prev_proc: HashMap<u32, u64>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn point(name: &str, unit: &str, value: f64, dims: &[(&str, &str)]) -> Point {
    Point {
        name: name.to_string(),
        unit: unit.to_string(),
        value,
        dims: dims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// `/proc/stat`'s aggregate `cpu` line.
fn parse_cpu(stat: &str) -> Option<Cpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some(Cpu {
        user: *v.first()?,
        nice: *v.get(1)?,
        system: *v.get(2)?,
        idle: *v.get(3)?,
        iowait: v.get(4).copied().unwrap_or(0),
        irq: v.get(5).copied().unwrap_or(0),
        softirq: v.get(6).copied().unwrap_or(0),
        steal: v.get(7).copied().unwrap_or(0),
    })
}

/// `/proc/meminfo` in bytes, by key.
fn parse_meminfo(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((k.to_string(), kb * 1024))
        })
        .collect()
}

impl Collector {
    /// A collector reporting CPU and RSS of `processes` (argv\[0\] base name or comm).
    pub fn new(processes: Vec<String>) -> Self {
        Self {
            processes,
            prev_at: None,
            prev_cpu: None,
            prev_disk: HashMap::new(),
            prev_net: HashMap::new(),
            prev_proc: HashMap::new(),
        }
    }

    /// One sample of every figure.
    pub fn sample(&mut self) -> Vec<Point> {
        let now = Instant::now();
        let elapsed = self.prev_at.map(|p| now.duration_since(p).as_secs_f64());
        self.prev_at = Some(now);
        let mut out = Vec::with_capacity(96);
        self.cpu(&mut out);
        memory(&mut out);
        disks(&mut out);
        self.diskio(&mut out);
        self.network(&mut out);
        load(&mut out);
        self.procs(elapsed, &mut out);
        out
    }

    fn cpu(&mut self, out: &mut Vec<Point>) {
        let Some(cur) = parse_cpu(&read("/proc/stat")) else {
            return;
        };
        if let Some(prev) = self.prev_cpu {
            let total = cur.total().saturating_sub(prev.total()) as f64;
            let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
            let idle = d(cur.idle, prev.idle) + d(cur.iowait, prev.iowait);
            out.push(point(
                "cpu_usage_active",
                "Percent",
                pct(total - idle, total),
                &[],
            ));
            out.push(point(
                "cpu_usage_user",
                "Percent",
                pct(d(cur.user, prev.user) + d(cur.nice, prev.nice), total),
                &[],
            ));
            out.push(point(
                "cpu_usage_system",
                "Percent",
                pct(
                    d(cur.system, prev.system)
                        + d(cur.irq, prev.irq)
                        + d(cur.softirq, prev.softirq),
                    total,
                ),
                &[],
            ));
            out.push(point(
                "cpu_usage_iowait",
                "Percent",
                pct(d(cur.iowait, prev.iowait), total),
                &[],
            ));
            out.push(point(
                "cpu_usage_steal",
                "Percent",
                pct(d(cur.steal, prev.steal), total),
                &[],
            ));
        }
        self.prev_cpu = Some(cur);
    }

    fn diskio(&mut self, out: &mut Vec<Point>) {
        let text = read("/proc/diskstats");
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let name = f[2];
            if name.starts_with("loop")
                || name.starts_with("ram")
                || !Path::new("/sys/block").join(name).exists()
            {
                continue;
            }
            let num = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            // reads completed, sectors read, writes completed, sectors written
            let cur = [num(3), num(5) * 512, num(7), num(9) * 512];
            if let Some(prev) = self.prev_disk.get(name) {
                let d = |i: usize| cur[i].saturating_sub(prev[i]) as f64;
                let dims = [("device", name)];
                out.push(point("diskio_reads", "Count", d(0), &dims));
                out.push(point("diskio_read_bytes", "Bytes", d(1), &dims));
                out.push(point("diskio_writes", "Count", d(2), &dims));
                out.push(point("diskio_write_bytes", "Bytes", d(3), &dims));
            }
            self.prev_disk.insert(name.to_string(), cur);
        }
    }

    fn network(&mut self, out: &mut Vec<Point>) {
        let text = read("/proc/net/dev");
        for line in text.lines().skip(2) {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name == "lo" || name.starts_with("veth") {
                continue;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 12 {
                continue;
            }
            // rx bytes, packets, errs, drop; tx bytes, packets, errs, drop
            let cur = [v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]];
            if let Some(prev) = self.prev_net.get(name) {
                let d = |i: usize| cur[i].saturating_sub(prev[i]) as f64;
                let dims = [("interface", name)];
                for (i, (metric, unit)) in [
                    ("net_bytes_recv", "Bytes"),
                    ("net_packets_recv", "Count"),
                    ("net_err_in", "Count"),
                    ("net_drop_in", "Count"),
                    ("net_bytes_sent", "Bytes"),
                    ("net_packets_sent", "Count"),
                    ("net_err_out", "Count"),
                    ("net_drop_out", "Count"),
                ]
                .iter()
                .enumerate()
                {
                    out.push(point(metric, unit, d(i), &dims));
                }
            }
            self.prev_net.insert(name.to_string(), cur);
        }
    }

    fn procs(&mut self, elapsed: Option<f64>, out: &mut Vec<Point>) {
        let mut total = 0u64;
        let mut found: HashMap<&str, (u64, f64, u64)> = HashMap::new();
        let mut seen = HashMap::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            total += 1;
            if self.processes.is_empty() {
                continue;
            }
            let stat = read(&format!("/proc/{pid}/stat"));
            // comm is in parentheses and may hold spaces; fields after it are positional.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = fields
                .get(11)
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
                + fields
                    .get(12)
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            let by_comm = self
                .processes
                .iter()
                .find(|p| comm == p.as_str() || comm.starts_with(&format!("{p}-")));
            let Some(want) = by_comm.or_else(|| {
                // comm is cut to 15 bytes and may be renamed: fall back to argv[0]'s base name.
                let cmd = read(&format!("/proc/{pid}/cmdline"));
                let argv0 = cmd.split(['\0', ' ']).next().unwrap_or("");
                let base = Path::new(argv0).file_name()?.to_str()?.to_string();
                self.processes.iter().find(|p| **p == base)
            }) else {
                continue;
            };
            let rss = read(&format!("/proc/{pid}/status"))
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024;
            let cpu = match (elapsed, self.prev_proc.get(&pid)) {
                // USER_HZ is 100 on every Linux /proc exposes.
                (Some(secs), Some(prev)) if secs > 0.0 => {
                    ticks.saturating_sub(*prev) as f64 / 100.0 / secs * 100.0
                }
                _ => 0.0,
            };
            seen.insert(pid, ticks);
            let entry = found.entry(want.as_str()).or_default();
            entry.0 += 1;
            entry.1 += cpu;
            entry.2 += rss;
        }
        self.prev_proc = seen;
        out.push(point("processes_total", "Count", total as f64, &[]));
        let mut names: Vec<_> = found.into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        for (name, (count, cpu, rss)) in names {
            let dims = [("process", name)];
            out.push(point("procstat_count", "Count", count as f64, &dims));
            if elapsed.is_some() {
                out.push(point("procstat_cpu_usage", "Percent", cpu, &dims));
            }
            out.push(point("procstat_memory_rss", "Bytes", rss as f64, &dims));
        }
    }
}

fn memory(out: &mut Vec<Point>) {
    let m = parse_meminfo(&read("/proc/meminfo"));
    let get = |k: &str| m.get(k).copied().unwrap_or(0) as f64;
    let (total, available) = (get("MemTotal"), get("MemAvailable"));
    if total > 0.0 {
        out.push(point("mem_total", "Bytes", total, &[]));
        out.push(point("mem_available", "Bytes", available, &[]));
        out.push(point("mem_used", "Bytes", total - available, &[]));
        out.push(point(
            "mem_used_percent",
            "Percent",
            pct(total - available, total),
            &[],
        ));
    }
    let (st, sf) = (get("SwapTotal"), get("SwapFree"));
    out.push(point("swap_used", "Bytes", st - sf, &[]));
    out.push(point("swap_used_percent", "Percent", pct(st - sf, st), &[]));
}

fn disks(out: &mut Vec<Point>) {
    let mounts = read("/proc/self/mounts");
    let mut seen = std::collections::HashSet::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let (dev, path, fstype) = (f[0], f[1].replace("\\040", " "), f[2]);
        let wanted = path == "/" || REAL_FS.contains(&fstype);
        // A device mounted twice (bind mounts) is reported once, at its first mount point.
        if !wanted || (!seen.insert(dev.to_string()) && path != "/") {
            continue;
        }
        let Ok(s) = nix::sys::statvfs::statvfs(path.as_str()) else {
            continue;
        };
        let frsize = s.fragment_size() as f64;
        let (blocks, bfree, bavail) = (
            s.blocks() as f64,
            s.blocks_free() as f64,
            s.blocks_available() as f64,
        );
        let used = blocks - bfree;
        let dims = [("path", path.as_str())];
        // df's figure: used over what non-root users could have.
        out.push(point(
            "disk_used_percent",
            "Percent",
            pct(used, used + bavail),
            &dims,
        ));
        out.push(point("disk_free", "Bytes", bavail * frsize, &dims));
        let (files, ffree) = (s.files() as f64, s.files_free() as f64);
        if files > 0.0 {
            out.push(point(
                "disk_inodes_used_percent",
                "Percent",
                pct(files - ffree, files),
                &dims,
            ));
            out.push(point("disk_inodes_free", "Count", ffree, &dims));
        }
    }
}

fn load(out: &mut Vec<Point>) {
    let text = read("/proc/loadavg");
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() == 3 {
        out.push(point("load1", "None", v[0], &[]));
        out.push(point("load5", "None", v[1], &[]));
        out.push(point("load15", "None", v[2], &[]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let c = parse_cpu("cpu  10 1 5 100 4 0 0 2 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!((c.user, c.steal, c.total()), (10, 2, 122));
        let m = parse_meminfo("MemTotal:  1000 kB\nMemAvailable: 250 kB\n");
        assert_eq!(m["MemAvailable"], 250 * 1024);
    }

    #[test]
    fn samples_this_host_with_the_alarm_names() {
        let mut c = Collector::new(vec!["does-not-exist".into()]);
        let first = c.sample();
        let names: Vec<&str> = first.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"mem_used_percent"), "{names:?}");
        assert!(
            first.iter().any(|p| p.name == "disk_used_percent"
                && p.dims == vec![("path".to_string(), "/".to_string())]),
            "{first:?}"
        );
        assert!(
            !names.contains(&"cpu_usage_active"),
            "no CPU figure without a previous sample"
        );
        let second = c.sample();
        let active = second
            .iter()
            .find(|p| p.name == "cpu_usage_active")
            .unwrap();
        assert!((0.0..=100.0).contains(&active.value));
    }
}
