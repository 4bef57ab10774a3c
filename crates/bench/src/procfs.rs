//! What /proc says about a process: CPU time, memory, and the eBPF programs and maps it holds.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use tracing::warn;

use crate::{Error, Result, io_err};

fn proc_path(pid: u32, what: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{what}"))
}

/// CPU time of all threads of `pid`, in nanoseconds: the sum of each thread's on-CPU time
/// from /proc/<pid>/task/*/schedstat (nanosecond resolution, where /proc/<pid>/stat counts
/// 10 ms ticks, too coarse for a probe that uses a few ms in a run).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    Ok(sched_ns(pid)?.0)
}

/// (on-CPU time, time spent runnable but waiting for a CPU) of all threads of `pid`, ns.
pub fn sched_ns(pid: u32) -> Result<(u64, u64)> {
    let dir = proc_path(pid, "task");
    let (mut cpu, mut wait) = (0u64, 0u64);
    for entry in std::fs::read_dir(&dir).map_err(io_err(dir.display().to_string()))? {
        let Ok(entry) = entry else { continue };
        // A thread can exit between listing and reading: it no longer counts.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let (c, w) = parse_schedstat(&text).ok_or_else(|| Error::Parse {
            what: entry.path().join("schedstat").display().to_string(),
            detail: text.trim().to_string(),
        })?;
        cpu += c;
        wait += w;
    }
    Ok((cpu, wait))
}

/// The first two fields of a schedstat file: on-CPU and run-queue wait, ns.
fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_whitespace().map(|v| v.parse().ok());
    Some((f.next()??, f.next()??))
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = proc_path(pid, "status");
    let text = std::fs::read_to_string(&path).map_err(io_err(path.display().to_string()))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| Error::Parse {
            what: path.display().to_string(),
            detail: format!("no {field}"),
        })
}

/// An eBPF object a process holds a file descriptor to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BpfFd {
    /// A program, with the kernel's run statistics (counted while bpf stats are enabled).
    Prog {
        /// Program id.
        id: u32,
        /// Total run time, ns.
        run_time_ns: u64,
        /// Number of runs.
        run_cnt: u64,
    },
    /// A map.
    Map {
        /// Map id.
        id: u32,
        /// Memory charged for it, bytes.
        memlock: u64,
    },
}

/// Parses one /proc/<pid>/fdinfo file; `None` for descriptors that are not programs or maps.
pub fn parse_fdinfo(text: &str) -> Option<BpfFd> {
    let fields: BTreeMap<&str, u64> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim(), v.trim().parse().ok()?))
        })
        .collect();
    let get = |k| fields.get(k).copied();
    if let Some(id) = get("prog_id") {
        Some(BpfFd::Prog {
            id: id as u32,
            run_time_ns: get("run_time_ns").unwrap_or(0),
            run_cnt: get("run_cnt").unwrap_or(0),
        })
    } else {
        get("map_id").map(|id| BpfFd::Map {
            id: id as u32,
            memlock: get("memlock").unwrap_or(0),
        })
    }
}

/// Run statistics of eBPF programs by program name: (run time ns, runs), programs of one name
/// summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats(pub BTreeMap<String, (u64, u64)>);

impl ProgramStats {
    /// Adds one program's (or another set's) statistics under `name`.
    pub fn add(&mut self, name: String, (t, n): (u64, u64)) {
        let e = self.0.entry(name).or_default();
        e.0 += t;
        e.1 += n;
    }

    /// Adds every program of `other`.
    pub fn merge(&mut self, other: ProgramStats) {
        for (name, v) in other.0 {
            self.add(name, v);
        }
    }

    /// What each program ran since `before`: (name, run time ns, runs).
    pub fn since<'a>(&'a self, before: &ProgramStats) -> Vec<(&'a str, u64, u64)> {
        self.0
            .iter()
            .map(|(name, (t1, n1))| {
                let (t0, n0) = before.0.get(name).copied().unwrap_or((0, 0));
                (name.as_str(), t1.saturating_sub(t0), n1.saturating_sub(n0))
            })
            .collect()
    }
}

/// Run statistics of each eBPF program `pid` holds, by program name.
pub fn program_stats(pid: u32) -> Result<ProgramStats> {
    let names: BTreeMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect();
    let mut out = ProgramStats::default();
    for f in bpf_fds(pid)? {
        if let BpfFd::Prog {
            id,
            run_time_ns,
            run_cnt,
        } = f
        {
            let name = names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("prog{id}"));
            out.add(name, (run_time_ns, run_cnt));
        }
    }
    Ok(out)
}

/// The eBPF programs and maps `pid` holds, each once (a process may hold several fds to one).
pub fn bpf_fds(pid: u32) -> Result<Vec<BpfFd>> {
    let dir = proc_path(pid, "fdinfo");
    let mut out: Vec<BpfFd> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io_err(dir.display().to_string()))? {
        let Ok(entry) = entry else { continue };
        // An fd can close between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(fd) = parse_fdinfo(&text) {
            let id = |f: &BpfFd| match f {
                BpfFd::Prog { id, .. } => (0, *id),
                BpfFd::Map { id, .. } => (1, *id),
            };
            if !out.iter().any(|o| id(o) == id(&fd)) {
                out.push(fd);
            }
        }
    }
    Ok(out)
}

/// A child process that is stopped when dropped: SIGTERM, then SIGKILL after a grace period.
pub struct Guarded {
    child: Child,
    name: String,
}

/// How long a child gets to exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(5);

impl Guarded {
    /// Takes ownership of `child`.
    pub fn new(child: Child, name: impl Into<String>) -> Self {
        Guarded {
            child,
            name: name.into(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child itself (to read its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` and waits for the exit; SIGKILL once the grace period is over.
    pub fn stop_with(&mut self, signal: i32) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: plain kill syscall on our own child's pid (not reaped yet, so not reused).
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let t0 = Instant::now();
        while t0.elapsed() < TERM_GRACE {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        warn!(name = %self.name, "did not exit after signal {signal}; killing");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_programs_and_maps() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t26\nprog_jited:\t1\nprog_tag:\tab\nmemlock:\t4096\nprog_id:\t77\nrun_time_ns:\t1500\nrun_cnt:\t10\nrecursion_misses:\t0\nverified_insns:\t99\n";
        assert_eq!(
            parse_fdinfo(prog),
            Some(BpfFd::Prog {
                id: 77,
                run_time_ns: 1500,
                run_cnt: 10
            })
        );
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t9\nkey_size:\t8\nvalue_size:\t80\nmax_entries:\t65536\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t6815744\nmap_id:\t12\nfrozen:\t0\n";
        assert_eq!(
            parse_fdinfo(map),
            Some(BpfFd::Map {
                id: 12,
                memlock: 6815744
            })
        );
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn own_cpu_time_and_rss_are_read() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(cpu_ns(me).unwrap() > 0);
        assert_eq!(parse_schedstat("123456 789 10\n"), Some((123456, 789)));
        assert_eq!(parse_schedstat(""), None);
        assert!(status_kib(me, "NoSuchField").is_err());
    }

    #[test]
    fn program_stats_merge_by_name_and_subtract_per_program() {
        let mut before = ProgramStats::default();
        before.add("on_sock_send".into(), (100, 2));
        let mut after = before.clone();
        after.merge(ProgramStats(BTreeMap::from([
            ("on_sock_send".to_string(), (50, 1)),
            ("on_egress".to_string(), (30, 3)),
        ])));
        assert_eq!(after.0["on_sock_send"], (150, 3));
        assert_eq!(
            after.since(&before),
            vec![("on_egress", 30, 3), ("on_sock_send", 50, 1)]
        );
    }
}
