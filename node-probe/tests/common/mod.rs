//! Shared harness: a testbed plus one real node-probe (eBPF loaded) per simulated node.
#![allow(dead_code)]

use std::time::Duration;

use netdx_api::windows::{EdgeWindow, WindowReport};
use netdx_testbed::{Testbed, TestbedSpec, topology::PodSpec};
use node_probe::{
    ingest::{Agent, AgentConfig},
    loader::ProbeConfig,
};

/// Testbed plus agents; drop order: agents first (detach), then the testbed.
pub struct Harness {
    pub agents: Vec<Agent>,
    pub tb: Testbed,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
}

impl Harness {
    pub fn new(nodes: usize, pods: &[PodSpec]) -> Self {
        Self::with_probe(nodes, pods, ProbeConfig::default())
    }

    pub fn with_probe(nodes: usize, pods: &[PodSpec], probe: ProbeConfig) -> Self {
        init_tracing();
        let tb = Testbed::up(&TestbedSpec {
            nodes,
            pods: pods.to_vec(),
        })
        .expect("testbed up");
        let agents = tb
            .nodes
            .iter()
            .map(|n| {
                let mut cfg = AgentConfig::new(&n.name, tb.targets_path());
                cfg.window = Duration::from_secs(3600);
                cfg.node_netns = Some(netdx_testbed::netns::netns_path(&n.netns).into());
                cfg.probe = probe.clone();
                // As the binary runs it: the reader at real-time priority.
                cfg.drain_priority = Some(1);
                let a = Agent::start(cfg).expect("probe loads and attaches");
                assert!(a.wait_ready(Duration::from_secs(10)), "agent ready");
                a
            })
            .collect();
        Harness { agents, tb }
    }

    /// Closes the current window on every node.
    pub fn close_windows(&self) -> Vec<WindowReport> {
        // Exchanges are flushed by the next request or by close; give closes a moment.
        std::thread::sleep(Duration::from_millis(300));
        self.agents
            .iter()
            .map(|a| a.close_window().expect("window"))
            .collect()
    }
}

/// The edge between two pods (by name) across all nodes' reports, (client side, server side).
pub fn edge<'a>(
    ws: &'a [WindowReport],
    client: &str,
    server: &str,
    port: u16,
) -> Vec<&'a EdgeWindow> {
    ws.iter()
        .flat_map(|w| w.edges.iter())
        .filter(|e| {
            e.key.port == port
                && e.key.client.pod.as_ref().is_some_and(|p| p.name == client)
                && e.key.server.pod.as_ref().is_some_and(|p| p.name == server)
        })
        .collect()
}

/// Sum over a field of the client (or server) sides of edges.
pub fn side_sum(
    edges: &[&EdgeWindow],
    client_side: bool,
    f: impl Fn(&netdx_api::windows::SideStats) -> u64,
) -> u64 {
    edges
        .iter()
        .filter_map(|e| {
            if client_side {
                e.client.as_deref()
            } else {
                e.server.as_deref()
            }
        })
        .map(f)
        .sum()
}

pub fn within(actual: u64, expected: u64, rel: f64) -> bool {
    (actual as f64 - expected as f64).abs() <= expected as f64 * rel
}
