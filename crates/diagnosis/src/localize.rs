//! Localization: classify every edge of a window, then vote across edges that share a pod,
//! node, node pair or service to name the instance responsible.
//!
//! The vote is a greedy cover: among the candidate instances of a class, take the one that
//! best explains the degraded edges (how many it touches times the share of its own edges that
//! are degraded), report it, drop the edges it explains, repeat. So all clients of S degraded
//! names S; one client degraded towards all its servers names that client; only the edges
//! crossing N1-N2 name that link; and a node-wide class names the node.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use netdx_api::targets::PayloadCapture;
use netdx_api::windows::EdgeKey;
use serde::{Deserialize, Serialize};

use crate::classes::{Classification, Classifier, Condition, InstanceKind, Op, RootCause};
use crate::features::{
    Baseline, BaselineSlot, Baselines, Feature, FeatureVector, raw_feature, window_feature_vectors,
};
use crate::join::{EdgeIdRef, JoinedWindow};

/// The instance a finding blames.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// What kind of instance.
    pub kind: InstanceKind,
    /// Its name: namespace/pod (or IP), node, "node-a<->node-b", or server:port for a service.
    pub name: String,
}

/// How bad a finding is for users of the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Degraded performance, requests still succeed.
    Minor,
    /// A noticeable share of requests fail, or latency is several times its normal.
    Major,
    /// Most requests or connections fail.
    Critical,
}

/// One feature that supported a finding, with its normal value when one is known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Feature name (the raw feature for baseline ratios, e.g. server_p99_ms).
    pub feature: String,
    /// Value in the window.
    pub value: f64,
    /// The edge's healthy baseline, for features that have one.
    pub baseline: Option<f64>,
}

/// A diagnosed problem: what, where, how sure, and why (DiagnosisReport status.findings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The root cause.
    pub root_cause: RootCause,
    /// The instance to blame.
    pub instance: Instance,
    /// 0..1: the classifier's confidence times the share of the instance's edges that agree.
    pub confidence: f64,
    /// How bad it is.
    pub severity: Severity,
    /// Features that decided it, with values and baselines (from the most confident edge).
    pub evidence: Vec<Evidence>,
    /// The classifier's decision path for that edge, as readable conditions.
    pub decision_path: Vec<String>,
    /// The edges this finding explains.
    pub edges: Vec<String>,
}

/// One classified edge of a window; it borrows the edge and its nodes from the joined window
/// when there is one, and its features and baseline (every edge of every window gets a
/// verdict: copying them cost more than classifying them).
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeVerdict<'a> {
    /// The edge.
    pub key: Cow<'a, EdgeKey>,
    /// Node of the client, when known.
    pub client_node: Option<Cow<'a, str>>,
    /// Node of the server, when known.
    pub server_node: Option<Cow<'a, str>>,
    /// Its features in the window.
    pub features: &'a FeatureVector,
    /// Its baseline before the window, if any.
    pub baseline: Option<&'a Baseline>,
    /// What the classifier said.
    pub classification: Classification,
}

impl EdgeVerdict<'_> {
    fn degraded(&self) -> bool {
        self.classification.root_cause != RootCause::Healthy
    }

    /// Instances this edge involves that could be blamed for `class`, with the role that counts.
    fn candidates(&self, class: RootCause) -> Vec<Candidate> {
        let mut out = Vec::new();
        match class.blames() {
            InstanceKind::NodePair => {
                out.push(Candidate::pod(Role::Server, &self.key.server));
                out.push(Candidate::pod(Role::Client, &self.key.client));
                // A pair only when the edge leaves its node; on one node the path is the pods' veths.
                if let (Some(a), Some(b)) = (&self.client_node, &self.server_node)
                    && a != b
                {
                    out.push(Candidate::any(InstanceKind::NodePair, pair_name(a, b)));
                }
            }
            InstanceKind::Pod => {
                out.push(Candidate::pod(Role::Server, &self.key.server));
                // Either end can be the one that stopped reading.
                if class == RootCause::ReceiverZeroWindow {
                    out.push(Candidate::pod(Role::Client, &self.key.client));
                }
            }
            InstanceKind::Node => {
                for n in self.client_node.iter().chain(self.server_node.iter()) {
                    out.push(Candidate::any(InstanceKind::Node, n.to_string()));
                }
                out.dedup();
            }
            InstanceKind::Service => out.push(Candidate::any(
                InstanceKind::Service,
                service_name(&self.key),
            )),
            InstanceKind::None => {}
        }
        out
    }

    /// Every candidate this edge involves, each once (those for which [`Self::involves`] holds).
    fn involved(&self) -> Vec<Candidate> {
        let mut out = vec![
            Candidate::pod(Role::Server, &self.key.server),
            Candidate::pod(Role::Client, &self.key.client),
            Candidate::any(InstanceKind::Service, service_name(&self.key)),
        ];
        for n in self.client_node.iter().chain(self.server_node.iter()) {
            out.push(Candidate::any(InstanceKind::Node, n.to_string()));
        }
        if let (Some(a), Some(b)) = (&self.client_node, &self.server_node) {
            if a == b {
                out.pop();
            }
            out.push(Candidate::any(InstanceKind::NodePair, pair_name(a, b)));
        }
        out
    }

    /// Whether the edge involves a candidate in the candidate's role.
    fn involves(&self, c: &Candidate) -> bool {
        let name = &c.instance.name;
        match (c.instance.kind, c.role) {
            (InstanceKind::Pod, Role::Server) => self.key.server.to_string() == *name,
            (InstanceKind::Pod, Role::Client) => self.key.client.to_string() == *name,
            (InstanceKind::Node, _) => {
                self.client_node.as_deref() == Some(name.as_str())
                    || self.server_node.as_deref() == Some(name.as_str())
            }
            (InstanceKind::NodePair, _) => match (&self.client_node, &self.server_node) {
                (Some(a), Some(b)) => pair_name(a, b) == *name,
                _ => false,
            },
            (InstanceKind::Service, _) => service_name(&self.key) == *name,
            // Pods are always voted on in a role; nothing can be blamed on "none".
            (InstanceKind::Pod, Role::Any) | (InstanceKind::None, _) => false,
        }
    }
}

/// Which of a pod's edges count when voting for it: a server is judged on the edges it serves,
/// a client on the edges it opens, so a slow server's own healthy calls to a database do not
/// dilute the vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Server,
    Client,
    Any,
}

/// An instance up for blame and the role in which its edges are counted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    instance: Instance,
    role: Role,
}

impl Candidate {
    /// A pod, judged on its edges in `role`.
    fn pod(role: Role, ep: &netdx_api::windows::Endpoint) -> Candidate {
        Candidate {
            instance: Instance {
                kind: InstanceKind::Pod,
                name: ep.to_string(),
            },
            role,
        }
    }

    /// A node, node pair or service, judged on all its edges.
    fn any(kind: InstanceKind, name: String) -> Candidate {
        Candidate {
            instance: Instance { kind, name },
            role: Role::Any,
        }
    }
}

/// Node pair name, order-independent.
fn pair_name(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}<->{b}")
    } else {
        format!("{b}<->{a}")
    }
}

fn service_name(key: &EdgeKey) -> String {
    format!("{}:{}", key.server, key.port)
}

/// What one window's diagnosis found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowDiagnosis {
    /// Problems found, one per blamed instance and class.
    pub findings: Vec<Finding>,
    /// Instances worth a look that no finding names, likeliest first.
    pub suspects: Vec<Suspect>,
}

/// Classifies every edge of a window, updates the baselines of the edges found healthy, and
/// localizes the problems.
pub fn diagnose(
    window: &JoinedWindow,
    baselines: &mut Baselines,
    classifier: &dyn Classifier,
) -> WindowDiagnosis {
    // One lookup per edge: the features read the baseline, the verdict borrows it and a
    // healthy edge's refresh goes to the same slot.
    let slots: Vec<Option<BaselineSlot>> = window
        .edges
        .iter()
        .map(|e| baselines.find(&EdgeIdRef::of(&e.key)))
        .collect();
    let known: Vec<Option<&Baseline>> = slots
        .iter()
        .map(|s| s.and_then(|s| baselines.at(s)))
        .collect();
    let features = window_feature_vectors(window, |i, _| known.get(i).copied().flatten());
    // Most windows have every pod copying both directions: no edge to check then.
    let partial = window
        .pods
        .values()
        .any(|p| p.payload != PayloadCapture::Both);
    let verdicts: Vec<EdgeVerdict<'_>> = window
        .edges
        .iter()
        .zip(&features)
        .zip(&known)
        .map(|((e, features), &baseline)| EdgeVerdict {
            key: Cow::Borrowed(&e.key),
            client_node: e.client_node.as_deref().map(Cow::Borrowed),
            server_node: e.server_node.as_deref().map(Cow::Borrowed),
            classification: if partial && window.blind_to_responses(e) {
                classifier.classify_without_payload(features)
            } else {
                classifier.classify(features)
            },
            features,
            baseline,
        })
        .collect();
    // Localized before the baselines move, which the verdicts borrow as they were before the
    // window.
    let findings = localize(&verdicts);
    let suspects = suspects(&verdicts, &findings);
    let healthy: Vec<bool> = verdicts.iter().map(|v| !v.degraded()).collect();
    drop(verdicts);
    // Only healthy windows feed the baseline, so a lasting fault does not become the new normal.
    for (((e, v), slot), _) in window
        .edges
        .iter()
        .zip(&features)
        .zip(slots)
        .zip(healthy)
        .filter(|(_, healthy)| *healthy)
    {
        baselines.refresh_at(slot, EdgeIdRef::of(&e.key), v);
    }
    baselines.end_window();
    WindowDiagnosis { findings, suspects }
}

/// Votes across classified edges and returns one finding per blamed instance and class.
pub fn localize(verdicts: &[EdgeVerdict]) -> Vec<Finding> {
    let mut findings = vote(verdicts);
    // A finding only a sliver of a leaf or of the instance's edges supports is noise: on the
    // dataset's healthy windows those are the false findings (confidence <= 0.1), while
    // injected faults score >= 0.45 (docs/model-card.md).
    findings.retain(|f| f.confidence >= MIN_CONFIDENCE);
    findings
}

/// Findings below this confidence are not reported.
pub const MIN_CONFIDENCE: f64 = 0.25;

/// Suspects listed per window at most.
pub const MAX_SUSPECTS: usize = 5;

/// An edge leans to a fault when the fault has at least this share of its vote: below it, the
/// share is the mixed leaves of healthy traffic, not a hint.
pub const MIN_LEANING_SHARE: f64 = 0.05;

/// An instance worth a look next to (or without) the findings: its edges give part of the
/// classifier's vote to a fault even where healthy won (DiagnosisReport status.suspects).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspect {
    /// The fault its edges lean to.
    pub root_cause: RootCause,
    /// The instance.
    pub instance: Instance,
    /// 0..1: that fault's share of the vote, averaged over all the instance's edges.
    pub share: f64,
    /// Its edges that lean to that fault.
    pub edges: Vec<String>,
}

/// Ranks the instances the edges involve by how much of the vote their edges give to a fault:
/// the number of edges leaning to the fault times their mean share over all of the instance's
/// edges (the greedy vote's explained-times-coverage, with shares in place of verdicts); an
/// edge leans when the fault has at least [`MIN_LEANING_SHARE`] of its vote. Instances already named by `findings` are left out; at most [`MAX_SUSPECTS`], likeliest first.
pub fn suspects(verdicts: &[EdgeVerdict], findings: &[Finding]) -> Vec<Suspect> {
    let mut leaning: BTreeMap<(Candidate, RootCause), Vec<usize>> = BTreeMap::new();
    for (i, v) in verdicts.iter().enumerate() {
        let Some((class, share)) = v.classification.likeliest_fault else {
            continue;
        };
        if share < MIN_LEANING_SHARE {
            continue;
        }
        for c in v.candidates(class) {
            leaning.entry((c, class)).or_default().push(i);
        }
    }
    if leaning.is_empty() {
        return Vec::new();
    }
    // Every instance's edge count in one pass: the operator ranks thousands of instances per
    // window, and asking each edge about each of them was quadratic.
    let mut involved: BTreeMap<Candidate, usize> = BTreeMap::new();
    for v in verdicts {
        for c in v.involved() {
            *involved.entry(c).or_default() += 1;
        }
    }
    let mut best: BTreeMap<Instance, (f64, Suspect)> = BTreeMap::new();
    for ((cand, class), lean) in leaning {
        if findings.iter().any(|f| f.instance == cand.instance) {
            continue;
        }
        let involved = involved.get(&cand).copied().unwrap_or(0).max(1);
        let total: f64 = lean
            .iter()
            .filter_map(|&i| verdicts[i].classification.likeliest_fault)
            .map(|(_, share)| share)
            .sum();
        let share = total / involved as f64;
        let score = lean.len() as f64 * share;
        let suspect = Suspect {
            root_cause: class,
            instance: cand.instance.clone(),
            share,
            edges: lean.iter().map(|&i| verdicts[i].key.to_string()).collect(),
        };
        // A pod suspected as server and as client, or of two faults: its likeliest count.
        match best.get(&cand.instance) {
            Some((s, _)) if *s >= score => {}
            _ => {
                best.insert(cand.instance, (score, suspect));
            }
        }
    }
    let mut ranked: Vec<(f64, Suspect)> = best.into_values().collect();
    ranked.sort_by(|(a, x), (b, y)| {
        b.total_cmp(a).then_with(|| {
            preference(x.root_cause, &x.instance).cmp(&preference(y.root_cause, &y.instance))
        })
    });
    ranked
        .into_iter()
        .take(MAX_SUSPECTS)
        .map(|(_, s)| s)
        .collect()
}

/// Votes every degraded edge's class onto the instances that best explain it.
fn vote(verdicts: &[EdgeVerdict]) -> Vec<Finding> {
    let mut by_class: BTreeMap<RootCause, BTreeSet<usize>> = BTreeMap::new();
    for (i, v) in verdicts.iter().enumerate().filter(|(_, v)| v.degraded()) {
        by_class
            .entry(v.classification.root_cause)
            .or_default()
            .insert(i);
    }
    let mut findings = Vec::new();
    for (class, mut remaining) in by_class {
        while !remaining.is_empty() {
            let Some((instance, explained, coverage)) = best_candidate(verdicts, class, &remaining)
            else {
                break;
            };
            for i in &explained {
                remaining.remove(i);
            }
            let f = finding(verdicts, class, instance, &explained, coverage);
            // A pod can win once as a server and once as a client: one finding, all its edges.
            match findings
                .iter_mut()
                .find(|g: &&mut Finding| g.root_cause == f.root_cause && g.instance == f.instance)
            {
                Some(g) => {
                    g.edges.extend(f.edges);
                    g.confidence = g.confidence.max(f.confidence);
                    g.severity = g.severity.max(f.severity);
                }
                None => findings.push(f),
            }
        }
    }
    findings
}

/// Picks the instance that best explains the remaining edges of a class: the number of
/// remaining edges it touches times the share of all its edges (any class) degraded this way.
fn best_candidate(
    verdicts: &[EdgeVerdict],
    class: RootCause,
    remaining: &BTreeSet<usize>,
) -> Option<(Instance, Vec<usize>, f64)> {
    let mut candidates: BTreeSet<Candidate> = BTreeSet::new();
    for &i in remaining {
        candidates.extend(verdicts[i].candidates(class));
    }
    let mut best: Option<(Candidate, Vec<usize>, f64, f64)> = None;
    for cand in candidates {
        let involved: Vec<usize> = (0..verdicts.len())
            .filter(|&i| verdicts[i].involves(&cand))
            .collect();
        let agreeing = involved
            .iter()
            .filter(|&&i| verdicts[i].classification.root_cause == class)
            .count();
        let explained: Vec<usize> = involved
            .iter()
            .copied()
            .filter(|i| remaining.contains(i))
            .collect();
        if explained.is_empty() {
            continue;
        }
        let coverage = agreeing as f64 / involved.len() as f64;
        let score = explained.len() as f64 * coverage;
        let better = match &best {
            None => true,
            Some((b, _, bscore, _)) => {
                score > *bscore + 1e-9
                    || ((score - *bscore).abs() <= 1e-9
                        && preference(class, &cand.instance) < preference(class, &b.instance))
            }
        };
        if better {
            best = Some((cand, explained, score, coverage));
        }
    }
    best.map(|(c, e, _, cov)| (c.instance, e, cov))
}

/// Tie-break order: the class's own instance kind first, then the more specific kinds.
fn preference(class: RootCause, i: &Instance) -> (u8, u8) {
    let specificity = match i.kind {
        InstanceKind::Pod => 0,
        InstanceKind::Service => 1,
        InstanceKind::NodePair => 2,
        InstanceKind::Node => 3,
        InstanceKind::None => 4,
    };
    (u8::from(i.kind != class.blames()), specificity)
}

fn finding(
    verdicts: &[EdgeVerdict],
    class: RootCause,
    instance: Instance,
    explained: &[usize],
    coverage: f64,
) -> Finding {
    let edges: Vec<&EdgeVerdict> = explained.iter().map(|&i| &verdicts[i]).collect();
    let mean_conf = edges
        .iter()
        .map(|v| v.classification.confidence)
        .sum::<f64>()
        / edges.len().max(1) as f64;
    // The most confident edge speaks for the finding; ties go to the first edge for stable output.
    let rep = edges.iter().copied().reduce(|a, b| {
        if b.classification.confidence > a.classification.confidence {
            b
        } else {
            a
        }
    });
    Finding {
        root_cause: class,
        instance,
        confidence: (mean_conf * coverage).clamp(0.0, 1.0),
        severity: severity(&edges),
        evidence: rep.map(evidence).unwrap_or_default(),
        decision_path: rep
            .map(|r| {
                r.classification
                    .path
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        edges: edges.iter().map(|v| v.key.to_string()).collect(),
    }
}

/// Flags say which inputs exist; they explain nothing about the fault.
const FLAGS: [Feature; 4] = [
    Feature::HasClientView,
    Feature::HasServerView,
    Feature::HasBaseline,
    Feature::IsDns,
];

/// The features the decision path tested, as evidence: first those it required to be high
/// (what points at the class), then those it required to be low (what rules others out), each
/// group leaf first, since a long path opens with tests that only exclude rare classes
/// (`server_throttled_periods < 0.5` is no evidence of a refused connection).
fn evidence(v: &EdgeVerdict) -> Vec<Evidence> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let path = &v.classification.path;
    let (high, low): (Vec<&Condition>, Vec<&Condition>) =
        path.iter().rev().partition(|c| c.op == Op::AtLeast);
    for cond in high.into_iter().chain(low) {
        if FLAGS.contains(&cond.feature) {
            continue;
        }
        let raw = raw_feature(cond.feature);
        if !seen.insert(raw) {
            continue;
        }
        out.push(Evidence {
            feature: raw.name().to_string(),
            value: v.features[raw],
            baseline: v.baseline.and_then(|b| b.value(raw)),
        });
    }
    out
}

/// Severity from the worst edge: the share of failing requests or connects, then latency.
fn severity(edges: &[&EdgeVerdict]) -> Severity {
    let failing = |v: &FeatureVector| {
        let connect = v[Feature::ConnectRefusedRatio]
            + v[Feature::ConnectTimeoutRatio]
            + v[Feature::ConnectOtherRatio];
        [
            connect,
            v[Feature::NoResponseRatio],
            v[Feature::ResetRatio],
            v[Feature::L7ErrorRatio],
        ]
        .into_iter()
        .fold(0.0, f64::max)
    };
    let fail = edges
        .iter()
        .map(|v| failing(v.features))
        .fold(0.0, f64::max);
    let slow = edges
        .iter()
        .map(|v| v.features[Feature::ClientP99Ratio].max(v.features[Feature::ServerP99Ratio]))
        .fold(0.0, f64::max);
    if fail >= 0.5 {
        Severity::Critical
    } else if fail >= 0.05 || slow >= 3.0 {
        Severity::Major
    } else {
        Severity::Minor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::{Condition, Op};
    use crate::features::FEATURE_COUNT;
    use crate::join::tests::{key, pod};
    use netdx_api::windows::Endpoint;

    /// All features 0.
    static NO_FEATURES: FeatureVector = FeatureVector([0.0; FEATURE_COUNT]);

    /// An edge client -> server with nodes and a classification.
    fn verdict(
        client: &str,
        cnode: &str,
        server: &str,
        snode: &str,
        class: RootCause,
    ) -> EdgeVerdict<'static> {
        let ip = |name: &str| format!("10.0.0.{}", name.bytes().map(u32::from).sum::<u32>() % 250);
        EdgeVerdict {
            key: Cow::Owned(key((client, &ip(client)), (server, &ip(server)), true)),
            client_node: Some(Cow::Owned(cnode.into())),
            server_node: Some(Cow::Owned(snode.into())),
            features: &NO_FEATURES,
            baseline: None,
            classification: Classification::plain(class, 0.9, Vec::new()),
        }
    }

    fn names(f: &[Finding]) -> Vec<(RootCause, InstanceKind, String)> {
        f.iter()
            .map(|f| (f.root_cause, f.instance.kind, f.instance.name.clone()))
            .collect()
    }

    use RootCause as C;

    /// An edge the classifier found healthy that still gives `share` of its vote to `fault`.
    fn leaning(
        client: &str,
        server: &str,
        fault: Option<(RootCause, f64)>,
    ) -> EdgeVerdict<'static> {
        let mut v = verdict(client, "n1", server, "n2", C::Healthy);
        v.classification.likeliest_fault = fault;
        v
    }

    #[test]
    fn suspects_rank_instances_whose_edges_lean_to_a_fault() {
        let v = vec![
            leaning("c1", "s", Some((C::ServerAppSlow, 0.4))),
            leaning("c2", "s", Some((C::ServerAppSlow, 0.3))),
            leaning("c1", "t", Some((C::ServerAppSlow, 0.1))),
            leaning("c3", "t", None),
            leaning("c3", "u", None),
        ];
        assert!(localize(&v).is_empty(), "healthy won everywhere");
        let s = suspects(&v, &[]);
        let ranked: Vec<(&str, RootCause, usize)> = s
            .iter()
            .map(|s| (s.instance.name.as_str(), s.root_cause, s.edges.len()))
            .collect();
        // s: both edges lean (2 x 0.35); t: one of two, weakly (1 x 0.05); u: nothing.
        assert_eq!(
            ranked,
            [
                ("default/s", C::ServerAppSlow, 2),
                ("default/t", C::ServerAppSlow, 1)
            ]
        );
        assert!((s[0].share - 0.35).abs() < 1e-9);
        assert!(
            (s[1].share - 0.05).abs() < 1e-9,
            "diluted by t's healthy edge"
        );
    }

    #[test]
    fn an_edge_lists_exactly_the_candidates_it_involves() {
        let v = vec![
            verdict("c1", "n1", "s", "n2", C::Healthy),
            verdict("c2", "n2", "s", "n2", C::Healthy),
            verdict("s", "n2", "db", "n3", C::Healthy),
        ];
        let all: BTreeSet<Candidate> = v.iter().flat_map(|e| e.involved()).collect();
        for e in &v {
            let listed = e.involved();
            assert_eq!(
                listed.len(),
                listed.iter().collect::<BTreeSet<_>>().len(),
                "no duplicates"
            );
            for c in &all {
                assert_eq!(e.involves(c), listed.contains(c), "{c:?} for {}", e.key);
            }
        }
    }

    #[test]
    fn suspects_leave_out_what_findings_name_and_stop_at_the_limit() {
        let mut v = vec![
            verdict("c1", "n1", "s", "n2", C::ServerAppSlow),
            verdict("c2", "n1", "s", "n2", C::ServerAppSlow),
        ];
        for i in 0..MAX_SUSPECTS + 2 {
            v.push(leaning("c9", &format!("x{i}"), Some((C::ServerReset, 0.2))));
        }
        let f = localize(&v);
        assert_eq!(f.len(), 1);
        let s = suspects(&v, &f);
        assert_eq!(s.len(), MAX_SUSPECTS);
        assert!(s.iter().all(|s| s.instance != f[0].instance));
        assert!(s.iter().all(|s| s.root_cause == C::ServerReset));
    }

    #[test]
    fn all_clients_of_a_server_degraded_blame_the_server() {
        let v = vec![
            verdict("c1", "n1", "s", "n2", C::ServerAppSlow),
            verdict("c2", "n3", "s", "n2", C::ServerAppSlow),
            verdict("c3", "n1", "s", "n2", C::ServerAppSlow),
            verdict("c1", "n1", "other", "n3", C::Healthy),
        ];
        let f = localize(&v);
        assert_eq!(
            names(&f),
            [(C::ServerAppSlow, InstanceKind::Pod, "default/s".to_string())]
        );
        assert_eq!(f[0].edges.len(), 3);
        assert!(
            (f[0].confidence - 0.9).abs() < 1e-9,
            "all of s's edges agree"
        );
    }

    #[test]
    fn a_slow_servers_own_healthy_calls_do_not_dilute_the_vote() {
        let v = vec![
            verdict("c1", "n1", "s", "n2", C::ServerAppSlow),
            verdict("c2", "n1", "s", "n2", C::ServerAppSlow),
            // s calls a database and that edge is fine.
            verdict("s", "n2", "db", "n3", C::Healthy),
            verdict("s", "n2", "cache", "n3", C::Healthy),
        ];
        let f = localize(&v);
        assert_eq!(
            names(&f),
            [(C::ServerAppSlow, InstanceKind::Pod, "default/s".to_string())]
        );
        assert!((f[0].confidence - 0.9).abs() < 1e-9, "{}", f[0].confidence);
    }

    #[test]
    fn one_client_towards_all_its_servers_blames_the_client() {
        // Loss at c1's veth: every edge of c1 is lossy, other clients of the same servers are fine.
        let v = vec![
            verdict("c1", "n1", "s1", "n2", C::PathLoss),
            verdict("c1", "n1", "s2", "n3", C::PathLoss),
            verdict("c1", "n1", "s3", "n2", C::PathLoss),
            verdict("c2", "n1", "s1", "n2", C::Healthy),
            verdict("c3", "n3", "s2", "n3", C::Healthy),
        ];
        assert_eq!(
            names(&localize(&v)),
            [(C::PathLoss, InstanceKind::Pod, "default/c1".to_string())]
        );
    }

    #[test]
    fn edges_crossing_one_node_pair_blame_the_link() {
        let v = vec![
            verdict("c1", "n1", "s1", "n2", C::PathDelay),
            verdict("c2", "n1", "s2", "n2", C::PathDelay),
            verdict("c3", "n3", "s1", "n2", C::Healthy),
            verdict("c4", "n3", "s2", "n2", C::Healthy),
            verdict("c1", "n1", "s3", "n3", C::Healthy),
        ];
        let f = localize(&v);
        assert_eq!(
            names(&f),
            [(C::PathDelay, InstanceKind::NodePair, "n1<->n2".to_string())]
        );
        assert_eq!(f[0].edges.len(), 2);
    }

    #[test]
    fn a_single_edge_takes_the_class_default_kind() {
        let v = vec![verdict("c1", "n1", "s1", "n2", C::PathLoss)];
        assert_eq!(names(&localize(&v))[0].1, InstanceKind::NodePair);
        let v = vec![verdict("c1", "n1", "s1", "n2", C::ConnectionRefused)];
        assert_eq!(
            names(&localize(&v)),
            [(
                C::ConnectionRefused,
                InstanceKind::Pod,
                "default/s1".to_string()
            )]
        );
    }

    #[test]
    fn node_wide_class_blames_the_node() {
        let v = vec![
            verdict("c1", "n1", "s1", "n2", C::ConntrackFull),
            verdict("c2", "n3", "s2", "n2", C::ConntrackFull),
            verdict("c3", "n2", "s3", "n3", C::ConntrackFull),
            verdict("c4", "n1", "s4", "n3", C::Healthy),
        ];
        let f = localize(&v);
        assert_eq!(
            names(&f),
            [(C::ConntrackFull, InstanceKind::Node, "n2".to_string())]
        );
        assert_eq!(f[0].edges.len(), 3);
    }

    #[test]
    fn independent_problems_give_separate_findings_and_healthy_gives_none() {
        let v = vec![
            verdict("c1", "n1", "s1", "n2", C::ServerAppSlow),
            verdict("c2", "n3", "s1", "n2", C::ServerAppSlow),
            verdict("c1", "n1", "s2", "n3", C::ServerReset),
            verdict("c2", "n3", "s2", "n3", C::ServerReset),
        ];
        let f = localize(&v);
        assert_eq!(
            names(&f),
            [
                (
                    C::ServerAppSlow,
                    InstanceKind::Pod,
                    "default/s1".to_string()
                ),
                (C::ServerReset, InstanceKind::Pod, "default/s2".to_string())
            ]
        );
        let healthy = vec![verdict("c1", "n1", "s1", "n2", C::Healthy)];
        assert!(localize(&healthy).is_empty());
    }

    #[test]
    fn partial_agreement_lowers_confidence() {
        // One of three clients sees s1 slow: still named, with a third of the confidence.
        let mut v = vec![
            verdict("c1", "n1", "s1", "n2", C::ServerAppSlow),
            verdict("c2", "n1", "s1", "n2", C::Healthy),
            verdict("c3", "n1", "s1", "n2", C::Healthy),
        ];
        let f = localize(&v);
        assert_eq!(f.len(), 1);
        assert!(
            (f[0].confidence - 0.9 / 3.0).abs() < 1e-9,
            "{}",
            f[0].confidence
        );
        // One of four falls under the reporting floor: noise, not a finding.
        v.push(verdict("c4", "n1", "s1", "n2", C::Healthy));
        const { assert!(0.9 / 4.0 < MIN_CONFIDENCE) };
        assert!(localize(&v).is_empty());
    }

    #[test]
    fn a_pod_blamed_in_both_roles_gets_one_finding() {
        // p stops reading on the edge it serves and on the edge it opens.
        let v = vec![
            verdict("x", "n1", "p", "n2", C::ReceiverZeroWindow),
            verdict("p", "n2", "y", "n3", C::ReceiverZeroWindow),
        ];
        let f = localize(&v);
        assert_eq!(
            names(&f),
            [(
                C::ReceiverZeroWindow,
                InstanceKind::Pod,
                "default/p".to_string()
            )]
        );
        assert_eq!(f[0].edges.len(), 2);
    }

    #[test]
    fn dns_failure_names_the_service() {
        let mut v = verdict("c1", "n1", "coredns", "n2", C::DnsFailure);
        v.key.to_mut().port = 53;
        let f = localize(&[v]);
        assert_eq!(
            names(&f),
            [(
                C::DnsFailure,
                InstanceKind::Service,
                "default/coredns:53".to_string()
            )]
        );
    }

    #[test]
    fn evidence_leads_with_what_the_path_required_to_be_high() {
        let mut v = verdict("c1", "n1", "s1", "n2", C::ConnectionRefused);
        let mut features = FeatureVector::default();
        features.set(Feature::ConnectRefusedRatio, 0.9);
        v.features = &features;
        let cond = |feature, op, threshold| Condition {
            feature,
            op,
            threshold,
        };
        v.classification.path = vec![
            cond(Feature::ServerThrottledPeriods, Op::Below, 0.5),
            cond(Feature::ConnectRefusedRatio, Op::AtLeast, 0.125),
            cond(Feature::ServerFullAtDrops, Op::Below, 0.6),
        ];
        let names: Vec<String> = localize(&[v])[0]
            .evidence
            .iter()
            .map(|e| e.feature.clone())
            .collect();
        assert_eq!(
            names,
            [
                "connect_refused_ratio",
                "server_full_at_drops",
                "server_throttled_periods"
            ]
        );
    }

    #[test]
    fn finding_carries_evidence_path_severity_and_serialises_camel_case() {
        let mut v = verdict("c1", "n1", "s1", "n2", C::ServerAppSlow);
        let mut features = FeatureVector::default();
        features.set(Feature::HasServerView, 1.0);
        features.set(Feature::ServerP99Ms, 40.0);
        features.set(Feature::ServerP99Ratio, 8.0);
        features.set(Feature::GapShare, 0.05);
        v.features = &features;
        let mut b = Baseline::default();
        let mut normal = FeatureVector::default();
        normal.set(Feature::HasServerView, 1.0);
        normal.set(Feature::ServerP99Ms, 5.0);
        for _ in 0..3 {
            b.update(&normal);
        }
        v.baseline = Some(&b);
        v.classification.path = vec![
            Condition {
                feature: Feature::HasServerView,
                op: Op::AtLeast,
                threshold: 0.5,
            },
            Condition {
                feature: Feature::ServerP99Ratio,
                op: Op::AtLeast,
                threshold: 3.2,
            },
            Condition {
                feature: Feature::GapShare,
                op: Op::Below,
                threshold: 0.3,
            },
        ];
        let f = &localize(&[v])[0];
        assert_eq!(
            f.decision_path,
            [
                "has_server_view >= 0.5",
                "server_p99_ratio >= 3.2",
                "gap_share < 0.3"
            ]
        );
        assert_eq!(
            f.evidence,
            [
                Evidence {
                    feature: "server_p99_ms".into(),
                    value: 40.0,
                    baseline: Some(5.0)
                },
                Evidence {
                    feature: "gap_share".into(),
                    value: 0.05,
                    baseline: None
                },
            ]
        );
        assert_eq!(f.severity, Severity::Major, "8x latency");
        let json = serde_json::to_value(f).unwrap();
        assert_eq!(json["rootCause"], "server_app_slow");
        assert_eq!(json["instance"]["kind"], "pod");
        assert!(json["decisionPath"].is_array());
    }

    #[test]
    fn severity_follows_failures() {
        let v = verdict("c1", "n1", "s1", "n2", C::ConnectionRefused);
        for (refused, severity) in [
            (1.0, Severity::Critical),
            (0.1, Severity::Major),
            (0.0, Severity::Minor),
        ] {
            let mut features = FeatureVector::default();
            features.set(Feature::ConnectRefusedRatio, refused);
            let v = EdgeVerdict {
                features: &features,
                ..v.clone()
            };
            assert_eq!(localize(&[v])[0].severity, severity);
        }
    }

    #[test]
    fn diagnose_classifies_edges_blind_to_responses_without_payload_features() {
        use std::cell::Cell;

        use netdx_api::windows::{EdgeWindow, PodWindow};

        use crate::join::tests::{key, report, side};
        use crate::join::{JoinedWindow, join};

        /// Counts which of its two models each edge was given to.
        #[derive(Default)]
        struct Counting {
            with: Cell<usize>,
            without: Cell<usize>,
        }
        impl Classifier for Counting {
            fn classify(&self, _: &FeatureVector) -> Classification {
                self.with.set(self.with.get() + 1);
                Classification::plain(C::Healthy, 1.0, Vec::new())
            }
            fn classify_without_payload(&self, _: &FeatureVector) -> Classification {
                self.without.set(self.without.get() + 1);
                Classification::plain(C::Healthy, 1.0, Vec::new())
            }
            fn version(&self) -> String {
                "counting".into()
            }
        }
        let window = |a: PayloadCapture, b: PayloadCapture| -> JoinedWindow {
            let edge = |client: (&str, &str)| EdgeWindow {
                key: key(client, ("s", "10.0.2.1"), true),
                client: Some(side(10, &[1.0; 10])),
                server: None,
                l4: Default::default(),
            };
            let pod_window = |name: &str, payload| PodWindow {
                pod: pod(name),
                payload,
                ..PodWindow::default()
            };
            join(&[report(
                "n1",
                vec![edge(("a", "10.0.1.1")), edge(("b", "10.0.1.2"))],
                vec![pod_window("a", a), pod_window("b", b)],
            )])
        };
        let cases = [
            (PayloadCapture::Both, PayloadCapture::Both, (2, 0)),
            (PayloadCapture::Off, PayloadCapture::Ingress, (1, 1)),
            (PayloadCapture::Egress, PayloadCapture::Off, (0, 2)),
        ];
        for (a, b, (with, without)) in cases {
            let c = Counting::default();
            diagnose(&window(a, b), &mut Baselines::default(), &c);
            assert_eq!(
                (c.with.get(), c.without.get()),
                (with, without),
                "clients {a:?} and {b:?}"
            );
        }
    }

    #[test]
    fn diagnose_learns_baseline_then_flags_the_slow_server() {
        use crate::join::tests::side;
        use crate::join::{JoinedEdge, JoinedWindow};
        use crate::rules::RuleTree;
        let edge = |client: &str, server_ms: f64| JoinedEdge {
            key: EdgeKey {
                client: Endpoint {
                    pod: Some(pod(client)),
                    ip: format!("10.0.1.{}", client.len()).into(),
                },
                server: Endpoint {
                    pod: Some(pod("s")),
                    ip: "10.0.2.1".into(),
                },
                port: 80,
                proto: "tcp".into(),
            },
            client: Some(side(100, &[server_ms + 0.5; 100])),
            server: Some(side(100, &[server_ms; 100])),
            l4: Default::default(),
            client_node: Some("n1".into()),
            server_node: Some("n2".into()),
        };
        let window = |ms: f64| JoinedWindow {
            window_secs: 10.0,
            edges: vec![edge("a", ms), edge("bb", ms)],
            ..Default::default()
        };
        let rules = RuleTree::new();
        let mut baselines = Baselines::default();
        for _ in 0..3 {
            let d = diagnose(&window(4.0), &mut baselines, &rules);
            assert_eq!(
                d,
                WindowDiagnosis::default(),
                "nothing found, nothing suspected"
            );
        }
        assert_eq!(baselines.len(), 2);
        let f = diagnose(&window(40.0), &mut baselines, &rules).findings;
        assert_eq!(
            names(&f),
            [(C::ServerAppSlow, InstanceKind::Pod, "default/s".to_string())]
        );
        // The rules decide on the client's tail ratio, so that is the evidence, against its baseline.
        let p99 = f[0]
            .evidence
            .iter()
            .find(|e| e.feature == "client_p99_ms")
            .expect("latency evidence");
        assert!(
            p99.value > 35.0 && p99.baseline.is_some_and(|b| (b - 4.5).abs() < 0.2),
            "{p99:?}"
        );
        // The slow window did not move the baseline.
        let w = window(4.0);
        let b = baselines
            .get(&EdgeIdRef::of(&w.edges[0].key))
            .and_then(|b| b.value(Feature::ServerP99Ms))
            .unwrap();
        assert!((b - 4.0).abs() < 0.2);
    }
}
