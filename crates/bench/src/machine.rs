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
    fn cpuinfo_fields() {
        let t = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\ncpu MHz\t\t: 1999.998\n\nprocessor\t: 1\nmodel name\t: Some CPU @ 2.0GHz\n";
        let (model, n, mhz) = from_cpuinfo(t);
        assert_eq!(model, "Some CPU @ 2.0GHz");
        assert_eq!(n, 2);
        assert_eq!(mhz, Some(1999.998));
    }
}
