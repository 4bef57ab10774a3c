//! Joins the window reports of several nodes (same window) into per-edge views with both sides.
//!
//! Each node-probe sees only the sockets on its node: the client's node reports the client view
//! and the client-side L4 events (connect results, client->server retransmits), the server's
//! node the server view and server-side events. Joining them gives every edge both views, which
//! is what lets the diagnosis split latency into the network's share and the server's share.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use foldhash::fast::FixedState;
use netdx_api::CompactString;
use netdx_api::targets::{PayloadCapture, PodRef};
use netdx_api::windows::{EdgeKey, Endpoint, L4Stats, Latency, SideStats, WindowReport};

/// Identity of an edge across nodes: addresses, port and protocol.
///
/// Addresses, not pods, because both ends always know both addresses while a peer's pod is
/// only known when that node's target index resolves it. (A client that connects to a
/// Service VIP sees the VIP, so its view joins the server's only after VIP resolution, which
/// the operator does on the reports before joining: operator/src/services.rs.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeId {
    /// Client IP.
    pub client_ip: CompactString,
    /// Server IP.
    pub server_ip: CompactString,
    /// Server port.
    pub port: u16,
    /// "tcp" or "udp".
    pub proto: CompactString,
}

impl EdgeId {
    /// The identity of an edge key.
    pub fn of(key: &EdgeKey) -> Self {
        EdgeIdRef::of(key).to_owned()
    }

    /// The same identity, borrowed.
    pub fn borrowed(&self) -> EdgeIdRef<'_> {
        EdgeIdRef {
            client_ip: &self.client_ip,
            server_ip: &self.server_ip,
            port: self.port,
            proto: &self.proto,
        }
    }
}

/// An [`EdgeId`] borrowed from an edge key: same hash, same order, so ids can be looked up
/// and sorted without copying their strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeIdRef<'a> {
    /// Client IP.
    pub client_ip: &'a str,
    /// Server IP.
    pub server_ip: &'a str,
    /// Server port.
    pub port: u16,
    /// "tcp" or "udp".
    pub proto: &'a str,
}

impl<'a> EdgeIdRef<'a> {
    /// The identity of an edge key.
    pub fn of(key: &'a EdgeKey) -> Self {
        EdgeIdRef {
            client_ip: &key.client.ip,
            server_ip: &key.server.ip,
            port: key.port,
            proto: &key.proto,
        }
    }

    /// The owned identity.
    pub fn to_owned(self) -> EdgeId {
        EdgeId {
            client_ip: self.client_ip.into(),
            server_ip: self.server_ip.into(),
            port: self.port,
            proto: self.proto.into(),
        }
    }
}

impl hashbrown::Equivalent<EdgeId> for EdgeIdRef<'_> {
    fn equivalent(&self, id: &EdgeId) -> bool {
        self.client_ip == id.client_ip
            && self.server_ip == id.server_ip
            && self.port == id.port
            && self.proto == id.proto
    }
}

/// One edge in one window with everything the nodes reported about it.
///
/// The views are boxed as in [`netdx_api::windows::EdgeWindow`], from which they move here.
#[derive(Clone, Debug)]
pub struct JoinedEdge {
    /// The edge, with pod names filled from whichever node knew them.
    pub key: EdgeKey,
    /// Client view merged over the nodes that reported it.
    pub client: Option<Box<SideStats>>,
    /// Server view merged over the nodes that reported it.
    pub server: Option<Box<SideStats>>,
    /// L4 counters summed over nodes (each socket lives on one node, so no double counting).
    pub l4: L4Stats,
    /// Node running the client, when known (one name shared by the edges of its report).
    pub client_node: Option<Arc<str>>,
    /// Node running the server, when known (shared like the client's).
    pub server_node: Option<Arc<str>>,
}

impl JoinedEdge {
    /// The edge's identity.
    pub fn id(&self) -> EdgeId {
        EdgeId::of(&self.key)
    }
}

/// Per-pod counters merged over nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    /// Node that reported the pod as watched.
    pub node: String,
    /// Drops by kernel reason.
    pub drops: BTreeMap<String, u64>,
    /// Sockets first seen in the window.
    pub sockets_opened: u64,
    /// Netns MIB counter deltas ("TcpExt:ListenOverflows", "TcpExt:TCPToZeroWindowAdv", ...).
    pub netstat: BTreeMap<String, u64>,
    /// CFS periods elapsed.
    pub cpu_periods: u64,
    /// CFS periods throttled.
    pub cpu_throttled_periods: u64,
    /// Most server connections open at once (the largest report when nodes disagree).
    pub server_conns_max: u64,
    /// Drops of packets no socket owned.
    pub stray_drops: u64,
    /// Server connections open at those drops, summed over the drops.
    pub server_conns_at_stray_drops: u64,
    /// Payload programs attached to the pod (every direction any report had).
    pub payload: PayloadCapture,
}

/// All nodes' reports of one window, joined.
#[derive(Clone, Debug, Default)]
pub struct JoinedWindow {
    /// Window length in seconds (the longest of the reports; 0 when there were none).
    pub window_secs: f64,
    /// Edges, ordered by identity.
    pub edges: Vec<JoinedEdge>,
    /// Watched pods.
    pub pods: BTreeMap<PodRef, PodView>,
    /// Drops outside watched pods, per node, by reason.
    pub node_drops: BTreeMap<String, BTreeMap<String, u64>>,
}

impl JoinedWindow {
    /// Whether `e` was seen only by ends that copy no response heads (a client without
    /// ingress capture, a server without egress capture), so its L7 errors cannot show. A
    /// side whose pod no report lists counts as copying (probes before payload capture modes
    /// copied both directions); an edge no side reported has no L7 view either way.
    pub fn blind_to_responses(&self, e: &JoinedEdge) -> bool {
        let copies = |pod: &Option<PodRef>, dir: fn(PayloadCapture) -> bool| {
            pod.as_ref()
                .and_then(|p| self.pods.get(p))
                .is_none_or(|v| dir(v.payload))
        };
        let client = e
            .client
            .is_some()
            .then(|| copies(&e.key.client.pod, PayloadCapture::ingress));
        let server = e
            .server
            .is_some()
            .then(|| copies(&e.key.server.pod, PayloadCapture::egress));
        matches!(
            (client, server),
            (Some(false), None | Some(false)) | (None, Some(false))
        )
    }
}

/// Joins the reports of one window from several nodes.
pub fn join(reports: &[WindowReport]) -> JoinedWindow {
    join_owned(reports.to_vec())
}

/// [`join`], taking the reports: their edges and sides move into the joined window instead
/// of being copied (the operator's ingest joins every window of every node).
pub fn join_owned(reports: Vec<WindowReport>) -> JoinedWindow {
    let mut out = JoinedWindow::default();
    // Which joined edge each reported edge belongs to, found on borrowed identities so no
    // key is copied to find it; the slots are the edges' places in identity order, so the
    // joined edges (large) are built where they end up instead of being sorted afterwards.
    let (slot_of, slots) = {
        let reported = reports.iter().map(|r| r.edges.len()).sum();
        let mut ids: HashMap<EdgeIdRef<'_>, usize, FixedState> =
            HashMap::with_capacity_and_hasher(reported, FixedState::default());
        let mut first_seen = Vec::with_capacity(reported);
        for e in reports.iter().flat_map(|r| &r.edges) {
            let n = ids.len();
            first_seen.push(*ids.entry(EdgeIdRef::of(&e.key)).or_insert(n));
        }
        let mut sorted: Vec<(EdgeIdRef<'_>, usize)> = ids.into_iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut place = vec![0; sorted.len()];
        for (at, (_, seen)) in sorted.iter().enumerate() {
            place[*seen] = at;
        }
        let slot_of: Vec<usize> = first_seen.into_iter().map(|s| place[s]).collect();
        (slot_of, sorted.len())
    };
    let mut edges: Vec<Option<JoinedEdge>> = std::iter::repeat_with(|| None).take(slots).collect();
    let mut slot_of = slot_of.into_iter();
    for r in reports {
        let secs = r.end_unix_ms.saturating_sub(r.start_unix_ms) as f64 / 1000.0;
        out.window_secs = out.window_secs.max(secs);
        for p in r.pods {
            let view = out.pods.entry(p.pod).or_insert_with(|| PodView {
                node: r.node.clone(),
                payload: p.payload,
                ..PodView::default()
            });
            view.payload = view.payload.union(p.payload);
            add_counts(&mut view.drops, p.drops);
            add_counts(&mut view.netstat, p.netstat);
            view.sockets_opened += p.sockets_opened;
            view.cpu_periods += p.cpu_periods;
            view.cpu_throttled_periods += p.cpu_throttled_periods;
            // A pod is watched by one node; a second report (a move) does not add up peaks.
            view.server_conns_max = view.server_conns_max.max(p.server_conns_max);
            view.stray_drops += p.stray_drops;
            view.server_conns_at_stray_drops += p.server_conns_at_stray_drops;
        }
        // Shared by the report's edges: a copy of the name was two allocations per edge.
        let node: Arc<str> = Arc::from(r.node.as_str());
        for e in r.edges {
            let Some(slot) = slot_of.next().and_then(|i| edges.get_mut(i)) else {
                continue;
            };
            // Connect results are only observed on the client's socket, so they also place
            // the client.
            let connects = e.l4.connects_ok
                + e.l4.connect_refused
                + e.l4.connect_timeout
                + e.l4.connect_failed_other;
            let j = match slot {
                Some(j) => {
                    fill_pod(&mut j.key.client, e.key.client);
                    fill_pod(&mut j.key.server, e.key.server);
                    j.l4 = merge_l4(&j.l4, &e.l4);
                    j
                }
                None => slot.insert(JoinedEdge {
                    l4: merge_l4(&L4Stats::default(), &e.l4),
                    key: e.key,
                    client: None,
                    server: None,
                    client_node: None,
                    server_node: None,
                }),
            };
            if let Some(c) = e.client {
                j.client = Some(merge_side(j.client.take(), c));
                j.client_node.get_or_insert_with(|| node.clone());
            }
            if let Some(s) = e.server {
                j.server = Some(merge_side(j.server.take(), s));
                j.server_node.get_or_insert_with(|| node.clone());
            }
            if connects > 0 {
                j.client_node.get_or_insert_with(|| node.clone());
            }
        }
        add_counts(out.node_drops.entry(r.node).or_default(), r.node_drops);
    }
    // Every slot was filled (each came from a reported edge). `filter_map`, not `flatten`:
    // only the former collects into the slots' own allocation (same size, the option's tag is
    // a niche); `flatten` allocated a second vector and grew it, whose fresh pages the kernel
    // zeroed in every window.
    #[allow(clippy::filter_map_identity)]
    let mut edges: Vec<JoinedEdge> = edges.into_iter().filter_map(|slot| slot).collect();
    // A side nobody reported (its pod is not watched or had no exchanges) can still be placed
    // from the pod list of the node that watches it.
    let node_of = |pod: &Option<PodRef>| {
        pod.as_ref()
            .and_then(|p| out.pods.get(p))
            .map(|v| Arc::from(v.node.as_str()))
    };
    for j in &mut edges {
        if j.client_node.is_none() {
            j.client_node = node_of(&j.key.client.pod);
        }
        if j.server_node.is_none() {
            j.server_node = node_of(&j.key.server.pod);
        }
    }
    out.edges = edges;
    out
}

fn add_counts<K: Ord>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    if into.is_empty() {
        *into = from;
        return;
    }
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

fn fill_pod(into: &mut Endpoint, from: Endpoint) {
    if into.pod.is_none() {
        into.pod = from.pod;
    }
}

/// Merges two reports of the same side (rare: a pod that moved nodes, or overlapping probes).
fn merge_side(acc: Option<Box<SideStats>>, s: Box<SideStats>) -> Box<SideStats> {
    let Some(a) = acc else { return s };
    let weight = |x: &SideStats| x.exchanges as f64;
    let total = weight(&a) + weight(&s);
    Box::new(SideStats {
        exchanges: a.exchanges + s.exchanges,
        no_response: a.no_response + s.no_response,
        with_reset: a.with_reset + s.with_reset,
        zero_window: a.zero_window + s.zero_window,
        req_bytes: a.req_bytes + s.req_bytes,
        resp_bytes: a.resp_bytes + s.resp_bytes,
        latency: merge_latency(&a.latency, &s.latency),
        ttfb: merge_latency(&a.ttfb, &s.ttfb),
        wait: merge_latency(&a.wait, &s.wait),
        srtt_us_mean: if total > 0.0 {
            (a.srtt_us_mean * weight(&a) + s.srtt_us_mean * weight(&s)) / total
        } else {
            a.srtt_us_mean.max(s.srtt_us_mean)
        },
        srtt_us_max: a.srtt_us_max.max(s.srtt_us_max),
        srtt_us_min: match (a.srtt_us_min, s.srtt_us_min) {
            (0, m) | (m, 0) => m,
            (x, y) => x.min(y),
        },
        l7_errors: a.l7_errors + s.l7_errors,
        protocols: {
            let mut p = a.protocols;
            p.merge(s.protocols);
            p
        },
    })
}

/// Merges latencies through their sketches; without both sketches the quantiles cannot be
/// combined exactly, so the larger (more pessimistic) summary is kept.
pub fn merge_latency(a: &Latency, b: &Latency) -> Latency {
    match (&a.sketch, &b.sketch) {
        (Some(x), Some(y)) => {
            // Undecodable bytes (the network brought them) count as no sketch.
            if let (Ok(mut m), Ok(y)) = (x.decode(), y.decode())
                && m.merge(&y).is_ok()
            {
                return Latency::from_sketch(m);
            }
            pessimistic(a, b)
        }
        _ => pessimistic(a, b),
    }
}

fn pessimistic(a: &Latency, b: &Latency) -> Latency {
    if b.p99_ms > a.p99_ms {
        b.clone()
    } else {
        a.clone()
    }
}

fn merge_l4(a: &L4Stats, b: &L4Stats) -> L4Stats {
    let ok = a.connects_ok + b.connects_ok;
    L4Stats {
        connects_ok: ok,
        connect_refused: a.connect_refused + b.connect_refused,
        connect_timeout: a.connect_timeout + b.connect_timeout,
        connect_failed_other: a.connect_failed_other + b.connect_failed_other,
        connect_ms_mean: if ok > 0 {
            (a.connect_ms_mean * a.connects_ok as f64 + b.connect_ms_mean * b.connects_ok as f64)
                / ok as f64
        } else {
            0.0
        },
        connect_ms_max: a.connect_ms_max.max(b.connect_ms_max),
        retrans_client_to_server: a.retrans_client_to_server + b.retrans_client_to_server,
        retrans_server_to_client: a.retrans_server_to_client + b.retrans_server_to_client,
        syn_retrans: a.syn_retrans + b.syn_retrans,
        resets_by_client: a.resets_by_client + b.resets_by_client,
        resets_by_server: a.resets_by_server + b.resets_by_server,
        resets_to_client: a.resets_to_client + b.resets_to_client,
        resets_to_server: a.resets_to_server + b.resets_to_server,
        closes: a.closes + b.closes,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netdx_api::windows::{EdgeWindow, PodWindow};
    use sketches_ddsketch::{Config, DDSketch};

    pub(crate) fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    pub(crate) fn latency(samples: &[f64]) -> Latency {
        let mut s = DDSketch::new(Config::defaults());
        for &x in samples {
            s.add(x);
        }
        Latency::from_sketch(s)
    }

    /// Boxed, as edges carry their views.
    pub(crate) fn side(exchanges: u64, samples: &[f64]) -> Box<SideStats> {
        Box::new(SideStats {
            exchanges,
            latency: latency(samples),
            ttfb: latency(samples),
            ..SideStats::default()
        })
    }

    pub(crate) fn key(client: (&str, &str), server: (&str, &str), known: bool) -> EdgeKey {
        let ep = |(name, ip): (&str, &str)| Endpoint {
            pod: known.then(|| pod(name)),
            ip: ip.into(),
        };
        EdgeKey {
            client: ep(client),
            server: ep(server),
            port: 8080,
            proto: "tcp".into(),
        }
    }

    pub(crate) fn report(node: &str, edges: Vec<EdgeWindow>, pods: Vec<PodWindow>) -> WindowReport {
        WindowReport {
            node: node.into(),
            seq: 7,
            start_unix_ms: 10_000,
            end_unix_ms: 20_000,
            edges,
            pods,
            node_drops: BTreeMap::new(),
            health: Default::default(),
        }
    }

    #[test]
    fn joins_client_and_server_views_from_two_nodes() {
        let c = ("client", "10.0.1.5");
        let s = ("server", "10.0.2.7");
        // Client node resolved the server pod; server node did not resolve the client pod.
        let mut server_key = key(c, s, true);
        server_key.client.pod = None;
        let client_l4 = L4Stats {
            connects_ok: 4,
            connect_ms_mean: 2.0,
            retrans_client_to_server: 3,
            ..L4Stats::default()
        };
        let server_l4 = L4Stats {
            retrans_server_to_client: 5,
            resets_by_server: 1,
            ..L4Stats::default()
        };
        let n1 = report(
            "n1",
            vec![EdgeWindow {
                key: key(c, s, true),
                client: Some(side(100, &[10.0; 100])),
                server: None,
                l4: client_l4,
            }],
            vec![PodWindow {
                pod: pod("client"),
                ..PodWindow::default()
            }],
        );
        let n2 = report(
            "n2",
            vec![EdgeWindow {
                key: server_key,
                client: None,
                server: Some(side(100, &[4.0; 100])),
                l4: server_l4,
            }],
            vec![PodWindow {
                pod: pod("server"),
                drops: [("netfilter_drop".to_string(), 2)].into(),
                sockets_opened: 4,
                ..PodWindow::default()
            }],
        );
        let w = join(&[n1, n2]);
        assert_eq!(w.window_secs, 10.0);
        assert_eq!(w.edges.len(), 1, "both views must land on one edge");
        let e = &w.edges[0];
        assert_eq!(
            e.key.client.pod,
            Some(pod("client")),
            "pod name filled from the node that knew it"
        );
        assert_eq!(e.client_node.as_deref(), Some("n1"));
        assert_eq!(e.server_node.as_deref(), Some("n2"));
        assert!((e.client.as_ref().unwrap().latency.p99_ms - 10.0).abs() < 0.2);
        assert!((e.server.as_ref().unwrap().latency.p99_ms - 4.0).abs() < 0.1);
        assert_eq!(e.l4.retrans_client_to_server, 3);
        assert_eq!(e.l4.retrans_server_to_client, 5);
        assert_eq!(e.l4.connects_ok, 4);
        assert_eq!(e.l4.resets_by_server, 1);
        assert_eq!(w.pods[&pod("server")].drops["netfilter_drop"], 2);
        assert_eq!(w.pods[&pod("server")].node, "n2");
    }

    #[test]
    fn an_edge_is_blind_to_responses_only_where_no_reporting_end_copies_them() {
        use PayloadCapture::{Both, Egress, Ingress, Off};
        let c = ("client", "10.0.1.5");
        let s = ("server", "10.0.2.7");
        let window = |client: Option<PayloadCapture>, server: Option<PayloadCapture>| {
            let pods = [("client", client), ("server", server)]
                .into_iter()
                .filter_map(|(name, p)| {
                    Some(PodWindow {
                        pod: pod(name),
                        payload: p?,
                        ..PodWindow::default()
                    })
                })
                .collect();
            join(&[report(
                "n1",
                vec![EdgeWindow {
                    key: key(c, s, true),
                    client: client.map(|_| side(10, &[1.0; 10])),
                    server: server.map(|_| side(10, &[1.0; 10])),
                    l4: L4Stats::default(),
                }],
                pods,
            )])
        };
        for (client, server, blind) in [
            (Some(Off), Some(Off), true),
            // Each end copies only its requests.
            (Some(Egress), Some(Ingress), true),
            (Some(Ingress), Some(Off), false),
            (Some(Off), Some(Egress), false),
            (Some(Off), None, true),
            (None, Some(Ingress), true),
            (Some(Both), None, false),
        ] {
            let w = window(client, server);
            assert_eq!(
                w.blind_to_responses(&w.edges[0]),
                blind,
                "client {client:?}, server {server:?}"
            );
        }
        // A reported side whose pod no report lists was seen by a probe that copies both.
        let mut w = window(Some(Off), None);
        w.pods.clear();
        assert!(!w.blind_to_responses(&w.edges[0]));
        // Two reports of one pod (a move): every direction either copied.
        let half = |p| PodWindow {
            pod: pod("client"),
            payload: p,
            ..PodWindow::default()
        };
        let w = join(&[
            report("n1", vec![], vec![half(Off)]),
            report("n2", vec![], vec![half(Ingress)]),
        ]);
        assert_eq!(w.pods[&pod("client")].payload, Ingress);
    }

    #[test]
    fn merges_sketches_when_two_nodes_report_the_same_side() {
        let c = ("client", "10.0.1.5");
        let s = ("server", "10.0.2.7");
        // 98 fast samples on one node, 2 slow ones on the other: the merged p99 must see the
        // slow tail and p50 the fast body, which neither summary alone gives.
        let a = report(
            "n1",
            vec![EdgeWindow {
                key: key(c, s, true),
                client: Some(side(98, &[1.0; 98])),
                server: None,
                l4: L4Stats {
                    connects_ok: 1,
                    connect_ms_mean: 1.0,
                    ..Default::default()
                },
            }],
            vec![],
        );
        let b = report(
            "n3",
            vec![EdgeWindow {
                key: key(c, s, true),
                client: Some(side(2, &[100.0, 100.0])),
                server: None,
                l4: L4Stats {
                    connects_ok: 3,
                    connect_ms_mean: 3.0,
                    ..Default::default()
                },
            }],
            vec![],
        );
        let w = join(&[a, b]);
        let cl = w.edges[0].client.as_ref().unwrap();
        assert_eq!(cl.exchanges, 100);
        assert!(
            (cl.latency.p50_ms - 1.0).abs() < 0.05,
            "p50 {}",
            cl.latency.p50_ms
        );
        assert!(cl.latency.p99_ms > 90.0, "p99 {}", cl.latency.p99_ms);
        assert!(
            (w.edges[0].l4.connect_ms_mean - 2.5).abs() < 1e-9,
            "weighted by connects"
        );
        assert_eq!(
            w.edges[0].client_node.as_deref(),
            Some("n1"),
            "first reporter wins"
        );
    }

    #[test]
    fn places_an_unreported_side_from_the_pod_list() {
        let c = ("client", "10.0.1.5");
        let s = ("server", "10.0.2.7");
        let n1 = report(
            "n1",
            vec![EdgeWindow {
                key: key(c, s, true),
                client: Some(side(1, &[1.0])),
                server: None,
                l4: L4Stats::default(),
            }],
            vec![],
        );
        // The server pod is watched on n2 but had no exchange in the window.
        let n2 = report(
            "n2",
            vec![],
            vec![PodWindow {
                pod: pod("server"),
                ..PodWindow::default()
            }],
        );
        let w = join(&[n1, n2]);
        assert!(w.edges[0].server.is_none());
        assert_eq!(w.edges[0].server_node.as_deref(), Some("n2"));
    }

    #[test]
    fn empty_input_gives_an_empty_window() {
        let w = join(&[]);
        assert!(w.edges.is_empty());
        assert_eq!(w.window_secs, 0.0);
    }
}
