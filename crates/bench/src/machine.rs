//! A description of the machine the numbers were measured on.

use serde::Serialize;

/// CPU, memory and kernel of this machine.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs in /proc/cpuinfo.
    pub cpus: usize,
    /// `cpu MHz` of the first CPU.
    pub cpu_mhz: Option<f64>,
    /// MemTotal, MiB.
    pub mem_total_mib: Option<u64>,
    /// `uname -srvm`.
    pub uname: String,
}

/// Fields of the first CPU block of /proc/cpuinfo and the CPU count.
fn from_cpuinfo(text: &str) -> (String, usize, Option<f64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let cpus = text
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    (
        field("model name").unwrap_or_else(|| "unknown".into()),
        cpus,
        field("cpu MHz").and_then(|v| v.parse().ok()),
    )
}

fn uname() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {} {}",
        s(&u.sysname),
        s(&u.release),
        s(&u.version),
        s(&u.machine)
    )
}

/// (busy, total) jiffies of all CPUs from the `cpu` line of /proc/stat.
fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Share of all CPUs that was busy over `dur`, percent (what others run before we start).
pub fn busy_pct(dur: std::time::Duration) -> Option<f64> {
    let read = || cpu_jiffies(&std::fs::read_to_string("/proc/stat").ok()?);
    let (b0, t0) = read()?;
    std::thread::sleep(dur);
    let (b1, t1) = read()?;
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
}

/// Reads this machine's description.
pub fn describe() -> Machine {
    let (cpu_model, cpus, cpu_mhz) =
        from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| kib / 1024);
    Machine {
        cpu_model,
        cpus,
        cpu_mhz,
        mem_total_mib,
        uname: uname(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_from_proc_stat() {
        let s = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(cpu_jiffies(s), Some((150, 1000)));
        assert_eq!(cpu_jiffies("intr 1"), None);
    }

    #[test]
    fn cpuinfo_fields() {
        let t = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\ncpu MHz\t\t: 1999.998\n\nprocessor\t: 1\nmodel name\t: Some CPU @ 2.0GHz\n";
        let (model, n, mhz) = from_cpuinfo(t);
        assert_eq!(model, "Some CPU @ 2.0GHz");
        assert_eq!(n, 2);
        assert_eq!(mhz, Some(1999.998));
    }
}
