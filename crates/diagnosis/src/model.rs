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
use smallvec::SmallVec;

use crate::classes::{Classification, Classifier, Condition, Op, RootCause};
use crate::features::{
    FEATURE_COUNT, FEATURE_SCHEMA_VERSION, FEATURES, Feature, FeatureVector, feature_names,
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

/// Features whose healthy level tells the workloads apart (how each client reuses
/// connections, how many round trips its exchanges take, its own pod's background drops and
/// zero windows) while their fault signal is carried by a ratio to the baseline or a share.
/// A tree that splits on them first learns a class per workload branch, and a workload it
/// never saw goes down a branch with no such class: with them, leave-one-workload-out
/// macro-F1 0.665 and unseen intensity 0.731, without them 0.745 and 0.788 (seed 1,
/// docs/diagnosis-notes.md). Left out of training by default, like [`WORKLOAD_SCALED`].
pub const WORKLOAD_SHAPED: [Feature; 6] = [
    // Healthy medians 2000 (wrk, keep-alive) vs 75-150 (the others); its ratio stays.
    Feature::ExchangesPerOkConnect,
    // 12 round trips per median exchange on nginx, 2.5-3.3 elsewhere.
    Feature::ClientP50PerRtt,
    // The client pod's background drops: 0 (DNS) to 7 per second (redis).
    Feature::ClientDropsTotal,
    // Only the redis client advertises zero windows, healthy or not.
    Feature::ClientZeroWindowAdv,
    // Absolute ms like srtt_mean_ms and srtt_max_ms; srtt_min_ratio carries it.
    Feature::SrttMinMs,
    // Healthy medians 5.2 (TCP) and 1 (DNS over UDP: no RTT, read as "no spread"), which is
    // also a constant delay's value: with it, every healthy DNS window of the held-out DNS
    // workload read as path delay (900 rows, schema 9 data). srtt_range_ratio and
    // srtt_min_ratio carry the RTT shape relative to the edge's own normal. (srtt_queueing had
    // the same flaw; since schema 11 it reads the healthy TCP median without an RTT, and is
    // trained on.)
    Feature::SrttSpread,
];

/// Features fed by copied message heads (the L7 error signal): with payload capture off at
/// both ends of an edge they read 0, or only silence in `dns_failure_ratio`, however the
/// exchanges were answered. [`TreeModel::without_payload`] never splits on them.
pub const PAYLOAD_FEATURES: [Feature; 3] = [
    Feature::L7ErrorRatio,
    Feature::AppErrorRatio,
    Feature::DnsFailureRatio,
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
    /// Trees in the model: 1 is a single tree on every row; more are bagged, each trained on
    /// a bootstrap sample of the rows and a random share of the features, and they vote.
    #[serde(default = "one")]
    pub trees: usize,
    /// Share of the (not excluded) features each bagged tree may split on, 0..1.
    #[serde(default = "all_features")]
    pub feature_share: f32,
    /// Share of the tree's features each split searches, drawn anew at every node (random
    /// forest style), 0..1: a feature that alone names a class stays within reach of every
    /// tree, where a per-tree share hides it from whole trees.
    #[serde(default = "all_features")]
    pub split_feature_share: f32,
    /// Seed of the bootstrap samples and feature draws.
    #[serde(default)]
    pub seed: u64,
    /// Place split thresholds on a log scale: train on [`log_scale`] of every feature and map
    /// the thresholds back, so a split between 0.001 and 0.1 lands near 0.01 (their geometric
    /// mean) rather than 0.05. Trees route rows the same either way; only where the cut falls
    /// between the training values differs, which matters for intensities training never saw.
    #[serde(default)]
    pub log_thresholds: bool,
}

/// Below this a feature's [`log_scale`] is about linear: the resolution of the smallest
/// ratios and per-request rates the features hold.
const LOG_SCALE_UNIT: f64 = 1e-3;

/// A monotone, sign-preserving log scale: ln(1 + |x| / unit), signed.
pub fn log_scale(x: f64) -> f64 {
    (x.abs() / LOG_SCALE_UNIT).ln_1p().copysign(x)
}

/// The inverse of [`log_scale`].
pub fn log_unscale(y: f64) -> f64 {
    (LOG_SCALE_UNIT * y.abs().exp_m1()).copysign(y)
}

fn one() -> usize {
    1
}

fn all_features() -> f32 {
    1.0
}

impl TrainParams {
    /// The same parameters, with [`PAYLOAD_FEATURES`] excluded too.
    pub fn without_payload(&self) -> TrainParams {
        let mut p = self.clone();
        for f in PAYLOAD_FEATURES {
            if !p.exclude.iter().any(|e| e == f.name()) {
                p.exclude.push(f.name().to_string());
            }
        }
        p
    }
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
                .chain(&WORKLOAD_SHAPED)
                .map(|f| f.name().to_string())
                .collect(),
            balance_classes: true,
            entropy: false,
            // Grouped CV on the same dataset (diagnosis-notes.md): one tree 0.906, 25 bagged
            // trees on half the features each 0.951 (a third: 0.919, 70 %: 0.940, 50 trees:
            // 0.939), and with log-scale thresholds 0.954 (one tree with them: 0.934). On the
            // 220-scenario dataset, seeds 1-3 (seventh session): 65 % of the features per tree
            // scores unseen intensity 0.927 and top-1 0.985 on average where 50 % scores 0.898
            // and 0.975 (held-out 0.960 / 0.958); 80 % and 100 % score lower on everything,
            // and features drawn per split instead of per tree too.
            trees: 25,
            feature_share: 0.65,
            split_feature_share: 1.0,
            seed: 1,
            log_thresholds: true,
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
#[serde(rename_all = "camelCase", from = "ModelFile")]
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
    /// The trees, each a node list whose node 0 is the root; they vote.
    pub trees: Vec<Vec<TreeNode>>,
    /// A model of the same rows that never splits on [`PAYLOAD_FEATURES`], for edges whose
    /// watched ends copy no response heads (payload capture off): those features read 0 there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_payload: Option<Box<TreeModel>>,
}

/// A model file as read: files written before bagging hold one tree as `nodes`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelFile {
    model_version: String,
    feature_schema_version: u32,
    features: Vec<String>,
    classes: Vec<RootCause>,
    params: TrainParams,
    training_rows: usize,
    #[serde(default)]
    trees: Vec<Vec<TreeNode>>,
    #[serde(default)]
    nodes: Option<Vec<TreeNode>>,
    #[serde(default)]
    without_payload: Option<Box<TreeModel>>,
}

impl From<ModelFile> for TreeModel {
    fn from(f: ModelFile) -> Self {
        let mut trees = f.trees;
        trees.extend(f.nodes);
        TreeModel {
            model_version: f.model_version,
            feature_schema_version: f.feature_schema_version,
            features: f.features,
            classes: f.classes,
            params: f.params,
            training_rows: f.training_rows,
            trees,
            without_payload: f.without_payload,
        }
    }
}

/// Only the version field, read first so a file of another schema is reported as such
/// instead of as an unrelated parse error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    feature_schema_version: u32,
}

/// A small deterministic generator for bootstrap samples and feature draws (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in 0..1.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Trains a model on labelled feature rows: one tree on every row, or `params.trees` bagged
/// trees.
pub fn train(
    rows: &[(FeatureVector, RootCause)],
    params: &TrainParams,
    model_version: &str,
) -> Result<TreeModel> {
    if rows.is_empty() {
        return Err(Error::Train("no training rows".into()));
    }
    if params.trees == 0 {
        return Err(Error::Train("a model needs at least one tree".into()));
    }
    for (what, share) in [
        ("feature share", params.feature_share),
        ("split feature share", params.split_feature_share),
    ] {
        if !(share > 0.0 && share <= 1.0) {
            return Err(Error::Train(format!("{what} {share} is not in (0, 1]")));
        }
    }
    let excluded = params
        .exclude
        .iter()
        .map(|n| {
            Feature::from_name(n)
                .ok_or_else(|| Error::Train(format!("unknown feature to exclude: {n}")))
                .map(Feature::index)
        })
        .collect::<Result<Vec<_>>>()?;
    let usable: Vec<usize> = (0..FEATURE_COUNT)
        .filter(|j| !excluded.contains(j))
        .collect();
    if usable.is_empty() {
        return Err(Error::Train("every feature is excluded".into()));
    }
    let mut rng = SplitMix(params.seed);
    let mut trees = Vec::with_capacity(params.trees);
    for t in 0..params.trees {
        let (sample, columns) = if params.trees == 1 {
            ((0..rows.len()).collect(), usable.clone())
        } else {
            let sample: Vec<usize> = (0..rows.len()).map(|_| rng.below(rows.len())).collect();
            let mut columns: Vec<usize> = usable
                .iter()
                .copied()
                .filter(|_| rng.unit() < f64::from(params.feature_share))
                .collect();
            if columns.is_empty() {
                columns.push(usable[rng.below(usable.len())]);
            }
            (sample, columns)
        };
        // Each tree's per-node draws get their own seed, independent of the draws above.
        let split_seed = SplitMix(params.seed ^ ((t as u64 + 1) << 32)).next();
        trees.push(train_tree(rows, &sample, &columns, params, split_seed)?);
    }
    Ok(TreeModel {
        model_version: model_version.to_string(),
        feature_schema_version: FEATURE_SCHEMA_VERSION,
        features: feature_names(),
        classes: RootCause::ALL.to_vec(),
        params: params.clone(),
        training_rows: rows.len(),
        trees,
        without_payload: None,
    })
}

/// One tree on the rows at `sample` (repeats allowed), splitting only on `columns`; its leaves
/// count the sampled rows that reach them.
fn train_tree(
    rows: &[(FeatureVector, RootCause)],
    sample: &[usize],
    columns: &[usize],
    params: &TrainParams,
    split_seed: u64,
) -> Result<Vec<TreeNode>> {
    let n_classes = RootCause::ALL.len();
    // linfa sees only the tree's columns (its split search scans every column it is given);
    // `flatten` maps its column numbers back to features.
    let mut x = Array2::<f64>::zeros((sample.len(), columns.len()));
    for (i, &r) in sample.iter().enumerate() {
        let v = rows[r].0.as_slice();
        for (k, &j) in columns.iter().enumerate() {
            x[[i, k]] = if params.log_thresholds {
                log_scale(v[j])
            } else {
                v[j]
            };
        }
    }
    let y: Array1<usize> = sample.iter().map(|&r| rows[r].1.index()).collect();
    let names: Vec<String> = columns
        .iter()
        .map(|&j| FEATURES[j].name.to_string())
        .collect();
    let mut dataset = Dataset::new(x, y.clone()).with_feature_names(names);
    if params.balance_classes {
        let mut count = vec![0usize; n_classes];
        for c in &y {
            count[*c] += 1;
        }
        let present = count.iter().filter(|n| **n > 0).count().max(1) as f32;
        let n = sample.len() as f32;
        // Full balancing measured best on macro-F1 and localization (docs/model-card.md);
        // it costs false findings on healthy windows, reported there too.
        let w: Array1<f32> = y.iter().map(|c| n / (present * count[*c] as f32)).collect();
        dataset = dataset.with_weights(w);
    }
    let per_split = (params.split_feature_share < 1.0)
        .then(|| ((columns.len() as f32 * params.split_feature_share).ceil() as usize).max(1));
    let tree = DecisionTree::params()
        .max_depth(params.max_depth)
        .min_weight_leaf(params.min_weight_leaf)
        .min_weight_split(params.min_weight_split)
        .max_features(per_split)
        .feature_seed(split_seed)
        .split_quality(if params.entropy {
            SplitQuality::Entropy
        } else {
            SplitQuality::Gini
        })
        .fit(&dataset)
        .map_err(|e| Error::Train(e.to_string()))?;

    let mut nodes = Vec::new();
    flatten(tree.root_node(), n_classes, columns, &mut nodes)?;
    if params.log_thresholds {
        for n in &mut nodes {
            if let TreeNode::Split { threshold, .. } = n {
                *threshold = log_unscale(*threshold);
            }
        }
    }
    // linfa keeps no per-leaf counts, so route the training rows to their leaves to get them.
    for &r in sample {
        let (v, c) = &rows[r];
        let leaf = leaf_of(&nodes, v);
        if let TreeNode::Leaf { counts, .. } = &mut nodes[leaf] {
            counts[c.index()] += 1;
        }
    }
    Ok(nodes)
}

/// Copies a linfa subtree into `out` in pre-order and returns the index of its root; linfa's
/// column `k` is feature `columns[k]`.
fn flatten(
    node: &LinfaNode<f64, usize>,
    n_classes: usize,
    columns: &[usize],
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
    let feature = *columns.get(feature).ok_or_else(|| {
        Error::Train(format!(
            "linfa split on column {feature} of {}",
            columns.len()
        ))
    })?;
    let left = flatten(l, n_classes, columns, out)?;
    let right = flatten(r, n_classes, columns, out)?;
    out[me] = TreeNode::Split {
        feature,
        threshold,
        left,
        right,
    };
    Ok(me)
}

/// Routes a vector through one tree to its leaf (training counts the rows reaching each leaf).
fn leaf_of(nodes: &[TreeNode], v: &FeatureVector) -> usize {
    let mut i = 0;
    // Children come after their parents (linfa's pre-order), so this ends; the bound is a
    // second guard.
    for _ in 0..nodes.len() {
        let Some(TreeNode::Split {
            feature,
            threshold,
            left,
            right,
        }) = nodes.get(i)
        else {
            break;
        };
        let Some(&x) = v.as_slice().get(*feature) else {
            break;
        };
        // The split test of linfa: below goes left.
        i = if x < *threshold { *left } else { *right };
    }
    i
}

impl TreeModel {
    /// The model compiled for prediction (validated first).
    pub fn forest(&self) -> Result<Forest> {
        self.validate()?;
        Forest::compile(self)
    }

    /// Serialises the model to compact JSON (a bagged model must fit a 1 MiB ConfigMap).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|source| Error::Serialize {
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
        if self.trees.is_empty() {
            return bad("no trees".into());
        }
        for (t, nodes) in self.trees.iter().enumerate() {
            self.validate_tree(nodes)
                .map_err(|m| Error::InvalidModel(format!("tree {t}: {m}")))?;
        }
        if let Some(m) = &self.without_payload {
            let bad = |why: String| Error::InvalidModel(format!("model without payload: {why}"));
            if m.without_payload.is_some() {
                return Err(bad("holds another model".into()));
            }
            m.validate().map_err(|e| bad(e.to_string()))?;
            if let Some(f) = m.split_features().find(|f| PAYLOAD_FEATURES.contains(f)) {
                return Err(bad(format!("splits on {}", f.name())));
            }
        }
        Ok(())
    }

    /// The feature of every split in every tree.
    fn split_features(&self) -> impl Iterator<Item = Feature> + '_ {
        self.trees.iter().flatten().filter_map(|n| match n {
            TreeNode::Split { feature, .. } => Feature::from_index(*feature),
            TreeNode::Leaf { .. } => None,
        })
    }

    /// Checks one tree's nodes: features and classes in range, children after parents.
    fn validate_tree(&self, nodes: &[TreeNode]) -> std::result::Result<(), String> {
        let bad = |m: String| Err::<(), String>(m);
        if nodes.is_empty() {
            return bad("no nodes".into());
        }
        for (i, n) in nodes.iter().enumerate() {
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
                        if *c <= i || *c >= nodes.len() {
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

    /// Number of leaves over all trees (a size measure for reports).
    pub fn leaves(&self) -> usize {
        self.trees
            .iter()
            .flatten()
            .filter(|n| matches!(n, TreeNode::Leaf { .. }))
            .count()
    }
}

/// One node of a [`Forest`], laid out in pre-order: a split's left child (`x[feature] <
/// threshold`) is the node after it, so only the right one is stored. 16 bytes, four to a
/// cache line, and a step left mostly stays on the line. A leaf's threshold is -inf and its
/// right child itself: no value moves it, so every tree can be walked a fixed number of steps.
#[derive(Clone, Copy, Debug)]
struct FlatNode {
    threshold: f64,
    feature: u32,
    right: u32,
}

impl FlatNode {
    /// A split's right child comes after it, a leaf's is itself.
    fn is_leaf(&self, at: u32) -> bool {
        self.right == at
    }
}

/// The walk's copy of a feature vector, zero-padded to a power of two so a node's feature
/// (validated below [`FEATURE_COUNT`]) is masked into range instead of bounds-checked.
const PADDED: usize = FEATURE_COUNT.next_power_of_two();

/// Trees and classes a classification keeps on the stack (more spill to the heap).
type PerTree<T> = SmallVec<[T; 32]>;

/// A validated model compiled for prediction: all trees' nodes in one array, each leaf's class
/// and class shares computed once. The operator classifies every edge of every window with all
/// trees, and the node list's enum, the per-leaf count sums and the pointer to each leaf's
/// counts were most of that time.
#[derive(Clone, Debug)]
pub struct Forest {
    version: String,
    classes: Vec<RootCause>,
    /// Every tree's nodes; a tree's children are indices into this array too.
    nodes: Vec<FlatNode>,
    /// Root of each tree in `nodes`.
    roots: Vec<u32>,
    /// Steps that take every tree from its root to a leaf (the deepest tree's depth).
    depth: usize,
    /// For each node, its leaf number (meaningful for leaves only).
    leaf_slot: Vec<u32>,
    /// Each leaf's class.
    leaf_class: Vec<usize>,
    /// Each leaf's share of every class among the training rows that reached it:
    /// `shares[leaf * classes + c]`.
    shares: Vec<f64>,
    /// [`TreeModel::without_payload`], compiled.
    without_payload: Option<Box<Forest>>,
}

impl Forest {
    /// Flattens a validated model's trees, each in pre-order with the left subtree first.
    fn compile(model: &TreeModel) -> Result<Forest> {
        let too_big = || Error::InvalidModel("too many nodes to index with 32 bits".into());
        let index = |i: usize| u32::try_from(i).map_err(|_| too_big());
        let n_classes = model.classes.len();
        let mut f = Forest {
            version: model.model_version.clone(),
            classes: model.classes.clone(),
            nodes: Vec::new(),
            roots: Vec::with_capacity(model.trees.len()),
            depth: 0,
            leaf_slot: Vec::new(),
            leaf_class: Vec::new(),
            shares: Vec::new(),
            without_payload: match &model.without_payload {
                Some(m) => Some(Box::new(Forest::compile(m)?)),
                None => None,
            },
        };
        for tree in &model.trees {
            f.roots.push(index(f.nodes.len())?);
            // (node in `tree`, the split whose right child it is): the left child is pushed
            // last, so it is placed right after its parent.
            let mut todo: Vec<(usize, Option<usize>)> = vec![(0, None)];
            while let Some((i, parent)) = todo.pop() {
                let me = index(f.nodes.len())?;
                if let Some(p) = parent {
                    f.nodes[p].right = me;
                }
                let (node, slot) = match tree.get(i) {
                    Some(TreeNode::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    }) => {
                        todo.push((*right, Some(me as usize)));
                        todo.push((*left, None));
                        let feature = u32::try_from(*feature).map_err(|_| too_big())?;
                        (
                            FlatNode {
                                threshold: *threshold,
                                feature,
                                // Set when the right child is placed.
                                right: me,
                            },
                            0,
                        )
                    }
                    Some(TreeNode::Leaf { class, counts }) => {
                        // The same division the shares were always computed with, once.
                        let total = f64::from(counts.iter().sum::<u32>().max(1));
                        f.shares
                            .extend(counts.iter().map(|&hits| f64::from(hits) / total));
                        f.leaf_class.push(*class);
                        let slot = index(f.leaf_class.len() - 1)?;
                        (
                            FlatNode {
                                threshold: f64::NEG_INFINITY,
                                feature: 0,
                                right: me,
                            },
                            slot,
                        )
                    }
                    None => {
                        return Err(Error::InvalidModel(format!("child {i} out of range")));
                    }
                };
                f.nodes.push(node);
                f.leaf_slot.push(slot);
            }
            f.depth = f.depth.max(tree_depth(tree, 0));
        }
        debug_assert_eq!(f.shares.len(), f.leaf_class.len() * n_classes);
        Ok(f)
    }

    /// The leaf number every tree routes `x` to.
    fn leaves(&self, x: &[f64; FEATURE_COUNT]) -> PerTree<u32> {
        let mut padded = [0.0; PADDED];
        padded[..FEATURE_COUNT].copy_from_slice(x);
        let mut at: PerTree<u32> = self.roots.iter().copied().collect();
        // All trees a level at a time, without a branch per node: leaves loop onto
        // themselves, so the walks of different trees overlap instead of waiting on each other,
        // and the walk ends at the first level where no tree moved.
        for _ in 0..self.depth {
            let mut moved = false;
            for i in &mut at {
                let n = &self.nodes[*i as usize];
                // The mask keeps a validated feature as it is.
                let value = padded[n.feature as usize & (PADDED - 1)];
                // A select, not a branch: which way a tree goes depends on the traffic.
                let next = std::hint::select_unpredictable(value < n.threshold, *i + 1, n.right);
                moved |= next != *i;
                *i = next;
            }
            if !moved {
                break;
            }
        }
        for i in &mut at {
            *i = self.leaf_slot[*i as usize];
        }
        at
    }

    /// Share of class `c` among the training rows that reached `leaf`.
    fn share(&self, leaf: u32, c: usize) -> f64 {
        self.shares[leaf as usize * self.classes.len() + c]
    }

    /// The conditions on the way from tree `tree`'s root to its leaf for `v`.
    fn path(&self, tree: usize, v: &FeatureVector) -> Vec<Condition> {
        // One allocation for any path the trainer's default depth allows.
        let mut path = Vec::with_capacity(DEFAULT_MAX_DEPTH);
        let mut i = self.roots[tree];
        loop {
            let n = &self.nodes[i as usize];
            if n.is_leaf(i) {
                break;
            }
            let (Some(feature), Some(&x)) = (
                Feature::from_index(n.feature as usize),
                v.as_slice().get(n.feature as usize),
            ) else {
                break;
            };
            // The split test of linfa: below goes left.
            let below = x < n.threshold;
            let cond = Condition {
                feature,
                op: Op::Below,
                threshold: n.threshold,
            };
            path.push(if below { cond } else { cond.negate() });
            i = if below { i + 1 } else { n.right };
        }
        path
    }
}

/// Levels below node `i` of a validated tree.
fn tree_depth(nodes: &[TreeNode], i: usize) -> usize {
    match nodes.get(i) {
        Some(TreeNode::Split { left, right, .. }) => {
            1 + tree_depth(nodes, *left).max(tree_depth(nodes, *right))
        }
        _ => 0,
    }
}

impl Classifier for Forest {
    /// Each tree votes for its leaf's class; the class with most votes wins (ties: the larger
    /// summed leaf share, then the lower class index). Confidence is the winner's leaf share
    /// averaged over all trees, so dissent lowers it; the path is that of the agreeing tree
    /// most sure of the winner.
    fn classify(&self, v: &FeatureVector) -> Classification {
        let leaves = self.leaves(&v.0);
        let n = self.classes.len();
        let mut votes: PerTree<usize> = smallvec::smallvec![0; n];
        // Every class's leaf shares summed in tree order, as the confidence always was.
        let mut summed: PerTree<f64> = smallvec::smallvec![0.0; n];
        for &leaf in &leaves {
            votes[self.leaf_class[leaf as usize]] += 1;
            let row = &self.shares[leaf as usize * n..(leaf as usize + 1) * n];
            for (s, share) in summed.iter_mut().zip(row) {
                *s += share;
            }
        }
        let trees = self.roots.len() as f64;
        let likeliest_fault = (0..n)
            .filter(|&c| self.classes[c] != RootCause::Healthy && summed[c] > 0.0)
            // The first of equally likely classes.
            .rev()
            .max_by(|&a, &b| summed[a].total_cmp(&summed[b]))
            .map(|c| (self.classes[c], summed[c] / trees));
        let most = votes.iter().copied().max().unwrap_or(0);
        let winner = (0..n)
            .filter(|&c| votes[c] == most)
            // max_by keeps the last of equals: reversed so the lower class index wins.
            .rev()
            .max_by(|&a, &b| summed[a].total_cmp(&summed[b]));
        let surest = winner.filter(|_| most > 0).and_then(|w| {
            leaves
                .iter()
                .enumerate()
                .filter(|&(_, &l)| self.leaf_class[l as usize] == w)
                .map(|(t, &l)| (t, self.share(l, w)))
                // The first of equally sure trees.
                .rev()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(t, _)| (w, t))
        });
        let Some((w, tree)) = surest else {
            return Classification {
                root_cause: RootCause::Healthy,
                confidence: 0.0,
                path: Vec::new(),
                likeliest_fault,
            };
        };
        Classification {
            root_cause: self.classes.get(w).copied().unwrap_or(RootCause::Healthy),
            confidence: summed[w] / trees,
            path: self.path(tree, v),
            likeliest_fault,
        }
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn classify_without_payload(&self, v: &FeatureVector) -> Classification {
        match &self.without_payload {
            Some(m) => m.classify(v),
            None => self.classify(v),
        }
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

    /// The conditions a walk of one tree takes for `v`, root first.
    fn path_of(nodes: &[TreeNode], v: &FeatureVector) -> Vec<Condition> {
        let mut path = Vec::new();
        let mut i = 0;
        while let TreeNode::Split {
            feature,
            threshold,
            left,
            right,
        } = &nodes[i]
        {
            let cond = Condition {
                feature: Feature::from_index(*feature).unwrap(),
                op: Op::Below,
                threshold: *threshold,
            };
            let below = v.as_slice()[*feature] < *threshold;
            path.push(if below { cond } else { cond.negate() });
            i = if below { *left } else { *right };
        }
        path
    }

    fn trained() -> (TreeModel, Vec<(FeatureVector, RootCause)>) {
        let rows = synthetic(40, 7);
        (
            train(&rows, &TrainParams::default(), "test-1").unwrap(),
            rows,
        )
    }

    /// Fresh synthetic rows of `seed`, at least 95 % of them classified right.
    fn assert_generalises(model: &TreeModel, seed: u64) -> Vec<(FeatureVector, RootCause)> {
        let test = synthetic(25, seed);
        let forest = model.forest().unwrap();
        let right = test
            .iter()
            .filter(|(v, c)| forest.classify(v).root_cause == *c)
            .count();
        assert!(
            right as f64 >= 0.95 * test.len() as f64,
            "{right}/{}",
            test.len()
        );
        test
    }

    #[test]
    fn learns_separable_classes_and_generalises() {
        let (model, _) = trained();
        assert_generalises(&model, 99);
        assert!(
            model.leaves() >= 4,
            "four classes need at least four leaves"
        );
    }

    #[test]
    fn flattened_tree_predicts_exactly_like_linfa() {
        let rows = synthetic(30, 3);
        for log_thresholds in [false, true] {
            // linfa below sees every column and every row, so the model must too; with log
            // thresholds it sees the log-scaled values and the model's raw thresholds must
            // cut exactly where linfa's cut them.
            let params = TrainParams {
                exclude: Vec::new(),
                trees: 1,
                log_thresholds,
                ..TrainParams::default()
            };
            let model = train(&rows, &params, "t").unwrap();
            let mut x = Array2::<f64>::zeros((rows.len(), FEATURE_COUNT));
            for (i, (v, _)) in rows.iter().enumerate() {
                for (j, value) in v.as_slice().iter().enumerate() {
                    x[[i, j]] = if log_thresholds {
                        log_scale(*value)
                    } else {
                        *value
                    };
                }
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
            let forest = model.forest().unwrap();
            for (i, (v, _)) in rows.iter().enumerate() {
                assert_eq!(
                    forest.classify(v).root_cause.index(),
                    linfa_pred[i],
                    "row {i}, log thresholds {log_thresholds}"
                );
            }
        }
    }

    #[test]
    fn log_scale_is_monotone_and_inverts() {
        let xs = [-5.0, -1e-4, 0.0, 1e-6, 1e-3, 0.04, 0.1, 1.0, 250.0, 1e6];
        for w in xs.windows(2) {
            assert!(log_scale(w[0]) < log_scale(w[1]), "{w:?}");
        }
        for x in xs {
            assert!(
                (log_unscale(log_scale(x)) - x).abs() <= 1e-9 * x.abs().max(1.0),
                "{x}"
            );
        }
        // The midpoint between 0.001 and 0.1 on this scale sits well below their mean.
        let mid = log_unscale((log_scale(0.001) + log_scale(0.1)) / 2.0);
        assert!(mid > 0.001 && mid < 0.02, "{mid}");
    }

    #[test]
    fn confidence_and_path_come_from_the_leaf() {
        let (model, rows) = trained();
        let total: u32 = model.trees[0]
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
        let forest = model.forest().unwrap();
        for (v, _) in &rows {
            let c = forest.classify(v);
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
        let path: Vec<String> = forest
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
        let (loaded, model) = (loaded.forest().unwrap(), model.forest().unwrap());
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
        if let Some(TreeNode::Split { left, .. }) = cyclic.trees[0].first_mut() {
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
    fn blind_edges_get_the_model_trained_without_payload_features() {
        // Application errors that only the copied heads show.
        let mut rows = synthetic(30, 7);
        for (i, (v, c)) in rows.iter_mut().enumerate() {
            if *c == RootCause::Healthy && i % 8 == 0 {
                v.set(Feature::L7ErrorRatio, 0.5);
                v.set(Feature::AppErrorRatio, 0.5);
                *c = RootCause::L7Errors;
            }
        }
        let params = TrainParams {
            trees: 5,
            ..TrainParams::default()
        };
        let mut model = train(&rows, &params, "t").unwrap();
        assert!(
            model
                .split_features()
                .any(|f| PAYLOAD_FEATURES.contains(&f))
        );
        let blind = train(&rows, &params.without_payload(), "t-without-payload").unwrap();
        assert!(
            blind
                .split_features()
                .all(|f| !PAYLOAD_FEATURES.contains(&f))
        );
        model.without_payload = Some(Box::new(blind.clone()));
        let loaded = TreeModel::from_json(&model.to_json().unwrap()).unwrap();
        assert_eq!(loaded, model);
        let (main, blind) = (loaded.forest().unwrap(), blind.forest().unwrap());
        let mut differ = 0;
        for (v, _) in &rows {
            assert_eq!(main.classify_without_payload(v), blind.classify(v));
            differ += usize::from(main.classify(v) != blind.classify(v));
        }
        assert!(differ > 0, "the two models are the same");
        // Without a companion, blind edges get the main model.
        let alone = TreeModel {
            without_payload: None,
            ..model.clone()
        }
        .forest()
        .unwrap();
        assert_eq!(
            alone.classify_without_payload(&rows[0].0),
            alone.classify(&rows[0].0)
        );
        // A companion that reads payload features, or holds a companion, is refused.
        let leaky = TreeModel {
            without_payload: Some(Box::new(TreeModel {
                without_payload: None,
                ..model.clone()
            })),
            ..model.clone()
        };
        let e = TreeModel::from_json(&leaky.to_json().unwrap()).unwrap_err();
        assert!(e.to_string().contains("splits on"), "{e}");
        let nested = TreeModel {
            without_payload: Some(Box::new(model.clone())),
            ..model.clone()
        };
        let e = TreeModel::from_json(&nested.to_json().unwrap()).unwrap_err();
        assert!(e.to_string().contains("holds another model"), "{e}");
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
        let used: Vec<Feature> = model.split_features().collect();
        assert!(!used.is_empty());
        assert!(
            WORKLOAD_SCALED
                .iter()
                .chain(&WORKLOAD_SHAPED)
                .all(|f| !used.contains(f)),
            "{used:?}"
        );
        let everything = TrainParams {
            exclude: Vec::new(),
            ..TrainParams::default()
        };
        let free = train(&rows, &everything, "t").unwrap();
        assert!(
            free.split_features().any(|f| f == Feature::ClientP99Ms),
            "without exclusion the perfect separator is used, so the check above is meaningful"
        );
        let bad = TrainParams {
            exclude: vec!["no_such_feature".into()],
            ..TrainParams::default()
        };
        assert!(matches!(train(&rows, &bad, "t"), Err(Error::Train(_))));
    }

    #[test]
    fn training_is_reproducible_at_a_fixed_seed() {
        // Duplicated columns make exact ties between splits on different features; with class
        // weights summed in a random order (linfa-trees upstream) either could win, run to run.
        let rows: Vec<_> = synthetic(40, 5)
            .into_iter()
            .map(|(mut v, c)| {
                v.set(Feature::ClientP50Ratio, v[Feature::ClientP99Ratio]);
                v.set(Feature::ServerP50Ratio, v[Feature::ServerP99Ratio]);
                (v, c)
            })
            .collect();
        // Also with features drawn per split, which come from the seed too.
        for split_feature_share in [1.0, 0.4] {
            let params = TrainParams {
                trees: 5,
                feature_share: 1.0,
                split_feature_share,
                ..TrainParams::default()
            };
            let first = train(&rows, &params, "t").unwrap().to_json().unwrap();
            for run in 0..8 {
                let again = train(&rows, &params, "t").unwrap().to_json().unwrap();
                assert!(
                    again == first,
                    "run {run} (split share {split_feature_share}) trained a different model"
                );
            }
        }
    }

    #[test]
    fn splits_search_a_drawn_share_of_the_features() {
        let rows = synthetic(40, 13);
        let forest = |split_feature_share, seed| TrainParams {
            trees: 5,
            feature_share: 1.0,
            split_feature_share,
            seed,
            ..TrainParams::default()
        };
        let all = train(&rows, &forest(1.0, 1), "t").unwrap();
        let drawn = train(&rows, &forest(0.2, 1), "t").unwrap();
        assert_generalises(&drawn, 99);
        assert_ne!(all.trees, drawn.trees, "the share changed no split");
        // The draws follow the seed.
        let reseeded = train(&rows, &forest(0.2, 2), "t").unwrap();
        assert_ne!(drawn.trees, reseeded.trees);
        let bad = forest(0.0, 1);
        assert!(matches!(train(&rows, &bad, "t"), Err(Error::Train(_))));
    }

    #[test]
    fn bagged_trees_vote_and_an_agreeing_tree_explains() {
        let rows = synthetic(40, 11);
        let params = TrainParams {
            trees: 9,
            feature_share: 0.5,
            seed: 3,
            ..TrainParams::default()
        };
        let model = train(&rows, &params, "forest").unwrap();
        assert_eq!(model.trees.len(), 9);
        model.validate().unwrap();
        let test = assert_generalises(&model, 98);
        let forest = model.forest().unwrap();
        for (v, _) in &test {
            let c = forest.classify(v);
            assert!(
                c.confidence > 0.0 && c.confidence <= 1.0,
                "{}",
                c.confidence
            );
            assert!(c.path.iter().all(|cond| cond.holds(v)));
            // The path is a whole root-to-leaf walk of a tree whose leaf names the winner.
            let explains = model.trees.iter().any(|nodes| {
                path_of(nodes, v) == c.path
                    && matches!(&nodes[leaf_of(nodes, v)], TreeNode::Leaf { class, .. }
                        if model.classes[*class] == c.root_cause)
            });
            assert!(
                explains,
                "{:?} not explained by a voting tree",
                c.root_cause
            );
        }
        // Each tree saw a bootstrap sample as large as the data.
        for nodes in &model.trees {
            let total: u32 = nodes
                .iter()
                .filter_map(|n| match n {
                    TreeNode::Leaf { counts, .. } => Some(counts.iter().sum::<u32>()),
                    _ => None,
                })
                .sum();
            assert_eq!(total as usize, rows.len());
        }
        let loaded = TreeModel::from_json(&model.to_json().unwrap()).unwrap();
        let loaded = loaded.forest().unwrap();
        for (v, _) in &test {
            assert_eq!(loaded.classify(v), forest.classify(v));
        }
    }

    /// Synthetic rows, a one-tree model trained on them, and a tree that always says healthy.
    fn one_tree_and_a_healthy_tree() -> (Vec<(FeatureVector, RootCause)>, TreeModel, Vec<TreeNode>)
    {
        let rows = synthetic(20, 5);
        let one = train(
            &rows,
            &TrainParams {
                trees: 1,
                ..TrainParams::default()
            },
            "t",
        )
        .unwrap();
        let healthy_leaf = vec![TreeNode::Leaf {
            class: RootCause::Healthy.index(),
            counts: {
                let mut c = vec![0; RootCause::ALL.len()];
                c[RootCause::Healthy.index()] = 10;
                c
            },
        }];
        (rows, one, healthy_leaf)
    }

    #[test]
    fn dissent_lowers_confidence() {
        let (rows, one, healthy_leaf) = one_tree_and_a_healthy_tree();
        // The same tree twice, plus a tree that always says healthy.
        let mut three = one.clone();
        three.trees = vec![one.trees[0].clone(), one.trees[0].clone(), healthy_leaf];
        three.validate().unwrap();
        let (v, class) = rows.iter().find(|(_, c)| *c != RootCause::Healthy).unwrap();
        let single = one.forest().unwrap().classify(v);
        let voted = three.forest().unwrap().classify(v);
        assert_eq!(single.root_cause, *class);
        assert_eq!(voted.root_cause, *class, "two of three trees agree");
        assert!((voted.confidence - single.confidence * 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(voted.path, single.path);
    }

    #[test]
    fn a_fault_outvoted_by_healthy_is_still_the_likeliest_fault() {
        let (rows, one, healthy_leaf) = one_tree_and_a_healthy_tree();
        // One tree names the fault, two always say healthy.
        let mut three = one.clone();
        three.trees = vec![one.trees[0].clone(), healthy_leaf.clone(), healthy_leaf];
        three.validate().unwrap();
        let (v, class) = rows.iter().find(|(_, c)| *c != RootCause::Healthy).unwrap();
        let single = one.forest().unwrap().classify(v);
        let voted = three.forest().unwrap().classify(v);
        assert_eq!(voted.root_cause, RootCause::Healthy);
        let (fault, share) = voted.likeliest_fault.expect("a fault has a share");
        assert_eq!(fault, *class);
        assert!((share - single.confidence / 3.0).abs() < 1e-9, "{share}");
        assert_eq!(single.likeliest_fault, Some((*class, single.confidence)));
        // Trees that only ever saw healthy rows leave nothing to suspect.
        let mut healthy_only = one.clone();
        healthy_only.trees = vec![three.trees[1].clone()];
        assert_eq!(
            healthy_only.forest().unwrap().classify(v).likeliest_fault,
            None
        );
    }

    #[test]
    fn a_single_tree_file_from_before_bagging_still_loads() {
        let (model, rows) = trained();
        let mut json: serde_json::Value = serde_json::from_str(&model.to_json().unwrap()).unwrap();
        let obj = json.as_object_mut().unwrap();
        let trees = obj.remove("trees").unwrap();
        obj.insert("nodes".into(), trees[0].clone());
        let old = TreeModel::from_json(&json.to_string()).unwrap();
        assert_eq!(old.trees.len(), 1);
        let first = TreeModel {
            trees: vec![model.trees[0].clone()],
            ..model.clone()
        };
        let (old, first) = (old.forest().unwrap(), first.forest().unwrap());
        for (v, _) in &rows {
            assert_eq!(old.classify(v), first.classify(v));
        }
    }

    #[test]
    fn bad_bagging_parameters_are_refused() {
        let rows = synthetic(5, 1);
        for params in [
            TrainParams {
                trees: 0,
                ..TrainParams::default()
            },
            TrainParams {
                feature_share: 0.0,
                ..TrainParams::default()
            },
            TrainParams {
                feature_share: 1.5,
                ..TrainParams::default()
            },
            TrainParams {
                feature_share: f32::NAN,
                ..TrainParams::default()
            },
            TrainParams {
                exclude: feature_names(),
                ..TrainParams::default()
            },
        ] {
            assert!(
                matches!(train(&rows, &params, "x"), Err(Error::Train(_))),
                "{params:?}"
            );
        }
        let (mut model, _) = trained();
        model.trees.clear();
        assert!(matches!(
            TreeModel::from_json(&model.to_json().unwrap()),
            Err(Error::InvalidModel(_))
        ));
    }

    #[test]
    fn training_without_rows_fails_cleanly() {
        assert!(matches!(
            train(&[], &TrainParams::default(), "x"),
            Err(Error::Train(_))
        ));
    }
}
