//! Window ingest: node-probes POST their closed windows; the reports of one window from every
//! node are grouped, joined and diagnosed once the window is complete (every node with watched
//! pods reported, or a grace period passed), with per-edge baselines kept across windows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netdx_api::targets::PodRef;
use netdx_api::windows::WindowReport;
use netdx_diagnosis::classes::Classifier;
use netdx_diagnosis::features::Baselines;
use netdx_diagnosis::join::join_owned;
use netdx_diagnosis::localize::{Finding, Suspect, WindowDiagnosis, diagnose};
use tokio::sync::mpsc;
use tracing::{debug, info_span, warn};

use crate::classifier::ClassifierSlot;
use crate::metrics::Metrics;
use crate::probe_health::{ProbeBook, ProbeProblem};
use crate::services::{ServiceIndex, ServiceWatch, route_through_services};

/// Largest request body accepted on /v1/windows (a busy node's window is well under 1 MiB; a
/// batch of buffered windows can be tens of them).
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Windows waiting for more nodes at once; beyond it the oldest is diagnosed with what it has.
const MAX_OPEN_WINDOWS: usize = 32;
/// Diagnosed windows kept for on-demand reports (2 h of 10 s windows).
const MAX_DIAGNOSED: usize = 720;
/// Diagnosed windows queued for the incident writer before new ones are dropped.
const INCIDENT_QUEUE: usize = 64;
/// How long after a window's end missing nodes are waited for.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Why a posted report was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    /// The report is not internally consistent.
    #[error("report of node {node:?} seq {seq}: {reason}")]
    Invalid {
        /// Reporting node.
        node: String,
        /// Its sequence number.
        seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The window was already diagnosed without this node.
    #[error("window starting at {start_ms} was already diagnosed; report from {node} arrived late")]
    Late {
        /// Reporting node.
        node: String,
        /// Aligned window start, Unix ms.
        start_ms: u64,
    },
}

impl IngestError {
    /// Short stable label for the reject metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            IngestError::Invalid { .. } => "invalid",
            IngestError::Late { .. } => "late",
        }
    }
}

/// A finding with the pods at either end of the edges it explains (to tell which
/// observations it concerns).
#[derive(Clone, Debug)]
pub struct WindowFinding {
    /// What the diagnosis found.
    pub finding: Finding,
    /// Pods on the edges behind it.
    pub pods: BTreeSet<PodRef>,
}

impl WindowFinding {
    /// Whether any of `pods` is involved.
    pub fn involves(&self, pods: &BTreeSet<PodRef>) -> bool {
        !self.pods.is_disjoint(pods)
    }
}

/// A suspect with the pods at either end of the edges that lean to it.
#[derive(Clone, Debug)]
pub struct WindowSuspect {
    /// The instance suspected and of what.
    pub suspect: Suspect,
    /// Pods on the edges behind it.
    pub pods: BTreeSet<PodRef>,
}

/// What the callers of one edge experienced in a window (for SLO checks).
#[derive(Clone, Debug, Default)]
pub struct EdgeSummary {
    /// Client pod, when known.
    pub client: Option<PodRef>,
    /// Server pod, when known.
    pub server: Option<PodRef>,
    /// p99 latency, ms (client view when there is one, else server view).
    pub p99_ms: f64,
    /// Completed exchanges.
    pub exchanges: u64,
    /// Exchanges with the protocol's error signal or without a response.
    pub errors: u64,
}

/// One window, joined over nodes and diagnosed.
#[derive(Clone, Debug)]
pub struct DiagnosedWindow {
    /// Aligned start, Unix ms.
    pub start_ms: u64,
    /// End, Unix ms.
    pub end_ms: u64,
    /// Nodes whose reports were joined.
    pub nodes: Vec<String>,
    /// Findings, in the order the localizer gave them.
    pub findings: Vec<WindowFinding>,
    /// Instances worth a look that no finding names, likeliest first.
    pub suspects: Vec<WindowSuspect>,
    /// Every edge's summary (none in the windows kept for on-demand reports, which do not
    /// read them: [`WindowStore::diagnosed_between`]).
    pub edges: Vec<EdgeSummary>,
    /// Classifier version that produced them.
    pub model_version: String,
}

impl DiagnosedWindow {
    /// The window without its edge summaries.
    fn without_edges(&self) -> DiagnosedWindow {
        DiagnosedWindow {
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            nodes: self.nodes.clone(),
            findings: self.findings.clone(),
            suspects: self.suspects.clone(),
            edges: Vec::new(),
            model_version: self.model_version.clone(),
        }
    }
}

/// Reports of one window collected so far.
struct OpenWindow {
    end_ms: u64,
    reports: BTreeMap<String, WindowReport>,
}

/// Open windows, per-edge baselines and recent diagnosed windows (bounded in every dimension:
/// at most [`MAX_OPEN_WINDOWS`] open windows of one report per node each, [`MAX_DIAGNOSED`]
/// diagnosed ones, and the baselines of edges seen healthy within
/// [`netdx_diagnosis::features::BASELINE_MAX_IDLE_WINDOWS`]).
#[derive(Default)]
pub struct WindowStore {
    /// Keyed by (window length, aligned start), both ms, so probes with different window
    /// settings never join.
    open: BTreeMap<(u64, u64), OpenWindow>,
    /// Latest diagnosed aligned start per window length: older reports are late.
    closed_until: BTreeMap<u64, u64>,
    baselines: Baselines,
    diagnosed: VecDeque<Arc<DiagnosedWindow>>,
}

/// The window start rounded to the nearest multiple of its length (probes close windows on
/// the same wall-clock boundaries, up to clock skew).
/// A report's window length in whole seconds (windows are 1 s..10 m by the CRD): a probe
/// closes a window on its loop's tick, a few ms off the boundary, and reports of the same
/// window from several nodes must still share one key.
fn window_len(actual_ms: u64) -> u64 {
    ((actual_ms + 500) / 1000).max(1) * 1000
}

fn align(start_ms: u64, len_ms: u64) -> u64 {
    (start_ms + len_ms / 2) / len_ms * len_ms
}

/// Refuses a report that is not internally consistent.
fn validate(report: &WindowReport) -> Result<(), IngestError> {
    let invalid = |reason| IngestError::Invalid {
        node: report.node.clone(),
        seq: report.seq,
        reason,
    };
    if report.node.is_empty() {
        return Err(invalid("node is empty"));
    }
    if report.end_unix_ms <= report.start_unix_ms {
        return Err(invalid("window ends before it starts"));
    }
    Ok(())
}

impl WindowStore {
    /// Files a report under its window; a node reporting a window twice replaces its report.
    pub fn add(&mut self, report: WindowReport) -> Result<(), IngestError> {
        validate(&report)?;
        if report.edges.is_empty() && report.pods.is_empty() && report.node_drops.is_empty() {
            // A probe on a node without watched pods: nothing to join, and filing it would
            // only make it "late" once the window closes without it.
            return Ok(());
        }
        let len = window_len(report.end_unix_ms - report.start_unix_ms);
        let start = align(report.start_unix_ms, len);
        if self.closed_until.get(&len).is_some_and(|c| start <= *c) {
            return Err(IngestError::Late {
                node: report.node,
                start_ms: start,
            });
        }
        let w = self.open.entry((len, start)).or_insert(OpenWindow {
            end_ms: start + len,
            reports: BTreeMap::new(),
        });
        w.reports.insert(report.node.clone(), report);
        Ok(())
    }

    /// Diagnoses, oldest first, the windows that every `expected` node reported or whose
    /// grace period is over at `now_ms`; `services` gives the Service VIPs (asked only when a
    /// window is ready).
    pub fn close_ready(
        &mut self,
        expected: &BTreeSet<String>,
        now_ms: u64,
        grace: Duration,
        classifier: &dyn Classifier,
        services: &dyn Fn() -> ServiceIndex,
    ) -> Vec<Arc<DiagnosedWindow>> {
        let grace_ms = grace.as_millis() as u64;
        let overflow = self.open.len().saturating_sub(MAX_OPEN_WINDOWS);
        let ready: Vec<(u64, u64)> = self
            .open
            .iter()
            .enumerate()
            .filter(|(i, (_, w))| {
                *i < overflow
                    || now_ms >= w.end_ms + grace_ms
                    || expected.iter().all(|n| w.reports.contains_key(n))
            })
            .map(|(_, (k, _))| *k)
            .collect();
        let mut out = Vec::new();
        let mut index = None;
        for key in ready {
            let Some(w) = self.open.remove(&key) else {
                continue;
            };
            let (len, start) = key;
            let c = self.closed_until.entry(len).or_insert(start);
            *c = (*c).max(start);
            let index = index.get_or_insert_with(services);
            out.push(self.diagnose(start, w, classifier, index));
        }
        out
    }

    fn diagnose(
        &mut self,
        start_ms: u64,
        w: OpenWindow,
        classifier: &dyn Classifier,
        services: &ServiceIndex,
    ) -> Arc<DiagnosedWindow> {
        let _span = info_span!("window", start_ms, nodes = w.reports.len()).entered();
        let nodes: Vec<String> = w.reports.keys().cloned().collect();
        let mut reports: Vec<WindowReport> = w.reports.into_values().collect();
        // Client edges to Service VIPs must meet their backends' server views in the join.
        let routing = route_through_services(&mut reports, services);
        let mut joined = join_owned(reports);
        routing.place(&mut joined);
        let WindowDiagnosis {
            mut findings,
            mut suspects,
        } = diagnose(&joined, &mut self.baselines, classifier);
        for f in &mut findings {
            routing.name_services(&mut f.instance);
        }
        for s in &mut suspects {
            routing.name_services(&mut s.instance);
        }
        // The localizer names edges by their display form; map those back to the pods (for a
        // Service edge, its backends too). Windows without findings or suspects have none to map.
        let edge_pods: BTreeMap<String, Vec<PodRef>> = joined
            .edges
            .iter()
            .filter(|_| !findings.is_empty() || !suspects.is_empty())
            .map(|e| {
                let id = e.id();
                let pods = [&e.key.client.pod, &e.key.server.pod]
                    .into_iter()
                    .flatten()
                    .chain(routing.backend_pods(&id))
                    .cloned()
                    .collect();
                (e.key.to_string(), pods)
            })
            .collect();
        let edges = joined
            .edges
            .into_iter()
            .filter_map(|e| {
                let side = e.client.as_ref().or(e.server.as_ref())?;
                Some(EdgeSummary {
                    p99_ms: side.latency.p99_ms,
                    exchanges: side.exchanges,
                    errors: side.l7_errors + side.no_response,
                    client: e.key.client.pod,
                    server: e.key.server.pod,
                })
            })
            .collect();
        let pods_of = |edges: &[String]| -> BTreeSet<PodRef> {
            edges
                .iter()
                .filter_map(|e| edge_pods.get(e))
                .flatten()
                .cloned()
                .collect()
        };
        let findings = findings
            .into_iter()
            .map(|finding| WindowFinding {
                pods: pods_of(&finding.edges),
                finding,
            })
            .collect::<Vec<_>>();
        let suspects = suspects
            .into_iter()
            .map(|suspect| WindowSuspect {
                pods: pods_of(&suspect.edges),
                suspect,
            })
            .collect();
        debug!(findings = findings.len(), "window diagnosed");
        let done = Arc::new(DiagnosedWindow {
            start_ms,
            end_ms: w.end_ms,
            nodes,
            findings,
            suspects,
            edges,
            model_version: classifier.version(),
        });
        // Only the incident writer reads the edge summaries, of the window as it closes. Kept
        // for 720 windows they were 0.75 MB per 1000-pod window (the joined edges' allocation,
        // which they are collected into): half a GB at 1000 pods, and fresh memory the kernel
        // zeroed for every window, a sixth of the ingest time.
        self.diagnosed.push_back(Arc::new(done.without_edges()));
        while self.diagnosed.len() > MAX_DIAGNOSED {
            self.diagnosed.pop_front();
        }
        done
    }

    /// Diagnosed windows that overlap `[start_ms, end_ms)`, oldest first, without their edge
    /// summaries.
    pub fn diagnosed_between(&self, start_ms: u64, end_ms: u64) -> Vec<Arc<DiagnosedWindow>> {
        self.diagnosed
            .iter()
            .filter(|w| w.start_ms < end_ms && w.end_ms > start_ms)
            .cloned()
            .collect()
    }
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The ingest side shared by the HTTP handler, the timer and the diagnosis engine.
pub struct Ingest {
    store: Mutex<WindowStore>,
    classifier: Arc<ClassifierSlot>,
    grace: Duration,
    incidents: mpsc::Sender<Arc<DiagnosedWindow>>,
    /// Services and EndpointSlices to join client edges to VIPs; none outside a cluster.
    services: Option<ServiceWatch>,
    /// When each node's probe last pushed and what its latest window lost.
    probes: Mutex<ProbeBook>,
}

impl Default for Ingest {
    /// Built-in classifier, default grace, and nobody writing incidents.
    fn default() -> Self {
        Ingest::new(Arc::default(), DEFAULT_GRACE).0
    }
}

impl Ingest {
    /// An ingest using `classifier`; diagnosed windows are also sent to the returned receiver
    /// (the incident writer).
    pub fn new(
        classifier: Arc<ClassifierSlot>,
        grace: Duration,
    ) -> (Self, mpsc::Receiver<Arc<DiagnosedWindow>>) {
        let (tx, rx) = mpsc::channel(INCIDENT_QUEUE);
        let ingest = Ingest {
            store: Mutex::default(),
            classifier,
            grace,
            incidents: tx,
            services: None,
            probes: Mutex::default(),
        };
        (ingest, rx)
    }

    /// Resolves Service VIPs through `services` when joining windows.
    pub fn with_services(mut self, services: ServiceWatch) -> Self {
        self.services = Some(services);
        self
    }

    fn store(&self) -> std::sync::MutexGuard<'_, WindowStore> {
        // A poisoned store only means a diagnosis panicked; its windows are still consistent.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files reports; rejected ones are counted and returned, the rest are kept.
    pub fn receive(
        &self,
        reports: Vec<WindowReport>,
        expected: &BTreeSet<String>,
        metrics: &Metrics,
    ) -> Vec<IngestError> {
        let mut errors = Vec::new();
        let now = unix_ms();
        {
            let mut store = self.store();
            for r in reports {
                // A report that is taken (or only late) proves the probe alive; its health
                // counters go into the book before the store takes the report.
                if validate(&r).is_ok() {
                    self.note_push(&r, now);
                }
                match store.add(r) {
                    Ok(()) => {
                        metrics.windows_received.inc();
                    }
                    Err(e) => {
                        metrics.ingest_rejected(e.metric_label());
                        errors.push(e);
                    }
                }
            }
        }
        self.close(expected, metrics);
        errors
    }

    /// Diagnoses the windows that are complete now and hands them to the incident writer.
    pub fn close(&self, expected: &BTreeSet<String>, metrics: &Metrics) {
        let classifier = self.classifier.current();
        let services = || {
            self.services
                .as_ref()
                .map(ServiceWatch::index)
                .unwrap_or_default()
        };
        let done = self.store().close_ready(
            expected,
            unix_ms(),
            self.grace,
            classifier.as_ref(),
            &services,
        );
        for w in done {
            metrics.windows_diagnosed.inc();
            if let Err(mpsc::error::TrySendError::Full(w)) = self.incidents.try_send(w) {
                warn!(
                    start_ms = w.start_ms,
                    "incident writer is behind; window not turned into reports"
                );
            }
        }
    }

    /// Diagnosed windows that overlap `[start_ms, end_ms)`, without their edge summaries.
    pub fn diagnosed_between(&self, start_ms: u64, end_ms: u64) -> Vec<Arc<DiagnosedWindow>> {
        self.store().diagnosed_between(start_ms, end_ms)
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, ProbeBook> {
        // A poisoned book only means a panic elsewhere; its records are still usable.
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that a probe's window `report` arrived at `now_ms` (Unix ms).
    pub fn note_push(&self, report: &WindowReport, now_ms: u64) {
        self.probes().record(report, now_ms);
    }

    /// What is wrong with the probes on `nodes` at `now_ms`: silent for more than
    /// [`crate::probe_health::STALE_WINDOWS`] windows (`window` until a probe reported its
    /// own), or losing data in its latest window.
    pub fn probe_problems(
        &self,
        nodes: &BTreeSet<String>,
        now_ms: u64,
        window: Duration,
    ) -> Vec<ProbeProblem> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.probes().check(nodes, now_ms, window_ms)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netdx_api::windows::{EdgeKey, EdgeWindow, Endpoint, L4Stats, SideStats};
    use netdx_diagnosis::classes::InstanceKind;
    use netdx_diagnosis::rules::RuleTree;

    fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// A report from `node` of the 10 s window at `start_ms` where `web-1` calls `web-2`;
    /// `refused` connects make the rule tree call it connection_refused.
    pub(crate) fn report(node: &str, start_ms: u64, refused: u64) -> WindowReport {
        let key = EdgeKey {
            client: Endpoint {
                pod: Some(pod("web-1")),
                ip: "10.0.1.5".into(),
            },
            server: Endpoint {
                pod: Some(pod("web-2")),
                ip: "10.0.2.7".into(),
            },
            port: 8080,
            proto: "tcp".into(),
        };
        let client_side = node == "node-1";
        let side = Box::new(SideStats {
            exchanges: 100,
            ..Default::default()
        });
        WindowReport {
            node: node.into(),
            seq: start_ms / 10_000,
            start_unix_ms: start_ms,
            end_unix_ms: start_ms + 10_000,
            edges: vec![EdgeWindow {
                key,
                client: client_side.then(|| side.clone()),
                server: (!client_side).then_some(side),
                l4: L4Stats {
                    connects_ok: if client_side && refused == 0 { 10 } else { 0 },
                    connect_refused: if client_side { refused } else { 0 },
                    ..Default::default()
                },
            }],
            pods: vec![],
            node_drops: BTreeMap::new(),
            health: Default::default(),
        }
    }

    fn nodes() -> BTreeSet<String> {
        ["node-1".to_string(), "node-2".to_string()].into()
    }

    /// No Services known (outside a cluster).
    fn no_vips() -> ServiceIndex {
        ServiceIndex::default()
    }

    /// [`report`], but node-1's client calls web-1 -> Service `default/web` (10.96.0.10:80),
    /// and `node` (a server node) reports the server view of `server` (name, IP).
    fn via_vip(node: &str, server: (&str, &str), start_ms: u64) -> WindowReport {
        let mut r = report(node, start_ms, 40);
        let key = &mut r.edges[0].key;
        if node == "node-1" {
            key.server = Endpoint {
                pod: None,
                ip: "10.96.0.10".into(),
            };
            key.port = 80;
        } else {
            key.server = Endpoint {
                pod: Some(pod(server.0)),
                ip: server.1.into(),
            };
            // The server's node does not know the remote client's pod.
            key.client.pod = None;
        }
        r
    }

    #[test]
    fn a_client_edge_to_a_service_vip_joins_its_backend() {
        let rules = RuleTree::new();
        let web2 = ("web-2", "10.0.2.7");
        let feed = |s: &mut WindowStore| {
            s.add(via_vip("node-1", web2, 3_000_000)).expect("added");
            s.add(via_vip("node-2", web2, 3_000_000)).expect("added");
        };
        let index = crate::services::tests::index(&[("web-2", "10.0.2.7", true)]);

        // Without the Service: the client's edge and the server's never meet.
        let mut apart = WindowStore::default();
        feed(&mut apart);
        let done = apart.close_ready(&nodes(), 3_010_000, DEFAULT_GRACE, &rules, &no_vips);
        assert_eq!(done[0].edges.len(), 2, "two half edges");

        let mut s = WindowStore::default();
        feed(&mut s);
        let done = s.close_ready(&nodes(), 3_010_000, DEFAULT_GRACE, &rules, &|| {
            index.clone()
        });
        let w = &done[0];
        assert_eq!(w.edges.len(), 1, "client and server views joined");
        assert_eq!(w.edges[0].client, Some(pod("web-1")));
        assert_eq!(w.edges[0].server, Some(pod("web-2")));
        let f = &w.findings.first().expect("a finding").finding;
        assert_eq!(f.root_cause.as_str(), "connection_refused");
        assert_eq!(
            (f.instance.kind, f.instance.name.as_str()),
            (InstanceKind::Pod, "default/web-2"),
            "the finding names the backend pod"
        );
    }

    #[test]
    fn a_service_with_several_backends_is_judged_as_a_unit() {
        let rules = RuleTree::new();
        let index = crate::services::tests::index(&[
            ("web-2", "10.0.2.7", true),
            ("web-3", "10.0.3.9", true),
        ]);
        let mut s = WindowStore::default();
        s.add(via_vip("node-1", ("", ""), 4_000_000))
            .expect("added");
        s.add(via_vip("node-2", ("web-2", "10.0.2.7"), 4_000_000))
            .expect("added");
        s.add(via_vip("node-3", ("web-3", "10.0.3.9"), 4_000_000))
            .expect("added");
        let three: BTreeSet<String> = ["node-1", "node-2", "node-3"].map(String::from).into();
        let done = s.close_ready(&three, 4_010_000, DEFAULT_GRACE, &rules, &|| index.clone());
        let w = &done[0];
        assert_eq!(w.edges.len(), 1, "both backends' views on the Service edge");
        let f = w.findings.first().expect("a finding");
        assert_eq!(f.finding.root_cause.as_str(), "connection_refused");
        assert_eq!(
            (f.finding.instance.kind, f.finding.instance.name.as_str()),
            (InstanceKind::Service, "default/web")
        );
        assert!(
            f.involves(&[pod("web-3")].into()),
            "the backends are involved"
        );
        let crd = crate::engine::merge([f]);
        assert_eq!(crd[0].instance.kind, netdx_api::crd::InstanceKind::Service);
    }

    #[test]
    fn windows_close_when_every_node_reported() {
        let mut s = WindowStore::default();
        let rules = RuleTree::new();
        // Node 2's clock runs 300 ms late: same window after alignment.
        s.add(report("node-1", 1_000_000, 0)).expect("added");
        assert!(
            s.close_ready(&nodes(), 1_010_100, DEFAULT_GRACE, &rules, &no_vips)
                .is_empty(),
            "node-2 missing, grace not over"
        );
        s.add(report("node-2", 1_000_300, 0)).expect("added");
        let done = s.close_ready(&nodes(), 1_010_400, DEFAULT_GRACE, &rules, &no_vips);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].start_ms, 1_000_000);
        assert_eq!(done[0].nodes, vec!["node-1", "node-2"]);
        assert!(done[0].findings.is_empty(), "healthy");
        assert_eq!(
            s.add(report("node-2", 1_000_000, 0)),
            Err(IngestError::Late {
                node: "node-2".into(),
                start_ms: 1_000_000
            })
        );
    }

    #[test]
    fn grace_closes_incomplete_windows_and_findings_name_pods() {
        let mut s = WindowStore::default();
        let rules = RuleTree::new();
        s.add(report("node-1", 2_000_000, 40)).expect("added");
        assert!(
            s.close_ready(&nodes(), 2_014_000, DEFAULT_GRACE, &rules, &no_vips)
                .is_empty()
        );
        let done = s.close_ready(&nodes(), 2_015_000, DEFAULT_GRACE, &rules, &no_vips);
        assert_eq!(done.len(), 1, "grace over");
        let f = done[0].findings.first().expect("a finding");
        assert_eq!(f.finding.root_cause.as_str(), "connection_refused");
        assert!(f.involves(&[pod("web-2")].into()));
        assert!(!f.involves(&[pod("other")].into()));
        assert_eq!(
            done[0].edges.len(),
            1,
            "the incident writer's window has its edges"
        );
        let kept = s.diagnosed_between(2_005_000, 2_006_000);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].findings.len(), done[0].findings.len());
        assert!(
            kept[0].edges.is_empty(),
            "the history keeps no edge summaries"
        );
        assert!(s.diagnosed_between(2_010_000, 2_020_000).is_empty());
    }

    #[test]
    fn inconsistent_reports_are_refused() {
        let mut s = WindowStore::default();
        let mut r = report("node-1", 1_000, 0);
        r.end_unix_ms = r.start_unix_ms;
        assert!(matches!(s.add(r), Err(IngestError::Invalid { .. })));
        let mut r = report("", 1_000, 0);
        r.node.clear();
        assert!(matches!(s.add(r), Err(IngestError::Invalid { .. })));
        let mut idle = report("node-3", 1_000, 0);
        idle.edges.clear();
        assert_eq!(s.add(idle), Ok(()), "an idle node's empty window is taken");
        assert!(s.open.is_empty(), "but not filed");
    }

    #[test]
    fn open_windows_are_bounded() {
        let mut s = WindowStore::default();
        let rules = RuleTree::new();
        for i in 0..(MAX_OPEN_WINDOWS as u64 + 3) {
            s.add(report("node-1", 10_000 * i, 0)).expect("added");
        }
        let done = s.close_ready(&nodes(), 0, DEFAULT_GRACE, &rules, &no_vips);
        assert_eq!(done.len(), 3, "oldest diagnosed early");
        assert_eq!(s.open.len(), MAX_OPEN_WINDOWS);
    }
}
