//! Who is who on this node: cgroup ids, IPs and network namespaces mapped to pods.
//!
//! A pod is a cgroup v2 directory; its containers are directories below it and the
//! eBPF programs see a process's container cgroup id, so every id of the subtree maps to
//! the pod. The directory comes from the target set or is found from the pod UID under the
//! node's cgroup root (kubelet names it `...pod<uid>...`, with `_` for `-` under systemd).

use std::{
    collections::HashMap,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use netdx_api::targets::{PayloadCapture, PodRef, PodTarget, TargetSet};
use tracing::warn;

/// How deep below the cgroup root pod directories are searched for (kubepods.slice/
/// kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice is depth 3).
const MAX_POD_DEPTH: usize = 6;
/// How deep below a pod directory container cgroups are collected.
const MAX_CONTAINER_DEPTH: usize = 4;

/// A pod this probe watches, with its kernel identities.
#[derive(Clone, Debug)]
pub struct WatchedPod {
    /// The pod.
    pub pod: PodRef,
    /// cgroup v2 id of the pod directory.
    pub cgroup_id: u64,
    /// cgroup v2 ids of the pod directory and every container directory below it.
    pub cgroup_ids: Vec<u64>,
    /// cgroup v2 pod directory.
    pub cgroup_path: String,
    /// Inode of the network namespace.
    pub netns: u32,
    /// cgroup v1 cpu directory, for throttling.
    pub cpu_cgroup_path: Option<String>,
    /// Which message heads are copied.
    pub payload: PayloadCapture,
}

/// Lookup tables built from a [`TargetSet`] for one node.
#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    /// Pods watched on this node.
    pub watched: Vec<WatchedPod>,
    by_cgroup: HashMap<u64, PodRef>,
    by_ip: HashMap<IpAddr, PodRef>,
    ip_of: HashMap<PodRef, IpAddr>,
    by_netns: HashMap<u32, PodRef>,
    /// Pods whose cgroup or netns could not be resolved (gone, or bad paths).
    pub unresolved: Vec<(PodRef, String)>,
}

fn inode(path: &Path) -> std::io::Result<u64> {
    Ok(path.metadata()?.ino())
}

fn subdirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
}

/// Finds the cgroup directory kubelet created for the pod with `uid`.
pub fn find_pod_dir(root: &Path, uid: &str) -> Option<PathBuf> {
    let names = [format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))];
    let mut level = vec![root.to_path_buf()];
    for _ in 0..MAX_POD_DEPTH {
        let mut next = Vec::new();
        for d in level {
            for sub in subdirs(&d) {
                let name = sub
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Match "pod<uid>" as a whole token, not a prefix of a longer UID.
                if names
                    .iter()
                    .any(|n| name.ends_with(n.as_str()) || name.ends_with(&format!("{n}.slice")))
                {
                    return Some(sub);
                }
                next.push(sub);
            }
        }
        level = next;
    }
    None
}

/// The directory and its descendants, breadth first.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut level = vec![dir.to_path_buf()];
    for _ in 0..MAX_CONTAINER_DEPTH {
        level = level.iter().flat_map(|d| subdirs(d)).collect();
        out.extend(level.iter().cloned());
    }
    out
}

/// A process of the pod (any process shares the pod's network namespace).
pub fn first_pid(pod_dir: &Path) -> Option<u32> {
    subtree(pod_dir).iter().find_map(|d| {
        std::fs::read_to_string(d.join("cgroup.procs"))
            .ok()?
            .lines()
            .find_map(|l| l.trim().parse().ok())
    })
}

/// The node's cgroup v2 root (hybrid hosts mount it at /sys/fs/cgroup/unified).
pub fn default_cgroup_root() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

fn resolve(t: &PodTarget, root: &Path) -> Result<WatchedPod, String> {
    // A given path wins; when it is absent or wrong (another cgroup driver or mount point
    // than the operator assumed), the UID finds the pod's directory on this node.
    let given =
        Some(PathBuf::from(&t.cgroup_path)).filter(|p| !t.cgroup_path.is_empty() && p.is_dir());
    let dir = match (given, t.uid.as_deref()) {
        (Some(dir), _) => dir,
        (None, Some(uid)) => find_pod_dir(root, uid).ok_or_else(|| {
            format!(
                "no cgroup for pod uid {uid} under {} (given: {:?})",
                root.display(),
                t.cgroup_path
            )
        })?,
        (None, None) => {
            return Err(format!(
                "cgroup {:?} not found and no uid to search by",
                t.cgroup_path
            ));
        }
    };
    let dirs = subtree(&dir);
    let cgroup_ids: Vec<u64> = dirs.iter().filter_map(|d| inode(d).ok()).collect();
    let cgroup_id = *cgroup_ids
        .first()
        .ok_or_else(|| format!("cgroup {} unreadable", dir.display()))?;
    let netns_path = if t.netns_path.is_empty() {
        let pid = first_pid(&dir)
            .ok_or_else(|| format!("no process in {} to find the netns", dir.display()))?;
        format!("/proc/{pid}/ns/net")
    } else {
        t.netns_path.clone()
    };
    let netns =
        inode(Path::new(&netns_path)).map_err(|e| format!("netns {netns_path}: {e}"))? as u32;
    Ok(WatchedPod {
        pod: t.pod.clone(),
        cgroup_id,
        cgroup_ids,
        cgroup_path: dir.display().to_string(),
        netns,
        cpu_cgroup_path: t.cpu_cgroup_path.clone(),
        payload: t.payload,
    })
}

impl PodIndex {
    /// Builds the index for `node`; pods whose cgroup or netns do not resolve are listed,
    /// not fatal. `cgroup_root` is where pods given only by UID are searched for.
    pub fn build(set: &TargetSet, node: &str, cgroup_root: &Path) -> Self {
        let mut idx = PodIndex::default();
        for t in &set.pods {
            if let Ok(ip) = t.ip.parse::<IpAddr>() {
                idx.by_ip.insert(ip, t.pod.clone());
                idx.ip_of.insert(t.pod.clone(), ip);
            }
            if t.node != node || !t.watched {
                continue;
            }
            match resolve(t, cgroup_root) {
                Ok(w) => {
                    for id in &w.cgroup_ids {
                        idx.by_cgroup.insert(*id, t.pod.clone());
                    }
                    idx.by_netns.insert(w.netns, t.pod.clone());
                    idx.watched.push(w);
                }
                Err(e) => {
                    warn!(pod = %t.pod, error = %e, "cannot watch pod");
                    idx.unresolved.push((t.pod.clone(), e));
                }
            }
        }
        idx
    }

    /// Pod owning a cgroup id.
    pub fn pod_of_cgroup(&self, id: u64) -> Option<&PodRef> {
        self.by_cgroup.get(&id)
    }

    /// Pod with an IP.
    pub fn pod_of_ip(&self, ip: &IpAddr) -> Option<&PodRef> {
        self.by_ip.get(ip)
    }

    /// A pod's IP.
    pub fn ip_of_pod(&self, pod: &PodRef) -> Option<IpAddr> {
        self.ip_of.get(pod).copied()
    }

    /// Pod living in a network namespace.
    pub fn pod_of_netns(&self, ino: u32) -> Option<&PodRef> {
        self.by_netns.get(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kubelet_pod_dirs_by_uid_in_both_drivers() {
        let root = std::env::temp_dir().join(format!("ndx-pods-test-{}", std::process::id()));
        let systemd = root
            .join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice");
        let cgroupfs = root.join("kubepods/besteffort/podabcd-ef01");
        std::fs::create_dir_all(systemd.join("cri-containerd-aaa.scope")).unwrap();
        std::fs::create_dir_all(&cgroupfs).unwrap();
        assert_eq!(find_pod_dir(&root, "1234-5678"), Some(systemd.clone()));
        assert_eq!(find_pod_dir(&root, "abcd-ef01"), Some(cgroupfs));
        assert_eq!(
            find_pod_dir(&root, "1234"),
            None,
            "a UID prefix must not match"
        );
        assert_eq!(subtree(&systemd).len(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
