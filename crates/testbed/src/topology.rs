//! Building and tearing down the simulated cluster.

use std::{
    path::PathBuf,
    process::Child,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use netdx_api::targets::{PayloadCapture, PodRef, PodTarget, TargetSet};
use tracing::{debug, info};

use crate::{
    PREFIX, Result,
    cgroups::{self, PodCgroups},
    exec::{Placement, ip},
    io_err, netns,
};

/// What to build.
#[derive(Clone, Debug)]
pub struct TestbedSpec {
    /// Number of simulated nodes (1..=50).
    pub nodes: usize,
    /// Pods to create.
    pub pods: Vec<PodSpec>,
}

/// One pod to create.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// Pod name (namespace "default").
    pub name: String,
    /// Index of its node.
    pub node: usize,
    /// Whether probes should watch it.
    pub watched: bool,
}

impl PodSpec {
    /// A watched pod on `node`.
    pub fn new(name: &str, node: usize) -> Self {
        PodSpec {
            name: name.into(),
            node,
            watched: true,
        }
    }

    /// The same pod, not watched.
    pub fn unwatched(mut self) -> Self {
        self.watched = false;
        self
    }
}

/// A simulated node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Node name ("node-0").
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Index.
    pub index: usize,
}

/// A created pod.
#[derive(Clone, Debug)]
pub struct PodHandle {
    /// Kubernetes-style identity.
    pub pod: PodRef,
    /// Pod UID.
    pub uid: String,
    /// Node index.
    pub node: usize,
    /// Network namespace name.
    pub netns: String,
    /// Pod IP.
    pub ip: String,
    /// Host-side veth name in the node namespace.
    pub veth: String,
    /// cgroups.
    pub cgroups: PodCgroups,
    /// Watched by probes.
    pub watched: bool,
}

impl PodHandle {
    /// Where to run processes of this pod.
    pub fn placement(&self) -> Placement {
        Placement {
            netns_path: netns::netns_path(&self.netns),
            cgroup_procs: self.cgroups.procs_files(),
        }
    }
}

/// A running testbed; dropping it removes everything it created.
pub struct Testbed {
    /// Unique prefix of this instance's objects.
    pub id: String,
    /// Fabric namespace joining the nodes.
    pub fabric: String,
    /// Nodes.
    pub nodes: Vec<NodeInfo>,
    /// Pods.
    pub pods: Vec<PodHandle>,
    /// Scratch directory (configs, logs, targets.json).
    pub dir: PathBuf,
    children: Mutex<Vec<Child>>,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// Pod subnet of node `i`.
pub fn node_subnet(i: usize) -> String {
    format!("10.200.{i}.0/24")
}

impl Testbed {
    /// Builds the namespaces, links, routes and cgroups of `spec`.
    pub fn up(spec: &TestbedSpec) -> Result<Self> {
        if spec.nodes == 0 || spec.nodes > 50 {
            return Err(crate::Error::Invalid(format!(
                "nodes must be 1..=50, got {}",
                spec.nodes
            )));
        }
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        // The owning pid is part of the id so `cleanup` can leave live testbeds alone.
        let id = format!("{PREFIX}{:x}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{id}.d"));
        std::fs::create_dir_all(&dir).map_err(io_err("creating testbed dir"))?;
        let mut tb = Testbed {
            fabric: format!("{id}-fab"),
            id,
            nodes: Vec::new(),
            pods: Vec::new(),
            dir,
            children: Mutex::new(Vec::new()),
        };
        // On error, Drop of the half-built testbed removes what exists.
        tb.build(spec)?;
        info!(id = %tb.id, nodes = tb.nodes.len(), pods = tb.pods.len(), "testbed up");
        Ok(tb)
    }

    fn build(&mut self, spec: &TestbedSpec) -> Result<()> {
        netns::create(&self.fabric)?;
        netns::sysctl(&self.fabric, "net.ipv4.ip_forward", "1")?;
        for i in 0..spec.nodes {
            let node = NodeInfo {
                name: format!("node-{i}"),
                netns: format!("{}-n{i}", self.id),
                index: i,
            };
            let ns = node.netns.as_str();
            netns::create(ns)?;
            self.nodes.push(node.clone());
            netns::sysctl(ns, "net.ipv4.ip_forward", "1")?;
            ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.200.{i}.1/24"),
                "dev",
                "br0",
            ])?;
            ip(&["-n", ns, "link", "set", "br0", "up"])?;
            let up = format!("n{i}");
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                "up0",
                "type",
                "veth",
                "peer",
                "name",
                &up,
                "netns",
                &self.fabric,
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.201.{i}.2/24"),
                "dev",
                "up0",
            ])?;
            ip(&["-n", ns, "link", "set", "up0", "up"])?;
            ip(&[
                "-n",
                &self.fabric,
                "addr",
                "add",
                &format!("10.201.{i}.1/24"),
                "dev",
                &up,
            ])?;
            ip(&["-n", &self.fabric, "link", "set", &up, "up"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.201.{i}.1"),
            ])?;
            ip(&[
                "-n",
                &self.fabric,
                "route",
                "add",
                &node_subnet(i),
                "via",
                &format!("10.201.{i}.2"),
            ])?;
        }
        for (k, p) in spec.pods.iter().enumerate() {
            if p.node >= spec.nodes {
                return Err(crate::Error::Invalid(format!(
                    "pod {} on missing node {}",
                    p.name, p.node
                )));
            }
            if self.pods.iter().any(|q| q.pod.name == p.name) {
                return Err(crate::Error::Invalid(format!(
                    "duplicate pod name {}",
                    p.name
                )));
            }
            let node_ns = self.nodes[p.node].netns.clone();
            let pod_ns = format!("{}-p{k}", self.id);
            let host_count = self.pods.iter().filter(|q| q.node == p.node).count();
            let ip_addr = format!("10.200.{}.{}", p.node, 10 + host_count);
            let veth = format!("v{k}");
            netns::create(&pod_ns)?;
            let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), k);
            let cg = PodCgroups::create(&self.id, &uid)?;
            self.pods.push(PodHandle {
                pod: PodRef {
                    namespace: "default".into(),
                    name: p.name.as_str().into(),
                },
                uid,
                node: p.node,
                netns: pod_ns.clone(),
                ip: ip_addr.clone(),
                veth: veth.clone(),
                cgroups: cg,
                watched: p.watched,
            });
            ip(&[
                "-n", &node_ns, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &pod_ns,
            ])?;
            ip(&["-n", &node_ns, "link", "set", &veth, "master", "br0"])?;
            ip(&["-n", &node_ns, "link", "set", &veth, "up"])?;
            ip(&[
                "-n",
                &pod_ns,
                "addr",
                "add",
                &format!("{ip_addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &pod_ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &pod_ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.200.{}.1", p.node),
            ])?;
            // Like the pause container: every pod always has a process holding its namespaces.
            self.spawn(&p.name, "sleep", &["infinity"])?;
            debug!(pod = %p.name, ip = %ip_addr, node = p.node, "pod created");
        }
        self.write_targets()?;
        Ok(())
    }

    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> Result<&PodHandle> {
        self.pods
            .iter()
            .find(|p| p.pod.name == name)
            .ok_or_else(|| crate::Error::Invalid(format!("no pod {name}")))
    }

    /// Path of the JSON target set the node-probes read.
    pub fn targets_path(&self) -> PathBuf {
        self.dir.join("targets.json")
    }

    /// The target set (all pods, each marked watched or not), copying both directions' heads.
    pub fn targets(&self) -> TargetSet {
        self.targets_with(PayloadCapture::default())
    }

    /// The target set with `payload` capture for every pod.
    pub fn targets_with(&self, payload: PayloadCapture) -> TargetSet {
        TargetSet {
            pods: self
                .pods
                .iter()
                .map(|p| PodTarget {
                    pod: p.pod.clone(),
                    uid: Some(p.uid.clone()),
                    node: self.nodes[p.node].name.clone(),
                    ip: p.ip.clone(),
                    cgroup_path: p.cgroups.unified.display().to_string(),
                    netns_path: netns::netns_path(&p.netns),
                    cpu_cgroup_path: p.cgroups.cpu.as_ref().map(|c| c.display().to_string()),
                    watched: p.watched,
                    payload,
                })
                .collect(),
        }
    }

    /// Writes the target set atomically (probes re-read it when it changes).
    pub fn write_targets(&self) -> Result<()> {
        self.write_targets_with(PayloadCapture::default())
    }

    /// Writes the target set with `payload` capture for every pod, until the next write.
    pub fn write_targets_with(&self, payload: PayloadCapture) -> Result<()> {
        let tmp = self.dir.join("targets.json.tmp");
        let body = serde_json::to_vec_pretty(&self.targets_with(payload))
            .map_err(|e| crate::Error::Invalid(format!("encoding targets: {e}")))?;
        std::fs::write(&tmp, body).map_err(io_err("writing targets"))?;
        std::fs::rename(&tmp, self.targets_path()).map_err(io_err("renaming targets"))
    }

    /// Spawns a long-running process in a pod; it is killed at teardown.
    pub fn spawn(&self, pod: &str, program: &str, args: &[&str]) -> Result<u32> {
        let child = self.pod(pod)?.placement().spawn(program, args, false)?;
        let pid = child.id();
        if let Ok(mut c) = self.children.lock() {
            c.push(child);
        }
        Ok(pid)
    }

    /// Runs a command to completion in a pod.
    pub fn run(&self, pod: &str, program: &str, args: &[&str]) -> Result<std::process::Output> {
        self.pod(pod)?.placement().output(program, args)
    }

    /// A file path inside this testbed's scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Node name of a pod.
    pub fn node_of(&self, pod: &str) -> Result<&str> {
        Ok(&self.nodes[self.pod(pod)?.node].name)
    }

    /// Namespace of the fabric side of node `i`'s uplink is `self.fabric`, interface `n{i}`.
    pub fn uplink(&self, node: usize) -> (String, String) {
        (self.fabric.clone(), format!("n{node}"))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for c in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for p in &self.pods {
            cgroups::kill_and_remove(&p.cgroups.unified);
            if let Some(cpu) = &p.cgroups.cpu {
                cgroups::kill_and_remove(cpu);
            }
            netns::delete(&p.netns);
        }
        for n in &self.nodes {
            netns::delete(&n.netns);
        }
        netns::delete(&self.fabric);
        let _ = std::fs::remove_dir_all(&self.dir);
        info!(id = %self.id, "testbed removed");
    }
}
