//! The trained decision tree: training with linfa-trees, prediction with confidence and a
//! readable decision path, and a versioned JSON model file.
//!
//! The file holds our own flattened copy of the tree rather than linfa's serde form: linfa's
//! nodes carry no class counts (needed for confidence) and its serialised layout follows the
//! crate's private fields, which may change with any linfa release. Flattening keeps linfa's
//! split semantics exactly (`x < threshold` goes left), which a test checks against linfa's
//! own predictions.

use std::path::Path;

use linfa::Dataset;
use linfa::prelude::Fit;
use linfa_trees::{DecisionTree, SplitQuality, TreeNode as LinfaNode};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::classes::{Classification, Classifier, Condition, Op, RootCause};
use crate::features::{
    FEATURE_COUNT, FEATURE_SCHEMA_VERSION, Feature, FeatureVector, feature_names,
};
use crate::{Error, Result};

/// Features whose scale is set by the workload (its latency, rate, payload, RTT), not by the
/// fault. A tree may split on them when they happen to separate the training classes, and such
/// splits do not carry over to other workloads or intensities (a slow HTTP server's absolute
/// p99 can exceed a lossy Redis edge's); the baseline ratios and shares carry the same signal
/// in a workload-free form. Left out of training by default.
pub const WORKLOAD_SCALED: [Feature; 13] = [
    Feature::ExchangeRate,
    Feature::RespBytesPerExchange,
    Feature::RespBytesRate,
    Feature::ClientP50Ms,
    Feature::ClientP99Ms,
    Feature::ServerP50Ms,
    Feature::ServerP99Ms,
    Feature::P99GapMs,
    Feature::SrttMeanMs,
    Feature::SrttMaxMs,
    Feature::ConnectMsMax,
    // Absolute waits too: memcaslap's healthy wait gap is several ms, nginx's a few us, so a
    // threshold in ms flagged healthy memcached (3.9% false findings; 0.6% without them).
    Feature::ServerWaitP99Ms,
    Feature::WaitGapMs,
];

/// [`TrainParams::max_depth`] unless told otherwise.
const DEFAULT_MAX_DEPTH: usize = 20;

/// Training hyper-parameters (kept in the model file for provenance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainParams {
    /// Deepest split level; bounded so decision paths stay readable.
    pub max_depth: Option<usize>,
    /// Fewest training rows in a leaf; avoids leaves fitted to one noisy window.
    pub min_weight_leaf: f32,
    /// Fewest training rows in a node for it to be split.
    pub min_weight_split: f32,
    /// Feature names the tree may not split on.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Weight rows so every class weighs the same in total: healthy windows outnumber each
    /// fault by far, and unweighted Gini splits fold rare faults into healthy leaves.
    #[serde(default)]
    pub balance_classes: bool,
    /// Split criterion: Gini impurity (false) or information gain / entropy (true).
    #[serde(default)]
    pub entropy: bool,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            max_depth: Some(DEFAULT_MAX_DEPTH),
            // Grouped CV on the 190-scenario schema-6 dataset (diagnosis-notes.md): depth 20
            // (the tree stops at 18) with leaves of weight 2 gave the best macro-F1 (0.906;
            // 0.882 at depth 16, 0.763 at 12; leaf weight 3-4: 0.882-0.898).
            min_weight_leaf: 2.0,
            min_weight_split: 4.0,
            exclude: WORKLOAD_SCALED
                .iter()
                .map(|f| f.name().to_string())
                .collect(),
            balance_classes: true,
            entropy: false,
        }
    }
}

/// A node of the flattened tree; children always come after their parent in the node list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TreeNode {
    /// `feature < threshold` goes to `left`, otherwise to `right`.
    #[serde(rename_all = "camelCase")]
    Split {
        /// Feature column.
        feature: usize,
        /// Split value.
        threshold: f64,
        /// Node index for values below the threshold.
        left: usize,
        /// Node index for values at or above the threshold.
        right: usize,
    },
    /// A prediction.
    #[serde(rename_all = "camelCase")]
    Leaf {
        /// Predicted class, an index into the model's class list.
        class: usize,
        /// Training rows per class that reached this leaf.
        counts: Vec<u32>,
    },
}

/// A trained model as stored in a model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeModel {
    /// Version of this model (free text, recorded in findings).
    pub model_version: String,
    /// The feature schema the model was trained on.
    pub feature_schema_version: u32,
    /// Feature names in column order (must match this build's schema).
    pub features: Vec<String>,
    /// Classes in label-index order.
    pub classes: Vec<RootCause>,
    /// Hyper-parameters used.
    pub params: TrainParams,
    /// Number of training rows.
    pub training_rows: usize,
    /// The tree; node 0 is the root.
    pub nodes: Vec<TreeNode>,
}

/// Only the version field, read first so a file of another schema is reported as such
/// instead of as an unrelated parse error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    feature_schema_version: u32,
}

/// Trains a tree on labelled feature rows.
pub fn train(
    rows: &[(FeatureVector, RootCause)],
    params: &TrainParams,
    model_version: &str,
) -> Result<TreeModel> {
    if rows.is_empty() {
        return Err(Error::Train("no training rows".into()));
    }
    let classes = RootCause::ALL.to_vec();
    let excluded = params
        .exclude
        .iter()
        .map(|n| {
            Feature::from_name(n)
                .ok_or_else(|| Error::Train(format!("unknown feature to exclude: {n}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // An excluded column is zeroed: a constant column has no split with any impurity decrease.
    let mut x = Array2::<f64>::zeros((rows.len(), FEATURE_COUNT));
    for (i, (v, _)) in rows.iter().enumerate() {
        for (j, value) in v.as_slice().iter().enumerate() {
            if !excluded.iter().any(|f| f.index() == j) {
                x[[i, j]] = *value;
            }
        }
    }
    let y: Array1<usize> = rows.iter().map(|(_, c)| c.index()).collect();
    let mut dataset = Dataset::new(x, y.clone()).with_feature_names(feature_names());
    if params.balance_classes {
        let mut count = vec![0usize; classes.len()];
        for c in &y {
            count[*c] += 1;
        }
        let present = count.iter().filter(|n| **n > 0).count().max(1) as f32;
        let n = rows.len() as f32;
        // Full balancing measured best on macro-F1 and localization (docs/model-card.md);
        // it costs false findings on healthy windows, reported there too.
        let w: Array1<f32> = y.iter().map(|c| n / (present * count[*c] as f32)).collect();
        dataset = dataset.with_weights(w);
    }
    let tree = DecisionTree::params()
        .max_depth(params.max_depth)
        .min_weight_leaf(params.min_weight_leaf)
        .min_weight_split(params.min_weight_split)
        .split_quality(if params.entropy {
            SplitQuality::Entropy
        } else {
            SplitQuality::Gini
        })
        .fit(&dataset)
        .map_err(|e| Error::Train(e.to_string()))?;

    let mut nodes = Vec::new();
    flatten(tree.root_node(), classes.len(), &mut nodes)?;
    let mut model = TreeModel {
        model_version: model_version.to_string(),
        feature_schema_version: FEATURE_SCHEMA_VERSION,
        features: feature_names(),
        classes,
        params: params.clone(),
        training_rows: rows.len(),
        nodes,
    };
    // linfa keeps no per-leaf counts, so route the training rows to their leaves to get them.
    for (v, c) in rows {
        let leaf = model.leaf_of(v).0;
        if let TreeNode::Leaf { counts, .. } = &mut model.nodes[leaf] {
            counts[c.index()] += 1;
        }
    }
    Ok(model)
}

/// Copies a linfa subtree into `out` in pre-order and returns the index of its root.
fn flatten(
    node: &LinfaNode<f64, usize>,
    n_classes: usize,
    out: &mut Vec<TreeNode>,
) -> Result<usize> {
    let me = out.len();
    if let Some(class) = node.prediction() {
        out.push(TreeNode::Leaf {
            class,
            counts: vec![0; n_classes],
        });
        return Ok(me);
    }
    let (feature, threshold, _) = node.split();
    // Placeholder until the children's indices are known.
    out.push(TreeNode::Leaf {
        class: 0,
        counts: Vec::new(),
    });
    let children = node.children();
    let (Some(Some(l)), Some(Some(r))) = (
        children.first().map(|c| c.as_deref()),
        children.get(1).map(|c| c.as_deref()),
    ) else {
        return Err(Error::Train(
            "linfa returned a split without two children".into(),
        ));
    };
    let left = flatten(l, n_classes, out)?;
    let right = flatten(r, n_classes, out)?;
    out[me] = TreeNode::Split {
        feature,
        threshold,
        left,
        right,
    };
    Ok(me)
}

impl TreeModel {
    /// Routes a vector to its leaf: the leaf index and the conditions taken.
    fn leaf_of(&self, v: &FeatureVector) -> (usize, Vec<Condition>) {
        // One allocation for any path the trainer's default depth allows (growing it from
        // empty was most of the classifier's time).
        let mut path = Vec::with_capacity(DEFAULT_MAX_DEPTH);
        let mut i = 0;
        // validate() guarantees children come after parents and features are in range, so
        // this terminates; the bound is a second guard for models built in memory.
        for _ in 0..self.nodes.len() {
            match &self.nodes[i] {
                TreeNode::Leaf { .. } => break,
                TreeNode::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    let Some(f) = Feature::from_index(*feature) else {
                        break;
                    };
                    let cond = Condition {
                        feature: f,
                        op: Op::Below,
                        threshold: *threshold,
                    };
                    if cond.holds(v) {
                        path.push(cond);
                        i = *left;
                    } else {
                        path.push(cond.negate());
                        i = *right;
                    }
                }
            }
        }
        (i, path)
    }

    /// Serialises the model to pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|source| Error::Serialize {
            what: "model",
            source,
        })
    }

    /// Parses and validates a model file's contents.
    pub fn from_json(text: &str) -> Result<TreeModel> {
        let header: Header = serde_json::from_str(text).map_err(Error::ModelParse)?;
        if header.feature_schema_version != FEATURE_SCHEMA_VERSION {
            return Err(Error::SchemaMismatch {
                found: header.feature_schema_version,
                expected: FEATURE_SCHEMA_VERSION,
            });
        }
        let model: TreeModel = serde_json::from_str(text).map_err(Error::ModelParse)?;
        model.validate()?;
        Ok(model)
    }

    /// Writes the model file.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()?).map_err(|source| Error::Io {
            what: "writing model",
            path: path.into(),
            source,
        })
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<TreeModel> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "reading model",
            path: path.into(),
            source,
        })?;
        TreeModel::from_json(&text)
    }

    /// Checks that the model fits this build and that its tree is well formed.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(m));
        if self.feature_schema_version != FEATURE_SCHEMA_VERSION {
            return Err(Error::SchemaMismatch {
                found: self.feature_schema_version,
                expected: FEATURE_SCHEMA_VERSION,
            });
        }
        if self.features != feature_names() {
            return bad("feature list differs from this build's schema at the same version".into());
        }
        if self.classes.is_empty() {
            return bad("no classes".into());
        }
        if self.nodes.is_empty() {
            return bad("no nodes".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            match n {
                TreeNode::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    if *feature >= FEATURE_COUNT {
                        return bad(format!("node {i}: feature {feature} out of range"));
                    }
                    if !threshold.is_finite() {
                        return bad(format!("node {i}: threshold is not finite"));
                    }
                    // Children after parents rules out cycles, so prediction always ends.
                    for c in [left, right] {
                        if *c <= i || *c >= self.nodes.len() {
                            return bad(format!("node {i}: child {c} out of order or range"));
                        }
                    }
                }
                TreeNode::Leaf { class, counts } => {
                    if *class >= self.classes.len() {
                        return bad(format!("node {i}: class {class} out of range"));
                    }
                    if counts.len() != self.classes.len() {
                        return bad(format!(
                            "node {i}: {} counts for {} classes",
                            counts.len(),
                            self.classes.len()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Number of leaves (a size measure for reports).
    pub fn leaves(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n, TreeNode::Leaf { .. }))
            .count()
    }
}

impl Classifier for TreeModel {
    fn classify(&self, v: &FeatureVector) -> Classification {
        let (leaf, path) = self.leaf_of(v);
        let (root_cause, confidence) = match self.nodes.get(leaf) {
            Some(TreeNode::Leaf { class, counts }) => {
                let total: u32 = counts.iter().sum();
                let hits = counts.get(*class).copied().unwrap_or(0);
                let conf = if total > 0 {
                    f64::from(hits) / f64::from(total)
                } else {
                    0.0
                };
                (
                    self.classes
                        .get(*class)
                        .copied()
                        .unwrap_or(RootCause::Healthy),
                    conf,
                )
            }
            // Only reachable for an unvalidated model: say nothing rather than guess.
            _ => (RootCause::Healthy, 0.0),
        };
        Classification {
            root_cause,
            confidence,
            path,
        }
    }

    fn version(&self) -> String {
        self.model_version.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use linfa::prelude::Predict;

    /// A small deterministic generator (no rand dependency for tests).
    pub(crate) struct Lcg(pub u64);

    impl Lcg {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Synthetic but separable rows for a few classes, with noise on the deciding features.
    pub(crate) fn synthetic(n_per_class: usize, seed: u64) -> Vec<(FeatureVector, RootCause)> {
        let mut rng = Lcg(seed);
        let mut rows = Vec::new();
        for i in 0..n_per_class * 4 {
            let mut v = FeatureVector::default();
            v.set(Feature::HasClientView, 1.0);
            v.set(Feature::HasServerView, 1.0);
            v.set(Feature::ExchangeRate, 50.0 + 100.0 * rng.next());
            v.set(Feature::ServerP99Ratio, 0.8 + 0.4 * rng.next());
            v.set(Feature::ClientP99Ratio, 0.8 + 0.4 * rng.next());
            v.set(Feature::RetransC2sPerExchange, 0.01 * rng.next());
            v.set(Feature::GapShare, 0.1 + 0.2 * rng.next());
            let class = match i % 4 {
                0 => RootCause::Healthy,
                1 => {
                    v.set(Feature::RetransC2sPerExchange, 0.1 + rng.next());
                    v.set(Feature::ClientP99Ratio, 1.5 + 2.0 * rng.next());
                    RootCause::PathLoss
                }
                2 => {
                    v.set(Feature::ServerP99Ratio, 2.5 + 5.0 * rng.next());
                    v.set(Feature::ClientP99Ratio, 2.5 + 5.0 * rng.next());
                    RootCause::ServerAppSlow
                }
                _ => {
                    v.set(Feature::ClientP99Ratio, 2.5 + 5.0 * rng.next());
                    v.set(Feature::GapShare, 0.6 + 0.3 * rng.next());
                    RootCause::PathDelay
                }
            };
            rows.push((v, class));
        }
        rows
    }

    fn trained() -> (TreeModel, Vec<(FeatureVector, RootCause)>) {
        let rows = synthetic(40, 7);
        (
            train(&rows, &TrainParams::default(), "test-1").unwrap(),
            rows,
        )
    }

    #[test]
    fn learns_separable_classes_and_generalises() {
        let (model, _) = trained();
        let test = synthetic(25, 99);
        let right = test
            .iter()
            .filter(|(v, c)| model.classify(v).root_cause == *c)
            .count();
        assert!(
            right as f64 >= 0.95 * test.len() as f64,
            "{right}/{}",
            test.len()
        );
        assert!(
            model.leaves() >= 4,
            "four classes need at least four leaves"
        );
    }

    #[test]
    fn flattened_tree_predicts_exactly_like_linfa() {
        let rows = synthetic(30, 3);
        // linfa below sees every column, so the model must too.
        let params = TrainParams {
            exclude: Vec::new(),
            ..TrainParams::default()
        };
        let model = train(&rows, &params, "t").unwrap();
        let mut x = Array2::<f64>::zeros((rows.len(), FEATURE_COUNT));
        for (i, (v, _)) in rows.iter().enumerate() {
            x.row_mut(i)
                .assign(&ndarray::ArrayView1::from(v.as_slice()));
        }
        let y: Array1<usize> = rows.iter().map(|(_, c)| c.index()).collect();
        let ds = Dataset::new(x.clone(), y).with_feature_names(feature_names());
        let tree = DecisionTree::params()
            .max_depth(params.max_depth)
            .min_weight_leaf(params.min_weight_leaf)
            .min_weight_split(params.min_weight_split)
            .fit(&ds)
            .unwrap();
        let linfa_pred: Array1<usize> = tree.predict(&x);
        for (i, (v, _)) in rows.iter().enumerate() {
            assert_eq!(
                model.classify(v).root_cause.index(),
                linfa_pred[i],
                "row {i}"
            );
        }
    }

    #[test]
    fn confidence_and_path_come_from_the_leaf() {
        let (model, rows) = trained();
        let total: u32 = model
            .nodes
            .iter()
            .filter_map(|n| match n {
                TreeNode::Leaf { counts, .. } => Some(counts.iter().sum::<u32>()),
                _ => None,
            })
            .sum();
        assert_eq!(
            total as usize,
            rows.len(),
            "every training row lands in exactly one leaf"
        );
        for (v, _) in &rows {
            let c = model.classify(v);
            assert!(c.confidence > 0.0 && c.confidence <= 1.0);
            assert!(!c.path.is_empty());
            assert!(
                c.path.iter().all(|cond| cond.holds(v)),
                "path must describe the vector"
            );
        }
        // A slow server is decided on latency features, not on retransmits alone.
        let slow = rows
            .iter()
            .find(|(_, c)| *c == RootCause::ServerAppSlow)
            .unwrap();
        let path: Vec<String> = model
            .classify(&slow.0)
            .path
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            path.iter()
                .any(|p| p.starts_with("server_p99_ratio") || p.starts_with("gap_share")),
            "{path:?}"
        );
    }

    #[test]
    fn round_trip_gives_identical_predictions() {
        let (model, rows) = trained();
        let dir =
            std::env::temp_dir().join(format!("netdx-diagnosis-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.json");
        model.save(&path).unwrap();
        let loaded = TreeModel::load(&path).unwrap();
        assert_eq!(loaded, model);
        for (v, _) in rows.iter().chain(synthetic(10, 1234).iter()) {
            assert_eq!(loaded.classify(v), model.classify(v));
        }
        assert_eq!(loaded.version(), "test-1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_files_are_refused() {
        let (model, _) = trained();
        let json = model.to_json().unwrap();
        let truncated = &json[..json.len() / 2];
        assert!(matches!(
            TreeModel::from_json(truncated),
            Err(Error::ModelParse(_))
        ));
        assert!(matches!(
            TreeModel::from_json("not json"),
            Err(Error::ModelParse(_))
        ));
        let unknown_class = json.replacen("\"healthy\"", "\"gremlins\"", 1);
        assert!(matches!(
            TreeModel::from_json(&unknown_class),
            Err(Error::ModelParse(_))
        ));
        // Parses, but a child points backwards: would loop forever if accepted.
        let mut cyclic = model.clone();
        if let Some(TreeNode::Split { left, .. }) = cyclic.nodes.first_mut() {
            *left = 0;
        }
        let err = TreeModel::from_json(&cyclic.to_json().unwrap()).unwrap_err();
        assert!(matches!(err, Error::InvalidModel(_)), "{err}");
        let mut renamed = model.clone();
        renamed.features[0] = "something_else".into();
        assert!(matches!(
            TreeModel::from_json(&renamed.to_json().unwrap()),
            Err(Error::InvalidModel(_))
        ));
        let missing = std::env::temp_dir().join("netdx-diagnosis-no-such-model.json");
        assert!(matches!(TreeModel::load(&missing), Err(Error::Io { .. })));
    }

    #[test]
    fn mismatched_schema_is_refused() {
        let (mut model, _) = trained();
        model.feature_schema_version = FEATURE_SCHEMA_VERSION + 1;
        let err = TreeModel::from_json(&model.to_json().unwrap()).unwrap_err();
        assert!(
            matches!(err, Error::SchemaMismatch { found, expected } if found == FEATURE_SCHEMA_VERSION + 1 && expected == FEATURE_SCHEMA_VERSION)
        );
        // Even a future file whose body no longer parses reports the version, not a parse error.
        let future = format!(
            "{{\"featureSchemaVersion\": {}, \"nodes\": \"new layout\"}}",
            FEATURE_SCHEMA_VERSION + 1
        );
        assert!(matches!(
            TreeModel::from_json(&future),
            Err(Error::SchemaMismatch { .. })
        ));
    }

    #[test]
    fn excluded_features_are_never_split_on() {
        // Make an excluded feature a perfect (and the only clean) separator: the tree must
        // still not use it.
        let mut rows = synthetic(30, 5);
        for (v, c) in rows.iter_mut() {
            v.set(
                Feature::ClientP99Ms,
                if *c == RootCause::PathLoss {
                    500.0
                } else {
                    1.0
                },
            );
        }
        let model = train(&rows, &TrainParams::default(), "t").unwrap();
        let used: Vec<usize> = model
            .nodes
            .iter()
            .filter_map(|n| match n {
                TreeNode::Split { feature, .. } => Some(*feature),
                _ => None,
            })
            .collect();
        assert!(!used.is_empty());
        assert!(
            WORKLOAD_SCALED.iter().all(|f| !used.contains(&f.index())),
            "{used:?}"
        );
        let everything = TrainParams {
            exclude: Vec::new(),
            ..TrainParams::default()
        };
        let free = train(&rows, &everything, "t").unwrap();
        assert!(
            free.nodes
                .iter()
                .any(|n| matches!(n, TreeNode::Split { feature, .. } if *feature == Feature::ClientP99Ms.index())),
            "without exclusion the perfect separator is used, so the check above is meaningful"
        );
        let bad = TrainParams {
            exclude: vec!["no_such_feature".into()],
            ..TrainParams::default()
        };
        assert!(matches!(train(&rows, &bad, "t"), Err(Error::Train(_))));
    }

    #[test]
    fn training_without_rows_fails_cleanly() {
        assert!(matches!(
            train(&[], &TrainParams::default(), "x"),
            Err(Error::Train(_))
        ));
    }
}
