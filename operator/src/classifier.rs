//! The classifier windows are diagnosed with: the model shipped in `operator/model/model.json`,
//! or the rule tree while none is shipped, replaceable at run time by a model file (a mounted
//! ConfigMap) without letting a bad file take the working classifier down.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use netdx_diagnosis::classes::Classifier;
use netdx_diagnosis::model::TreeModel;
use netdx_diagnosis::rules::RuleTree;
use tracing::{error, info, warn};

include!(concat!(env!("OUT_DIR"), "/embedded_model.rs"));

/// A classifier that can be shared with the ingest path.
pub type SharedClassifier = Arc<dyn Classifier + Send + Sync>;

/// How often a model file is checked for changes (ConfigMap volumes update within ~1 min).
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Holds the classifier in use; a failed replacement leaves it untouched.
pub struct ClassifierSlot {
    current: RwLock<SharedClassifier>,
}

impl Default for ClassifierSlot {
    fn default() -> Self {
        ClassifierSlot {
            current: RwLock::new(builtin()),
        }
    }
}

/// The embedded model, or the rule tree when none is embedded (or it does not load).
fn builtin() -> SharedClassifier {
    // Unit tests pin the rule tree: their constructed windows must not depend on whichever
    // model ships (embedded_model_loads checks the shipped one).
    if cfg!(test) {
        return Arc::new(RuleTree::new());
    }
    match EMBEDDED_MODEL.map(|text| TreeModel::from_json(text).and_then(|m| m.forest())) {
        Some(Ok(model)) => Arc::new(model),
        Some(Err(e)) => {
            // The embedded_model_loads test keeps this from shipping; never leave the operator blind.
            error!(error = %e, "embedded model does not load; using the rule tree");
            Arc::new(RuleTree::new())
        }
        None => Arc::new(RuleTree::new()),
    }
}

impl ClassifierSlot {
    /// The classifier to use now.
    pub fn current(&self) -> SharedClassifier {
        // A poisoned lock only means a writer panicked between two whole assignments.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Version of the classifier in use (recorded in reports).
    pub fn version(&self) -> String {
        self.current().version()
    }

    /// Replaces the classifier.
    pub fn set(&self, classifier: SharedClassifier) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = classifier;
    }
}

/// Watches a model file and swaps it in when it changes; bad files are reported, not used.
pub struct ModelReloader {
    slot: Arc<ClassifierSlot>,
    path: PathBuf,
    recorder: Recorder,
    regarding: ObjectReference,
    loaded: Option<SystemTime>,
    /// Whether the file's absence was already logged (an optional ConfigMap may not exist).
    missing_logged: bool,
}

impl ModelReloader {
    /// A reloader for `path`; rejections become Warning events on `regarding` (the operator pod).
    pub fn new(
        slot: Arc<ClassifierSlot>,
        path: PathBuf,
        recorder: Recorder,
        regarding: ObjectReference,
    ) -> Self {
        ModelReloader {
            slot,
            path,
            recorder,
            regarding,
            loaded: None,
            missing_logged: false,
        }
    }

    /// Loads the file if it changed since the last attempt; returns whether the classifier changed.
    pub async fn check(&mut self) -> bool {
        let Ok(mtime) = std::fs::metadata(&self.path).and_then(|m| m.modified()) else {
            // No file is not an error: the ConfigMap is optional and may be created later.
            if !self.missing_logged {
                info!(path = %self.path.display(), using = %self.slot.version(), "no model file yet");
                self.missing_logged = true;
            }
            return false;
        };
        self.missing_logged = false;
        let mtime = Some(mtime);
        if mtime == self.loaded {
            return false;
        }
        // Remember the attempt even when it fails, so a bad file is reported once, not every tick.
        self.loaded = mtime;
        match TreeModel::load(&self.path).and_then(|m| m.forest()) {
            Ok(model) => {
                info!(path = %self.path.display(), version = %model.version(), "diagnosis model loaded");
                self.slot.set(Arc::new(model));
                true
            }
            Err(e) => {
                let kept = self.slot.version();
                error!(path = %self.path.display(), error = %e, kept = %kept, "model rejected; keeping the previous classifier");
                let event = Event {
                    type_: EventType::Warning,
                    reason: "ModelRejected".into(),
                    note: Some(format!("{}: {e}; still using {kept}", self.path.display())),
                    action: "LoadModel".into(),
                    secondary: None,
                };
                if let Err(e) = self.recorder.publish(&event, &self.regarding).await {
                    warn!(error = %e, "publishing the ModelRejected event");
                }
                false
            }
        }
    }

    /// Checks the file now and then every [`RELOAD_EVERY`], forever.
    pub async fn run(mut self) {
        loop {
            self.check().await;
            tokio::time::sleep(RELOAD_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ApiServerVerifier, Scenario, timeout_after_1s};
    use netdx_diagnosis::rules::RULES_VERSION;

    #[test]
    fn embedded_model_loads() {
        if let Some(text) = EMBEDDED_MODEL {
            TreeModel::from_json(text)
                .and_then(|m| m.forest())
                .expect("operator/model/model.json must load");
        } else {
            assert_eq!(ClassifierSlot::default().version(), RULES_VERSION);
        }
    }

    fn operator_pod() -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some("netdx-operator-0".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn corrupt_or_mismatched_models_keep_the_previous_classifier() {
        let (client, server) = ApiServerVerifier::client();
        let slot = Arc::new(ClassifierSlot::default());
        let before = slot.version();
        let dir = std::env::temp_dir().join(format!("netdx-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("model.json");
        let mut reloader = ModelReloader::new(
            slot.clone(),
            path.clone(),
            Recorder::new(client, "netdx-operator-test".into()),
            operator_pod(),
        );
        let mock = server.run(Scenario::ModelRejected(2));
        assert!(
            !reloader.check().await,
            "no file yet: nothing to load, no event"
        );
        std::fs::write(&path, "{ not json").expect("write");
        assert!(!reloader.check().await, "corrupt file is rejected");
        assert_eq!(slot.version(), before);
        // Same mtime resolution is coarse on some filesystems: force a different one.
        std::fs::write(&path, r#"{"featureSchemaVersion": 999}"#).expect("write");
        reloader.loaded = None;
        assert!(!reloader.check().await, "other schema is rejected");
        assert_eq!(slot.version(), before);
        timeout_after_1s(mock).await;
        let good = TreeModel {
            model_version: "tree-test".into(),
            feature_schema_version: netdx_diagnosis::features::FEATURE_SCHEMA_VERSION,
            features: netdx_diagnosis::features::feature_names(),
            classes: vec![netdx_diagnosis::classes::RootCause::Healthy],
            params: Default::default(),
            training_rows: 1,
            trees: vec![vec![netdx_diagnosis::model::TreeNode::Leaf {
                class: 0,
                counts: vec![1],
            }]],
            without_payload: None,
        };
        good.save(&path).expect("save");
        reloader.loaded = None;
        assert!(
            reloader.check().await,
            "a valid model replaces the classifier"
        );
        assert_eq!(slot.version(), "tree-test");
        std::fs::remove_dir_all(&dir).ok();
    }
}
