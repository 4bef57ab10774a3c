//! Kubelet-style pod cgroups: a cgroup v2 directory (the pod's identity for eBPF) and a v1
//! cpu directory (CPU quota and throttling statistics).

use std::path::{Path, PathBuf};

use crate::{Result, io_err};

/// Root of the cgroup v2 tree on this machine (hybrid mode).
pub const UNIFIED_ROOT: &str = "/sys/fs/cgroup/unified";
/// Root of the v1 cpu controller.
pub const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
/// Slice under which all testbed pods live.
pub const SLICE: &str = "netdx-testbed.slice";

/// The cgroup directories of one pod.
#[derive(Clone, Debug)]
pub struct PodCgroups {
    /// cgroup v2 pod directory (the pod's identity).
    pub unified: PathBuf,
    /// cgroup v2 container directory under it, where the pod's processes run (as with
    /// kubelet + containerd: the eBPF cgroup id of a process is its container's).
    pub container: PathBuf,
    /// cgroup v1 cpu directory, if the controller is mounted.
    pub cpu: Option<PathBuf>,
}

/// The directory name kubelet (systemd driver) gives a pod with this UID.
pub fn pod_slice_name(prefix: &str, uid: &str) -> String {
    format!("{prefix}-kubepods-pod{}.slice", uid.replace('-', "_"))
}

impl PodCgroups {
    /// Creates the pod's cgroups.
    pub fn create(prefix: &str, uid: &str) -> Result<Self> {
        let name = pod_slice_name(prefix, uid);
        let unified = Path::new(UNIFIED_ROOT).join(SLICE).join(&name);
        let container = unified.join(format!("cri-containerd-{}.scope", uid.replace('-', "")));
        std::fs::create_dir_all(&container)
            .map_err(io_err(format!("creating {}", container.display())))?;
        let cpu = if Path::new(CPU_ROOT).join("cgroup.procs").exists() {
            let p = Path::new(CPU_ROOT).join(SLICE).join(&name);
            std::fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
            Some(p)
        } else {
            None
        };
        Ok(PodCgroups {
            unified,
            container,
            cpu,
        })
    }

    /// cgroup.procs files a process must join.
    pub fn procs_files(&self) -> Vec<String> {
        std::iter::once(&self.container)
            .chain(self.cpu.as_ref())
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect()
    }

    /// Sets a CFS quota (`None` removes it): `quota_us` of CPU time per `period_us`.
    pub fn set_cpu_quota(&self, quota_us: Option<u64>, period_us: u64) -> Result<()> {
        let Some(cpu) = &self.cpu else {
            return Err(crate::Error::Invalid(
                "cpu cgroup controller not available".into(),
            ));
        };
        let w = |f: &str, v: String| {
            std::fs::write(cpu.join(f), v).map_err(io_err(format!("writing {f}")))
        };
        w("cpu.cfs_period_us", period_us.to_string())?;
        w(
            "cpu.cfs_quota_us",
            quota_us.map_or("-1".to_string(), |q| q.to_string()),
        )
    }

    /// (nr_throttled, throttled_time ns) from cpu.stat.
    pub fn throttling(&self) -> Option<(u64, u64)> {
        let s = std::fs::read_to_string(self.cpu.as_ref()?.join("cpu.stat")).ok()?;
        Some((
            stat_field(&s, "nr_throttled")?,
            stat_field(&s, "throttled_time")?,
        ))
    }

    /// CPU time the pod's processes used so far, µs (cgroup v2 cpu.stat `usage_usec`, kept
    /// for every v2 cgroup whether or not the cpu controller is enabled there).
    pub fn cpu_usage_us(&self) -> Option<u64> {
        let s = std::fs::read_to_string(self.unified.join("cpu.stat")).ok()?;
        stat_field(&s, "usage_usec")
    }
}

/// The value of `key` in a flat-keyed cgroup file (`key value` per line).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Kills every process in a cgroup directory and its children and removes them all
/// (retrying while the processes exit).
pub fn kill_and_remove(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                kill_and_remove(&e.path());
            }
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for pid in &pids {
            // SAFETY: plain kill syscall.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    tracing::warn!(dir = %dir.display(), "cgroup could not be removed");
}

#[cfg(test)]
mod tests {
    use super::stat_field;

    #[test]
    fn flat_keyed_fields_are_matched_whole() {
        let s = "usage_usec 1200\nuser_usec 700\nnr_throttled 3\nthrottled_time 99\n";
        assert_eq!(stat_field(s, "usage_usec"), Some(1200));
        assert_eq!(stat_field(s, "throttled_time"), Some(99));
        assert_eq!(stat_field(s, "usage"), None);
        assert_eq!(stat_field("usage_usec x\n", "usage_usec"), None);
    }
}
