//! The userspace pipeline alone: realistic records, encoded as the kernel writes them
//! (exchanges in per-CPU batches of 16, other records one by one), go through the agent's
//! decoder and aggregator on one thread, windows closing as in the agent.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use netdx_api::{
    targets::{PodRef, PodTarget, TargetSet},
    windows::WindowReport,
};
use netdx_common::{
    BATCH_LEN, ConnEvent, ConnEventKind, DropEvent, Exchange, ExchangeBatch, HEAD_LEN, Head,
    ROLE_CLIENT, ROLE_SERVER, RecordKind,
};
use node_probe::{pods::PodIndex, podstats::PodSampler, records::decode_each, windows::Aggregator};

use crate::{Result, cputime::thread_cpu, io_err, report::Results};

/// Workload name in the results.
pub const WORKLOAD: &str = "pipeline";
/// Pods on the simulated node, and on the rest of the simulated cluster.
const LOCAL_PODS: usize = 20;
const REMOTE_PODS: usize = 80;
/// Distinct sockets in the stream.
const SOCKETS: usize = 2_000;
/// Records per window (a busy node's 10 s window at 100k records/s).
const WINDOW_RECORDS: u64 = 1 << 20;
const NODE: &str = "bench-node";

/// View of a plain `repr(C)` record as the bytes the kernel puts in the ring buffer.
fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: the netdx_common records are repr(C), Copy and laid out without padding, so
    // every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// xorshift64: cheap, deterministic variation of latencies and sizes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn head(s: &[u8]) -> (Head, u8) {
    let mut h = Head::EMPTY;
    let n = s.len().min(HEAD_LEN);
    h.0[..n].copy_from_slice(&s[..n]);
    (h, n as u8)
}

/// Ring-buffer items concatenated as in the ring buffer, with each one's position.
pub struct Stream {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Stream {
    fn push<T: Copy>(&mut self, r: &T) {
        let b = bytes_of(r);
        self.spans.push((self.buf.len(), b.len()));
        self.buf.extend_from_slice(b);
    }

    /// Adds an exchange to `batch`, pushing the batch once it is full (as the kernel does).
    fn stage(&mut self, batch: &mut ExchangeBatch, ex: Exchange) {
        batch.records[batch.len as usize] = ex;
        batch.len += 1;
        if batch.len as usize == BATCH_LEN {
            self.flush(batch);
        }
    }

    /// Pushes a partial batch (as the reader's flush makes the kernel do).
    fn flush(&mut self, batch: &mut ExchangeBatch) {
        if batch.len > 0 {
            batch.kind = RecordKind::Batch as u8;
            self.push(batch);
            batch.len = 0;
        }
    }

    /// Item `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let (o, n) = self.spans[i];
        &self.buf[o..o + n]
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// The simulated node: pod cgroup directories (their inodes are the cgroup ids) under a
/// scratch directory, removed on drop.
pub struct SyntheticNode {
    dir: PathBuf,
    /// Index the aggregator resolves pods with.
    pub index: Arc<PodIndex>,
    /// (cgroup id, IP) of the local pods.
    pub local: Vec<(u64, [u8; 4])>,
    /// IPs of remote pods.
    pub remote: Vec<[u8; 4]>,
}

impl SyntheticNode {
    /// Creates the pod directories and the index.
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("ndx-bench-pipeline-{}", std::process::id()));
        let mut pods = Vec::new();
        let ip = |i: usize| [10, 210, (i / 250) as u8, (i % 250) as u8 + 2];
        for i in 0..LOCAL_PODS + REMOTE_PODS {
            let local = i < LOCAL_PODS;
            let cg = dir.join(format!("pod{i}"));
            if local {
                std::fs::create_dir_all(&cg).map_err(io_err(cg.display().to_string()))?;
            }
            let [a, b, c, d] = ip(i);
            pods.push(PodTarget {
                pod: PodRef {
                    namespace: "bench".into(),
                    name: format!("pod-{i}").into(),
                },
                uid: None,
                node: if local {
                    NODE.into()
                } else {
                    "elsewhere".into()
                },
                ip: format!("{a}.{b}.{c}.{d}"),
                cgroup_path: cg.display().to_string(),
                netns_path: "/proc/self/ns/net".into(),
                cpu_cgroup_path: None,
                watched: true,
                payload: Default::default(),
            });
        }
        let index = PodIndex::build(&TargetSet { pods }, NODE, &dir);
        let local = index
            .watched
            .iter()
            .enumerate()
            .map(|(i, w)| (w.cgroup_id, ip(i)))
            .collect();
        let remote = (LOCAL_PODS..LOCAL_PODS + REMOTE_PODS).map(ip).collect();
        Ok(SyntheticNode {
            dir,
            index: Arc::new(index),
            local,
            remote,
        })
    }

    /// One connection event per socket (what the agent sees first), then `n` records: mostly
    /// exchanges with redis and HTTP heads and varied latencies, some retransmits, resets and
    /// drops.
    pub fn streams(&self, n: usize) -> (Stream, Stream) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut opens = Stream {
            buf: Vec::new(),
            spans: Vec::new(),
        };
        let mut sockets = Vec::with_capacity(SOCKETS);
        for s in 0..SOCKETS {
            let (cg, lip) = self.local[s % self.local.len()];
            let rip = self.remote[(s * 7) % self.remote.len()];
            let client = s % 2 == 0;
            let (mut saddr, mut daddr) = ([0u8; 16], [0u8; 16]);
            saddr[..4].copy_from_slice(&lip);
            daddr[..4].copy_from_slice(&rip);
            let cookie = 1_000 + s as u64;
            let ev = ConnEvent {
                kind: RecordKind::Conn as u8,
                event: if client {
                    ConnEventKind::ConnectOk
                } else {
                    ConnEventKind::Open
                } as u8,
                role: if client { ROLE_CLIENT } else { ROLE_SERVER },
                family: 2,
                state: 1,
                proto: 6,
                sport: if client { 40_000 + s as u16 } else { 6379 },
                dport: if client {
                    [6379, 80][s % 4 / 2]
                } else {
                    40_000 + s as u16
                },
                cgroup_id: cg,
                cookie,
                duration_ns: 150_000,
                saddr,
                daddr,
                ..Default::default()
            };
            opens.push(&ev);
            sockets.push((cookie, cg, client, ev));
        }
        let (redis_req, redis_resp) = (
            head(b"*2\r\n$3\r\nGET\r\n$3\r\nkey"),
            head(b"$3\r\nbar\r\n"),
        );
        let (http_req, http_resp) = (
            head(b"GET / HTTP/1.1\r\nHost"),
            head(b"HTTP/1.1 200 OK\r\n"),
        );
        let mut mixed = Stream {
            buf: Vec::with_capacity(n * 96),
            spans: Vec::with_capacity(n / BATCH_LEN + n / 50),
        };
        let mut batch = ExchangeBatch::default();
        for i in 0..n {
            let (cookie, cg, client, conn) = sockets[(rng.next() % SOCKETS as u64) as usize];
            match i % 100 {
                // 1 % retransmits and resets, 1 % drops: the L4 and drop paths stay warm.
                0 => mixed.push(&ConnEvent {
                    event: ConnEventKind::Retransmit as u8,
                    ..conn
                }),
                50 => mixed.push(&DropEvent {
                    kind: RecordKind::Drop as u8,
                    reason: 2 + (rng.next() % 4) as u32,
                    cookie,
                    cgroup_id: cg,
                    ..Default::default()
                }),
                _ => {
                    let ((rq, rql), (rs, rsl)) = if cookie % 4 < 2 {
                        (redis_req, redis_resp)
                    } else {
                        (http_req, http_resp)
                    };
                    // Latency spread over three decades so the sketches have many bins.
                    let ttlb = 20_000 + rng.next() % 20_000_000 / (1 + rng.next() % 100);
                    let ex = Exchange {
                        kind: RecordKind::Exchange as u8,
                        role: if client { ROLE_CLIENT } else { ROLE_SERVER },
                        proto: 6,
                        srtt_us: 50 + (rng.next() % 200) as u32,
                        cgroup_id: cg,
                        cookie,
                        start_ns: i as u64 * 1_000,
                        ttfb_ns: ttlb / 2,
                        ttlb_ns: ttlb,
                        req_bytes: 30 + (rng.next() % 100) as u32,
                        resp_bytes: 10 + (rng.next() % 2_000) as u32,
                        req_head_len: rql,
                        resp_head_len: rsl,
                        req_head: rq,
                        resp_head: rs,
                        ..Default::default()
                    };
                    mixed.stage(&mut batch, ex);
                }
            }
        }
        mixed.flush(&mut batch);
        (opens, mixed)
    }
}

impl Drop for SyntheticNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one pass measured.
#[derive(Clone, Copy, Debug)]
pub struct PipelineRun {
    /// Records fed.
    pub records: u64,
    /// Windows closed.
    pub windows: u64,
    /// CPU time of the measuring thread, s.
    pub secs: f64,
    /// Records per second with aggregation.
    pub records_per_sec: f64,
    /// Records per second through the decoder alone.
    pub decode_per_sec: f64,
    /// Exchanges attributed to an edge (a check that the stream was understood).
    pub exchanges: u64,
}

/// Exchanges counted on either side of the window's edges.
fn edge_exchanges(w: &WindowReport) -> u64 {
    w.edges
        .iter()
        .flat_map(|e| [&e.client, &e.server])
        .flatten()
        .map(|s| s.exchanges)
        .sum()
}

/// Feeds the stream, replayed, for at least `secs` on this thread.
pub fn measure(records: usize, secs: f64) -> Result<PipelineRun> {
    let node = SyntheticNode::new()?;
    let (opens, mixed) = node.streams(records.max(100));
    let mut agg = Aggregator::new(NODE, node.index.clone(), Arc::new(HashMap::new()));
    let mut sampler = PodSampler::default();
    // Feeds item `i` of a stream; the number of records it held.
    let feed = |agg: &mut Aggregator, s: &Stream, i: usize| {
        let mut k = 0u64;
        decode_each(s.get(i), |rec| {
            k += 1;
            match rec {
                Some(rec) => agg.add(&rec),
                None => agg.malformed(),
            }
        });
        k
    };
    for i in 0..opens.len() {
        feed(&mut agg, &opens, i);
    }
    let budget = Duration::from_secs_f64(secs);
    let (mut n, mut windows, mut exchanges) = (0u64, 0u64, 0u64);
    let mut next_close = WINDOW_RECORDS;
    let (t0, cpu0) = (Instant::now(), thread_cpu()?);
    while t0.elapsed() < budget || n == 0 {
        for i in 0..mixed.len() {
            n += feed(&mut agg, &mixed, i);
            if n >= next_close {
                exchanges += edge_exchanges(&agg.close_window(Default::default(), &mut sampler));
                windows += 1;
                next_close += WINDOW_RECORDS;
            }
        }
    }
    exchanges += edge_exchanges(&agg.close_window(Default::default(), &mut sampler));
    let elapsed = (thread_cpu()? - cpu0).as_secs_f64().max(1e-9);
    // The decoder alone, for the split of where the time goes.
    let t1 = thread_cpu()?;
    let mut decoded = 0u64;
    for i in 0..mixed.len() {
        decode_each(mixed.get(i), |rec| {
            decoded += u64::from(std::hint::black_box(rec).is_some());
        });
    }
    let decode_secs = (thread_cpu()? - t1).as_secs_f64().max(1e-9);
    Ok(PipelineRun {
        records: n,
        windows: windows + 1,
        secs: elapsed,
        records_per_sec: n as f64 / elapsed,
        decode_per_sec: decoded as f64 / decode_secs,
        exchanges,
    })
}

/// Runs the measurement and records it.
pub fn run(records: usize, secs: f64, command: &str, results: &mut Results) -> Result<PipelineRun> {
    let r = measure(records, secs)?;
    results.add_all(
        WORKLOAD,
        "userspace",
        1,
        command,
        &[
            ("records_per_sec_one_core", r.records_per_sec),
            ("decode_only_records_per_sec", r.decode_per_sec),
            ("records", r.records as f64),
            ("windows_closed", r.windows as f64),
            ("exchanges_aggregated", r.exchanges as f64),
        ],
    );
    results.key(
        "pipeline_events_per_sec_per_core",
        r.records_per_sec,
        command,
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_records_decode_and_aggregate_into_edges() {
        let r = measure(1_000, 0.0).unwrap();
        assert_eq!(r.records, 1_000, "one pass when there is no time budget");
        // 98 of every 100 records are exchanges, all on sockets the agent knows.
        assert_eq!(r.exchanges, 980);
    }
}
