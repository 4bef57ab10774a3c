//! The model card's numbers: grouped cross-validation, unseen-workload and unseen-intensity
//! hold-outs, localization and detection through the real voting, false findings on healthy
//! windows, and the rule baseline scored on exactly the same rows.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use netdx_api::{
    targets::PodRef,
    windows::{EdgeKey, Endpoint},
};
use serde::{Deserialize, Serialize};

use crate::{
    Result,
    classes::{Classification, Classifier, InstanceKind, RootCause},
    confirm::{Confirmation, DEFAULT_CONFIRM_WINDOWS},
    dataset::{Evaluation, LabeledRow, evaluate},
    localize::{EdgeVerdict, Finding, Instance, Suspect, localize, suspects},
    model::{PAYLOAD_FEATURES, TrainParams, TreeModel, TreeNode, train},
    rules::RuleTree,
};

/// Folds of the grouped cross-validation (groups = scenarios).
pub const FOLDS: usize = 5;

/// Everything the model card reports (also written as docs/model-card.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelCard {
    /// Classes present in the dataset.
    pub classes: Vec<String>,
    /// Macro-F1 over held-out scenarios (grouped 5-fold cross-validation).
    pub heldout_macro_f1: f64,
    /// Recall per class on held-out scenarios.
    pub per_class_recall: BTreeMap<String, f64>,
    /// Precision per class on held-out scenarios.
    pub per_class_precision: BTreeMap<String, f64>,
    /// Macro-F1 training on all workloads but one and testing on it, pooled, over the classes
    /// at least two workloads show (a class only one workload shows cannot be learnt from the
    /// others by construction; see `single_workload_classes`).
    pub unseen_workload_macro_f1: f64,
    /// The same over every row, single-workload classes included (they score 0 recall).
    pub unseen_workload_macro_f1_all_classes: f64,
    /// Classes only one workload of the dataset shows.
    pub single_workload_classes: Vec<String>,
    /// Macro-F1 training on one intensity of every fault and testing on the other, pooled.
    pub unseen_intensity_macro_f1: f64,
    /// Faulty windows whose top finding names the injected instance.
    pub localization_top1: f64,
    /// Faulty windows with the injected instance among the first three instances named: the
    /// findings, surest first, then the suspects ([`crate::localize::suspects`]).
    pub localization_top3: f64,
    /// The same counting findings only (the top-3 of model cards before suspects).
    #[serde(default)]
    pub localization_top3_findings_only: f64,
    /// Windows a finding must repeat in before it is reported, as the operator and the demo
    /// open incidents ([`crate::confirm`]); the two numbers below count reported findings.
    pub confirm_windows: u32,
    /// Healthy windows with at least one reported (confirmed) finding.
    pub healthy_false_finding_rate: f64,
    /// Median number of windows from injection until the right class and instance are
    /// reported (the onset window counts as 1).
    pub median_windows_to_detection: f64,
    /// Healthy windows with at least one finding of that window alone (before confirmation).
    pub healthy_false_finding_rate_single_window: f64,
    /// Median windows to detection counting findings of single windows.
    pub median_windows_to_detection_single_window: f64,
    /// Fault scenarios never detected within their windows.
    pub undetected_scenarios: Vec<String>,
    /// Depth of the final model's deepest tree.
    pub tree_depth: usize,
    /// Leaves of the final model, over all its trees.
    pub tree_leaves: usize,
    /// Trees in the model (bagged when more than one).
    pub trees: usize,
    /// Share of the features each bagged tree may split on.
    pub feature_share: f32,
    /// Share of a tree's features each of its splits searches (drawn per node).
    pub split_feature_share: f32,
    /// Whether split thresholds were placed on a log scale.
    pub log_thresholds: bool,
    /// Macro-F1 of the hand-written rules on the same held-out rows.
    pub baseline_macro_f1: f64,
    /// Localization top-1 of the rules.
    pub baseline_localization_top1: f64,
    /// Healthy false finding rate of the rules.
    pub baseline_healthy_false_finding_rate: f64,
    /// Edge-windows (scenario, window, edge) in the dataset.
    pub dataset_rows: usize,
    /// Windows (scenario, window) in the dataset.
    pub dataset_windows: usize,
    /// Scenarios in the dataset.
    pub dataset_scenarios: usize,
    /// Held-out confusion matrix (rows: truth, columns: prediction) over `classes`.
    pub confusion: Vec<Vec<u64>>,
    /// The model for edges without payload capture ([`TreeModel::without_payload`]), scored
    /// on the same held-out rows.
    #[serde(default)]
    pub without_payload: WithoutPayloadCard,
}

/// How the model trained without [`crate::model::PAYLOAD_FEATURES`] scores.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WithoutPayloadCard {
    /// Features it may not split on besides the main model's exclusions.
    pub excluded: Vec<String>,
    /// Macro-F1 over held-out scenarios (the same folds as the main model's).
    pub heldout_macro_f1: f64,
    /// Recall per class on held-out scenarios.
    pub per_class_recall: BTreeMap<String, f64>,
    /// Faulty windows whose top finding names the injected instance.
    pub localization_top1: f64,
}

/// Depth of the deepest tree (root alone = 0).
pub fn depth(m: &TreeModel) -> usize {
    fn d(nodes: &[TreeNode], i: usize) -> usize {
        match nodes.get(i) {
            Some(TreeNode::Split { left, right, .. }) => 1 + d(nodes, *left).max(d(nodes, *right)),
            _ => 0,
        }
    }
    m.trees.iter().map(|t| d(t, 0)).max().unwrap_or(0)
}

/// Parses an edge as written in dataset rows ("ns/a -> ns/b:port/proto", ends may be IPs).
pub fn parse_edge(s: &str) -> Option<EdgeKey> {
    let (client, rest) = s.split_once(" -> ")?;
    let (rest, proto) = rest.rsplit_once('/')?;
    let (server, port) = rest.rsplit_once(':')?;
    let ep = |t: &str| Endpoint {
        pod: t.split_once('/').map(|(ns, n)| PodRef {
            namespace: ns.into(),
            name: n.into(),
        }),
        ip: if t.contains('/') {
            Default::default()
        } else {
            t.into()
        },
    };
    Some(EdgeKey {
        client: ep(client),
        server: ep(server),
        port: port.parse().ok()?,
        proto: proto.into(),
    })
}

/// The instance a scenario's target names ("pod:ns/name", "link:a/b", "node:n",
/// "service:ns/name:port").
pub fn target_instance(target: &str) -> Option<Instance> {
    let (kind, name) = target.split_once(':')?;
    Some(match kind {
        "service" => Instance {
            kind: InstanceKind::Service,
            name: name.into(),
        },
        "pod" => Instance {
            kind: InstanceKind::Pod,
            name: name.into(),
        },
        "node" => Instance {
            kind: InstanceKind::Node,
            name: name.into(),
        },
        "link" => {
            let (a, b) = name.split_once('/')?;
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            Instance {
                kind: InstanceKind::NodePair,
                name: format!("{a}<->{b}"),
            }
        }
        _ => return None,
    })
}

/// Rows of one window of one scenario with each row's classification.
struct Window<'a> {
    rows: Vec<(&'a LabeledRow, Classification)>,
}

impl Window<'_> {
    /// The window's findings, surest first, and its suspects.
    fn diagnosis(&self) -> (Vec<Finding>, Vec<Suspect>) {
        let rows: Vec<_> = self
            .rows
            .iter()
            .filter_map(|(r, c)| Some((r, c, parse_edge(&r.edge)?, r.vector().ok()?)))
            .collect();
        let verdicts: Vec<EdgeVerdict> = rows
            .iter()
            .map(|(r, c, key, features)| EdgeVerdict {
                key: Cow::Borrowed(key),
                client_node: Some(Cow::Borrowed(r.client_node.as_str())).filter(|s| !s.is_empty()),
                server_node: Some(Cow::Borrowed(r.server_node.as_str())).filter(|s| !s.is_empty()),
                features,
                baseline: None,
                classification: (*c).clone(),
            })
            .collect();
        let mut f = localize(&verdicts);
        f.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        let s = suspects(&verdicts, &f);
        (f, s)
    }

    /// The injected class and instance, when the window is faulty.
    fn truth(&self) -> Option<(RootCause, Instance)> {
        self.rows
            .iter()
            .find(|(r, _)| r.fault != RootCause::Healthy)
            .and_then(|(r, _)| Some((r.fault, target_instance(&r.target)?)))
    }

    fn transitional(&self) -> bool {
        self.rows.iter().any(|(r, _)| r.transitional)
    }
}

/// Groups classified rows into windows, ordered by scenario then window index.
fn windows<'a>(rows: &'a [LabeledRow], preds: &[Classification]) -> Vec<(String, u32, Window<'a>)> {
    let mut by: BTreeMap<(String, u32), Window<'a>> = BTreeMap::new();
    for (r, c) in rows.iter().zip(preds) {
        by.entry((r.scenario_id.clone(), r.window))
            .or_insert(Window { rows: Vec::new() })
            .rows
            .push((r, c.clone()));
    }
    by.into_iter().map(|((s, w), win)| (s, w, win)).collect()
}

/// Localization and detection scores of a set of per-row predictions.
struct Localization {
    top1: f64,
    top3: f64,
    top3_findings: f64,
    /// Detection scores counting every window's findings.
    single: Detection,
    /// Detection scores counting findings confirmed over [`DEFAULT_CONFIRM_WINDOWS`].
    confirmed: Detection,
}

/// False findings and time to detection under one reporting rule.
struct Detection {
    healthy_false: f64,
    median_detection: f64,
    undetected: Vec<String>,
}

/// Tallies of one reporting rule while windows are walked.
#[derive(Default)]
struct DetectionTally {
    healthy: usize,
    false_findings: usize,
    detection: BTreeMap<String, Option<u32>>,
}

/// A window's verdict as the tallies see it: truth, windows since onset, whether it is scored.
struct Scored<'a> {
    scenario: &'a str,
    truth: Option<&'a (RootCause, Instance)>,
    since_onset: u32,
    counted: bool,
}

impl DetectionTally {
    /// One window's reported findings against the truth.
    fn add(&mut self, w: &Scored<'_>, findings: &[(RootCause, &Instance)]) {
        match w.truth {
            Some((class, inst)) => {
                let hit = findings.iter().any(|(c, i)| c == class && *i == inst);
                let slot = self.detection.entry(w.scenario.to_string()).or_insert(None);
                if hit && slot.is_none() {
                    *slot = Some(w.since_onset);
                }
            }
            None if w.counted => {
                self.healthy += 1;
                if !findings.is_empty() {
                    self.false_findings += 1;
                }
            }
            None => {}
        }
    }

    fn finish(self) -> Detection {
        let mut times: Vec<u32> = self.detection.values().filter_map(|d| *d).collect();
        times.sort_unstable();
        Detection {
            healthy_false: ratio(self.false_findings, self.healthy),
            median_detection: times
                .get(times.len() / 2)
                .map_or(f64::NAN, |t| f64::from(*t)),
            undetected: self
                .detection
                .into_iter()
                .filter(|(_, d)| d.is_none())
                .map(|(s, _)| s)
                .collect(),
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b > 0 { a as f64 / b as f64 } else { 0.0 }
}

fn localization(rows: &[LabeledRow], preds: &[Classification]) -> Localization {
    let (mut faulty, mut top1, mut top3, mut top3_findings) = (0usize, 0usize, 0usize, 0usize);
    let (mut single, mut confirmed) = (DetectionTally::default(), DetectionTally::default());
    let mut onset: BTreeMap<String, u32> = BTreeMap::new();
    let mut confirm = Confirmation::new(DEFAULT_CONFIRM_WINDOWS);
    let mut prev: Option<(String, u32)> = None;
    for (scenario, w, win) in windows(rows, preds) {
        // Streaks run over consecutive windows of one scenario.
        if prev
            .as_ref()
            .is_none_or(|(s, p)| *s != scenario || p + 1 != w)
        {
            confirm = Confirmation::new(DEFAULT_CONFIRM_WINDOWS);
        }
        prev = Some((scenario.clone(), w));
        let (findings, suspects) = win.diagnosis();
        let keys: Vec<(RootCause, &Instance)> = findings
            .iter()
            .map(|f| (f.root_cause, &f.instance))
            .collect();
        let verdicts = confirm.observe(keys.iter().map(|(c, i)| (*c, (*i).clone())), u64::from(w));
        let reported: Vec<(RootCause, &Instance)> = verdicts
            .iter()
            .filter_map(|((c, i), _, ok)| ok.then_some((*c, i)))
            .collect();
        let truth = win.truth();
        let scored = Scored {
            scenario: &scenario,
            truth: truth.as_ref(),
            since_onset: truth
                .as_ref()
                .map_or(0, |_| w - *onset.entry(scenario.clone()).or_insert(w) + 1),
            counted: !win.transitional(),
        };
        single.add(&scored, &keys);
        confirmed.add(&scored, &reported);
        if let (Some((_, inst)), true) = (&truth, scored.counted) {
            faulty += 1;
            if findings.first().is_some_and(|f| f.instance == *inst) {
                top1 += 1;
            }
            if findings.iter().take(3).any(|f| f.instance == *inst) {
                top3_findings += 1;
            }
            // The first three instances a reader sees: the findings, then the suspects.
            let ranked = findings
                .iter()
                .map(|f| &f.instance)
                .chain(suspects.iter().map(|s| &s.instance));
            if ranked.take(3).any(|i| i == inst) {
                top3 += 1;
            }
        }
    }
    Localization {
        top1: ratio(top1, faulty),
        top3: ratio(top3, faulty),
        top3_findings: ratio(top3_findings, faulty),
        single: single.finish(),
        confirmed: confirmed.finish(),
    }
}

/// Trains on `train` and classifies `test`.
fn fit_predict(
    train_rows: &[LabeledRow],
    test: &[&LabeledRow],
    params: &TrainParams,
) -> Result<Vec<Classification>> {
    let m = train(&crate::dataset::training_rows(train_rows)?, params, "cv")?.forest()?;
    test.iter().map(|r| Ok(m.classify(&r.vector()?))).collect()
}

fn scores(rows: &[&LabeledRow], preds: &[Classification]) -> Evaluation {
    let pairs: Vec<(RootCause, RootCause)> = rows
        .iter()
        .zip(preds)
        .filter(|(r, _)| !r.transitional)
        .map(|(r, p)| (r.fault, p.root_cause))
        .collect();
    // Same accounting as dataset::evaluate_rows: the report says how many onset rows were left out.
    let mut e = evaluate(&pairs);
    e.excluded_transitional = rows.iter().filter(|r| r.transitional).count();
    e
}

/// Fault classes that only one workload of the dataset shows.
fn single_workload_classes(rows: &[LabeledRow]) -> BTreeSet<RootCause> {
    let mut workloads: BTreeMap<RootCause, BTreeSet<&str>> = BTreeMap::new();
    for r in rows {
        workloads.entry(r.fault).or_default().insert(&r.workload);
    }
    workloads
        .into_iter()
        .filter(|(_, w)| w.len() < 2)
        .map(|(c, _)| c)
        .collect()
}

/// Out-of-group predictions for every row: each group is predicted by a model that never
/// saw it. `group` maps a row to its fold.
fn out_of_group(
    rows: &[LabeledRow],
    params: &TrainParams,
    group: impl Fn(&LabeledRow) -> usize,
    groups: usize,
) -> Result<Vec<Classification>> {
    let mut preds: Vec<Option<Classification>> = vec![None; rows.len()];
    for g in 0..groups {
        let train_rows: Vec<LabeledRow> = rows.iter().filter(|r| group(r) != g).cloned().collect();
        let test_idx: Vec<usize> = (0..rows.len()).filter(|&i| group(&rows[i]) == g).collect();
        if test_idx.is_empty() || train_rows.is_empty() {
            continue;
        }
        let test: Vec<&LabeledRow> = test_idx.iter().map(|&i| &rows[i]).collect();
        for (i, p) in test_idx
            .into_iter()
            .zip(fit_predict(&train_rows, &test, params)?)
        {
            preds[i] = Some(p);
        }
    }
    Ok(preds
        .into_iter()
        .map(|p| p.unwrap_or(Classification::plain(RootCause::Healthy, 0.0, Vec::new())))
        .collect())
}

/// Every row's prediction by a model that never saw it, per hold-out (same order as the rows).
#[derive(Clone, Debug, Default)]
pub struct HeldOutPredictions {
    /// Grouped cross-validation (scenarios held out).
    pub cv: Vec<Classification>,
    /// Leave one workload out.
    pub unseen_workload: Vec<Classification>,
    /// Train on the weaker half of each fault's intensities, test on the stronger, and back.
    pub unseen_intensity: Vec<Classification>,
}

/// Runs the whole evaluation and trains the final model on every row.
/// Returns the card, the final model, the held-out evaluation and every row's held-out
/// predictions.
pub fn model_card(
    rows: &[LabeledRow],
    params: &TrainParams,
    version: &str,
) -> Result<(ModelCard, TreeModel, Evaluation, HeldOutPredictions)> {
    let scenarios: Vec<&str> = rows
        .iter()
        .map(|r| r.scenario_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let fold_of = |r: &LabeledRow| {
        scenarios
            .iter()
            .position(|s| *s == r.scenario_id)
            .unwrap_or(0)
            % FOLDS
    };
    let all: Vec<&LabeledRow> = rows.iter().collect();

    let cv = out_of_group(rows, params, fold_of, FOLDS)?;
    let heldout = scores(&all, &cv);
    let loc = localization(rows, &cv);

    let rules = RuleTree::new();
    let rule_preds: Vec<Classification> = rows
        .iter()
        .map(|r| r.vector().map(|v| rules.classify(&v)))
        .collect::<Result<_>>()?;
    let rule_scores = scores(&all, &rule_preds);
    let rule_loc = localization(rows, &rule_preds);

    let workloads: Vec<&str> = rows
        .iter()
        .map(|r| r.workload.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let by_workload = out_of_group(
        rows,
        params,
        |r| workloads.iter().position(|w| *w == r.workload).unwrap_or(0),
        workloads.len(),
    )?;
    let unseen_workload_all = scores(&all, &by_workload);
    let single = single_workload_classes(rows);
    let (judgeable, judgeable_preds): (Vec<&LabeledRow>, Vec<Classification>) = rows
        .iter()
        .zip(by_workload.iter().cloned())
        .filter(|(r, _)| !single.contains(&r.fault))
        .unzip();
    let mut unseen_workload = scores(&judgeable, &judgeable_preds);
    // Averaged over the classes judged (as sklearn's `labels=`): a judged window taken for a
    // class left out already counts against its own class's recall, and must not also add
    // that class to the average with an F1 of 0.
    unseen_workload.per_class.retain(|m| m.support > 0);
    unseen_workload.macro_f1 = crate::dataset::mean_f1(&unseen_workload.per_class);

    // Intensity rank within its class: the scenario id ends with the intensity label, and
    // healthy scenarios split by load (low/mid vs high).
    let rank = |r: &LabeledRow| -> usize {
        if r.scenario_id.contains("-healthy-") {
            usize::from(r.scenario_id.ends_with("-high"))
        } else {
            intensity_rank(&r.scenario_id, &r.intensity, rows)
        }
    };
    let by_intensity = out_of_group(rows, params, rank, 2)?;
    let unseen_intensity = scores(&all, &by_intensity);

    // Edges whose ends copy no responses get a model that cannot lean on what they lack.
    let blind_params = params.without_payload();
    let blind_cv = out_of_group(rows, &blind_params, fold_of, FOLDS)?;
    let blind = scores(&all, &blind_cv);
    let blind_loc = localization(rows, &blind_cv);
    let training = crate::dataset::training_rows(rows)?;
    let mut model = train(&training, params, version)?;
    model.without_payload = Some(Box::new(train(
        &training,
        &blind_params,
        &format!("{version}-without-payload"),
    )?));
    let windows = rows
        .iter()
        .map(|r| (r.scenario_id.as_str(), r.window))
        .collect::<BTreeSet<_>>()
        .len();
    let card = ModelCard {
        classes: heldout
            .classes
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        heldout_macro_f1: heldout.macro_f1,
        per_class_recall: heldout
            .per_class
            .iter()
            .map(|m| (m.class.as_str().to_string(), m.recall))
            .collect(),
        per_class_precision: heldout
            .per_class
            .iter()
            .map(|m| (m.class.as_str().to_string(), m.precision))
            .collect(),
        unseen_workload_macro_f1: unseen_workload.macro_f1,
        unseen_workload_macro_f1_all_classes: unseen_workload_all.macro_f1,
        single_workload_classes: single.iter().map(|c| c.as_str().to_string()).collect(),
        unseen_intensity_macro_f1: unseen_intensity.macro_f1,
        localization_top1: loc.top1,
        localization_top3: loc.top3,
        localization_top3_findings_only: loc.top3_findings,
        confirm_windows: DEFAULT_CONFIRM_WINDOWS,
        healthy_false_finding_rate: loc.confirmed.healthy_false,
        median_windows_to_detection: loc.confirmed.median_detection,
        healthy_false_finding_rate_single_window: loc.single.healthy_false,
        median_windows_to_detection_single_window: loc.single.median_detection,
        undetected_scenarios: loc.confirmed.undetected,
        tree_depth: depth(&model),
        tree_leaves: model.leaves(),
        trees: model.trees.len(),
        feature_share: params.feature_share,
        split_feature_share: params.split_feature_share,
        log_thresholds: params.log_thresholds,
        baseline_macro_f1: rule_scores.macro_f1,
        baseline_localization_top1: rule_loc.top1,
        baseline_healthy_false_finding_rate: rule_loc.confirmed.healthy_false,
        dataset_rows: rows.len(),
        dataset_windows: windows,
        dataset_scenarios: scenarios.len(),
        confusion: heldout.confusion.clone(),
        without_payload: WithoutPayloadCard {
            excluded: PAYLOAD_FEATURES
                .iter()
                .map(|f| f.name().to_string())
                .collect(),
            heldout_macro_f1: blind.macro_f1,
            per_class_recall: blind
                .per_class
                .iter()
                .map(|m| (m.class.as_str().to_string(), m.recall))
                .collect(),
            localization_top1: blind_loc.top1,
        },
    };
    let preds = HeldOutPredictions {
        cv,
        unseen_workload: by_workload,
        unseen_intensity: by_intensity,
    };
    Ok((card, model, heldout, preds))
}

/// An intensity label split into its kind and strength: `timeout20pct` -> ("timeout", 20),
/// `1mbit` -> ("", 1000) in kbit, `every5` -> ("every", 5); a label without a number has
/// strength 1 (`all`).
fn intensity_value(label: &str) -> (&str, f64) {
    let start = label
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(label.len());
    let (kind, rest) = label.split_at(start);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, unit) = rest.split_at(end);
    let scale = if unit == "mbit" { 1000.0 } else { 1.0 };
    (kind, number.parse::<f64>().map_or(1.0, |v| v * scale))
}

/// 0 for the lower half (by strength) of the intensities a (workload, class, kind) was
/// recorded at, 1 for the upper half; a lone intensity is 0. Training on one half and testing
/// on the other, both ways, asks the model for strengths it never saw.
fn intensity_rank(scenario: &str, intensity: &str, rows: &[LabeledRow]) -> usize {
    let stem = scenario.strip_suffix(intensity).unwrap_or(scenario);
    let (kind, value) = intensity_value(intensity);
    let mut values: Vec<f64> = rows
        .iter()
        .filter(|r| {
            r.scenario_id.starts_with(stem) && r.scenario_id.len() == stem.len() + r.intensity.len()
        })
        .map(|r| intensity_value(&r.intensity))
        .filter(|(k, _)| *k == kind)
        .map(|(_, v)| v)
        .collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let position = values.iter().position(|v| *v == value).unwrap_or(0);
    usize::from(values.len() > 1 && position >= values.len().div_ceil(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FEATURE_COUNT;

    fn row(scenario: &str, fault: RootCause, window: u32) -> LabeledRow {
        LabeledRow {
            scenario_id: scenario.into(),
            workload: "ndxe".into(),
            intensity: "x".into(),
            fault,
            target: if fault == RootCause::Healthy {
                String::new()
            } else {
                "pod:default/s1".into()
            },
            window,
            transitional: false,
            features: vec![0.0; FEATURE_COUNT],
            edge: "default/c1 -> default/s1:7000/tcp".into(),
            client_node: "node-0".into(),
            server_node: "node-2".into(),
        }
    }

    fn predicted(class: RootCause) -> Classification {
        Classification::plain(class, 1.0, Vec::new())
    }

    #[test]
    fn intensities_split_by_strength_within_their_kind() {
        assert_eq!(intensity_value("timeout20pct"), ("timeout", 20.0));
        assert_eq!(intensity_value("1mbit"), ("", 1000.0));
        assert_eq!(intensity_value("1500kbit"), ("", 1500.0));
        assert_eq!(intensity_value("0.5pct"), ("", 0.5));
        assert_eq!(intensity_value("all"), ("all", 1.0));
        let mut rows = Vec::new();
        for i in ["10ms", "5ms", "30ms", "20ms", "15ms"] {
            let mut r = row(&format!("redis-path_delay-{i}"), RootCause::PathDelay, 1);
            r.intensity = i.into();
            rows.push(r);
        }
        for i in ["nxdomain30pct", "nxdomain100pct", "timeout20pct"] {
            let mut r = row(&format!("dns-dns_failure-{i}"), RootCause::DnsFailure, 1);
            r.intensity = i.into();
            rows.push(r);
        }
        let rank = |s: &str, i: &str| intensity_rank(s, i, &rows);
        // 5, 10, 15 below; 20, 30 above (not the alphabetical 10ms first).
        assert_eq!(rank("redis-path_delay-5ms", "5ms"), 0);
        assert_eq!(rank("redis-path_delay-15ms", "15ms"), 0);
        assert_eq!(rank("redis-path_delay-20ms", "20ms"), 1);
        assert_eq!(rank("redis-path_delay-30ms", "30ms"), 1);
        assert_eq!(rank("dns-dns_failure-nxdomain30pct", "nxdomain30pct"), 0);
        assert_eq!(rank("dns-dns_failure-nxdomain100pct", "nxdomain100pct"), 1);
        assert_eq!(rank("dns-dns_failure-timeout20pct", "timeout20pct"), 0);
    }

    #[test]
    fn reported_findings_need_two_windows_in_a_row() {
        use RootCause::{Healthy, ServerAppSlow};
        let rows: Vec<LabeledRow> = (0..4)
            .map(|w| row("a-healthy", Healthy, w))
            .chain((0..3).map(|w| row("b-slow", ServerAppSlow, w)))
            .collect();
        // Healthy windows: blips at 0, then 2 and 3 in a row; the fault is seen at once.
        let preds: Vec<Classification> = [
            ServerAppSlow,
            Healthy,
            ServerAppSlow,
            ServerAppSlow,
            ServerAppSlow,
            ServerAppSlow,
            ServerAppSlow,
        ]
        .into_iter()
        .map(predicted)
        .collect();
        let loc = localization(&rows, &preds);
        assert_eq!(loc.single.healthy_false, 0.75);
        assert_eq!(loc.confirmed.healthy_false, 0.25, "only window 3 repeats 2");
        assert_eq!(loc.single.median_detection, 1.0);
        assert_eq!(loc.confirmed.median_detection, 2.0);
        assert_eq!(loc.top1, 1.0);
    }

    #[test]
    fn parses_edges_and_targets() {
        let k = parse_edge("default/c1 -> default/s1:7000/tcp").unwrap();
        assert_eq!(k.client.pod.unwrap().name, "c1");
        assert_eq!(
            (
                k.server.pod.unwrap().name.as_str(),
                k.port,
                k.proto.as_str()
            ),
            ("s1", 7000, "tcp")
        );
        let k = parse_edge("10.0.0.1 -> default/dns:53/udp").unwrap();
        assert_eq!((k.client.ip.as_str(), k.client.pod), ("10.0.0.1", None));
        assert!(parse_edge("garbage").is_none());
        assert_eq!(
            target_instance("link:node-2/node-0").unwrap().name,
            "node-0<->node-2"
        );
        assert_eq!(
            target_instance("pod:default/s1").unwrap().kind,
            InstanceKind::Pod
        );
        assert!(target_instance("").is_none());
        assert_eq!(
            target_instance("service:default/s1:53").unwrap(),
            Instance {
                kind: InstanceKind::Service,
                name: "default/s1:53".into()
            }
        );
    }
}
