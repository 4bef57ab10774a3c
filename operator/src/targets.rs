//! From matching pods to what each node-probe must watch.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use netdx_api::targets::{PayloadCapture, PodRef, PodTarget, TargetSet};
use tokio::sync::RwLock;

/// How the kubelet names pod cgroups, so the operator can tell probes where a pod lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLayout {
    /// Where the cgroup2 hierarchy is mounted on nodes (and in the probe's container).
    pub root: String,
    /// The kubelet's cgroup driver.
    pub driver: CgroupDriver,
}

/// The kubelet's cgroup driver (decides the directory naming scheme).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    /// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`.
    Systemd,
    /// `kubepods/burstable/pod<uid>`.
    Cgroupfs,
}

impl Default for CgroupLayout {
    fn default() -> Self {
        CgroupLayout {
            root: "/sys/fs/cgroup".to_string(),
            driver: CgroupDriver::Systemd,
        }
    }
}

impl std::str::FromStr for CgroupDriver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "systemd" => Ok(CgroupDriver::Systemd),
            "cgroupfs" => Ok(CgroupDriver::Cgroupfs),
            other => Err(format!(
                "unknown cgroup driver {other:?} (systemd or cgroupfs)"
            )),
        }
    }
}

impl CgroupLayout {
    /// The pod-level cgroup directory the kubelet creates for a pod of this uid and QoS class.
    pub fn pod_dir(&self, uid: &str, qos: &str) -> String {
        let root = self.root.trim_end_matches('/');
        let qos = qos.to_ascii_lowercase();
        match self.driver {
            CgroupDriver::Systemd => {
                // systemd cannot have dashes inside a unit name segment, so the kubelet swaps them.
                let uid = uid.replace('-', "_");
                match qos.as_str() {
                    "guaranteed" => format!("{root}/kubepods.slice/kubepods-pod{uid}.slice"),
                    q => format!(
                        "{root}/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid}.slice"
                    ),
                }
            }
            CgroupDriver::Cgroupfs => match qos.as_str() {
                "guaranteed" => format!("{root}/kubepods/pod{uid}"),
                q => format!("{root}/kubepods/{q}/pod{uid}"),
            },
        }
    }
}

/// What a set of matching pods means for the probes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolution {
    /// Pods that are running on a node and get watched.
    pub watched: Vec<PodRef>,
    /// Matching pods that have no node yet (they make the observation Degraded).
    pub unscheduled: Vec<PodRef>,
    /// Target set per node name; each lists every watched pod, flagged `watched` only on its own node.
    pub per_node: BTreeMap<String, TargetSet>,
}

impl Resolution {
    /// Nodes that run at least one watched pod.
    pub fn nodes(&self) -> BTreeSet<&str> {
        self.per_node.keys().map(String::as_str).collect()
    }
}

/// Whether a pod can still send or receive traffic worth watching.
fn is_live(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// Splits matching pods into watched and unscheduled and builds each node's target set.
///
/// The netns path is left empty: only the node knows a pod's PIDs, so the probe resolves
/// `/proc/<pid>/ns/net` from the cgroup's processes.
pub fn resolve(pods: &[Pod], layout: &CgroupLayout, payload: PayloadCapture) -> Resolution {
    let mut out = Resolution::default();
    let mut all: Vec<PodTarget> = Vec::new();
    for pod in pods.iter().filter(|p| is_live(p)) {
        let (Some(name), Some(namespace)) =
            (pod.metadata.name.clone(), pod.metadata.namespace.clone())
        else {
            continue;
        };
        let pod_ref = PodRef {
            namespace: namespace.into(),
            name: name.into(),
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let (Some(node), Some(uid)) = (node, pod.metadata.uid.as_deref()) else {
            out.unscheduled.push(pod_ref);
            continue;
        };
        let status = pod.status.as_ref();
        let qos = status
            .and_then(|s| s.qos_class.as_deref())
            .unwrap_or("BestEffort");
        all.push(PodTarget {
            pod: pod_ref.clone(),
            uid: Some(uid.to_string()),
            node,
            ip: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
            cgroup_path: layout.pod_dir(uid, qos),
            netns_path: String::new(),
            cpu_cgroup_path: None,
            watched: true,
            payload,
        });
        out.watched.push(pod_ref);
    }
    all.sort_by(|a, b| a.pod.cmp(&b.pod));
    out.watched.sort();
    out.unscheduled.sort();
    let nodes: BTreeSet<String> = all.iter().map(|t| t.node.clone()).collect();
    for node in nodes {
        // Pods on other nodes stay in the set unwatched so the probe can name remote peers by IP.
        let pods = all
            .iter()
            .map(|t| PodTarget {
                watched: t.node == node,
                ..t.clone()
            })
            .collect();
        out.per_node.insert(node, TargetSet { pods });
    }
    out
}

/// Target sets of every observation, merged per node on read (what node-probes fetch).
#[derive(Debug, Default)]
pub struct Registry {
    by_observation: BTreeMap<PodRef, BTreeMap<String, TargetSet>>,
}

impl Registry {
    /// Replaces one observation's per-node sets.
    pub fn set(&mut self, observation: PodRef, per_node: BTreeMap<String, TargetSet>) {
        self.by_observation.insert(observation, per_node);
    }

    /// Forgets an observation (its pods stop being watched unless another observation wants them).
    pub fn remove(&mut self, observation: &PodRef) {
        self.by_observation.remove(observation);
    }

    /// Everything a node's probe should know: the union over observations, a pod watched if any
    /// observation watches it there, copying every direction of payload any of them asks for.
    pub fn for_node(&self, node: &str) -> TargetSet {
        let mut merged: BTreeMap<PodRef, PodTarget> = BTreeMap::new();
        for per_node in self.by_observation.values() {
            for t in per_node.get(node).into_iter().flat_map(|s| s.pods.iter()) {
                merged
                    .entry(t.pod.clone())
                    .and_modify(|m| {
                        m.watched |= t.watched;
                        m.payload = m.payload.union(t.payload);
                    })
                    .or_insert_with(|| t.clone());
            }
        }
        TargetSet {
            pods: merged.into_values().collect(),
        }
    }

    /// Nodes that run at least one watched pod: the node-probes a window waits for.
    pub fn nodes(&self) -> BTreeSet<String> {
        self.by_observation
            .values()
            .flat_map(|per_node| per_node.iter())
            .filter(|(_, set)| set.pods.iter().any(|t| t.watched))
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// Each observation with the pods it selects (on any node).
    pub fn observations(&self) -> Vec<(PodRef, BTreeSet<PodRef>)> {
        self.by_observation
            .iter()
            .map(|(obs, per_node)| {
                let pods = per_node
                    .values()
                    .flat_map(|s| s.pods.iter().map(|t| t.pod.clone()))
                    .collect();
                (obs.clone(), pods)
            })
            .collect()
    }

    /// Number of observations with targets.
    pub fn len(&self) -> usize {
        self.by_observation.len()
    }

    /// Whether no observation has targets.
    pub fn is_empty(&self) -> bool {
        self.by_observation.is_empty()
    }
}

/// Shared registry handle.
pub type SharedRegistry = std::sync::Arc<RwLock<Registry>>;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(name: &str, node: Option<&str>, ip: &str, qos: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                uid: Some(format!("0000-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                qos_class: Some(qos.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn per_node_sets_watch_only_local_pods() {
        let pods = vec![
            pod("web-1", Some("n1"), "10.0.0.1", "Burstable"),
            pod("web-2", Some("n2"), "10.0.0.2", "Guaranteed"),
            pod("web-3", None, "", "BestEffort"),
        ];
        let r = resolve(&pods, &CgroupLayout::default(), PayloadCapture::Both);
        assert_eq!(r.watched.len(), 2);
        assert_eq!(
            r.unscheduled,
            vec![PodRef {
                namespace: "shop".into(),
                name: "web-3".into()
            }]
        );
        assert_eq!(r.nodes().into_iter().collect::<Vec<_>>(), vec!["n1", "n2"]);
        let n1 = &r.per_node["n1"];
        assert_eq!(n1.pods.len(), 2, "remote pods stay known to name peers");
        assert!(
            n1.pods
                .iter()
                .find(|t| t.pod.name == "web-1")
                .is_some_and(|t| t.watched)
        );
        assert!(
            n1.pods
                .iter()
                .find(|t| t.pod.name == "web-2")
                .is_some_and(|t| !t.watched)
        );
        assert_eq!(
            n1.pods[0].cgroup_path,
            "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0000_web_1.slice"
        );
        assert_eq!(
            n1.pods[1].cgroup_path,
            "/sys/fs/cgroup/kubepods.slice/kubepods-pod0000_web_2.slice"
        );
    }

    #[test]
    fn finished_and_terminating_pods_are_skipped() {
        let mut done = pod("job", Some("n1"), "10.0.0.9", "BestEffort");
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        let r = resolve(&[done], &CgroupLayout::default(), PayloadCapture::Both);
        assert!(r.watched.is_empty() && r.per_node.is_empty());
    }

    #[test]
    fn cgroupfs_layout() {
        let l = CgroupLayout {
            root: "/sys/fs/cgroup/unified/".into(),
            driver: CgroupDriver::Cgroupfs,
        };
        assert_eq!(
            l.pod_dir("a-b", "BestEffort"),
            "/sys/fs/cgroup/unified/kubepods/besteffort/poda-b"
        );
    }

    #[test]
    fn registry_merges_observations_per_node() {
        let a = resolve(
            &[
                pod("a", Some("n1"), "10.0.0.1", "Burstable"),
                pod("b", Some("n2"), "10.0.0.2", "Burstable"),
            ],
            &CgroupLayout::default(),
            PayloadCapture::Ingress,
        );
        let b = resolve(
            &[pod("b", Some("n2"), "10.0.0.2", "Burstable")],
            &CgroupLayout::default(),
            PayloadCapture::Egress,
        );
        let mut reg = Registry::default();
        reg.set(
            PodRef {
                namespace: "shop".into(),
                name: "obs-a".into(),
            },
            a.per_node,
        );
        reg.set(
            PodRef {
                namespace: "shop".into(),
                name: "obs-b".into(),
            },
            b.per_node,
        );
        assert_eq!(
            reg.nodes().into_iter().collect::<Vec<_>>(),
            vec!["n1", "n2"]
        );
        let obs = reg.observations();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].1.len(), 2, "obs-a selects a and b");
        let n2 = reg.for_node("n2");
        assert_eq!(n2.pods.len(), 2);
        assert!(n2.pods.iter().all(|t| t.watched == (t.pod.name == "b")));
        let b_on_n2 = n2.pods.iter().find(|t| t.pod.name == "b").expect("b");
        assert_eq!(
            b_on_n2.payload,
            PayloadCapture::Both,
            "every direction one of the observations asks for"
        );
        let a_on_n1 = reg
            .for_node("n1")
            .pods
            .into_iter()
            .find(|t| t.pod.name == "a");
        assert_eq!(a_on_n1.map(|t| t.payload), Some(PayloadCapture::Ingress));
        reg.remove(&PodRef {
            namespace: "shop".into(),
            name: "obs-a".into(),
        });
        assert_eq!(reg.for_node("n1").pods.len(), 0);
    }
}
