//! Operator ingest throughput: synthetic window reports of a cluster of a given size go, one
//! node's report at a time, through decoding (the binary encoding probes push, chosen by its
//! content type as the operator's handler does) and the operator library's ingest (filing,
//! joining the nodes' views of each edge, diagnosis) on one thread.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use netdx_api::{
    targets::{PayloadCapture, PodRef},
    windows::{
        EdgeKey, EdgeWindow, Endpoint, L4Stats, Latency, PodWindow, SideStats, WindowReport,
    },
    wire::{BINARY, Bytes, Encoding},
};
use netdx_operator::{classifier::ClassifierSlot, ingest::Ingest, metrics::Metrics};
use sketches_ddsketch::{Config, DDSketch};

use crate::{Result, cputime::thread_cpu, report::Results};

/// Pods per simulated node.
const PODS_PER_NODE: usize = 30;
/// Window length of the synthetic reports.
const WINDOW_MS: u64 = 10_000;
/// Pod count whose throughput is the headline number (a 34-node cluster).
const HEADLINE_PODS: usize = 1_000;

fn pod(i: usize) -> Endpoint {
    Endpoint {
        pod: Some(PodRef {
            namespace: "bench".into(),
            name: format!("pod-{i}").into(),
        }),
        ip: format!("10.220.{}.{}", i / 250, i % 250 + 2).into(),
    }
}

fn side(exchanges: u64, latency: &Latency) -> SideStats {
    SideStats {
        exchanges,
        req_bytes: exchanges * 120,
        resp_bytes: exchanges * 900,
        latency: latency.clone(),
        ttfb: latency.clone(),
        srtt_us_mean: 80.0,
        srtt_us_max: 300,
        protocols: [("http".into(), exchanges)].into(),
        ..Default::default()
    }
}

/// One window of a `pods`-pod cluster: each pod calls two others; every node reports the
/// edges its pods are on (client side, server side or both) and its pods.
pub fn cluster_window(pods: usize, seq: u64, start_ms: u64) -> Vec<WindowReport> {
    let pods = pods.max(2);
    let nodes = pods.div_ceil(PODS_PER_NODE).max(2);
    let mut sketch = DDSketch::new(Config::defaults());
    for i in 0..40 {
        sketch.add(0.2 + f64::from(i) * 0.05);
    }
    let latency = Latency::from_sketch(sketch);
    let mut reports: Vec<WindowReport> = (0..nodes)
        .map(|n| WindowReport {
            node: format!("node-{n}"),
            seq,
            start_unix_ms: start_ms,
            end_unix_ms: start_ms + WINDOW_MS,
            edges: Vec::new(),
            pods: Vec::new(),
            node_drops: BTreeMap::new(),
            health: Default::default(),
        })
        .collect();
    for c in 0..pods {
        for s in [(c + 1) % pods, (c + pods / 2 + 1) % pods] {
            if s == c {
                continue;
            }
            let key = EdgeKey {
                client: pod(c),
                server: pod(s),
                port: 8080,
                proto: "tcp".into(),
            };
            let exchanges = 100 + (c as u64 * 37 + s as u64) % 900;
            let l4 = L4Stats {
                connects_ok: 2,
                closes: 2,
                ..Default::default()
            };
            let (cn, sn) = (c % nodes, s % nodes);
            for n in BTreeSet::from([cn, sn]) {
                reports[n].edges.push(EdgeWindow {
                    key: key.clone(),
                    client: (n == cn).then(|| Box::new(side(exchanges, &latency))),
                    server: (n == sn).then(|| Box::new(side(exchanges, &latency))),
                    l4: if n == cn {
                        l4.clone()
                    } else {
                        L4Stats::default()
                    },
                });
            }
        }
        reports[c % nodes].pods.push(PodWindow {
            pod: pod(c).pod.unwrap_or_default(),
            drops: BTreeMap::new(),
            sockets_opened: 4,
            netstat: BTreeMap::new(),
            cpu_periods: 0,
            cpu_throttled_periods: 0,
            cpu_throttled_ms: 0.0,
            server_conns_max: 2,
            stray_drops: 0,
            server_conns_at_stray_drops: 0,
            payload: PayloadCapture::Both,
        });
    }
    reports
}

/// What one pod count measured.
#[derive(Clone, Copy, Debug)]
pub struct IngestRun {
    /// Pods.
    pub pods: usize,
    /// Nodes (reports per window).
    pub nodes: usize,
    /// Windows ingested.
    pub windows: u64,
    /// Node reports per second of the ingesting thread's CPU time.
    pub node_windows_per_sec: f64,
    /// Ingest CPU time per cluster window, ms.
    pub ms_per_window: f64,
    /// Share of that time spent decoding the pushed bodies, percent.
    pub decode_pct: f64,
    /// Windows the operator diagnosed (all of them, once every node reported).
    pub diagnosed: u64,
}

/// Ingests windows of a `pods`-pod cluster for at least `secs` of ingest CPU time (3 windows
/// at least).
pub fn measure(pods: usize, secs: f64) -> Result<IngestRun> {
    let (ingest, mut incidents) =
        Ingest::new(Arc::new(ClassifierSlot::default()), Duration::from_secs(5));
    let metrics = Metrics::default();
    // Windows in the future: they close because every node reported, not because a grace
    // period ran out, as in a cluster where all probes are healthy.
    let now = netdx_operator::ingest::unix_ms();
    let base = (now / WINDOW_MS + 360) * WINDOW_MS;
    let (mut spent, mut decoding) = (Duration::ZERO, Duration::ZERO);
    let (mut windows, mut diagnosed, mut nodes) = (0u64, 0u64, 0usize);
    while windows < 3 || spent.as_secs_f64() < secs {
        let reports = cluster_window(pods, windows, base + windows * WINDOW_MS);
        nodes = reports.len();
        let expected: BTreeSet<String> = reports.iter().map(|r| r.node.clone()).collect();
        // What a probe pushes: one window per POST, in the encoding it sends by default, as
        // the operator's handler receives it.
        let bodies = reports
            .iter()
            .map(|r| {
                Encoding::Binary
                    .encode(std::slice::from_ref(r))
                    .map(Bytes::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for body in &bodies {
            let t0 = thread_cpu()?;
            let r = Encoding::from_content_type(Some(BINARY))?.decode_body(body)?;
            let t1 = thread_cpu()?;
            let errors = ingest.receive(r, &expected, &metrics);
            let t2 = thread_cpu()?;
            decoding += t1 - t0;
            spent += t2 - t0;
            if !errors.is_empty() {
                tracing::warn!(?errors, "synthetic reports refused");
            }
        }
        while incidents.try_recv().is_ok() {
            diagnosed += 1;
        }
        windows += 1;
    }
    let s = spent.as_secs_f64().max(1e-9);
    Ok(IngestRun {
        pods,
        nodes,
        windows,
        node_windows_per_sec: (windows * nodes as u64) as f64 / s,
        ms_per_window: s * 1e3 / windows as f64,
        decode_pct: decoding.as_secs_f64() / s * 100.0,
        diagnosed,
    })
}

/// Measures every pod count and records it.
pub fn run(
    pod_counts: &[usize],
    secs: f64,
    command: &str,
    results: &mut Results,
) -> Result<Vec<IngestRun>> {
    let mut out = Vec::new();
    for &pods in pod_counts {
        let r = measure(pods, secs)?;
        results.add_all(
            &format!("operator_ingest_{pods}_pods"),
            "in-process",
            1,
            command,
            &[
                ("node_windows_per_sec_one_core", r.node_windows_per_sec),
                ("ms_per_cluster_window", r.ms_per_window),
                ("decode_pct", r.decode_pct),
                ("nodes", r.nodes as f64),
                ("windows", r.windows as f64),
                ("windows_diagnosed", r.diagnosed as f64),
            ],
        );
        results.key(
            &format!("operator_ingest_node_windows_per_sec_by_pods.{pods}"),
            r.node_windows_per_sec,
            command,
        );
        out.push(r);
    }
    // The headline: HEADLINE_PODS when measured, else the largest cluster measured.
    if let Some(r) = out
        .iter()
        .find(|r| r.pods == HEADLINE_PODS)
        .or_else(|| out.iter().max_by_key(|r| r.pods))
    {
        results.key(
            "operator_ingest_node_windows_per_sec",
            r.node_windows_per_sec,
            command,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edge_is_reported_by_the_nodes_of_both_ends() {
        let reports = cluster_window(10, 0, 0);
        assert_eq!(reports.len(), 2);
        let clients: usize = reports
            .iter()
            .flat_map(|r| &r.edges)
            .filter(|e| e.client.is_some())
            .count();
        let servers: usize = reports
            .iter()
            .flat_map(|r| &r.edges)
            .filter(|e| e.server.is_some())
            .count();
        assert_eq!(
            (clients, servers),
            (20, 20),
            "two calls per pod, each seen from both ends"
        );
        assert_eq!(reports.iter().map(|r| r.pods.len()).sum::<usize>(), 10);
    }

    #[test]
    fn all_synthetic_windows_are_diagnosed() {
        let r = measure(8, 0.0).unwrap();
        assert_eq!(r.windows, 3);
        assert_eq!(
            r.diagnosed, 3,
            "every node reported, so every window closed"
        );
    }
}
