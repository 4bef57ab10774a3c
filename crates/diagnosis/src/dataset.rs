//! Labelled windows for training and scoring: the JSON-lines file format, grouped train/test
//! splits, and evaluation (per-class precision/recall, macro-F1, confusion matrix).
//!
//! A dataset file starts with one header line naming the format, the feature schema version and
//! the feature names, then one [`LabeledRow`] per line. Labels are what was injected, never a
//! model's output (shared/fault-catalog.md).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::classes::{Classifier, RootCause};
use crate::features::{
    FEATURE_SCHEMA_VERSION, Feature, FeatureVector, add_unit_context, derive, ends_of,
    feature_names,
};
use crate::{Error, Result};

/// Format name in a dataset file's header line.
pub const DATASET_FORMAT: &str = "netdx-labelled-windows";

/// One edge-window with the fault that was injected while it was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabeledRow {
    /// The capture run this window belongs to.
    pub scenario_id: String,
    /// Workload (server and client programs), the unit held out to test generalisation.
    pub workload: String,
    /// Fault intensity ("5pct", "200ms", "none"...), the other held-out unit.
    pub intensity: String,
    /// The injected fault class (healthy when nothing was injected).
    pub fault: RootCause,
    /// The instance the fault was injected into ("" when healthy).
    pub target: String,
    /// Window index within the scenario.
    pub window: u32,
    /// Window during fault onset or removal: kept in files, excluded from training and scoring.
    pub transitional: bool,
    /// Feature values in schema order.
    pub features: Vec<f64>,
    /// Which edge this row is ("ns/client -> ns/server:port/proto"), for localization scoring.
    #[serde(default)]
    pub edge: String,
    /// Node of the edge's client ("" when unknown).
    #[serde(default)]
    pub client_node: String,
    /// Node of the edge's server ("" when unknown).
    #[serde(default)]
    pub server_node: String,
}

impl LabeledRow {
    /// The row's feature vector (length and finiteness checked).
    pub fn vector(&self) -> Result<FeatureVector> {
        FeatureVector::from_slice(&self.features)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    format: String,
    feature_schema_version: u32,
    features: Vec<String>,
}

/// Writes rows as JSON lines after a header line.
pub fn write_jsonl<W: Write>(mut w: W, rows: &[LabeledRow]) -> Result<()> {
    let header = Header {
        format: DATASET_FORMAT.into(),
        feature_schema_version: FEATURE_SCHEMA_VERSION,
        features: feature_names(),
    };
    let io = |source| Error::Io {
        what: "writing dataset",
        path: "<writer>".into(),
        source,
    };
    writeln!(w, "{}", to_line(&header)?).map_err(io)?;
    for r in rows {
        writeln!(w, "{}", to_line(r)?).map_err(io)?;
    }
    w.flush().map_err(io)
}

fn to_line<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|source| Error::Serialize {
        what: "dataset line",
        source,
    })
}

/// Reads a JSON-lines dataset, checking the header and every row's feature vector.
pub fn read_jsonl<R: BufRead>(r: R) -> Result<Vec<LabeledRow>> {
    let mut lines = r.lines().enumerate();
    let err = |line: usize, message: String| Error::Dataset {
        line: line + 1,
        message,
    };
    let header: Header = match lines.next() {
        Some((i, l)) => {
            let l = l.map_err(|e| err(i, e.to_string()))?;
            serde_json::from_str(&l).map_err(|e| err(i, format!("bad header: {e}")))?
        }
        None => return Err(err(0, "empty file, expected a header line".into())),
    };
    if header.format != DATASET_FORMAT {
        return Err(err(
            0,
            format!("format {:?}, expected {DATASET_FORMAT:?}", header.format),
        ));
    }
    let names = feature_names();
    // Files of older schemas are upgraded on read: their columns are matched by name and
    // the missing ones filled in, see [`upgrade`].
    let columns: Option<Vec<Feature>> = header
        .features
        .iter()
        .map(|n| Feature::from_name(n))
        .collect();
    // An older version with the same columns is upgraded too: a derived column's meaning may
    // have changed (schema 11: srtt_queueing without an RTT).
    let legacy = (header.features != names
        || header.feature_schema_version != FEATURE_SCHEMA_VERSION)
        && (LEGACY_SCHEMA_VERSIONS).contains(&header.feature_schema_version)
        && columns.is_some();
    if header.feature_schema_version != FEATURE_SCHEMA_VERSION && !legacy {
        return Err(Error::SchemaMismatch {
            found: header.feature_schema_version,
            expected: FEATURE_SCHEMA_VERSION,
        });
    }
    if !legacy && header.features != names {
        return Err(err(
            0,
            "feature names differ from this build's schema".into(),
        ));
    }
    let columns = columns.unwrap_or_default();
    let mut rows = Vec::new();
    for (i, l) in lines {
        let l = l.map_err(|e| err(i, e.to_string()))?;
        if l.trim().is_empty() {
            continue;
        }
        let mut row: LabeledRow = serde_json::from_str(&l).map_err(|e| err(i, e.to_string()))?;
        if legacy {
            if row.features.len() != columns.len() {
                return Err(err(i, "row length differs from its header".into()));
            }
            row.features = upgrade(header.feature_schema_version, &columns, &row.features);
        }
        row.vector().map_err(|e| err(i, e.to_string()))?;
        rows.push(row);
    }
    if legacy && !columns.contains(&Feature::ServerEdgesFailingShare) {
        add_row_context(&mut rows)?;
    }
    Ok(rows)
}

/// Computes the unit-context columns of rows written before they existed, window by window.
fn add_row_context(rows: &mut [LabeledRow]) -> Result<()> {
    let mut windows: BTreeMap<(String, u32), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        windows
            .entry((r.scenario_id.clone(), r.window))
            .or_default()
            .push(i);
    }
    for members in windows.values() {
        let ends: Vec<(String, String)> = members
            .iter()
            .map(|&i| {
                let (c, s) = ends_of(&rows[i].edge).unwrap_or(("", &rows[i].edge));
                (c.to_string(), s.to_string())
            })
            .collect();
        let mut vectors: Vec<FeatureVector> = members
            .iter()
            .map(|&i| rows[i].vector())
            .collect::<Result<_>>()?;
        let mut refs: Vec<&mut FeatureVector> = vectors.iter_mut().collect();
        add_unit_context(&ends, &mut refs);
        for (&i, v) in members.iter().zip(vectors) {
            rows[i].features = v.as_slice().to_vec();
        }
    }
    Ok(())
}

/// Older feature schemas whose files [`read_jsonl`] still accepts, upgraded.
/// (Files of this schema whose columns differ come from a build before its last derived
/// columns were added; they are completed the same way.)
pub const LEGACY_SCHEMA_VERSIONS: std::ops::RangeInclusive<u32> = 2..=FEATURE_SCHEMA_VERSION;

/// Brings a feature row of an older schema (`values` in the file's `columns`) to the current
/// schema. Every column schema 4 added is derived from schema-3 ones, so it is computed.
/// From schema 2, the signals it did not record (wait, srtt min) read "not measured" (0,
/// ratios 1); columns computable from schema-2 columns are computed (connect failure share,
/// exchanges per successful connect assuming the dataset's 2 s windows). Ratios of the
/// computable columns to their baseline cannot be recovered and read 1. Before schema 6 the
/// server's fullness at its drops was not recorded: it reads 0 ("no such drops"). Every column
/// schemas 7 and 8 added is derived from schema-6 ones, so it is computed. Before schema 9
/// zero-window stalls and the client's p10 latency were not recorded: they read 0. Every column
/// schema 10 added is derived from schema-9 ones, so it is computed; schema 11 changed only
/// what the derived `srtt_queueing` reads without an RTT, so it is recomputed.
pub fn upgrade(version: u32, columns: &[Feature], values: &[f64]) -> Vec<f64> {
    let mut v = FeatureVector::default();
    for (f, x) in columns.iter().zip(values) {
        v.set(*f, *x);
    }
    if version == 2 {
        for (_, ratio, _) in crate::features::tracked_ratios() {
            if !columns.contains(&ratio) {
                v.set(ratio, 1.0);
            }
        }
        let fail = (v[Feature::ConnectRefusedRatio]
            + v[Feature::ConnectTimeoutRatio]
            + v[Feature::ConnectOtherRatio])
            .min(1.0);
        v.set(Feature::ConnectFailRatio, fail);
        let ok_rate = v[Feature::ConnectRate] * (1.0 - fail);
        v.set(
            Feature::ExchangesPerOkConnect,
            v[Feature::ExchangeRate] / ok_rate.max(0.5),
        );
    }
    derive(&mut v);
    v.as_slice().to_vec()
}

/// Writes a dataset file.
pub fn save(path: &Path, rows: &[LabeledRow]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|source| Error::Io {
        what: "creating dataset",
        path: path.into(),
        source,
    })?;
    write_jsonl(std::io::BufWriter::new(f), rows)
}

/// Reads a dataset file.
pub fn load(path: &Path) -> Result<Vec<LabeledRow>> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        what: "opening dataset",
        path: path.into(),
        source,
    })?;
    read_jsonl(std::io::BufReader::new(f))
}

/// Rows usable for training: transitional windows left out.
pub fn training_rows(rows: &[LabeledRow]) -> Result<Vec<(FeatureVector, RootCause)>> {
    rows.iter()
        .filter(|r| !r.transitional)
        .map(|r| Ok((r.vector()?, r.fault)))
        .collect()
}

/// A train/test split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// Rows to train on.
    pub train: Vec<LabeledRow>,
    /// Rows to test on; no group here appears in `train`.
    pub test: Vec<LabeledRow>,
}

/// Splits by a group key: rows whose key is in `held_out` go to test, the rest to train.
pub fn split_by(
    rows: &[LabeledRow],
    key: impl Fn(&LabeledRow) -> &str,
    held_out: &[&str],
) -> Split {
    let (test, train) = rows
        .iter()
        .cloned()
        .partition(|r| held_out.contains(&key(r)));
    Split { train, test }
}

/// Holds out whole workloads (the model must handle servers it never saw).
pub fn hold_out_workloads(rows: &[LabeledRow], workloads: &[&str]) -> Split {
    split_by(rows, |r| &r.workload, workloads)
}

/// Holds out whole fault intensities (the model must generalise across magnitudes).
pub fn hold_out_intensities(rows: &[LabeledRow], intensities: &[&str]) -> Split {
    split_by(rows, |r| &r.intensity, intensities)
}

/// One split per distinct group value, each holding out that group (leave-one-group-out).
pub fn leave_one_group_out(
    rows: &[LabeledRow],
    key: impl Fn(&LabeledRow) -> &str,
) -> Vec<(String, Split)> {
    let mut groups: Vec<&str> = rows.iter().map(&key).collect();
    groups.sort_unstable();
    groups.dedup();
    groups
        .into_iter()
        .map(|g| (g.to_string(), split_by(rows, &key, &[g])))
        .collect()
}

/// Precision, recall and F1 of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassMetrics {
    /// The class.
    pub class: RootCause,
    /// Correct predictions of the class / predictions of the class (0 when never predicted).
    pub precision: f64,
    /// Correct predictions of the class / rows of the class (0 without rows).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Rows whose true class this is.
    pub support: u64,
}

/// Scores of a classifier on labelled rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// Class order of the confusion matrix.
    pub classes: Vec<RootCause>,
    /// Counts indexed `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    /// Per-class metrics for classes that occur in truth or predictions.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean F1 over those classes.
    pub macro_f1: f64,
    /// Correct / scored.
    pub accuracy: f64,
    /// Rows scored.
    pub scored: usize,
    /// Transitional rows left out of scoring.
    pub excluded_transitional: usize,
}

/// Unweighted mean F1 of the given classes' metrics (0 without any).
pub fn mean_f1(per_class: &[ClassMetrics]) -> f64 {
    if per_class.is_empty() {
        return 0.0;
    }
    per_class.iter().map(|m| m.f1).sum::<f64>() / per_class.len() as f64
}

/// Scores (truth, prediction) pairs.
pub fn evaluate(pairs: &[(RootCause, RootCause)]) -> Evaluation {
    let n = RootCause::ALL.len();
    let mut confusion = vec![vec![0u64; n]; n];
    for (t, p) in pairs {
        confusion[t.index()][p.index()] += 1;
    }
    let mut per_class = Vec::new();
    for c in RootCause::ALL {
        let i = c.index();
        let tp = confusion[i][i];
        let support: u64 = confusion[i].iter().sum();
        let predicted: u64 = confusion.iter().map(|row| row[i]).sum();
        // A class nobody had and nobody predicted says nothing about the classifier.
        if support == 0 && predicted == 0 {
            continue;
        }
        let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        let precision = ratio(tp, predicted);
        let recall = ratio(tp, support);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        per_class.push(ClassMetrics {
            class: c,
            precision,
            recall,
            f1,
            support,
        });
    }
    let macro_f1 = mean_f1(&per_class);
    let correct: u64 = (0..n).map(|i| confusion[i][i]).sum();
    Evaluation {
        classes: RootCause::ALL.to_vec(),
        confusion,
        per_class,
        macro_f1,
        accuracy: if pairs.is_empty() {
            0.0
        } else {
            correct as f64 / pairs.len() as f64
        },
        scored: pairs.len(),
        excluded_transitional: 0,
    }
}

/// Classifies labelled rows and scores the result, leaving transitional windows out.
pub fn evaluate_rows(rows: &[LabeledRow], classifier: &dyn Classifier) -> Result<Evaluation> {
    let mut pairs = Vec::new();
    for r in rows.iter().filter(|r| !r.transitional) {
        pairs.push((r.fault, classifier.classify(&r.vector()?).root_cause));
    }
    let mut e = evaluate(&pairs);
    e.excluded_transitional = rows.iter().filter(|r| r.transitional).count();
    Ok(e)
}

impl Evaluation {
    /// A Markdown report: summary, per-class table and the confusion matrix of seen classes.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "scored {} windows ({} transitional excluded); accuracy {:.3}; macro-F1 {:.3}\n\n",
            self.scored, self.excluded_transitional, self.accuracy, self.macro_f1
        );
        s.push_str("| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n");
        for m in &self.per_class {
            s.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.3} | {} |\n",
                m.class, m.precision, m.recall, m.f1, m.support
            ));
        }
        let seen: Vec<usize> = self.per_class.iter().map(|m| m.class.index()).collect();
        s.push_str("\nconfusion (rows: truth, columns: predicted)\n\n| |");
        for &j in &seen {
            s.push_str(&format!(" {} |", self.classes[j]));
        }
        s.push_str("\n|---|");
        s.push_str(&"---|".repeat(seen.len()));
        s.push('\n');
        for &i in &seen {
            s.push_str(&format!("| {} |", self.classes[i]));
            for &j in &seen {
                s.push_str(&format!(" {} |", self.confusion[i][j]));
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FEATURE_COUNT, Feature};
    use crate::rules::RuleTree;
    use RootCause as C;

    fn row(
        workload: &str,
        intensity: &str,
        fault: RootCause,
        window: u32,
        transitional: bool,
    ) -> LabeledRow {
        LabeledRow {
            scenario_id: format!("{workload}-{intensity}-{fault}"),
            workload: workload.into(),
            intensity: intensity.into(),
            fault,
            target: if fault == C::Healthy {
                String::new()
            } else {
                "default/server".into()
            },
            window,
            transitional,
            features: vec![0.5; FEATURE_COUNT],
            edge: String::new(),
            client_node: String::new(),
            server_node: String::new(),
        }
    }

    fn rows() -> Vec<LabeledRow> {
        vec![
            row("redis", "none", C::Healthy, 0, false),
            row("redis", "5pct", C::PathLoss, 1, true),
            row("redis", "5pct", C::PathLoss, 2, false),
            row("http", "20pct", C::PathLoss, 0, false),
            row("pg", "5pct", C::ServerReset, 0, false),
            row("ndxe", "20pct", C::ServerReset, 0, false),
        ]
    }

    #[test]
    fn jsonl_round_trip() {
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &rows()).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.lines().next().unwrap().contains(DATASET_FORMAT));
        assert!(
            text.contains("\"fault\":\"path_loss\""),
            "classes are snake_case in files"
        );
        assert_eq!(read_jsonl(buf.as_slice()).unwrap(), rows());
    }

    #[test]
    fn bad_files_name_the_line() {
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &rows()[..2]).unwrap();
        let mut text = String::from_utf8(buf).unwrap();
        text.push_str("{\"scenarioId\": 3}\n");
        match read_jsonl(text.as_bytes()) {
            Err(Error::Dataset { line, .. }) => assert_eq!(line, 4),
            other => panic!("{other:?}"),
        }
        // A row with too few features.
        let mut short = rows()[0].clone();
        short.features.truncate(3);
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &[short]).unwrap();
        assert!(matches!(
            read_jsonl(buf.as_slice()),
            Err(Error::Dataset { line: 2, .. })
        ));
        assert!(matches!(
            read_jsonl("".as_bytes()),
            Err(Error::Dataset { line: 1, .. })
        ));
        let other_schema = format!(
            "{{\"format\":\"{DATASET_FORMAT}\",\"featureSchemaVersion\":{},\"features\":[]}}\n",
            FEATURE_SCHEMA_VERSION + 1
        );
        assert!(matches!(
            read_jsonl(other_schema.as_bytes()),
            Err(Error::SchemaMismatch { .. })
        ));
    }

    #[test]
    fn file_round_trip_and_training_rows_skip_transitional() {
        let path = std::env::temp_dir().join(format!(
            "netdx-diagnosis-dataset-{}.jsonl",
            std::process::id()
        ));
        save(&path, &rows()).unwrap();
        let back = load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, rows());
        assert_eq!(training_rows(&back).unwrap().len(), 5);
    }

    #[test]
    fn grouped_splits_keep_groups_apart() {
        let s = hold_out_workloads(&rows(), &["redis", "ndxe"]);
        assert_eq!(s.test.len(), 4);
        assert_eq!(s.train.len(), 2);
        assert!(
            s.train
                .iter()
                .all(|r| r.workload != "redis" && r.workload != "ndxe")
        );
        let s = hold_out_intensities(&rows(), &["20pct"]);
        assert_eq!(
            s.test
                .iter()
                .map(|r| r.workload.as_str())
                .collect::<Vec<_>>(),
            ["http", "ndxe"]
        );
        assert!(s.train.iter().all(|r| r.intensity != "20pct"));
        let folds = leave_one_group_out(&rows(), |r| &r.workload);
        assert_eq!(
            folds.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>(),
            ["http", "ndxe", "pg", "redis"]
        );
        for (g, s) in &folds {
            assert_eq!(s.train.len() + s.test.len(), rows().len());
            assert!(
                s.test.iter().all(|r| &r.workload == g) && s.train.iter().all(|r| &r.workload != g)
            );
        }
    }

    #[test]
    fn metrics_match_hand_computation() {
        // truth/pred: healthy 3 rows (2 right, 1 called loss); loss 2 rows (1 right, 1 called
        // healthy); reset 1 row called loss.
        let pairs = [
            (C::Healthy, C::Healthy),
            (C::Healthy, C::Healthy),
            (C::Healthy, C::PathLoss),
            (C::PathLoss, C::PathLoss),
            (C::PathLoss, C::Healthy),
            (C::ServerReset, C::PathLoss),
        ];
        let e = evaluate(&pairs);
        let m = |c: RootCause| e.per_class.iter().find(|m| m.class == c).unwrap().clone();
        // healthy: P = 2/3, R = 2/3, F1 = 2/3
        assert!((m(C::Healthy).precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m(C::Healthy).f1 - 2.0 / 3.0).abs() < 1e-12);
        // loss: predicted 3 times, 1 right: P = 1/3, R = 1/2, F1 = 0.4
        assert!((m(C::PathLoss).precision - 1.0 / 3.0).abs() < 1e-12);
        assert!((m(C::PathLoss).recall - 0.5).abs() < 1e-12);
        assert!((m(C::PathLoss).f1 - 0.4).abs() < 1e-12);
        // reset: never predicted: P = R = F1 = 0
        assert_eq!(m(C::ServerReset).f1, 0.0);
        assert_eq!(m(C::ServerReset).support, 1);
        assert_eq!(
            e.per_class.len(),
            3,
            "classes absent from truth and predictions are not averaged"
        );
        assert!((e.macro_f1 - (2.0 / 3.0 + 0.4 + 0.0) / 3.0).abs() < 1e-12);
        assert!((e.accuracy - 0.5).abs() < 1e-12);
        assert_eq!(e.confusion[C::ServerReset.index()][C::PathLoss.index()], 1);
        assert_eq!(e.confusion[C::Healthy.index()][C::PathLoss.index()], 1);
        let md = e.to_markdown();
        assert!(
            md.contains("| path_loss | 0.333 | 0.500 | 0.400 | 2 |"),
            "{md}"
        );
    }

    #[test]
    fn evaluate_rows_excludes_transitional_windows() {
        let mut rs = rows();
        // Make the path-loss rows look lossy so the rules get them right.
        for r in rs.iter_mut() {
            r.features = vec![0.0; FEATURE_COUNT];
            if r.fault == C::PathLoss {
                r.features[Feature::RetransC2sPerExchange.index()] = 0.3;
            }
        }
        let e = evaluate_rows(&rs, &RuleTree::new()).unwrap();
        assert_eq!(e.scored, 5);
        assert_eq!(e.excluded_transitional, 1);
        let loss = e.per_class.iter().find(|m| m.class == C::PathLoss).unwrap();
        assert_eq!((loss.recall, loss.support), (1.0, 2));
    }

    #[test]
    fn schema_2_files_are_upgraded() {
        let names = feature_names();
        let old = 2;
        let n_old = Feature::ConnectMsMaxRatio.index() + 1;
        let mut vals = vec![0.0; n_old];
        vals[Feature::ExchangeRate.index()] = 100.0;
        vals[Feature::ConnectRate.index()] = 10.0;
        vals[Feature::ConnectRefusedRatio.index()] = 0.5;
        vals[Feature::ExchangeRateRatio.index()] = 1.0;
        vals[Feature::ClientP99Ratio.index()] = 1.0;
        vals[Feature::RespBytesRateRatio.index()] = 1.0;
        let header = format!(
            "{{\"format\":\"{DATASET_FORMAT}\",\"featureSchemaVersion\":{old},\"features\":{}}}",
            serde_json::to_string(&names[..n_old]).unwrap()
        );
        let row = serde_json::json!({
            "scenarioId": "s", "workload": "w", "intensity": "none", "fault": "healthy",
            "target": "", "window": 0, "transitional": false, "features": vals,
        });
        let text = format!("{header}\n{row}\n");
        let rows = read_jsonl(text.as_bytes()).unwrap();
        let v = rows[0].vector().unwrap();
        assert_eq!(rows[0].features.len(), FEATURE_COUNT);
        assert_eq!(v[Feature::ConnectFailRatio], 0.5);
        assert_eq!(v[Feature::ExchangesPerOkConnect], 20.0);
        assert_eq!(v[Feature::ServerWaitRatio], 1.0);
        assert_eq!(v[Feature::ServerWaitP99Ms], 0.0);
        assert_eq!(v[Feature::ExchangeSurvival], 2.0);
        // Another old version is still refused.
        let other = text.replacen(&format!(":{old},"), ":1,", 1);
        assert!(matches!(
            read_jsonl(other.as_bytes()),
            Err(Error::SchemaMismatch { found: 1, .. })
        ));
    }

    /// Reads one healthy row of a file written at an older schema with `vals` (its columns).
    fn read_old_schema(version: u32, vals: &[f64]) -> Vec<LabeledRow> {
        let names = feature_names();
        let header = format!(
            "{{\"format\":\"{DATASET_FORMAT}\",\"featureSchemaVersion\":{version},\"features\":{}}}",
            serde_json::to_string(&names[..vals.len()]).unwrap()
        );
        let row = serde_json::json!({
            "scenarioId": "s", "workload": "w", "intensity": "none", "fault": "healthy",
            "target": "", "window": 0, "transitional": false, "features": vals,
        });
        read_jsonl(format!("{header}\n{row}\n").as_bytes()).unwrap()
    }

    #[test]
    fn schema_10_files_read_the_new_srtt_queueing_without_an_rtt() {
        // Same columns as now; a UDP edge: no RTT, srtt_queueing recorded as 1.
        let mut vals = vec![0.0; FEATURE_COUNT];
        vals[Feature::SrttQueueing.index()] = 1.0;
        let rows = read_old_schema(10, &vals);
        assert_eq!(rows[0].vector().unwrap()[Feature::SrttQueueing], 2.5);
    }

    #[test]
    fn schema_6_files_gain_the_derived_columns() {
        let n_old = Feature::ServerFullAtDrops.index() + 1;
        let mut vals = vec![1.0; n_old];
        vals[Feature::IsDns.index()] = 0.0;
        vals[Feature::L7ErrorRatio.index()] = 0.25;
        vals[Feature::ServerWaitRatio.index()] = 40.0;
        vals[Feature::WaitGapRatio.index()] = 2.0;
        let rows = read_old_schema(6, &vals);
        assert_eq!(rows[0].features.len(), FEATURE_COUNT);
        let v = rows[0].vector().unwrap();
        assert_eq!(v[Feature::AppErrorRatio], 0.25);
        assert_eq!(v[Feature::ServerWaitExcess], 20.0);
        assert_eq!(
            v[Feature::ServerFullAtDrops],
            1.0,
            "recorded columns are kept"
        );
    }

    #[test]
    fn schema_7_files_gain_the_tcp_no_response_column() {
        let n_old = Feature::ServerWaitExcess.index() + 1;
        let mut vals = vec![0.0; n_old];
        vals[Feature::NoResponseRatio.index()] = 0.75;
        let v = read_old_schema(7, &vals)[0].vector().unwrap();
        assert_eq!(v[Feature::TcpNoResponseRatio], 0.75);
        // The same silence from a DNS server is a DNS failure.
        vals[Feature::IsDns.index()] = 1.0;
        let v = read_old_schema(7, &vals)[0].vector().unwrap();
        assert_eq!(v[Feature::TcpNoResponseRatio], 0.0);
        assert_eq!(v[Feature::DnsFailureRatio], 0.75);
    }

    #[test]
    fn schema_3_files_gain_the_derived_columns() {
        let n_old = Feature::LatencyPerThroughput.index() + 1;
        let mut vals = vec![1.0; n_old];
        vals[Feature::SrttMeanMs.index()] = 30.0;
        vals[Feature::SrttMinMs.index()] = 10.0;
        vals[Feature::ClientP50Ms.index()] = 25.0;
        let rows = read_old_schema(3, &vals);
        let v = rows[0].vector().unwrap();
        assert_eq!(v[Feature::SrttQueueing], 3.0);
        assert_eq!(v[Feature::ClientP50PerRtt], 2.5);
        // Recorded columns are kept as they were.
        assert_eq!(v[Feature::ExchangeRate], 1.0);
    }
}
