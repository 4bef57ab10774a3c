//! The versioned per-edge, per-window feature schema and its computation.
//!
//! Every feature is a finite number: a side that was not observed is encoded as 0 together
//! with a `has_*_view` flag, and every ratio has a floor in its denominator, so a trained tree
//! never sees NaN or infinity. Bump [`FEATURE_SCHEMA_VERSION`] whenever a feature is added,
//! removed, reordered or changes meaning: models and datasets carry the version they were made
//! with and are refused when it differs.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use hashbrown::Equivalent;
use std::ops::Index;

use netdx_api::targets::PodRef;
use netdx_api::windows::{Endpoint, SideStats};

use crate::join::{EdgeId, EdgeIdRef, JoinedEdge, JoinedWindow, PodView};
use crate::{Error, Result};

/// Version of the feature schema below.
pub const FEATURE_SCHEMA_VERSION: u32 = 11;

/// A feature's column, name and meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureDef {
    /// The feature.
    pub feature: Feature,
    /// Stable snake_case name used in files and decision paths.
    pub name: &'static str,
    /// One-line meaning.
    pub meaning: &'static str,
}

/// Declares the features once so the enum, its names and meanings cannot drift apart.
macro_rules! features {
    ($($variant:ident = $name:literal : $meaning:literal,)*) => {
        /// One feature; its discriminant is its column in a [`FeatureVector`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Feature {
            $(#[doc = $meaning] $variant,)*
        }

        /// Every feature in column order, with name and meaning.
        pub const FEATURES: &[FeatureDef] = &[
            $(FeatureDef { feature: Feature::$variant, name: $name, meaning: $meaning },)*
        ];
    };
}

features! {
    HasClientView = "has_client_view": "1 when the client's view of the edge was reported (client pod watched and active), else 0",
    HasServerView = "has_server_view": "1 when the server's view of the edge was reported, else 0",
    HasBaseline = "has_baseline": "1 when the edge has enough healthy windows for its *_ratio features; without it they are 1",
    IsDns = "is_dns": "1 when the server port is 53 (DNS), else 0",
    ExchangeRate = "exchange_rate": "completed request/response exchanges per second (the larger of the two views)",
    ConnectRate = "connect_rate": "connection attempts per second (ok + failed, seen on the client's socket)",
    RespBytesPerExchange = "resp_bytes_per_exchange": "mean response bytes per request (payload size)",
    RespBytesRate = "resp_bytes_rate": "response bytes per second (throughput towards the client)",
    ClientP50Ms = "client_p50_ms": "client-observed median exchange latency, ms (0 without client view)",
    ClientP99Ms = "client_p99_ms": "client-observed p99 exchange latency, ms (0 without client view)",
    ServerP50Ms = "server_p50_ms": "server-observed median exchange latency, ms (0 without server view)",
    ServerP99Ms = "server_p99_ms": "server-observed p99 exchange latency, ms (0 without server view)",
    P99GapMs = "p99_gap_ms": "client p99 minus server p99, ms, floored at 0: the network's share of the tail (0 without both views)",
    GapShare = "gap_share": "p99_gap_ms / client_p99_ms, 0..1: the fraction of the client's tail spent outside the server (0 without both views)",
    NoResponseRatio = "no_response_ratio": "requests closed without any response / all requests (the worse view)",
    L7ErrorRatio = "l7_error_ratio": "exchanges answered with the protocol's error signal (HTTP 5xx, RESP -ERR, PG ErrorResponse, DNS rcode) / exchanges (the worse view)",
    ResetRatio = "reset_ratio": "requests during which a reset was seen / all requests (the worse view)",
    ServerResetRate = "server_reset_rate": "resets sent by the server per request (or per attempt when there were no requests)",
    ClientResetRate = "client_reset_rate": "resets sent by the client per request (or per attempt when there were no requests)",
    ConnectRefusedRatio = "connect_refused_ratio": "connection attempts answered with RST / attempts (0 without attempts)",
    ConnectTimeoutRatio = "connect_timeout_ratio": "connection attempts that timed out / attempts (0 without attempts)",
    ConnectOtherRatio = "connect_other_ratio": "connection attempts failed otherwise / attempts (0 without attempts)",
    ConnectMsMax = "connect_ms_max": "slowest connection attempt, ms",
    RetransC2sPerExchange = "retrans_c2s_per_exchange": "segments retransmitted by the client (client->server) per request",
    RetransS2cPerExchange = "retrans_s2c_per_exchange": "segments retransmitted by the server (server->client) per request",
    SynRetransPerConnect = "syn_retrans_per_connect": "SYN retransmissions per connection attempt",
    SrttMeanMs = "srtt_mean_ms": "mean smoothed RTT over the views that measured one, ms (0 when none did)",
    SrttMaxMs = "srtt_max_ms": "largest smoothed RTT seen, ms",
    SrttSpread = "srtt_spread": "srtt_max_ms / srtt_mean_ms: RTT variability (1 when no RTT was measured)",
    ServerDropsTotal = "server_drops_total": "kernel packet drops (any reason) in the server pod, per second",
    ServerDropsNetfilter = "server_drops_netfilter": "server pod drops with reason netfilter_drop, per second",
    ServerDropsZeroWindow = "server_drops_zerowindow": "server pod drops with reason tcp_zerowindow, per second",
    ServerDropsRcvbuff = "server_drops_rcvbuff": "server pod drops with reason socket_rcvbuff, per second",
    ServerDropsProtoMem = "server_drops_proto_mem": "server pod drops with reason proto_mem, per second",
    ServerDropsQdisc = "server_drops_qdisc": "server pod drops with reason qdisc_drop, per second",
    ClientDropsTotal = "client_drops_total": "kernel packet drops (any reason) in the client pod, per second",
    ClientDropsNetfilter = "client_drops_netfilter": "client pod drops with reason netfilter_drop, per second",
    ClientDropsZeroWindow = "client_drops_zerowindow": "client pod drops with reason tcp_zerowindow, per second",
    ClientDropsRcvbuff = "client_drops_rcvbuff": "client pod drops with reason socket_rcvbuff, per second",
    ClientDropsProtoMem = "client_drops_proto_mem": "client pod drops with reason proto_mem, per second",
    ClientDropsQdisc = "client_drops_qdisc": "client pod drops with reason qdisc_drop, per second",
    NodeDropsTotal = "node_drops_total": "drops outside watched pods on the client's and server's nodes, per second",
    NodeDropsNetfilter = "node_drops_netfilter": "node-level drops with reason netfilter_drop (e.g. conntrack table full), per second",
    ServerThrottledPeriods = "server_throttled_periods": "CFS periods in which the server pod was throttled, per second",
    ServerThrottledRatio = "server_throttled_ratio": "throttled / elapsed CFS periods of the server pod, 0..1",
    ServerListenOverflows = "server_listen_overflows": "accept-queue overflows in the server pod's namespace, per second",
    ServerListenDrops = "server_listen_drops": "SYNs dropped at listen in the server pod's namespace, per second",
    ClientThrottledRatio = "client_throttled_ratio": "throttled / elapsed CFS periods of the client pod, 0..1",
    ServerZeroWindowAdv = "server_zero_window_adv": "zero receive windows advertised in the server pod's namespace, per second",
    ClientZeroWindowAdv = "client_zero_window_adv": "zero receive windows advertised in the client pod's namespace, per second",
    ExchangeRateRatio = "exchange_rate_ratio": "exchange_rate / its healthy baseline",
    RespBytesRateRatio = "resp_bytes_rate_ratio": "resp_bytes_rate / its healthy baseline",
    ClientP50Ratio = "client_p50_ratio": "client_p50_ms / its healthy baseline",
    ClientP99Ratio = "client_p99_ratio": "client_p99_ms / its healthy baseline",
    ServerP50Ratio = "server_p50_ratio": "server_p50_ms / its healthy baseline",
    ServerP99Ratio = "server_p99_ratio": "server_p99_ms / its healthy baseline",
    P99GapRatio = "p99_gap_ratio": "p99_gap_ms / its healthy baseline",
    SrttMeanRatio = "srtt_mean_ratio": "srtt_mean_ms / its healthy baseline",
    ConnectMsMaxRatio = "connect_ms_max_ratio": "connect_ms_max / its healthy baseline",
    ServerWaitP99Ms = "server_wait_p99_ms": "server-side p99 of last request byte to first response byte, ms: pure processing time (0 without server view or when not recorded)",
    WaitGapMs = "wait_gap_ms": "client wait p99 minus server wait p99, ms, floored at 0: network time after the request was sent, upload excluded (0 without both waits)",
    SrttMinMs = "srtt_min_ms": "smallest smoothed RTT seen, ms (0 when not recorded)",
    SrttRangeShare = "srtt_range_share": "(srtt max - srtt min) / srtt mean: RTT spread, high for jitter, low for a constant delay (0 when srtt min was not recorded)",
    ConnectFailRatio = "connect_fail_ratio": "failed connection attempts (refused + timeout + other) / attempts (0 without attempts)",
    ExchangesPerOkConnect = "exchanges_per_ok_connect": "completed exchanges / successful connects (exchanges when nothing connected): how much work established connections still carry",
    NodeDropsQdisc = "node_drops_qdisc": "node-level drops with reason qdisc_drop (a rate limiter's queue overflowing), per second",
    ServerWaitRatio = "server_wait_ratio": "server_wait_p99_ms / its healthy baseline: the server itself got slower",
    WaitGapRatio = "wait_gap_ratio": "wait_gap_ms / its healthy baseline: the path got slower",
    SrttMinRatio = "srtt_min_ratio": "srtt_min_ms / its healthy baseline: every packet is delayed (constant delay), not only some (jitter, queueing)",
    SrttRangeRatio = "srtt_range_ratio": "srtt_range_share / its healthy baseline",
    ExchangesPerOkConnectRatio = "exchanges_per_ok_connect_ratio": "exchanges_per_ok_connect / its healthy baseline: above 1 when new connects fail while established ones keep working",
    ExchangeSurvival = "exchange_survival": "exchange_rate_ratio / max(1 - connect_fail_ratio, 0.05): about 1 when exchanges fall with the share of failed connects (refused), well above 1 when established connections keep working (connection limit), near 0 when everything stops",
    LatencyPerThroughput = "latency_per_throughput": "client_p99_ratio / max(resp_bytes_rate_ratio, 0.01), at most 10000: latency rising while throughput is held at a ceiling (bandwidth limit) scores high",
    SrttQueueing = "srtt_queueing": "srtt_mean_ms / srtt_min_ms, at most 10000: how far the average RTT sits above the path's floor; about 1 for a constant delay, high with a queue (bandwidth ceiling) or jitter (2.5, about the healthy TCP median, when no RTT was measured, as on UDP)",
    ClientP50PerRtt = "client_p50_per_rtt": "client_p50_ms / srtt_min_ms, at most 10000: round trips per median exchange; about 1 when a fixed path delay dominates, higher when transfer time or queueing adds to it (0 without client view or srtt min)",
    DnsFailureRatio = "dns_failure_ratio": "is_dns x (l7_error_ratio + no_response_ratio), at most 1: lookups that failed, by error rcode or silence (0 off port 53)",
    ServerEdgesFailingShare = "server_edges_failing_share": "share of this window's edges to the same server whose connection attempts mostly fail (connect_fail_ratio >= 0.5): the whole server refuses or only some clients",
    ServerBestExchangeRatio = "server_best_exchange_ratio": "largest exchange_rate_ratio among this window's edges to the same server, at most 10: near 0 when the server serves nobody, about 1 while some clients still get through",
    ServerEdgesSlowShare = "server_edges_slow_share": "share of this window's edges to the same server whose client p99 is at least 3x its baseline: a slow server slows all its clients, a slow link only those across it",
    ClientEdgesSlowShare = "client_edges_slow_share": "share of this window's edges from the same client whose client p99 is at least 3x its baseline: a client-side or link problem slows many of its edges, a server problem one",
    ServerFullAtDrops = "server_full_at_drops": "mean server connections the server pod had open when it dropped packets no socket owned (refused or filtered SYNs) / the most it had open at once in the window, 0..1: about 1 when connections are turned away only while the server is full (connection limit), lower when refusal ignores load (0 without such drops)",
    AppErrorRatio = "app_error_ratio": "(1 - is_dns) x l7_error_ratio: exchanges answered with the protocol's error signal off port 53 (DNS errors count in dns_failure_ratio); one cut tells application errors from healthy and from DNS failures alike, whatever the workload",
    ServerWaitExcess = "server_wait_excess": "server_wait_ratio / max(wait_gap_ratio, 1), at most 10000: how much the server's own processing time grew beyond the path's; well above 1 when the server itself got slower, about 1 or below when nothing or the path did (1 without the wait signals)",
    TcpNoResponseRatio = "tcp_no_response_ratio": "(1 - is_dns) x no_response_ratio: requests left unanswered off port 53 (a receiver that stopped reading, a blackholed path), which a DNS timeout is not",
    ZeroWindowRatio = "zero_window_ratio": "exchanges ended by a send that failed against a zero receive window / all requests (the worse view): the receiver stopped reading; one per stalled send, so every window of the stall shows it (the receiver's advertisements back off to none in some)",
    ClientP10Share = "client_p10_share": "client p10 / client p50 latency, 0..1: near 1 when every exchange takes about as long (a constant delay, a full queue), low when some are fast and others delayed (jitter) (0 without client view)",
    SilentNoResponseRatio = "silent_no_response_ratio": "tcp_no_response_ratio / (1 + retrans_s2c_per_exchange): requests left unanswered while the server did not even retransmit, so it never sent an answer (stopped reading, hung) rather than losing one on the way (an MTU black hole retransmits every large segment)",
}

/// Number of features (columns).
pub const FEATURE_COUNT: usize = FEATURES.len();

impl Feature {
    /// Column index.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable name.
    pub fn name(self) -> &'static str {
        FEATURES[self.index()].name
    }

    /// The feature at a column.
    pub fn from_index(i: usize) -> Option<Feature> {
        FEATURES.get(i).map(|d| d.feature)
    }

    /// The feature with a name.
    pub fn from_name(name: &str) -> Option<Feature> {
        FEATURES.iter().find(|d| d.name == name).map(|d| d.feature)
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// All feature names in column order.
pub fn feature_names() -> Vec<String> {
    FEATURES.iter().map(|d| d.name.to_string()).collect()
}

/// One edge's features in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureVector(pub [f64; FEATURE_COUNT]);

impl Default for FeatureVector {
    fn default() -> Self {
        FeatureVector([0.0; FEATURE_COUNT])
    }
}

impl Index<Feature> for FeatureVector {
    type Output = f64;
    fn index(&self, f: Feature) -> &f64 {
        &self.0[f.index()]
    }
}

impl FeatureVector {
    /// Sets one feature, replacing a non-finite value by 0 so vectors stay NaN-free.
    pub fn set(&mut self, f: Feature, v: f64) {
        self.0[f.index()] = if v.is_finite() { v } else { 0.0 };
    }

    /// The values in column order.
    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }

    /// Builds a vector from stored values, checking length and finiteness.
    pub fn from_slice(values: &[f64]) -> Result<Self> {
        let arr: [f64; FEATURE_COUNT] = values.try_into().map_err(|_| {
            Error::Train(format!(
                "feature vector has {} values, schema has {FEATURE_COUNT}",
                values.len()
            ))
        })?;
        if let Some(i) = arr.iter().position(|v| !v.is_finite()) {
            return Err(Error::Train(format!(
                "feature {} is not finite",
                FEATURES[i].name
            )));
        }
        Ok(FeatureVector(arr))
    }
}

/// A tracked feature, the ratio feature it feeds and the floor added to both sides of the
/// ratio (its unit's noise level), so a near-zero baseline cannot blow the ratio up.
const TRACKED: [(Feature, Feature, f64); 14] = [
    (Feature::ExchangeRate, Feature::ExchangeRateRatio, 0.1),
    (Feature::RespBytesRate, Feature::RespBytesRateRatio, 100.0),
    (Feature::ClientP50Ms, Feature::ClientP50Ratio, 0.5),
    (Feature::ClientP99Ms, Feature::ClientP99Ratio, 0.5),
    (Feature::ServerP50Ms, Feature::ServerP50Ratio, 0.5),
    (Feature::ServerP99Ms, Feature::ServerP99Ratio, 0.5),
    (Feature::P99GapMs, Feature::P99GapRatio, 0.5),
    (Feature::SrttMeanMs, Feature::SrttMeanRatio, 0.05),
    (Feature::ConnectMsMax, Feature::ConnectMsMaxRatio, 0.5),
    (Feature::ServerWaitP99Ms, Feature::ServerWaitRatio, 0.05),
    (Feature::WaitGapMs, Feature::WaitGapRatio, 0.2),
    (Feature::SrttMinMs, Feature::SrttMinRatio, 0.05),
    (Feature::SrttRangeShare, Feature::SrttRangeRatio, 0.1),
    (
        Feature::ExchangesPerOkConnect,
        Feature::ExchangesPerOkConnectRatio,
        1.0,
    ),
];

fn tracked() -> impl Iterator<Item = (Feature, Feature, f64)> {
    TRACKED.into_iter()
}

/// The tracked features: (raw feature, its ratio feature, floor).
pub fn tracked_ratios() -> impl Iterator<Item = (Feature, Feature, f64)> {
    tracked()
}

/// Smoothing factor of the baseline EWMA: about the last 10 healthy windows weigh in.
pub const BASELINE_ALPHA: f64 = 0.2;
/// Healthy windows needed before ratios are trusted.
pub const BASELINE_MIN_WINDOWS: u32 = 3;

/// An edge's own recent normal: EWMA of its tracked features over healthy windows.
///
/// Fixed arrays in [`tracked_ratios`] order rather than maps by name: every edge of every
/// window reads and updates one, and the verdicts keep a copy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Baseline {
    /// EWMA per tracked feature.
    values: [f64; TRACKED.len()],
    /// Healthy windows folded in per tracked feature.
    windows: [u32; TRACKED.len()],
}

/// Windows a baseline is kept without a healthy window refreshing it: a day of 10 s windows.
/// Edges are named by pod, so every rollout leaves the old pods' edges behind; without this
/// the operator would keep their baselines for as long as it runs.
pub const BASELINE_MAX_IDLE_WINDOWS: u64 = 8_640;

/// Windows between two sweeps for idle baselines (a sweep visits every baseline).
const BASELINE_SWEEP_EVERY: u64 = 360;

/// Baselines of all edges (looked up by [`crate::join::EdgeIdRef`] too, without copying ids),
/// each with the window that last refreshed it; one idle for [`BASELINE_MAX_IDLE_WINDOWS`] is
/// forgotten.
///
/// The baselines sit in a list behind an index of positions, so an edge found once per window
/// ([`Baselines::find`]) is read and refreshed at that position: a second lookup hashed the
/// id again and compared its strings on a cold entry.
#[derive(Clone, Debug, Default)]
pub struct Baselines {
    /// Each edge's id, baseline and the window that last refreshed it.
    entries: Vec<(EdgeId, Baseline, u64)>,
    /// Positions in `entries`, by id.
    index: hashbrown::HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    /// Windows ended so far.
    window: u64,
}

/// Where [`Baselines::find`] found an edge's baseline, until the window ends (the sweep for
/// idle baselines moves them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaselineSlot {
    at: usize,
    window: u64,
}

impl Baselines {
    /// The baseline of an edge, if it has one.
    pub fn get(&self, id: &EdgeIdRef<'_>) -> Option<&Baseline> {
        self.find(id).and_then(|slot| self.at(slot))
    }

    /// Where the baseline of an edge is, if it has one.
    pub fn find(&self, id: &EdgeIdRef<'_>) -> Option<BaselineSlot> {
        let hash = self.hasher.hash_one(id);
        let at = *self
            .index
            .find(hash, |&i| id.equivalent(&self.entries[i].0))?;
        Some(BaselineSlot {
            at,
            window: self.window,
        })
    }

    /// The baseline at `slot` (none when the slot is from a window that has ended).
    pub fn at(&self, slot: BaselineSlot) -> Option<&Baseline> {
        let (_, b, _) = self
            .entries
            .get(slot.at)
            .filter(|_| slot.window == self.window)?;
        Some(b)
    }

    /// Folds a healthy window's features into an edge's baseline, starting one if needed.
    pub fn refresh(&mut self, id: EdgeIdRef<'_>, v: &FeatureVector) {
        let slot = self.find(&id);
        self.refresh_at(slot, id, v);
    }

    /// [`Baselines::refresh`] of an edge whose baseline [`Baselines::find`] found at `slot`
    /// in this window (or did not find).
    pub fn refresh_at(&mut self, slot: Option<BaselineSlot>, id: EdgeIdRef<'_>, v: &FeatureVector) {
        let window = self.window;
        let slot = match slot {
            Some(s) if s.window == window => Some(s),
            // A slot of an ended window may have moved.
            Some(_) => self.find(&id),
            None => None,
        };
        match slot.and_then(|s| self.entries.get_mut(s.at)) {
            Some((_, b, seen)) => {
                b.update(v);
                *seen = window;
            }
            None => {
                let mut b = Baseline::default();
                b.update(v);
                let hash = self.hasher.hash_one(id);
                let at = self.entries.len();
                self.entries.push((id.to_owned(), b, window));
                let (entries, hasher) = (&self.entries, &self.hasher);
                self.index
                    .insert_unique(hash, at, |&i| hasher.hash_one(entries[i].0.borrowed()));
            }
        }
    }

    /// Ends a window; every [`BASELINE_SWEEP_EVERY`] windows, forgets the baselines idle for
    /// more than [`BASELINE_MAX_IDLE_WINDOWS`].
    pub fn end_window(&mut self) {
        self.window += 1;
        if self.window.is_multiple_of(BASELINE_SWEEP_EVERY) {
            let now = self.window;
            self.entries
                .retain(|(_, _, seen)| now - *seen <= BASELINE_MAX_IDLE_WINDOWS);
            self.index.clear();
            let (entries, hasher) = (&self.entries, &self.hasher);
            for (at, (id, _, _)) in entries.iter().enumerate() {
                self.index
                    .insert_unique(hasher.hash_one(id.borrowed()), at, |&i| {
                        hasher.hash_one(entries[i].0.borrowed())
                    });
            }
        }
    }

    /// Edges with a baseline.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no edge has a baseline.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether a tracked feature was measured in this window (a missing view must not drag the
/// baseline to 0).
fn measured(f: Feature, v: &FeatureVector) -> bool {
    let client = v[Feature::HasClientView] > 0.0;
    let server = v[Feature::HasServerView] > 0.0;
    match f {
        Feature::ClientP50Ms | Feature::ClientP99Ms => client,
        Feature::ServerP50Ms | Feature::ServerP99Ms => server,
        Feature::P99GapMs => client && server,
        Feature::SrttMeanMs => v[Feature::SrttMeanMs] > 0.0,
        Feature::ConnectMsMax => v[Feature::ConnectRate] > 0.0,
        // The new signals read as 0 in windows recorded before they existed: not measured.
        Feature::ServerWaitP99Ms => server && v[Feature::ServerWaitP99Ms] > 0.0,
        Feature::WaitGapMs => client && server && v[Feature::ServerWaitP99Ms] > 0.0,
        Feature::SrttMinMs | Feature::SrttRangeShare => v[Feature::SrttMinMs] > 0.0,
        Feature::ExchangesPerOkConnect => {
            v[Feature::ExchangeRate] > 0.0 || v[Feature::ConnectRate] > 0.0
        }
        _ => true,
    }
}

impl Baseline {
    /// Folds in a window the caller judged healthy.
    pub fn update(&mut self, v: &FeatureVector) {
        for (i, (raw, _, _)) in tracked().enumerate() {
            if !measured(raw, v) {
                continue;
            }
            let x = v[raw];
            let e = &mut self.values[i];
            *e = if self.windows[i] > 0 {
                BASELINE_ALPHA * x + (1.0 - BASELINE_ALPHA) * *e
            } else {
                x
            };
            self.windows[i] += 1;
        }
    }

    /// Whether enough healthy windows were seen for the edge's ratios (its exchange rate,
    /// measured in every window it appears in, stands for the edge).
    pub fn is_ready(&self) -> bool {
        self.value(Feature::ExchangeRate).is_some()
    }

    /// The baseline of a tracked feature once enough healthy windows were seen.
    pub fn value(&self, raw: Feature) -> Option<f64> {
        let i = tracked().position(|(r, _, _)| r == raw)?;
        (self.windows[i] >= BASELINE_MIN_WINDOWS).then_some(self.values[i])
    }
}

/// The raw feature behind a ratio feature (or the feature itself).
pub fn raw_feature(f: Feature) -> Feature {
    tracked()
        .find(|(_, ratio, _)| *ratio == f)
        .map_or(f, |(raw, _, _)| raw)
}

/// Whether a view saw any request.
fn active(s: &Option<Box<SideStats>>) -> Option<&SideStats> {
    s.as_deref().filter(|s| s.exchanges + s.no_response > 0)
}

fn div(n: f64, d: f64) -> f64 {
    if d > 0.0 { n / d } else { 0.0 }
}

/// Computes every edge's features for one window.
pub fn window_features(
    window: &JoinedWindow,
    baselines: &Baselines,
) -> Vec<(EdgeId, FeatureVector)> {
    let vectors = window_feature_vectors(window, |_, e| baselines.get(&EdgeIdRef::of(&e.key)));
    window
        .edges
        .iter()
        .map(JoinedEdge::id)
        .zip(vectors)
        .collect()
}

/// Every edge's features for one window, in edge order, with `baseline` giving each edge's
/// baseline (from its position and the edge). What the operator runs on every window, so
/// lookups go by hash and nothing is formatted or copied per edge.
pub fn window_feature_vectors<'b>(
    window: &JoinedWindow,
    baseline: impl Fn(usize, &JoinedEdge) -> Option<&'b Baseline>,
) -> Vec<FeatureVector> {
    let pods: HashMap<&PodRef, &PodView, foldhash::fast::RandomState> =
        window.pods.iter().collect();
    let view = |pod: &Option<PodRef>| pod.as_ref().and_then(|p| pods.get(p).copied());
    let mut vectors: Vec<FeatureVector> = window
        .edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ends = EndViews {
                server: view(&e.key.server.pod),
                client: view(&e.key.client.pod),
            };
            edge_features_with(window, e, baseline(i, e), ends)
        })
        .collect();
    let ends: Vec<(EndName<'_>, EndName<'_>)> = window
        .edges
        .iter()
        .map(|e| (EndName::of(&e.key.client), EndName::of(&e.key.server)))
        .collect();
    let mut refs: Vec<&mut FeatureVector> = vectors.iter_mut().collect();
    add_unit_context(&ends, &mut refs);
    vectors
}

/// An edge end as its printed form names it (the pod when known, else the address), without
/// printing it: pod names and IPs hold no '/', so two ends are equal exactly when their
/// printed forms are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum EndName<'a> {
    Pod(&'a PodRef),
    Ip(&'a str),
}

impl<'a> EndName<'a> {
    fn of(ep: &'a Endpoint) -> Self {
        match &ep.pod {
            Some(p) => EndName::Pod(p),
            None => EndName::Ip(&ep.ip),
        }
    }
}

/// Client and server of an edge as printed by its key ("client -> server:port/proto").
pub fn ends_of(edge: &str) -> Option<(&str, &str)> {
    let (client, rest) = edge.split_once(" -> ")?;
    let (server_port, _proto) = rest.rsplit_once('/')?;
    let (server, _port) = server_port.rsplit_once(':')?;
    Some((client, server))
}

/// Fills the features that look across one window's edges sharing a server or a client (the
/// pod unit): `ends[i]` are edge i's (client, server), `vectors[i]` its features with the
/// per-edge columns already set. Computed from those columns only, so stored rows get them too.
pub fn add_unit_context<K: Eq + Hash>(ends: &[(K, K)], vectors: &mut [&mut FeatureVector]) {
    let failing = |v: &FeatureVector| v[Feature::ConnectFailRatio] >= 0.5;
    let slow = |v: &FeatureVector| v[Feature::ClientP99Ratio] >= 3.0;
    let share = |k: usize, of: usize| k as f64 / of.max(1) as f64;
    // One pass counts each unit's edges into its totals, the second reads them by position: no
    // list of edges per unit (an allocation per pod per window) and no second hash lookup.
    let n = ends.len().min(vectors.len());
    let mut units: Vec<Unit> = Vec::with_capacity(2 * n);
    let mut servers: HashMap<&K, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(n, Default::default());
    let mut clients: HashMap<&K, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(n, Default::default());
    let mut at = Vec::with_capacity(n);
    for (c, s) in ends.iter().take(n) {
        at.push((
            Unit::slot(&mut servers, s, &mut units),
            Unit::slot(&mut clients, c, &mut units),
        ));
    }
    for (v, &(s, c)) in vectors.iter().zip(&at) {
        let server = &mut units[s];
        server.edges += 1;
        server.failing += usize::from(failing(v));
        server.slow += usize::from(slow(v));
        server.best = server.best.max(v[Feature::ExchangeRateRatio]);
        let client = &mut units[c];
        client.edges += 1;
        client.slow += usize::from(slow(v));
    }
    for (v, (s, c)) in vectors.iter_mut().zip(at) {
        let (server, client) = (&units[s], &units[c]);
        v.set(
            Feature::ServerEdgesFailingShare,
            share(server.failing, server.edges),
        );
        v.set(Feature::ServerBestExchangeRatio, server.best.min(10.0));
        v.set(
            Feature::ServerEdgesSlowShare,
            share(server.slow, server.edges),
        );
        v.set(
            Feature::ClientEdgesSlowShare,
            share(client.slow, client.edges),
        );
    }
}

/// The edges of one window that share a server (or a client), as [`add_unit_context`] counts
/// them.
#[derive(Default)]
struct Unit {
    edges: usize,
    failing: usize,
    slow: usize,
    /// Largest exchange-rate ratio among them (0 when none is above 0).
    best: f64,
}

impl Unit {
    /// The position in `units` of `key`'s unit, added when the key is new.
    fn slot<'k, K: Eq + Hash>(
        index: &mut HashMap<&'k K, usize, foldhash::fast::RandomState>,
        key: &'k K,
        units: &mut Vec<Unit>,
    ) -> usize {
        *index.entry(key).or_insert_with(|| {
            units.push(Unit::default());
            units.len() - 1
        })
    }
}

/// The watched-pod views of an edge's two ends, when their pods are watched.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndViews<'a> {
    /// The server's pod.
    pub server: Option<&'a PodView>,
    /// The client's pod.
    pub client: Option<&'a PodView>,
}

/// One edge's per-edge features, with the ends' pod views already looked up (a caller going
/// through all edges of a large window finds them faster in an index of its own than in the
/// sorted map); [`window_feature_vectors`] adds the unit context across the window.
pub fn edge_features_with(
    window: &JoinedWindow,
    e: &JoinedEdge,
    baseline: Option<&Baseline>,
    ends: EndViews<'_>,
) -> FeatureVector {
    let mut v = FeatureVector::default();
    let secs = window.window_secs;
    let rate = |x: f64| div(x, secs);
    let client = active(&e.client);
    let server = active(&e.server);
    let l4 = &e.l4;

    v.set(
        Feature::HasClientView,
        f64::from(u8::from(client.is_some())),
    );
    v.set(
        Feature::HasServerView,
        f64::from(u8::from(server.is_some())),
    );
    v.set(Feature::IsDns, f64::from(u8::from(e.key.port == 53)));

    // Both views count the same exchanges; the larger is the one that missed fewer.
    // An iterator, not a collected list: a small allocation per edge, two with `rtts`, was a
    // visible share of the operator's time.
    let views = || client.into_iter().chain(server);
    let exchanges = views().map(|s| s.exchanges).max().unwrap_or(0) as f64;
    let requests = views()
        .map(|s| s.exchanges + s.no_response)
        .max()
        .unwrap_or(0) as f64;
    let resp_bytes = views().map(|s| s.resp_bytes).max().unwrap_or(0) as f64;
    let attempts =
        (l4.connects_ok + l4.connect_refused + l4.connect_timeout + l4.connect_failed_other) as f64;

    v.set(Feature::ExchangeRate, rate(exchanges));
    v.set(Feature::ConnectRate, rate(attempts));
    v.set(Feature::RespBytesPerExchange, div(resp_bytes, requests));
    v.set(Feature::RespBytesRate, rate(resp_bytes));

    if let Some(c) = client {
        v.set(Feature::ClientP50Ms, c.latency.p50_ms);
        v.set(Feature::ClientP99Ms, c.latency.p99_ms);
        v.set(
            Feature::ClientP10Share,
            div(c.latency.p10_ms, c.latency.p50_ms).min(1.0),
        );
    }
    if let Some(s) = server {
        v.set(Feature::ServerP50Ms, s.latency.p50_ms);
        v.set(Feature::ServerP99Ms, s.latency.p99_ms);
    }
    if let (Some(c), Some(s)) = (client, server) {
        let gap = (c.latency.p99_ms - s.latency.p99_ms).max(0.0);
        v.set(Feature::P99GapMs, gap);
        v.set(Feature::GapShare, div(gap, c.latency.p99_ms).min(1.0));
    }

    let worst = |f: fn(&SideStats) -> u64| {
        views()
            .map(|s| div(f(s) as f64, (s.exchanges + s.no_response) as f64))
            .fold(0.0, f64::max)
    };
    v.set(Feature::NoResponseRatio, worst(|s| s.no_response));
    v.set(Feature::ZeroWindowRatio, worst(|s| s.zero_window));
    v.set(Feature::ResetRatio, worst(|s| s.with_reset));
    v.set(Feature::L7ErrorRatio, worst(|s| s.l7_errors).min(1.0));

    // Per request when there were requests; otherwise per attempt so failing connects still count.
    let per_request = requests.max(attempts).max(1.0);
    v.set(
        Feature::ServerResetRate,
        l4.resets_by_server as f64 / per_request,
    );
    v.set(
        Feature::ClientResetRate,
        l4.resets_by_client as f64 / per_request,
    );
    v.set(
        Feature::ConnectRefusedRatio,
        div(l4.connect_refused as f64, attempts),
    );
    v.set(
        Feature::ConnectTimeoutRatio,
        div(l4.connect_timeout as f64, attempts),
    );
    v.set(
        Feature::ConnectOtherRatio,
        div(l4.connect_failed_other as f64, attempts),
    );
    v.set(Feature::ConnectMsMax, l4.connect_ms_max);
    v.set(
        Feature::RetransC2sPerExchange,
        l4.retrans_client_to_server as f64 / requests.max(1.0),
    );
    v.set(
        Feature::RetransS2cPerExchange,
        l4.retrans_server_to_client as f64 / requests.max(1.0),
    );
    v.set(
        Feature::SynRetransPerConnect,
        l4.syn_retrans as f64 / attempts.max(1.0),
    );

    let rtts = || views().filter(|s| s.srtt_us_mean > 0.0);
    let srtt_mean = div(
        rtts().map(|s| s.srtt_us_mean).sum::<f64>(),
        rtts().count() as f64,
    ) / 1000.0;
    let srtt_max = views().map(|s| s.srtt_us_max).max().unwrap_or(0) as f64 / 1000.0;
    v.set(Feature::SrttMeanMs, srtt_mean);
    v.set(Feature::SrttMaxMs, srtt_max);
    v.set(
        Feature::SrttSpread,
        if srtt_mean > 0.0 {
            srtt_max / srtt_mean
        } else {
            1.0
        },
    );

    let srtt_min = views()
        .map(|s| s.srtt_us_min)
        .filter(|m| *m > 0)
        .min()
        .unwrap_or(0) as f64
        / 1000.0;
    v.set(Feature::SrttMinMs, srtt_min);
    if srtt_min > 0.0 && srtt_mean > 0.0 {
        v.set(
            Feature::SrttRangeShare,
            ((srtt_max - srtt_min) / srtt_mean).max(0.0),
        );
    }

    // Wait excludes request upload: on the server it is processing time alone.
    let server_wait = server.map_or(0.0, |s| s.wait.p99_ms);
    v.set(Feature::ServerWaitP99Ms, server_wait);
    if let (Some(c), true) = (client, server_wait > 0.0) {
        v.set(Feature::WaitGapMs, (c.wait.p99_ms - server_wait).max(0.0));
    }
    let failed = (l4.connect_refused + l4.connect_timeout + l4.connect_failed_other) as f64;
    v.set(Feature::ConnectFailRatio, div(failed, attempts));
    v.set(
        Feature::ExchangesPerOkConnect,
        exchanges / (l4.connects_ok as f64).max(1.0),
    );

    let (server_view, client_view) = (ends.server, ends.client);
    let set_drops =
        |v: &mut FeatureVector, d: Option<&BTreeMap<String, u64>>, cols: [Feature; 6]| {
            let get = |reason: &str| d.and_then(|d| d.get(reason)).copied().unwrap_or(0) as f64;
            let total = d.map_or(0, |d| d.values().sum::<u64>()) as f64;
            v.set(cols[0], rate(total));
            for (col, reason) in cols[1..].iter().zip(DROP_REASONS) {
                v.set(*col, rate(get(reason)));
            }
        };
    set_drops(
        &mut v,
        server_view.map(|p| &p.drops),
        [
            Feature::ServerDropsTotal,
            Feature::ServerDropsNetfilter,
            Feature::ServerDropsZeroWindow,
            Feature::ServerDropsRcvbuff,
            Feature::ServerDropsProtoMem,
            Feature::ServerDropsQdisc,
        ],
    );
    set_drops(
        &mut v,
        client_view.map(|p| &p.drops),
        [
            Feature::ClientDropsTotal,
            Feature::ClientDropsNetfilter,
            Feature::ClientDropsZeroWindow,
            Feature::ClientDropsRcvbuff,
            Feature::ClientDropsProtoMem,
            Feature::ClientDropsQdisc,
        ],
    );

    // Each node once, even when both ends share it.
    let server_node = e
        .server_node
        .as_ref()
        .filter(|n| e.client_node.as_ref() != Some(*n));
    let nodes =
        [e.client_node.as_ref(), server_node].map(|n| n.and_then(|n| window.node_drops.get(&**n)));
    let node_drops = |reason: Option<&str>| -> f64 {
        nodes
            .iter()
            .flatten()
            .map(|d| match reason {
                Some(r) => d.get(r).copied().unwrap_or(0),
                None => d.values().sum(),
            })
            .sum::<u64>() as f64
    };
    v.set(Feature::NodeDropsTotal, rate(node_drops(None)));
    v.set(
        Feature::NodeDropsNetfilter,
        rate(node_drops(Some(DROP_REASONS[0]))),
    );
    v.set(
        Feature::NodeDropsQdisc,
        rate(node_drops(Some(DROP_REASONS[4]))),
    );

    let no_pod = PodView::default();
    let (sp, cp) = (
        server_view.unwrap_or(&no_pod),
        client_view.unwrap_or(&no_pod),
    );
    let mib = |p: &PodView, k: &str| p.netstat.get(k).copied().unwrap_or(0) as f64;
    let throttled =
        |p: &PodView| div(p.cpu_throttled_periods as f64, p.cpu_periods as f64).clamp(0.0, 1.0);
    v.set(
        Feature::ServerThrottledPeriods,
        rate(sp.cpu_throttled_periods as f64),
    );
    v.set(Feature::ServerThrottledRatio, throttled(sp));
    v.set(
        Feature::ServerListenOverflows,
        rate(mib(sp, "TcpExt:ListenOverflows")),
    );
    v.set(
        Feature::ServerListenDrops,
        rate(mib(sp, "TcpExt:ListenDrops")),
    );
    v.set(Feature::ClientThrottledRatio, throttled(cp));
    if sp.stray_drops > 0 && sp.server_conns_max > 0 {
        let at_drops = sp.server_conns_at_stray_drops as f64 / sp.stray_drops as f64;
        v.set(
            Feature::ServerFullAtDrops,
            (at_drops / sp.server_conns_max as f64).min(1.0),
        );
    }
    v.set(
        Feature::ServerZeroWindowAdv,
        rate(mib(sp, "TcpExt:TCPToZeroWindowAdv")),
    );
    v.set(
        Feature::ClientZeroWindowAdv,
        rate(mib(cp, "TcpExt:TCPToZeroWindowAdv")),
    );

    apply_baseline(&mut v, baseline);
    v
}

/// Kernel drop reasons with their own columns (names as node-probe reports them: the
/// skb_drop_reason enum, prefix stripped, lower case). netfilter_drop must stay first.
pub const DROP_REASONS: [&str; 5] = [
    "netfilter_drop",
    "tcp_zerowindow",
    "socket_rcvbuff",
    "proto_mem",
    "qdisc_drop",
];

/// Fills the ratio features (1 when there is no usable baseline, i.e. "as usual").
fn apply_baseline(v: &mut FeatureVector, baseline: Option<&Baseline>) {
    let ready = baseline.is_some_and(Baseline::is_ready);
    v.set(Feature::HasBaseline, f64::from(u8::from(ready)));
    for (raw, ratio, floor) in tracked() {
        let r = match baseline.and_then(|b| b.value(raw)) {
            Some(b) if measured(raw, v) => (v[raw] + floor) / (b + floor),
            _ => 1.0,
        };
        v.set(ratio, r);
    }
    derive(v);
}

/// `srtt_queueing` of an edge without an RTT (DNS over UDP): the healthy median of the
/// recorded TCP edges (2.56; per workload 1.9-6.0), so it reads as unremarkable. Its own 1 for
/// "no queue" made every healthy DNS window of a held-out DNS workload read as a constant delay.
const SRTT_QUEUEING_UNMEASURED: f64 = 2.5;

/// Features computed from other columns only (so they can be recomputed for stored rows):
/// combinations a single axis-aligned split cannot express.
pub fn derive(v: &mut FeatureVector) {
    let ok_share = (1.0 - v[Feature::ConnectFailRatio]).max(0.05);
    v.set(
        Feature::ExchangeSurvival,
        v[Feature::ExchangeRateRatio] / ok_share,
    );
    v.set(
        Feature::LatencyPerThroughput,
        (v[Feature::ClientP99Ratio] / v[Feature::RespBytesRateRatio].max(0.01)).min(10_000.0),
    );
    let srtt_min = v[Feature::SrttMinMs];
    let (queueing, p50_per_rtt) = if srtt_min > 0.0 {
        (
            (v[Feature::SrttMeanMs] / srtt_min).min(10_000.0),
            (v[Feature::ClientP50Ms] / srtt_min).min(10_000.0),
        )
    } else {
        (SRTT_QUEUEING_UNMEASURED, 0.0)
    };
    v.set(Feature::SrttQueueing, queueing);
    v.set(
        Feature::DnsFailureRatio,
        (v[Feature::IsDns] * (v[Feature::L7ErrorRatio] + v[Feature::NoResponseRatio])).min(1.0),
    );
    v.set(Feature::ClientP50PerRtt, p50_per_rtt);
    v.set(
        Feature::AppErrorRatio,
        (1.0 - v[Feature::IsDns]).clamp(0.0, 1.0) * v[Feature::L7ErrorRatio],
    );
    v.set(
        Feature::TcpNoResponseRatio,
        (1.0 - v[Feature::IsDns]).clamp(0.0, 1.0) * v[Feature::NoResponseRatio],
    );
    v.set(
        Feature::ServerWaitExcess,
        (v[Feature::ServerWaitRatio] / v[Feature::WaitGapRatio].max(1.0)).min(10_000.0),
    );
    v.set(
        Feature::SilentNoResponseRatio,
        v[Feature::TcpNoResponseRatio] / (1.0 + v[Feature::RetransS2cPerExchange].max(0.0)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::join::join;
    use crate::join::tests::{key, latency, pod, report, side};
    use netdx_api::windows::{EdgeWindow, L4Stats, PodWindow};

    #[test]
    fn baselines_idle_for_a_day_of_windows_are_forgotten() {
        let gone = key(("a", "10.0.0.1"), ("s", "10.0.0.9"), true);
        let kept = key(("b", "10.0.0.2"), ("s", "10.0.0.9"), true);
        let mut v = FeatureVector::default();
        v.set(Feature::ExchangeRate, 5.0);
        let mut baselines = Baselines::default();
        baselines.refresh(EdgeIdRef::of(&gone), &v);
        for _ in 0..BASELINE_MAX_IDLE_WINDOWS + BASELINE_SWEEP_EVERY {
            baselines.refresh(EdgeIdRef::of(&kept), &v);
            baselines.end_window();
        }
        assert!(baselines.get(&EdgeIdRef::of(&gone)).is_none());
        assert!(
            baselines
                .get(&EdgeIdRef::of(&kept))
                .is_some_and(Baseline::is_ready)
        );
        assert_eq!(baselines.len(), 1);
    }

    /// One edge's per-edge features (without the unit context a whole window adds).
    fn edge_features(
        window: &JoinedWindow,
        e: &JoinedEdge,
        baseline: Option<&Baseline>,
    ) -> FeatureVector {
        let view = |pod: &Option<PodRef>| pod.as_ref().and_then(|p| window.pods.get(p));
        let ends = EndViews {
            server: view(&e.key.server.pod),
            client: view(&e.key.client.pod),
        };
        edge_features_with(window, e, baseline, ends)
    }

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() <= 0.02 * b.abs().max(0.01)
    }

    #[test]
    fn schema_is_consistent() {
        for (i, d) in FEATURES.iter().enumerate() {
            assert_eq!(d.feature.index(), i, "{} out of order", d.name);
            assert_eq!(Feature::from_name(d.name), Some(d.feature));
            assert!(!d.meaning.is_empty());
        }
        let mut names = feature_names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FEATURE_COUNT, "duplicate feature name");
    }

    /// Client on n1 saw 200 exchanges with a 20 ms tail, server on n2 saw 5 ms.
    fn two_node_window() -> JoinedWindow {
        let c = ("client", "10.0.1.5");
        let s = ("server", "10.0.2.7");
        let mut cs = side(200, &[[8.0; 190].as_slice(), &[20.0; 10]].concat());
        cs.no_response = 50;
        cs.with_reset = 25;
        cs.resp_bytes = 250 * 1000;
        cs.srtt_us_mean = 2000.0;
        cs.srtt_us_max = 8000;
        let mut ss = side(200, &[[2.0; 190].as_slice(), &[5.0; 10]].concat());
        ss.l7_errors = 20;
        ss.srtt_us_mean = 1000.0;
        ss.srtt_us_max = 4000;
        let l4c = L4Stats {
            connects_ok: 6,
            connect_refused: 2,
            connect_timeout: 1,
            connect_failed_other: 1,
            connect_ms_max: 30.0,
            retrans_client_to_server: 50,
            syn_retrans: 5,
            ..L4Stats::default()
        };
        let l4s = L4Stats {
            retrans_server_to_client: 25,
            resets_by_server: 10,
            ..L4Stats::default()
        };
        let mut n1 = report(
            "n1",
            vec![EdgeWindow {
                key: key(c, s, true),
                client: Some(cs),
                server: None,
                l4: l4c,
            }],
            vec![PodWindow {
                pod: pod("client"),
                ..Default::default()
            }],
        );
        n1.node_drops = [
            ("netfilter_drop".to_string(), 30),
            ("other".to_string(), 10),
        ]
        .into();
        let n2 = report(
            "n2",
            vec![EdgeWindow {
                key: key(c, s, true),
                client: None,
                server: Some(ss),
                l4: l4s,
            }],
            vec![PodWindow {
                pod: pod("server"),
                drops: [
                    ("tcp_zerowindow".to_string(), 20),
                    ("netfilter_drop".to_string(), 10),
                    ("other".to_string(), 70),
                ]
                .into(),
                netstat: [
                    ("TcpExt:ListenOverflows".to_string(), 20),
                    ("TcpExt:ListenDrops".to_string(), 10),
                    ("TcpExt:TCPToZeroWindowAdv".to_string(), 30),
                ]
                .into(),
                cpu_periods: 100,
                cpu_throttled_periods: 40,
                server_conns_max: 4,
                stray_drops: 10,
                server_conns_at_stray_drops: 30,
                ..Default::default()
            }],
        );
        join(&[n1, n2])
    }

    #[test]
    fn computes_features_from_both_views() {
        let w = two_node_window();
        let v = edge_features(&w, &w.edges[0], None);
        assert_eq!(v[Feature::HasClientView], 1.0);
        assert_eq!(v[Feature::HasServerView], 1.0);
        assert_eq!(v[Feature::HasBaseline], 0.0);
        assert!(
            approx(v[Feature::ExchangeRate], 20.0),
            "200 exchanges in 10 s"
        );
        assert!(approx(v[Feature::ConnectRate], 1.0));
        assert!(
            approx(v[Feature::ClientP99Ms], 20.0),
            "{}",
            v[Feature::ClientP99Ms]
        );
        assert!(approx(v[Feature::ServerP99Ms], 5.0));
        assert!(
            approx(v[Feature::P99GapMs], 15.0),
            "{}",
            v[Feature::P99GapMs]
        );
        assert!(approx(v[Feature::GapShare], 0.75));
        assert!(
            approx(v[Feature::NoResponseRatio], 0.2),
            "50 of 250 requests"
        );
        assert!(approx(v[Feature::ResetRatio], 0.1));
        assert!(approx(v[Feature::L7ErrorRatio], 0.1));
        assert!(approx(v[Feature::ServerResetRate], 0.04));
        assert!(approx(v[Feature::ConnectRefusedRatio], 0.2));
        assert!(approx(v[Feature::ConnectTimeoutRatio], 0.1));
        assert!(approx(v[Feature::ConnectOtherRatio], 0.1));
        assert!(approx(v[Feature::RetransC2sPerExchange], 0.2));
        assert!(approx(v[Feature::RetransS2cPerExchange], 0.1));
        assert!(approx(v[Feature::SynRetransPerConnect], 0.5));
        assert!(approx(v[Feature::SrttMeanMs], 1.5));
        assert!(approx(v[Feature::SrttMaxMs], 8.0));
        assert!(approx(v[Feature::SrttSpread], 8.0 / 1.5));
        assert!(approx(v[Feature::RespBytesPerExchange], 1000.0));
        assert!(approx(v[Feature::ServerDropsTotal], 10.0));
        assert!(approx(v[Feature::ServerDropsZeroWindow], 2.0));
        assert!(approx(v[Feature::ServerDropsNetfilter], 1.0));
        assert_eq!(v[Feature::ClientDropsTotal], 0.0);
        assert!(approx(v[Feature::NodeDropsTotal], 4.0));
        assert!(approx(v[Feature::NodeDropsNetfilter], 3.0));
        assert!(approx(v[Feature::ServerThrottledRatio], 0.4));
        assert!(
            approx(v[Feature::ServerFullAtDrops], 0.75),
            "3 of at most 4 connections open at the average stray drop"
        );
        assert!(approx(v[Feature::ServerThrottledPeriods], 4.0));
        assert!(approx(v[Feature::ServerListenOverflows], 2.0));
        assert!(
            approx(v[Feature::ServerZeroWindowAdv], 3.0),
            "30 zero windows in 10 s"
        );
        assert_eq!(v[Feature::ClientZeroWindowAdv], 0.0);
        assert_eq!(v[Feature::ClientThrottledRatio], 0.0);
        // Without a baseline every ratio reads "as usual".
        assert_eq!(v[Feature::ServerP99Ratio], 1.0);
        assert_eq!(v[Feature::ExchangeRateRatio], 1.0);
    }

    #[test]
    fn missing_server_view_is_zero_and_flagged_never_nan() {
        let c = ("client", "10.0.1.5");
        let s = ("server", "10.0.2.7");
        let w = join(&[report(
            "n1",
            vec![EdgeWindow {
                key: key(c, s, false),
                client: Some(side(10, &[3.0; 10])),
                server: None,
                l4: L4Stats::default(),
            }],
            vec![],
        )]);
        let v = edge_features(&w, &w.edges[0], None);
        assert_eq!(v[Feature::HasServerView], 0.0);
        assert_eq!(v[Feature::ServerP99Ms], 0.0);
        assert_eq!(v[Feature::P99GapMs], 0.0);
        assert_eq!(v[Feature::GapShare], 0.0);
        assert_eq!(v[Feature::SrttSpread], 1.0);
        assert!(v.as_slice().iter().all(|x| x.is_finite()));
        // A zero-length window (clock trouble) must not produce infinities either.
        let mut z = w.clone();
        z.window_secs = 0.0;
        let v = edge_features(&z, &z.edges[0], None);
        assert!(v.as_slice().iter().all(|x| x.is_finite()));
        assert_eq!(v[Feature::ExchangeRate], 0.0);
    }

    #[test]
    fn upstream_nan_is_sanitised() {
        let c = ("client", "10.0.1.5");
        let s = ("server", "10.0.2.7");
        let mut cs = side(10, &[3.0; 10]);
        cs.latency = latency(&[3.0]);
        cs.latency.p99_ms = f64::NAN;
        cs.srtt_us_mean = f64::INFINITY;
        let w = join(&[report(
            "n1",
            vec![EdgeWindow {
                key: key(c, s, true),
                client: Some(cs),
                server: None,
                l4: L4Stats::default(),
            }],
            vec![],
        )]);
        let v = edge_features(&w, &w.edges[0], None);
        assert!(v.as_slice().iter().all(|x| x.is_finite()), "{v:?}");
    }

    #[test]
    fn baseline_needs_healthy_windows_and_gives_ratios() {
        let w = two_node_window();
        let healthy = edge_features(&w, &w.edges[0], None);
        let mut b = Baseline::default();
        b.update(&healthy);
        b.update(&healthy);
        assert_eq!(
            b.value(Feature::ServerP99Ms),
            None,
            "two windows are not enough"
        );
        b.update(&healthy);
        let base = b.value(Feature::ServerP99Ms).unwrap();
        assert!(approx(base, 5.0));

        // Same edge, server three times slower.
        let mut slow = w.clone();
        let srv = slow.edges[0].server.as_mut().unwrap();
        srv.latency = latency(&[[6.0; 190].as_slice(), &[15.0; 10]].concat());
        let v = edge_features(&slow, &slow.edges[0], Some(&b));
        assert_eq!(v[Feature::HasBaseline], 1.0);
        let expect = (15.0 + 0.5) / (base + 0.5);
        assert!(
            approx(v[Feature::ServerP99Ratio], expect),
            "{} vs {expect}",
            v[Feature::ServerP99Ratio]
        );
        assert!(approx(v[Feature::ExchangeRateRatio], 1.0));

        // A window without the server view leaves the server baseline alone.
        let mut no_server = healthy;
        no_server.0[Feature::HasServerView.index()] = 0.0;
        no_server.0[Feature::ServerP99Ms.index()] = 0.0;
        let before = b.value(Feature::ServerP99Ms);
        b.update(&no_server);
        assert_eq!(b.value(Feature::ServerP99Ms), before);
        assert_eq!(raw_feature(Feature::ClientP99Ratio), Feature::ClientP99Ms);
    }

    #[test]
    fn ewma_moves_towards_new_values() {
        let mut v = FeatureVector::default();
        v.set(Feature::ExchangeRate, 10.0);
        let mut b = Baseline::default();
        for _ in 0..3 {
            b.update(&v);
        }
        v.set(Feature::ExchangeRate, 20.0);
        b.update(&v);
        let got = b.value(Feature::ExchangeRate).unwrap();
        assert!((got - (10.0 + BASELINE_ALPHA * 10.0)).abs() < 1e-9, "{got}");
    }

    /// `two_node_window` with the wait and srtt-min signals the probe records since schema 3.
    fn window_with_waits(
        server_wait_ms: f64,
        client_wait_ms: f64,
        srtt_min_us: u32,
    ) -> JoinedWindow {
        let mut w = two_node_window();
        let e = &mut w.edges[0];
        let c = e.client.as_mut().unwrap();
        c.wait = latency(&[client_wait_ms; 100]);
        c.srtt_us_min = srtt_min_us;
        let s = e.server.as_mut().unwrap();
        s.wait = latency(&[server_wait_ms; 100]);
        s.srtt_us_min = srtt_min_us.saturating_add(200);
        w
    }

    #[test]
    fn wait_features_split_server_time_from_path_time() {
        let w = window_with_waits(2.0, 3.0, 900);
        let healthy = edge_features(&w, &w.edges[0], None);
        assert!(approx(healthy[Feature::ServerWaitP99Ms], 2.0));
        assert!(
            // Each quantile is within 1% (DDSketch): the difference of two within ~5%.
            (healthy[Feature::WaitGapMs] - 1.0).abs() < 0.05,
            "{}",
            healthy[Feature::WaitGapMs]
        );
        let mut b = Baseline::default();
        for _ in 0..3 {
            b.update(&healthy);
        }
        // The server got slower: its own wait rises, the gap stays.
        let slow = window_with_waits(12.0, 13.0, 900);
        let v = edge_features(&slow, &slow.edges[0], Some(&b));
        assert!(
            v[Feature::ServerWaitRatio] > 5.0,
            "{}",
            v[Feature::ServerWaitRatio]
        );
        assert!(
            (v[Feature::WaitGapRatio] - 1.0).abs() < 0.1,
            "{}",
            v[Feature::WaitGapRatio]
        );
        // The path got slower: the gap rises, the server's wait stays.
        let path = window_with_waits(2.0, 23.0, 900);
        let v = edge_features(&path, &path.edges[0], Some(&b));
        assert!(approx(v[Feature::ServerWaitRatio], 1.0));
        assert!(
            v[Feature::WaitGapRatio] > 10.0,
            "{}",
            v[Feature::WaitGapRatio]
        );
    }

    #[test]
    fn missing_new_signals_read_as_not_measured() {
        // Windows recorded before wait and srtt min existed: zeros, and ratios "as usual".
        let w = two_node_window();
        let v = edge_features(&w, &w.edges[0], None);
        assert_eq!(v[Feature::ServerWaitP99Ms], 0.0);
        assert_eq!(v[Feature::WaitGapMs], 0.0);
        assert_eq!(v[Feature::SrttMinMs], 0.0);
        assert_eq!(v[Feature::SrttRangeShare], 0.0);
        let mut b = Baseline::default();
        for _ in 0..3 {
            b.update(&v);
        }
        let v = edge_features(&w, &w.edges[0], Some(&b));
        for f in [
            Feature::ServerWaitRatio,
            Feature::WaitGapRatio,
            Feature::SrttMinRatio,
            Feature::SrttRangeRatio,
        ] {
            assert_eq!(v[f], 1.0, "{f}");
        }
        // A baseline learnt without the signal does not turn a later measurement into a ratio.
        let new = window_with_waits(2.0, 3.0, 900);
        let v = edge_features(&new, &new.edges[0], Some(&b));
        assert_eq!(v[Feature::ServerWaitRatio], 1.0);
    }

    #[test]
    fn srtt_spread_tells_jitter_from_constant_delay() {
        // srtt mean 1.5 ms, max 8 ms (two_node_window); min 0.9 ms.
        let w = window_with_waits(2.0, 3.0, 900);
        let v = edge_features(&w, &w.edges[0], None);
        assert!(
            approx(v[Feature::SrttMinMs], 0.9),
            "{}",
            v[Feature::SrttMinMs]
        );
        assert!(approx(v[Feature::SrttRangeShare], (8.0 - 0.9) / 1.5));
        let mut b = Baseline::default();
        for _ in 0..3 {
            b.update(&v);
        }
        // Constant delay: every sample moves, min with it.
        let mut d = window_with_waits(2.0, 3.0, 20_900);
        let e = &mut d.edges[0];
        for s in [e.client.as_mut().unwrap(), e.server.as_mut().unwrap()] {
            s.srtt_us_mean += 20_000.0;
            s.srtt_us_max += 20_000;
        }
        let v = edge_features(&d, &d.edges[0], Some(&b));
        assert!(
            v[Feature::SrttMinRatio] > 10.0,
            "{}",
            v[Feature::SrttMinRatio]
        );
        assert!(
            v[Feature::SrttRangeRatio] < 0.5,
            "{}",
            v[Feature::SrttRangeRatio]
        );
        // Jitter: min stays, the range widens.
        let mut j = window_with_waits(2.0, 3.0, 900);
        let e = &mut j.edges[0];
        for s in [e.client.as_mut().unwrap(), e.server.as_mut().unwrap()] {
            s.srtt_us_max += 40_000;
        }
        let v = edge_features(&j, &j.edges[0], Some(&b));
        assert!(
            v[Feature::SrttMinRatio] < 1.2,
            "{}",
            v[Feature::SrttMinRatio]
        );
        assert!(
            v[Feature::SrttRangeRatio] > 3.0,
            "{}",
            v[Feature::SrttRangeRatio]
        );
    }

    #[test]
    fn zero_window_stalls_and_the_fast_decile_are_read_from_the_views() {
        // Client: 200 exchanges at 8 ms but 20 of them fast (1 ms), 250 requests (50 without
        // a response), 40 ended by a send against a zero window.
        let mut w = two_node_window();
        let fast = [[1.0; 30].as_slice(), &[8.0; 170]].concat();
        let c = w.edges[0].client.as_mut().unwrap();
        c.latency = latency(&fast);
        c.zero_window = 40;
        let v = edge_features(&w, &w.edges[0], None);
        assert!(approx(v[Feature::ZeroWindowRatio], 40.0 / 250.0));
        assert!(
            v[Feature::ClientP10Share] < 0.2,
            "{}",
            v[Feature::ClientP10Share]
        );
        // A constant latency: the fast decile sits at the median.
        let w = two_node_window();
        let v = edge_features(&w, &w.edges[0], None);
        assert!(approx(v[Feature::ClientP10Share], 1.0));
        assert_eq!(v[Feature::ZeroWindowRatio], 0.0);
    }

    #[test]
    fn app_errors_are_told_from_dns_failures() {
        // two_node_window: 20 of 200 exchanges answered with an error, on port 8080.
        let w = two_node_window();
        let v = edge_features(&w, &w.edges[0], None);
        assert!(approx(v[Feature::AppErrorRatio], 0.1));
        assert_eq!(v[Feature::DnsFailureRatio], 0.0);
        // The same errors from a DNS server are DNS failures, not application errors.
        let mut dns = w.clone();
        dns.edges[0].key.port = 53;
        let v = edge_features(&dns, &dns.edges[0], None);
        assert_eq!(v[Feature::AppErrorRatio], 0.0);
        assert!(v[Feature::DnsFailureRatio] >= 0.1);
    }

    #[test]
    fn server_wait_excess_tells_a_slow_server_from_a_slow_path() {
        let healthy = window_with_waits(2.0, 3.0, 900);
        let h = edge_features(&healthy, &healthy.edges[0], None);
        assert_eq!(h[Feature::ServerWaitExcess], 1.0, "no baseline: as usual");
        let mut b = Baseline::default();
        for _ in 0..3 {
            b.update(&h);
        }
        let v = edge_features(&healthy, &healthy.edges[0], Some(&b));
        assert!(approx(v[Feature::ServerWaitExcess], 1.0));
        // The server's processing got 6x slower, the path did not.
        let slow = window_with_waits(12.0, 13.0, 900);
        let v = edge_features(&slow, &slow.edges[0], Some(&b));
        assert!(
            v[Feature::ServerWaitExcess] > 5.0,
            "{}",
            v[Feature::ServerWaitExcess]
        );
        // The path got 20 ms slower, the server did not: the excess falls below 1.
        let path = window_with_waits(2.0, 23.0, 900);
        let v = edge_features(&path, &path.edges[0], Some(&b));
        assert!(
            v[Feature::ServerWaitExcess] < 0.2,
            "{}",
            v[Feature::ServerWaitExcess]
        );
    }

    #[test]
    fn connect_failures_against_surviving_exchanges() {
        // two_node_window: 10 attempts, 6 ok, 4 failed; 200 exchanges.
        let w = two_node_window();
        let v = edge_features(&w, &w.edges[0], None);
        assert!(approx(v[Feature::ConnectFailRatio], 0.4));
        assert!(approx(v[Feature::ExchangesPerOkConnect], 200.0 / 6.0));
        // Without a baseline exchange_rate_ratio is 1: survival = 1 / ok share.
        assert!(approx(v[Feature::ExchangeSurvival], 1.0 / 0.6));

        let mut v = FeatureVector::default();
        // Refused: exchanges fall with the connects.
        v.set(Feature::ConnectFailRatio, 0.5);
        v.set(Feature::ExchangeRateRatio, 0.5);
        derive(&mut v);
        assert!(approx(v[Feature::ExchangeSurvival], 1.0));
        // Connection limit: established connections keep the exchanges going.
        v.set(Feature::ConnectFailRatio, 0.9);
        v.set(Feature::ExchangeRateRatio, 1.0);
        derive(&mut v);
        assert!(approx(v[Feature::ExchangeSurvival], 10.0));
        // Everything refused and nothing completes.
        v.set(Feature::ConnectFailRatio, 1.0);
        v.set(Feature::ExchangeRateRatio, 0.0);
        derive(&mut v);
        assert_eq!(v[Feature::ExchangeSurvival], 0.0);
    }

    #[test]
    fn latency_per_throughput_flags_a_ceiling() {
        let mut v = FeatureVector::default();
        v.set(Feature::ClientP99Ratio, 20.0);
        v.set(Feature::RespBytesRateRatio, 0.1);
        derive(&mut v);
        assert!(approx(v[Feature::LatencyPerThroughput], 200.0));
        v.set(Feature::RespBytesRateRatio, 0.0);
        derive(&mut v);
        assert!(
            approx(v[Feature::LatencyPerThroughput], 2000.0),
            "floored denominator"
        );
        v.set(Feature::ClientP99Ratio, 1e9);
        derive(&mut v);
        assert_eq!(v[Feature::LatencyPerThroughput], 10_000.0);
    }

    #[test]
    fn silent_no_response_tells_a_server_that_never_answered_from_a_lost_answer() {
        let mut v = FeatureVector::default();
        v.set(Feature::NoResponseRatio, 1.0);
        // A receiver that stopped reading: nothing was sent back, nothing retransmitted.
        derive(&mut v);
        assert_eq!(v[Feature::SilentNoResponseRatio], 1.0);
        // An MTU black hole: the server retransmits its large answer, again and again.
        v.set(Feature::RetransS2cPerExchange, 4.0);
        derive(&mut v);
        assert!(approx(v[Feature::SilentNoResponseRatio], 0.2));
        // A DNS timeout is not a TCP request left unanswered.
        v.set(Feature::IsDns, 1.0);
        derive(&mut v);
        assert_eq!(v[Feature::SilentNoResponseRatio], 0.0);
    }

    #[test]
    fn node_qdisc_drops_have_a_column() {
        let mut w = two_node_window();
        w.node_drops
            .entry("n1".into())
            .or_default()
            .insert("qdisc_drop".into(), 40);
        let v = edge_features(&w, &w.edges[0], None);
        assert!(
            approx(v[Feature::NodeDropsQdisc], 4.0),
            "{}",
            v[Feature::NodeDropsQdisc]
        );
    }

    #[test]
    fn from_slice_checks_length_and_finiteness() {
        assert!(FeatureVector::from_slice(&[0.0; 3]).is_err());
        let mut vals = vec![0.0; FEATURE_COUNT];
        assert!(FeatureVector::from_slice(&vals).is_ok());
        vals[4] = f64::NAN;
        assert!(FeatureVector::from_slice(&vals).is_err());
    }

    #[test]
    fn ends_parse_from_edge_names() {
        assert_eq!(
            ends_of("default/c1 -> default/s1:6379/tcp"),
            Some(("default/c1", "default/s1"))
        );
        assert_eq!(
            ends_of("0.0.0.0 -> fd00::1:53/udp"),
            Some(("0.0.0.0", "fd00::1"))
        );
        assert_eq!(ends_of("garbage"), None);
    }

    #[test]
    fn unit_context_tells_a_server_fault_from_a_link_fault() {
        let edge = |p99_ratio: f64, fail: f64, exchanges: f64| {
            let mut v = FeatureVector::default();
            v.set(Feature::ClientP99Ratio, p99_ratio);
            v.set(Feature::ConnectFailRatio, fail);
            v.set(Feature::ExchangeRateRatio, exchanges);
            v
        };
        let ends: Vec<(String, String)> = [("c1", "s1"), ("c2", "s1"), ("c1", "s2")]
            .iter()
            .map(|(c, s)| (c.to_string(), s.to_string()))
            .collect();
        // s1 refuses c2 but still serves c1; c1's path is slow to both servers.
        let mut vs = [
            edge(5.0, 0.0, 0.8),
            edge(1.0, 1.0, 0.0),
            edge(4.0, 0.0, 1.0),
        ];
        let mut refs: Vec<&mut FeatureVector> = vs.iter_mut().collect();
        add_unit_context(&ends, &mut refs);
        let [c1s1, c2s1, c1s2] = &vs;
        assert_eq!(c2s1[Feature::ServerEdgesFailingShare], 0.5);
        assert_eq!(c2s1[Feature::ServerBestExchangeRatio], 0.8);
        assert_eq!(c1s1[Feature::ServerEdgesSlowShare], 0.5);
        assert_eq!(c1s1[Feature::ClientEdgesSlowShare], 1.0);
        assert_eq!(c1s2[Feature::ServerEdgesSlowShare], 1.0);
        assert_eq!(c2s1[Feature::ClientEdgesSlowShare], 0.0);
    }
}
