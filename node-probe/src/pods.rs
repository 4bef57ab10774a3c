//! Who is who on this node: cgroup ids, IPs and network namespaces mapped to pods.

use std::{collections::HashMap, net::IpAddr, os::unix::fs::MetadataExt, path::Path};

use netdx_api::targets::{PodRef, TargetSet};
use tracing::warn;

/// A pod this probe watches, with its kernel identities.
#[derive(Clone, Debug)]
pub struct WatchedPod {
    /// The pod.
    pub pod: PodRef,
    /// cgroup v2 id (inode of the cgroup directory).
    pub cgroup_id: u64,
    /// cgroup v2 directory.
    pub cgroup_path: String,
    /// Inode of the network namespace.
    pub netns: u32,
    /// cgroup v1 cpu directory, for throttling.
    pub cpu_cgroup_path: Option<String>,
}

/// Lookup tables built from a [`TargetSet`] for one node.
#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    /// Pods watched on this node.
    pub watched: Vec<WatchedPod>,
    by_cgroup: HashMap<u64, PodRef>,
    by_ip: HashMap<IpAddr, PodRef>,
    by_netns: HashMap<u32, PodRef>,
    /// Pods whose cgroup or netns could not be resolved (gone, or bad paths).
    pub unresolved: Vec<(PodRef, String)>,
}

fn inode(path: &str) -> std::io::Result<u64> {
    Ok(Path::new(path).metadata()?.ino())
}

impl PodIndex {
    /// Builds the index for `node`; pods whose paths do not resolve are listed, not fatal.
    pub fn build(set: &TargetSet, node: &str) -> Self {
        let mut idx = PodIndex::default();
        for t in &set.pods {
            if let Ok(ip) = t.ip.parse::<IpAddr>() {
                idx.by_ip.insert(ip, t.pod.clone());
            }
            if t.node != node || !t.watched {
                continue;
            }
            let resolved = inode(&t.cgroup_path)
                .map_err(|e| format!("cgroup {}: {e}", t.cgroup_path))
                .and_then(|cg| {
                    let ns =
                        inode(&t.netns_path).map_err(|e| format!("netns {}: {e}", t.netns_path))?;
                    Ok((cg, ns as u32))
                });
            match resolved {
                Ok((cgroup_id, netns)) => {
                    idx.by_cgroup.insert(cgroup_id, t.pod.clone());
                    idx.by_netns.insert(netns, t.pod.clone());
                    idx.watched.push(WatchedPod {
                        pod: t.pod.clone(),
                        cgroup_id,
                        cgroup_path: t.cgroup_path.clone(),
                        netns,
                        cpu_cgroup_path: t.cpu_cgroup_path.clone(),
                    });
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

    /// Pod living in a network namespace.
    pub fn pod_of_netns(&self, ino: u32) -> Option<&PodRef> {
        self.by_netns.get(&ino)
    }
}
