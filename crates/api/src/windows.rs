//! Per-window summaries a node-probe produces.

use std::collections::BTreeMap;

use bytes::Bytes;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use sketches_ddsketch::DDSketch;
use smallvec::SmallVec;

use crate::targets::{PayloadCapture, PodRef};

/// One end of an edge: a known pod, or just an address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The pod, when the address belongs to a known pod.
    pub pod: Option<PodRef>,
    /// IP address (inline up to 24 bytes, so any IPv4 one, like the [`PodRef`] names).
    pub ip: CompactString,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pod {
            Some(p) => write!(f, "{p}"),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// A client -> server:port conversation between two workloads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeKey {
    /// Who opened the connections.
    pub client: Endpoint,
    /// Who served them.
    pub server: Endpoint,
    /// Server port.
    pub port: u16,
    /// "tcp" or "udp".
    pub proto: CompactString,
}

impl std::fmt::Display for EdgeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}:{}/{}",
            self.client, self.server, self.port, self.proto
        )
    }
}

/// Latency summary in milliseconds plus the mergeable sketch it came from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// 10th percentile: the fast exchanges; near the median for a constant delay, far below
    /// it when packets are delayed at random (jitter).
    #[serde(default)]
    pub p10_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// DDSketch (relative accuracy 1%) to merge windows and sides across nodes.
    pub sketch: Option<Sketch>,
}

/// A DDSketch of milliseconds, kept in the sketch's compact binary encoding (DataDog's,
/// varint bins) so receivers can merge it. It is decoded only when merged: the operator reads
/// the summaries next to it and merges sketches only when two nodes report the same side, so
/// decoding every received sketch would be wasted work. JSON carries the bytes in base64 (one
/// string to parse instead of arrays of numbers; the older form, bins as JSON, is still
/// read), binary encodings carry them as they are, and a sketch decoded from a binary body
/// ([`crate::wire::Encoding::decode_body`]) is a slice of it rather than a copy of its own.
#[derive(Clone, PartialEq, Eq)]
pub struct Sketch(Bytes);

/// Why a sketch's bytes do not decode.
#[derive(Debug, thiserror::Error)]
#[error("sketch does not decode: {0}")]
pub struct SketchError(String);

impl Sketch {
    /// Encodes a sketch.
    pub fn new(s: &DDSketch) -> Self {
        Sketch(Bytes::from(s.to_java_bytes()))
    }

    /// Decodes the sketch (the bytes came from the network: they may be corrupt).
    pub fn decode(&self) -> Result<DDSketch, SketchError> {
        DDSketch::from_java_bytes(&self.0).map_err(|e| SketchError(format!("{e:?}")))
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A sketch of the encoded bytes a binary encoding carries (empty bytes are no sketch).
    pub(crate) fn from_bytes(v: Bytes) -> Result<Self, &'static str> {
        if v.is_empty() {
            return Err("sketch: no bytes");
        }
        Ok(Sketch(v))
    }
}

impl Serialize for Sketch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

/// Reads a sketch's bytes from a binary format.
struct BytesVisitor;

impl serde::de::Visitor<'_> for BytesVisitor {
    type Value = Sketch;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the bytes of an encoded DDSketch")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Sketch, E> {
        Sketch::from_bytes(Bytes::copy_from_slice(v)).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Sketch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Encoded(String),
            Bins(DDSketch),
        }
        if !d.is_human_readable() {
            return d.deserialize_bytes(BytesVisitor);
        }
        match Form::deserialize(d)? {
            Form::Bins(s) => Ok(Sketch::new(&s)),
            Form::Encoded(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| serde::de::Error::custom(format!("sketch: bad base64: {e}")))?;
                if bytes.is_empty() {
                    return Err(serde::de::Error::custom("sketch: no bytes"));
                }
                Ok(Sketch(Bytes::from(bytes)))
            }
        }
    }
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sketch({} bytes)", self.0.len())
    }
}

impl Latency {
    /// Summarises a sketch of milliseconds.
    pub fn from_sketch(s: DDSketch) -> Self {
        let q = |q| s.quantile(q).ok().flatten().unwrap_or(0.0);
        let count = s.count();
        Latency {
            p10_ms: q(0.1),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            mean_ms: if count > 0 {
                s.sum().unwrap_or(0.0) / count as f64
            } else {
                0.0
            },
            max_ms: s.max().unwrap_or(0.0),
            sketch: Some(Sketch::new(&s)),
        }
    }
}

/// What one side (client or server) of an edge saw in a window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SideStats {
    /// Completed exchanges.
    pub exchanges: u64,
    /// Requests closed without any response byte.
    pub no_response: u64,
    /// Exchanges during which a reset was seen.
    pub with_reset: u64,
    /// Exchanges ended by a send that failed while the peer advertised a zero receive window
    /// (the peer stopped reading).
    #[serde(default)]
    pub zero_window: u64,
    /// Request bytes.
    pub req_bytes: u64,
    /// Response bytes.
    pub resp_bytes: u64,
    /// First request byte to last response byte.
    pub latency: Latency,
    /// First request byte to first response byte.
    pub ttfb: Latency,
    /// Last request byte to first response byte: the time the other side took to answer once
    /// the whole request had passed this socket (on the server side, processing time).
    #[serde(default)]
    pub wait: Latency,
    /// Mean smoothed RTT of the sockets at exchange end, microseconds.
    pub srtt_us_mean: f64,
    /// Largest srtt seen, microseconds.
    pub srtt_us_max: u32,
    /// Smallest srtt seen, microseconds (0 when none was seen).
    #[serde(default)]
    pub srtt_us_min: u32,
    /// Exchanges whose response carried the protocol's error signal (HTTP 5xx, RESP -ERR,
    /// PostgreSQL ErrorResponse, DNS rcode != 0, ...).
    pub l7_errors: u64,
    /// Exchanges by recognised protocol ("unknown" when no classifier matched).
    pub protocols: Protocols,
}

/// Exchanges by protocol name, in name order (encoded as a map, as the `BTreeMap` it
/// replaced). A side speaks one or two protocols, so they live inline with short inline
/// names: a map per side was an allocation to decode and a node to walk when dropped, about
/// a tenth of the operator's ingest time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protocols(SmallVec<[(CompactString, u64); 2]>);

impl Protocols {
    /// The exchanges counted for `name`.
    pub fn get(&self, name: &str) -> Option<&u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Adds `count` exchanges to `name` (a protocol counted twice in a map keeps the later
    /// count when decoded, as a map's would; only merging adds up).
    pub fn add(&mut self, name: CompactString, count: u64) {
        *self.entry(name) += count;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: Protocols) {
        if self.0.is_empty() {
            *self = other;
            return;
        }
        for (name, count) in other.0 {
            self.add(name, count);
        }
    }

    /// (name, exchanges), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(n, c)| (n.as_str(), *c))
    }

    /// Sets `name`'s count (what decoding a map does with a repeated key).
    pub(crate) fn set(&mut self, name: CompactString, count: u64) {
        *self.entry(name) = count;
    }

    /// `name`'s count, inserted as 0 in name order when missing.
    fn entry(&mut self, name: CompactString) -> &mut u64 {
        let i = match self.0.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (name, 0));
                i
            }
        };
        &mut self.0[i].1
    }
}

impl FromIterator<(CompactString, u64)> for Protocols {
    fn from_iter<I: IntoIterator<Item = (CompactString, u64)>>(iter: I) -> Self {
        let mut p = Protocols::default();
        for (name, count) in iter {
            p.set(name, count);
        }
        p
    }
}

impl<const N: usize> From<[(CompactString, u64); N]> for Protocols {
    fn from(pairs: [(CompactString, u64); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Serialize for Protocols {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(n, c)| (n, c)))
    }
}

/// Reads [`Protocols`] from a map.
struct ProtocolsVisitor;

impl<'de> serde::de::Visitor<'de> for ProtocolsVisitor {
    type Value = Protocols;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of protocol names to exchange counts")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Protocols, A::Error> {
        let mut p = Protocols::default();
        while let Some((name, count)) = map.next_entry::<CompactString, u64>()? {
            p.set(name, count);
        }
        Ok(p)
    }
}

impl<'de> Deserialize<'de> for Protocols {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ProtocolsVisitor)
    }
}

/// Connection-level counters of an edge in a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Stats {
    /// Completed active opens.
    pub connects_ok: u64,
    /// Active opens answered with a reset (ECONNREFUSED).
    pub connect_refused: u64,
    /// Active opens that timed out or were abandoned by the application with no answer to
    /// the SYN.
    pub connect_timeout: u64,
    /// Active opens abandoned or failed otherwise.
    pub connect_failed_other: u64,
    /// Mean connect latency, ms.
    pub connect_ms_mean: f64,
    /// Max connect latency, ms.
    pub connect_ms_max: f64,
    /// Retransmitted segments sent by the client (client -> server direction).
    pub retrans_client_to_server: u64,
    /// Retransmitted segments sent by the server (server -> client direction).
    pub retrans_server_to_client: u64,
    /// Retransmitted SYNs (connects waiting for an answer).
    pub syn_retrans: u64,
    /// Resets sent by the client.
    pub resets_by_client: u64,
    /// Resets sent by the server.
    pub resets_by_server: u64,
    /// Resets received by the client.
    pub resets_to_client: u64,
    /// Resets received by the server.
    pub resets_to_server: u64,
    /// Connections closed.
    pub closes: u64,
}

/// One edge in one window, as far as this node saw it.
///
/// The views are boxed (same encodings): a node sees most edges from one end only, and an
/// unboxed edge was ~800 bytes, moved at each step from decoding to the operator's join.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeWindow {
    /// Which conversation.
    pub key: EdgeKey,
    /// The client's view (when the client pod is watched on this node).
    pub client: Option<Box<SideStats>>,
    /// The server's view (when the server pod is watched on this node).
    pub server: Option<Box<SideStats>>,
    /// Connection-level counters.
    pub l4: L4Stats,
}

/// Per-pod counters in a window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodWindow {
    /// The pod.
    pub pod: PodRef,
    /// Packet drops in the pod's network namespace or on its sockets, by kernel reason.
    pub drops: BTreeMap<String, u64>,
    /// Sockets of the pod first seen in the window.
    pub sockets_opened: u64,
    /// Change in the pod netns's TCP/UDP MIB counters ("TcpExt:ListenOverflows",
    /// "TcpExt:TCPToZeroWindowAdv", ...), only those that moved.
    pub netstat: BTreeMap<String, u64>,
    /// CFS periods elapsed (v1 cpu controller), when the pod has a CPU cgroup.
    pub cpu_periods: u64,
    /// CFS periods in which the pod was throttled.
    pub cpu_throttled_periods: u64,
    /// Time the pod was throttled, ms.
    pub cpu_throttled_ms: f64,
    /// Most server-side TCP connections the pod had open at once in the window.
    #[serde(default)]
    pub server_conns_max: u64,
    /// Drops in the pod's namespace of packets no tracked socket owned (a refused or filtered
    /// SYN, a segment to a closed port, a reset for a socket already gone).
    #[serde(default)]
    pub stray_drops: u64,
    /// Sum, over those drops, of the server connections the pod had open at that moment
    /// (divided by `stray_drops`: how full the server was when it turned packets away).
    #[serde(default)]
    pub server_conns_at_stray_drops: u64,
    /// The payload programs attached to the pod in the window: which directions' message
    /// heads (protocol names, L7 errors) its exchanges can carry.
    #[serde(default)]
    pub payload: PayloadCapture,
}

/// Health of the probe's own pipeline, cumulative since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeHealth {
    /// Kernel-side counters by name (ring buffer full, map insert failed, ...).
    pub kernel: BTreeMap<String, u64>,
    /// Records read from the ring buffer.
    pub records_read: u64,
    /// Records that could not be decoded.
    pub records_malformed: u64,
    /// Exchanges whose socket was unknown to userspace (no open/connect event seen).
    pub exchanges_unattributed: u64,
    /// Whether the tracepoint programs were attached at the window's end (a node without
    /// watched pods detaches them).
    #[serde(default)]
    pub tracepoints_attached: bool,
}

impl ProbeHealth {
    /// Whether the kernel counter `name` counts records or socket state the probe had to give
    /// up (ring buffer full, socket storage not created), which leaves its windows incomplete.
    /// `*_map_insert_failed` are the names probes used before socket storage replaced maps.
    pub fn is_loss_counter(name: &str) -> bool {
        name == "ringbuf_full"
            || name.ends_with("_storage_failed")
            || name.ends_with("_map_insert_failed")
    }

    /// What the loss counters grew by since `earlier`, the same probe's previous report
    /// (counters are cumulative since the probe started; without `earlier`, since then).
    /// A counter lower than before means the probe restarted, so all of it is new. Only
    /// counters that grew are listed.
    pub fn losses_since(&self, earlier: Option<&ProbeHealth>) -> BTreeMap<String, u64> {
        self.kernel
            .iter()
            .filter(|(name, _)| Self::is_loss_counter(name))
            .filter_map(|(name, &now)| {
                let before = earlier.and_then(|e| e.kernel.get(name)).copied();
                let grown = match before {
                    Some(b) if b <= now => now - b,
                    _ => now,
                };
                (grown > 0).then(|| (name.clone(), grown))
            })
            .collect()
    }
}

/// Everything one node-probe reports for one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowReport {
    /// Node name.
    pub node: String,
    /// Sequence number of the window since the probe started.
    pub seq: u64,
    /// Window start, Unix milliseconds.
    pub start_unix_ms: u64,
    /// Window end, Unix milliseconds.
    pub end_unix_ms: u64,
    /// Edges with activity.
    pub edges: Vec<EdgeWindow>,
    /// Watched pods.
    pub pods: Vec<PodWindow>,
    /// Drops in namespaces of no watched pod, by reason.
    pub node_drops: BTreeMap<String, u64>,
    /// Pipeline health at window end.
    pub health: ProbeHealth,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sketches_ddsketch::Config;

    fn sketch_of(vs: &[f64]) -> DDSketch {
        let mut s = DDSketch::new(Config::defaults());
        for &v in vs {
            s.add(v);
        }
        s
    }

    #[test]
    fn sketches_round_trip_compactly_and_still_merge() {
        let vs: Vec<f64> = (1..2000).map(|i| 0.05 * f64::from(i)).collect();
        let s = Sketch::new(&sketch_of(&vs));
        let json = serde_json::to_string(&s).unwrap();
        let old_json = serde_json::to_string(&sketch_of(&vs)).unwrap();
        assert!(
            json.len() < old_json.len(),
            "{} vs {}",
            json.len(),
            old_json.len()
        );
        let back: Sketch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let (decoded, orig) = (back.decode().unwrap(), sketch_of(&vs));
        for q in [0.5, 0.9, 0.99] {
            let (a, b) = (decoded.quantile(q).unwrap(), orig.quantile(q).unwrap());
            assert_eq!(a, b, "q={q}");
        }
        // A received sketch merges with one built locally (same accuracy).
        let mut local = sketch_of(&[1.0, 2.0]);
        local.merge(&decoded).unwrap();
        assert_eq!(local.count(), vs.len() + 2);
        // The older form (bins as JSON) is still read; garbage is a clear error.
        let legacy: Sketch = serde_json::from_str(&old_json).unwrap();
        assert_eq!(legacy.decode().unwrap().count(), vs.len());
        assert!(serde_json::from_str::<Sketch>("\"%%%\"").is_err());
        assert!(serde_json::from_str::<Sketch>("\"\"").is_err());
        // Bytes that are no sketch are found when the sketch is used.
        let junk: Sketch = serde_json::from_str("\"/////w==\"").unwrap();
        assert!(junk.decode().is_err());
    }

    #[test]
    fn protocols_encode_as_the_map_they_replaced_and_merge_by_adding() {
        let p: Protocols = [("redis".into(), 3), ("http".into(), 5)].into();
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            vec![("http", 5), ("redis", 3)]
        );
        assert_eq!((p.get("http"), p.get("dns")), (Some(&5), None));
        let map = BTreeMap::from([("http", 5u64), ("redis", 3)]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(
            postcard::to_allocvec(&p).unwrap(),
            postcard::to_allocvec(&map).unwrap(),
            "same bytes as a BTreeMap"
        );
        let back: Protocols =
            serde_json::from_str(r#"{"redis": 3, "http": 1, "http": 5}"#).unwrap();
        assert_eq!(
            back, p,
            "sorted, and a repeated key keeps its last count like a map"
        );
        let mut merged = p.clone();
        merged.merge([("dns".into(), 1), ("http".into(), 2)].into());
        assert_eq!(
            merged.iter().collect::<Vec<_>>(),
            vec![("dns", 1), ("http", 7), ("redis", 3)]
        );
    }

    fn health(counters: &[(&str, u64)]) -> ProbeHealth {
        ProbeHealth {
            kernel: counters.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn losses_are_the_growth_of_loss_counters() {
        let before = health(&[
            ("ringbuf_full", 10),
            ("sock_storage_failed", 2),
            ("exchanges", 500),
        ]);
        let now = health(&[
            ("ringbuf_full", 15),
            ("sock_storage_failed", 2),
            ("heads_storage_failed", 1),
            ("connect_map_insert_failed", 4),
            ("exchanges", 900),
        ]);
        assert_eq!(
            now.losses_since(Some(&before)),
            BTreeMap::from([
                ("connect_map_insert_failed".to_string(), 4),
                ("heads_storage_failed".to_string(), 1),
                ("ringbuf_full".to_string(), 5)
            ]),
            "only loss counters that grew (older probes' names too)"
        );
        assert_eq!(now.losses_since(Some(&now)), BTreeMap::new());
        // The probe restarted: its counters start again from zero.
        let restarted = health(&[("ringbuf_full", 3)]);
        assert_eq!(
            restarted.losses_since(Some(&now)),
            BTreeMap::from([("ringbuf_full".to_string(), 3)])
        );
        assert_eq!(
            restarted.losses_since(None),
            BTreeMap::from([("ringbuf_full".to_string(), 3)])
        );
    }
}
