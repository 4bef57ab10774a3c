//! Aggregation of records into per-window edge and pod summaries.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use compact_str::ToCompactString as _;

use crate::{
    histogram::LogHistogram,
    pods::PodIndex,
    podstats::PodSampler,
    protocols::{Protocol, classify_with_hint},
    records::Record,
};
use netdx_api::{
    targets::PodRef,
    windows::{
        EdgeKey, EdgeWindow, Endpoint, L4Stats, Latency, PodWindow, ProbeHealth, SideStats,
        WindowReport,
    },
};
use netdx_common::{
    CF_CONNECTING, CF_RESET_SEEN, ConnEvent, ConnEventKind, DropEvent, EXF_NO_RESPONSE, EXF_RESET,
    EXF_ZERO_WINDOW, Exchange, ROLE_CLIENT,
};

/// Fast hashing for the per-record lookups (socket cookies are not attacker-chosen).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

const ECONNREFUSED: u32 = 111;
const ETIMEDOUT: u32 = 110;
const AF_INET6: u8 = 10;

/// What userspace knows about one socket (by cookie). Every record looks its socket up, so
/// the entry is kept to 8 bytes (16 with its key, half what three bools and two window numbers
/// took): the table then stays in cache for thousands of sockets.
#[derive(Clone, Copy, Debug)]
struct Conn {
    /// Index into the aggregator's edge table (edges are far fewer than 2^32).
    edge: u32,
    /// `CONN_*` bits.
    flags: u8,
    /// Low byte of the sequence of the last window with activity: only UDP sockets are
    /// purged by it, at most [`UDP_IDLE_WINDOWS`] + 1 windows later, long before it wraps.
    last_seq: u8,
    /// Protocol of the last classified exchange.
    protocol: Option<Protocol>,
}

/// [`Conn::flags`]: the client end of its connection.
const CONN_CLIENT: u8 = 1;
/// UDP sockets never report a close: they are forgotten after [`UDP_IDLE_WINDOWS`].
const CONN_UDP: u8 = 1 << 1;
/// The socket closed; it is purged at the second window close after, so late events (a reset
/// sent after close) still find it.
const CONN_CLOSED: u8 = 1 << 2;
/// The socket closed before the window now open.
const CONN_CLOSED_BEFORE: u8 = 1 << 3;

impl Conn {
    fn is_client(self) -> bool {
        self.flags & CONN_CLIENT != 0
    }

    fn udp(self) -> bool {
        self.flags & CONN_UDP != 0
    }
}

/// Idle windows after which a UDP socket is forgotten.
const UDP_IDLE_WINDOWS: u8 = 6;

/// Server-side connection concurrency of one pod, and how full it was at stray drops.
#[derive(Default)]
struct Fullness {
    /// Server TCP connections open now.
    open: u64,
    /// Most open at once this window.
    max: u64,
    /// Drops of packets no socket owned this window.
    stray_drops: u64,
    /// `open` summed over those drops.
    open_at_stray_drops: u64,
}

#[derive(Default)]
struct SideAcc {
    exchanges: u64,
    no_response: u64,
    with_reset: u64,
    zero_window: u64,
    req_bytes: u64,
    resp_bytes: u64,
    /// Lanes: latency (to last byte), time to first byte, wait ([`LANE_LATENCY`], ...).
    latencies: LogHistogram<3>,
    srtt_sum: u64,
    srtt_n: u64,
    srtt_max: u32,
    srtt_min: u32,
    l7_errors: u64,
    protocols: [u64; Protocol::ALL.len()],
}

/// Lanes of [`SideAcc::latencies`].
const LANE_LATENCY: usize = 0;
const LANE_TTFB: usize = 1;
const LANE_WAIT: usize = 2;

/// Latency summary of a histogram lane of nanoseconds, in milliseconds (default when empty).
fn latency_ms(h: &LogHistogram<3>, lane: usize) -> Latency {
    if h.count() == 0 {
        return Latency::default();
    }
    Latency::from_sketch(h.to_sketch(lane, 1e6))
}

impl SideAcc {
    /// The values `ex` records in [`SideAcc::latencies`], in lane order.
    fn lanes(ex: &Exchange) -> [u64; 3] {
        [
            ex.ttlb_ns,
            ex.ttfb_ns,
            ex.ttfb_ns.saturating_sub(u64::from(ex.req_dur_ns)),
        ]
    }

    /// Adds an exchange; returns its protocol.
    fn add(&mut self, ex: &Exchange, hint: Option<Protocol>) -> Protocol {
        if ex.flags & EXF_NO_RESPONSE != 0 {
            self.no_response += 1;
        } else {
            self.exchanges += 1;
            self.latencies.record(Self::lanes(ex));
        }
        if ex.flags & EXF_RESET != 0 {
            self.with_reset += 1;
        }
        if ex.flags & EXF_ZERO_WINDOW != 0 {
            self.zero_window += 1;
        }
        self.req_bytes += u64::from(ex.req_bytes);
        self.resp_bytes += u64::from(ex.resp_bytes);
        let l7 = classify_with_hint(
            hint,
            ex.proto == 17,
            ex.req_head.bytes(ex.req_head_len),
            ex.resp_head.bytes(ex.resp_head_len),
        );
        if l7.error {
            self.l7_errors += 1;
        }
        self.protocols[l7.protocol as usize] += 1;
        if ex.srtt_us > 0 {
            self.srtt_sum += u64::from(ex.srtt_us);
            self.srtt_n += 1;
            self.srtt_max = self.srtt_max.max(ex.srtt_us);
            self.srtt_min = match self.srtt_min {
                0 => ex.srtt_us,
                m => m.min(ex.srtt_us),
            };
        }
        l7.protocol
    }

    fn finish(self) -> SideStats {
        SideStats {
            exchanges: self.exchanges,
            no_response: self.no_response,
            with_reset: self.with_reset,
            zero_window: self.zero_window,
            req_bytes: self.req_bytes,
            resp_bytes: self.resp_bytes,
            latency: latency_ms(&self.latencies, LANE_LATENCY),
            ttfb: latency_ms(&self.latencies, LANE_TTFB),
            wait: latency_ms(&self.latencies, LANE_WAIT),
            srtt_us_mean: if self.srtt_n > 0 {
                self.srtt_sum as f64 / self.srtt_n as f64
            } else {
                0.0
            },
            srtt_us_max: self.srtt_max,
            srtt_us_min: self.srtt_min,
            l7_errors: self.l7_errors,
            protocols: Protocol::ALL
                .iter()
                .zip(self.protocols)
                .filter(|(_, n)| *n > 0)
                .map(|(p, n)| (p.name().into(), n))
                .collect(),
        }
    }
}

#[derive(Default)]
struct EdgeAcc {
    client: Option<SideAcc>,
    server: Option<SideAcc>,
    l4: L4Stats,
    connect_ms_sum: f64,
}

/// The accumulator of edge `id` in this window, created on first use.
fn acc_mut(accs: &mut Vec<Option<EdgeAcc>>, id: usize) -> &mut EdgeAcc {
    if accs.len() <= id {
        accs.resize_with(id + 1, || None);
    }
    accs[id].get_or_insert_with(EdgeAcc::default)
}

/// Turns records into windows. Not thread-safe by itself; the ingest loop owns it.
pub struct Aggregator {
    node: String,
    index: Arc<PodIndex>,
    drop_reasons: Arc<HashMap<u32, String>>,
    conns: FastMap<u64, Conn>,
    /// Edge table: sockets point into it by index; compacted at each window close.
    edge_keys: Vec<EdgeKey>,
    edge_ids: HashMap<EdgeKey, u32>,
    /// This window's accumulators, by edge index (None: no activity yet).
    accs: Vec<Option<EdgeAcc>>,
    /// Drops this window by reason code: named at window close, not per drop.
    pod_drops: HashMap<PodRef, BTreeMap<u32, u64>>,
    pod_sockets: HashMap<PodRef, u64>,
    pod_fullness: HashMap<PodRef, Fullness>,
    node_drops: BTreeMap<u32, u64>,
    seq: u64,
    start_unix_ms: u64,
    health: ProbeHealth,
}

/// Drop counts by reason name (the kernel's, or `reason_<code>` when it has none).
fn named_drops(
    reasons: &HashMap<u32, String>,
    by_code: BTreeMap<u32, u64>,
) -> BTreeMap<String, u64> {
    let mut named = BTreeMap::new();
    for (code, n) in by_code {
        let name = reasons
            .get(&code)
            .cloned()
            .unwrap_or_else(|| format!("reason_{code}"));
        // Two codes may share a name.
        *named.entry(name).or_default() += n;
    }
    named
}

fn ip_of(family: u8, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        let v6 = Ipv6Addr::from(*raw);
        v6.to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Aggregator {
    /// A fresh aggregator for `node`.
    pub fn new(
        node: impl Into<String>,
        index: Arc<PodIndex>,
        drop_reasons: Arc<HashMap<u32, String>>,
    ) -> Self {
        Aggregator {
            node: node.into(),
            index,
            drop_reasons,
            conns: FastMap::default(),
            edge_keys: Vec::new(),
            edge_ids: HashMap::new(),
            accs: Vec::new(),
            pod_drops: HashMap::new(),
            pod_sockets: HashMap::new(),
            pod_fullness: HashMap::new(),
            node_drops: BTreeMap::new(),
            seq: 0,
            start_unix_ms: unix_ms(),
            health: ProbeHealth::default(),
        }
    }

    /// Replaces the pod index (targets changed).
    pub fn set_index(&mut self, index: Arc<PodIndex>) {
        self.index = index;
    }

    /// Counts a record the decoder rejected.
    pub fn malformed(&mut self) {
        self.health.records_read += 1;
        self.health.records_malformed += 1;
    }

    /// Feeds one record.
    pub fn add(&mut self, rec: &Record) {
        self.health.records_read += 1;
        match rec {
            Record::Exchange(ex) => self.add_exchange(ex),
            Record::Conn(ev) => self.add_conn(ev),
            Record::Drop(d) => self.add_drop(d),
        }
    }

    fn endpoint(&self, ip: IpAddr) -> Endpoint {
        Endpoint {
            pod: self.index.pod_of_ip(&ip).cloned(),
            ip: ip.to_compact_string(),
        }
    }

    fn add_exchange(&mut self, ex: &Exchange) {
        let Some(conn) = self.conns.get_mut(&ex.cookie) else {
            self.health.exchanges_unattributed += 1;
            return;
        };
        conn.last_seq = self.seq as u8;
        let is_client = conn.is_client();
        let acc = acc_mut(&mut self.accs, conn.edge as usize);
        let side = if is_client {
            &mut acc.client
        } else {
            &mut acc.server
        };
        let p = side
            .get_or_insert_with(SideAcc::default)
            .add(ex, conn.protocol);
        conn.protocol = (p != Protocol::Unknown).then_some(p);
    }

    fn conn_for(&mut self, ev: &ConnEvent) -> Conn {
        if let Some(c) = self.conns.get(&ev.cookie) {
            return *c;
        }
        let remote = ip_of(ev.family, &ev.daddr);
        let udp = ev.proto == 17;
        let is_client = ev.role == ROLE_CLIENT;
        let pod = self.index.pod_of_cgroup(ev.cgroup_id).cloned();
        // An unconnected UDP server socket is bound to the wildcard address: name it by its
        // pod's IP, or every such server in the cluster would join into one edge.
        let local = match ip_of(ev.family, &ev.saddr) {
            ip if ip.is_unspecified() => pod
                .as_ref()
                .and_then(|p| self.index.ip_of_pod(p))
                .unwrap_or(ip),
            ip => ip,
        };
        let me = Endpoint {
            pod,
            ip: local.to_compact_string(),
        };
        let peer = self.endpoint(remote);
        let proto = if udp { "udp" } else { "tcp" }.into();
        let edge = if is_client {
            EdgeKey {
                client: me,
                server: peer,
                port: ev.dport,
                proto,
            }
        } else {
            EdgeKey {
                client: peer,
                server: me,
                port: ev.sport,
                proto,
            }
        };
        let edge = match self.edge_ids.get(&edge) {
            Some(&id) => id,
            None => {
                let id = self.edge_keys.len() as u32;
                self.edge_ids.insert(edge.clone(), id);
                self.edge_keys.push(edge);
                id
            }
        };
        let conn = Conn {
            edge,
            flags: if is_client { CONN_CLIENT } else { 0 } | if udp { CONN_UDP } else { 0 },
            last_seq: self.seq as u8,
            protocol: None,
        };
        // The first event of any socket (Open, or ConnectOk/Fail for ones seen connecting).
        if let Some(pod) = self.index.pod_of_cgroup(ev.cgroup_id) {
            *self.pod_sockets.entry(pod.clone()).or_default() += 1;
            if !is_client && !udp {
                let f = self.pod_fullness.entry(pod.clone()).or_default();
                f.open += 1;
                f.max = f.max.max(f.open);
            }
        }
        self.conns.insert(ev.cookie, conn);
        conn
    }

    fn add_conn(&mut self, ev: &ConnEvent) {
        let Some(kind) = ConnEventKind::from_u8(ev.event) else {
            self.health.records_malformed += 1;
            return;
        };
        let conn = self.conn_for(ev);
        let acc = acc_mut(&mut self.accs, conn.edge as usize);
        let l4 = &mut acc.l4;
        let ms = ev.duration_ns as f64 / 1e6;
        match kind {
            ConnEventKind::Open => {}
            ConnEventKind::ConnectOk => {
                l4.connects_ok += 1;
                acc.connect_ms_sum += ms;
                l4.connect_ms_max = l4.connect_ms_max.max(ms);
            }
            ConnEventKind::ConnectFail => {
                l4.connect_ms_max = l4.connect_ms_max.max(ms);
                if ev.err == ECONNREFUSED || ev.flags & CF_RESET_SEEN != 0 {
                    l4.connect_refused += 1;
                } else if ev.err == ETIMEDOUT || ev.err == 0 || ev.total_retrans > 0 {
                    // err 0: the application gave up (its own connect timeout, often shorter
                    // than the first SYN retransmit) before any answer came: no answer.
                    l4.connect_timeout += 1;
                } else {
                    l4.connect_failed_other += 1;
                }
                self.close(ev.cookie);
            }
            ConnEventKind::Close => {
                l4.closes += 1;
                self.close(ev.cookie);
            }
            ConnEventKind::Retransmit => {
                if ev.flags & CF_CONNECTING != 0 {
                    l4.syn_retrans += 1;
                } else if conn.is_client() {
                    l4.retrans_client_to_server += 1;
                } else {
                    l4.retrans_server_to_client += 1;
                }
            }
            ConnEventKind::ResetRx => {
                if conn.is_client() {
                    l4.resets_to_client += 1;
                } else {
                    l4.resets_to_server += 1;
                }
            }
            ConnEventKind::ResetTx => {
                if conn.is_client() {
                    l4.resets_by_client += 1;
                } else {
                    l4.resets_by_server += 1;
                }
            }
        }
    }

    fn close(&mut self, cookie: u64) {
        let Some(c) = self.conns.get_mut(&cookie) else {
            return;
        };
        if c.flags & CONN_CLOSED != 0 {
            return;
        }
        c.flags |= CONN_CLOSED;
        if c.is_client() || c.udp() {
            return;
        }
        // A server socket's pod is its edge's server end.
        let pod = self
            .edge_keys
            .get(c.edge as usize)
            .and_then(|k| k.server.pod.as_ref());
        if let Some(f) = pod.and_then(|p| self.pod_fullness.get_mut(p)) {
            f.open = f.open.saturating_sub(1);
        }
    }

    /// Keeps only the edges live sockets point to, renumbered.
    fn compact_edges(&mut self) {
        let mut remap: Vec<Option<u32>> = vec![None; self.edge_keys.len()];
        let mut keys = Vec::new();
        for c in self.conns.values_mut() {
            let Some(slot) = remap.get_mut(c.edge as usize) else {
                continue;
            };
            c.edge = *slot.get_or_insert_with(|| {
                keys.push(self.edge_keys[c.edge as usize].clone());
                (keys.len() - 1) as u32
            });
        }
        self.edge_ids = keys
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, k)| (k, i as u32))
            .collect();
        self.edge_keys = keys;
    }

    fn add_drop(&mut self, d: &DropEvent) {
        let pod = self
            .index
            .pod_of_cgroup(d.cgroup_id)
            .or_else(|| self.index.pod_of_netns(d.netns))
            .cloned();
        let bucket = match pod {
            Some(p) => {
                // A packet no socket owned (a SYN turned away): how full was the server?
                if d.cookie == 0 {
                    let f = self.pod_fullness.entry(p.clone()).or_default();
                    f.stray_drops += 1;
                    f.open_at_stray_drops += f.open;
                }
                self.pod_drops.entry(p).or_default()
            }
            None => &mut self.node_drops,
        };
        *bucket.entry(d.reason).or_default() += 1;
    }

    /// Closes the current window and starts the next one; `sampler` supplies per-pod
    /// kernel counters (netns MIBs, CPU throttling).
    pub fn close_window(
        &mut self,
        kernel: BTreeMap<String, u64>,
        sampler: &mut PodSampler,
    ) -> WindowReport {
        let end = unix_ms();
        let edges = std::mem::take(&mut self.accs)
            .into_iter()
            .enumerate()
            .filter_map(|(id, acc)| Some((self.edge_keys.get(id)?.clone(), acc?)))
            .map(|(key, acc)| {
                let mut l4 = acc.l4;
                if l4.connects_ok > 0 {
                    l4.connect_ms_mean = acc.connect_ms_sum / l4.connects_ok as f64;
                }
                EdgeWindow {
                    key,
                    client: acc.client.map(|s| Box::new(s.finish())),
                    server: acc.server.map(|s| Box::new(s.finish())),
                    l4,
                }
            })
            .collect();
        let mut pod_drops = std::mem::take(&mut self.pod_drops);
        let mut pod_sockets = std::mem::take(&mut self.pod_sockets);
        let pods = self
            .index
            .watched
            .iter()
            .map(|w| {
                let d = sampler.delta(w);
                let full = self
                    .pod_fullness
                    .get_mut(&w.pod)
                    .map_or_else(Fullness::default, |f| {
                        // The next window starts with the connections still open.
                        let next = Fullness {
                            open: f.open,
                            max: f.open,
                            ..Fullness::default()
                        };
                        std::mem::replace(f, next)
                    });
                PodWindow {
                    pod: w.pod.clone(),
                    drops: named_drops(
                        &self.drop_reasons,
                        pod_drops.remove(&w.pod).unwrap_or_default(),
                    ),
                    sockets_opened: pod_sockets.remove(&w.pod).unwrap_or_default(),
                    netstat: d.mib.into_iter().filter(|(_, v)| *v > 0).collect(),
                    cpu_periods: d.nr_periods,
                    cpu_throttled_periods: d.nr_throttled,
                    cpu_throttled_ms: d.throttled_ns as f64 / 1e6,
                    server_conns_max: full.max,
                    stray_drops: full.stray_drops,
                    server_conns_at_stray_drops: full.open_at_stray_drops,
                    payload: w.payload,
                }
            })
            .collect();
        let node_drops = named_drops(&self.drop_reasons, std::mem::take(&mut self.node_drops));
        let index = &self.index;
        self.pod_fullness
            .retain(|p, _| index.watched.iter().any(|w| &w.pod == p));
        let ids: Vec<u64> = self.index.watched.iter().map(|w| w.cgroup_id).collect();
        sampler.retain(&ids);
        let seq = self.seq;
        self.conns.retain(|_, c| {
            let idle = (seq as u8).wrapping_sub(c.last_seq);
            if c.flags & CONN_CLOSED_BEFORE != 0 || (c.udp() && idle > UDP_IDLE_WINDOWS) {
                return false;
            }
            if c.flags & CONN_CLOSED != 0 {
                c.flags |= CONN_CLOSED_BEFORE;
            }
            true
        });
        self.compact_edges();
        self.health.kernel = kernel;
        let report = WindowReport {
            node: self.node.clone(),
            seq,
            start_unix_ms: self.start_unix_ms,
            end_unix_ms: end,
            edges,
            pods,
            node_drops,
            health: self.health.clone(),
        };
        self.seq += 1;
        self.start_unix_ms = end;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netdx_common::RecordKind;

    #[test]
    fn a_side_counts_zero_window_stalls_and_keeps_its_fast_decile() {
        let ex = |flags, ttlb_ns| Exchange {
            kind: RecordKind::Exchange as u8,
            role: ROLE_CLIENT,
            flags,
            proto: 6,
            ttfb_ns: ttlb_ns,
            ttlb_ns,
            ..Exchange::default()
        };
        let mut side = SideAcc::default();
        for ms in 1..=10u64 {
            side.add(&ex(0, ms * 1_000_000), None);
        }
        side.add(&ex(EXF_NO_RESPONSE | EXF_ZERO_WINDOW, 0), None);
        side.add(&ex(EXF_ZERO_WINDOW, 30_000_000), None);
        let s = side.finish();
        assert_eq!((s.exchanges, s.no_response, s.zero_window), (11, 1, 2));
        assert!(
            (0.9..=2.1).contains(&s.latency.p10_ms) && s.latency.p10_ms < s.latency.p50_ms,
            "{:?}",
            s.latency
        );
    }

    #[test]
    fn drops_are_named_at_close_and_shared_names_summed() {
        // Codes 3 and 4 share a name; 77 has none.
        let reasons = HashMap::from([
            (2, "not_specified".to_string()),
            (3, "no_socket".into()),
            (4, "no_socket".into()),
        ]);
        let named = named_drops(&reasons, BTreeMap::from([(2, 1), (3, 2), (4, 3), (77, 4)]));
        assert_eq!(
            named,
            BTreeMap::from([
                ("not_specified".to_string(), 1),
                ("no_socket".into(), 5),
                ("reason_77".into(), 4),
            ])
        );
    }
}
