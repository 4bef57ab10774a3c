//! Prometheus metrics of the probe, updated once per window.

use std::{collections::HashMap, sync::atomic::AtomicU64};

use netdx_api::{targets::PayloadCapture, windows::WindowReport};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of an edge-side series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EdgeLabels {
    /// Client endpoint.
    pub client: String,
    /// Server endpoint.
    pub server: String,
    /// Server port.
    pub port: u16,
    /// "client" or "server": which end observed it.
    pub side: String,
}

/// Labels of an edge-level counter with a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EdgeKindLabels {
    /// Client endpoint.
    pub client: String,
    /// Server endpoint.
    pub server: String,
    /// Server port.
    pub port: u16,
    /// What is counted.
    pub kind: String,
}

/// Labels of a drop counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// Pod (namespace/name), or "node".
    pub pod: String,
    /// Kernel drop reason.
    pub reason: String,
}

/// Labels naming one kernel/pipeline counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    /// Counter name.
    pub name: String,
}

/// All metrics of the probe.
pub struct Metrics {
    /// The registry /metrics encodes.
    pub registry: Registry,
    exchanges: Family<EdgeLabels, Counter>,
    latency_p99: Family<EdgeLabels, Gauge<f64, AtomicU64>>,
    latency_p50: Family<EdgeLabels, Gauge<f64, AtomicU64>>,
    l4: Family<EdgeKindLabels, Counter>,
    drops: Family<DropLabels, Counter>,
    pipeline: Family<NameLabels, Counter>,
    windows: Counter,
    pushed: Counter,
    push_dropped: Counter,
    push_failures: Family<NameLabels, Counter>,
    targets_fetched: Counter,
    targets_fetch_failures: Family<NameLabels, Counter>,
    drain_realtime: Gauge,
    payload_pods: Family<NameLabels, Gauge>,
    payload_attach_failures: Counter,
    last_pipeline: HashMap<String, u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("netdx");
        let m = Metrics {
            exchanges: Family::default(),
            latency_p99: Family::default(),
            latency_p50: Family::default(),
            l4: Family::default(),
            drops: Family::default(),
            pipeline: Family::default(),
            windows: Counter::default(),
            pushed: Counter::default(),
            push_dropped: Counter::default(),
            push_failures: Family::default(),
            targets_fetched: Counter::default(),
            targets_fetch_failures: Family::default(),
            drain_realtime: Gauge::default(),
            payload_pods: Family::default(),
            payload_attach_failures: Counter::default(),
            last_pipeline: HashMap::new(),
            registry: Registry::default(),
        };
        registry.register(
            "edge_exchanges",
            "Completed request/response exchanges",
            m.exchanges.clone(),
        );
        registry.register(
            "edge_latency_p99_seconds",
            "p99 exchange latency in the last window",
            m.latency_p99.clone(),
        );
        registry.register(
            "edge_latency_p50_seconds",
            "Median exchange latency in the last window",
            m.latency_p50.clone(),
        );
        registry.register(
            "edge_l4_events",
            "Connection-level events by kind",
            m.l4.clone(),
        );
        registry.register(
            "drops",
            "Packets dropped by the kernel, by reason",
            m.drops.clone(),
        );
        registry.register(
            "probe_pipeline_events",
            "Probe pipeline counters (kernel and userspace)",
            m.pipeline.clone(),
        );
        registry.register("probe_windows", "Windows closed", m.windows.clone());
        registry.register(
            "probe_windows_pushed",
            "Windows delivered to the operator",
            m.pushed.clone(),
        );
        registry.register(
            "probe_windows_push_dropped",
            "Windows dropped because the push outbox was full",
            m.push_dropped.clone(),
        );
        registry.register(
            "probe_push_failures",
            "Failed pushes to the operator (retried, or refused and dropped)",
            m.push_failures.clone(),
        );
        registry.register(
            "probe_targets_fetches",
            "Target sets fetched from the operator",
            m.targets_fetched.clone(),
        );
        registry.register(
            "probe_targets_fetch_failures",
            "Failed target fetches, by reason (the last good set stays in use)",
            m.targets_fetch_failures.clone(),
        );
        registry.register(
            "probe_drain_realtime",
            "1 when the ring-buffer reader runs at real-time priority (it cannot be starved by busy pods)",
            m.drain_realtime.clone(),
        );
        registry.register(
            "probe_payload_capture_pods",
            "Watched pods by the payload capture attached to them (name: Both, Egress, Ingress, Off)",
            m.payload_pods.clone(),
        );
        registry.register(
            "probe_payload_attach_failures",
            "Failed attaches of a pod's payload programs (retried at the next target sync; until then its exchanges carry no protocol names or L7 errors)",
            m.payload_attach_failures.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Records whether the ring-buffer reader got its real-time priority.
    pub fn drain_realtime(&mut self, on: bool) {
        self.drain_realtime.set(i64::from(on));
    }

    /// Sets how many watched pods have each payload capture attached.
    pub fn payload_pods(&mut self, attached: impl Iterator<Item = PayloadCapture>) {
        let attached: Vec<PayloadCapture> = attached.collect();
        for p in PayloadCapture::ALL {
            let n = attached.iter().filter(|&&a| a == p).count();
            self.payload_pods
                .get_or_create(&NameLabels {
                    name: p.name().into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts a failed attach of a pod's payload programs.
    pub fn payload_attach_failed(&mut self) {
        self.payload_attach_failures.inc();
    }

    /// Folds a closed window into the metrics.
    pub fn observe(&mut self, w: &WindowReport) {
        self.windows.inc();
        // Latency gauges describe the last window only: edges that went quiet must not keep
        // reporting an old p99 (and their label sets must not pile up).
        self.latency_p99.clear();
        self.latency_p50.clear();
        for e in &w.edges {
            let (client, server, port) = (
                e.key.client.to_string(),
                e.key.server.to_string(),
                e.key.port,
            );
            for (side, stats) in [("client", &e.client), ("server", &e.server)] {
                let Some(s) = stats else { continue };
                let l = EdgeLabels {
                    client: client.clone(),
                    server: server.clone(),
                    port,
                    side: side.into(),
                };
                self.exchanges.get_or_create(&l).inc_by(s.exchanges);
                self.latency_p99
                    .get_or_create(&l)
                    .set(s.latency.p99_ms / 1e3);
                self.latency_p50
                    .get_or_create(&l)
                    .set(s.latency.p50_ms / 1e3);
            }
            let l4 = &e.l4;
            for (kind, v) in [
                ("connect_ok", l4.connects_ok),
                ("connect_refused", l4.connect_refused),
                ("connect_timeout", l4.connect_timeout),
                ("connect_failed_other", l4.connect_failed_other),
                ("retrans_client_to_server", l4.retrans_client_to_server),
                ("retrans_server_to_client", l4.retrans_server_to_client),
                ("syn_retrans", l4.syn_retrans),
                ("resets_by_client", l4.resets_by_client),
                ("resets_by_server", l4.resets_by_server),
            ] {
                if v > 0 {
                    let l = EdgeKindLabels {
                        client: client.clone(),
                        server: server.clone(),
                        port,
                        kind: kind.into(),
                    };
                    self.l4.get_or_create(&l).inc_by(v);
                }
            }
        }
        let pod_drops = w.pods.iter().map(|p| (p.pod.to_string(), &p.drops));
        for (pod, drops) in pod_drops.chain(std::iter::once(("node".to_string(), &w.node_drops))) {
            for (reason, n) in drops {
                self.drops
                    .get_or_create(&DropLabels {
                        pod: pod.clone(),
                        reason: reason.clone(),
                    })
                    .inc_by(*n);
            }
        }
        let h = &w.health;
        let pipeline = h
            .kernel
            .iter()
            .map(|(k, v)| (format!("kernel_{k}"), *v))
            .chain([
                ("records_read".to_string(), h.records_read),
                ("records_malformed".to_string(), h.records_malformed),
                (
                    "exchanges_unattributed".to_string(),
                    h.exchanges_unattributed,
                ),
            ]);
        for (name, total) in pipeline {
            let last = self.last_pipeline.insert(name.clone(), total).unwrap_or(0);
            self.pipeline
                .get_or_create(&NameLabels { name })
                .inc_by(total.saturating_sub(last));
        }
    }

    /// Counts windows delivered to the operator.
    pub fn pushed(&mut self, n: u64) {
        self.pushed.inc_by(n);
    }

    /// Counts windows dropped because the push outbox was full.
    pub fn push_dropped(&mut self, n: u64) {
        self.push_dropped.inc_by(n);
    }

    /// Counts a failed push: `refused` when the operator rejected the windows themselves.
    pub fn push_failed(&mut self, refused: bool) {
        let name = if refused { "refused" } else { "retried" };
        self.push_failures
            .get_or_create(&NameLabels { name: name.into() })
            .inc();
    }

    /// Counts a target set fetched from the operator.
    pub fn targets_fetched(&mut self) {
        self.targets_fetched.inc();
    }

    /// Counts a failed target fetch under its reason.
    pub fn targets_fetch_failed(&mut self, reason: &str) {
        self.targets_fetch_failures
            .get_or_create(&NameLabels {
                name: reason.into(),
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use netdx_api::windows::{EdgeKey, EdgeWindow, Endpoint, L4Stats, ProbeHealth, SideStats};

    use super::*;

    fn window(edges: Vec<EdgeWindow>) -> WindowReport {
        WindowReport {
            node: "n".into(),
            seq: 0,
            start_unix_ms: 0,
            end_unix_ms: 1000,
            edges,
            pods: Vec::new(),
            node_drops: Default::default(),
            health: ProbeHealth::default(),
        }
    }

    #[test]
    fn latency_gauges_only_describe_the_last_window() {
        let ep = |ip: &str| Endpoint {
            pod: None,
            ip: ip.into(),
        };
        let edge = EdgeWindow {
            key: EdgeKey {
                client: ep("10.0.0.1"),
                server: ep("10.0.0.2"),
                port: 80,
                proto: "tcp".into(),
            },
            client: Some(Box::new(SideStats {
                exchanges: 5,
                ..Default::default()
            })),
            server: None,
            l4: L4Stats::default(),
        };
        let mut m = Metrics::default();
        m.observe(&window(vec![edge]));
        let gauge = "netdx_edge_latency_p99_seconds{client=\"10.0.0.1\"";
        assert!(m.encode().contains(gauge));
        m.observe(&window(Vec::new()));
        let text = m.encode();
        assert!(!text.contains(gauge), "stale gauge kept: {text}");
        // Counters keep their totals.
        assert!(text.contains("netdx_edge_exchanges_total{client=\"10.0.0.1\""));
    }
}
