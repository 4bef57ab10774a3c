//! Test helpers: object builders and a mocked API server that checks each call
//! (controller-rs's ApiServerVerifier pattern over `tower_test::mock::pair`).
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::events::Recorder;
use kube::{Client, Resource, ResourceExt};
use netdx_api::crd::{
    DiagnosisPhase, DiagnosisReport, DiagnosisReportSpec, DiagnosisReportStatus, DiagnosisTarget,
    NetworkObservation, NetworkObservationSpec, NetworkObservationStatus, ReportPolicy,
};
use serde_json::{Value, json};

use crate::conditions::{self, DEGRADED, PROBES_SCHEDULED, READY, reason};
use crate::reconcile::OBSERVATION_FINALIZER;
use crate::report::AWAITING_WINDOWS;
use crate::{Context, State};

/// The frozen "now" of every test, in Unix seconds.
pub fn now_secs() -> i64 {
    1_800_000_000
}

fn frozen_now() -> Timestamp {
    Timestamp::from_second(now_secs()).expect("valid timestamp")
}

fn frozen_time_json() -> Value {
    serde_json::to_value(Time(frozen_now())).expect("time serializes")
}

/// A context whose client talks to the returned verifier.
pub fn context() -> (Arc<Context>, ApiServerVerifier) {
    let (mock_service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock_service, "default");
    let state = State::default();
    let ctx = Context {
        recorder: Recorder::new(client.clone(), "netdx-operator-test".into()),
        client,
        metrics: state.metrics,
        diagnostics: state.diagnostics,
        targets: state.targets.clone(),
        cgroups: state.cgroups,
        now: frozen_now,
        engine: Arc::new(crate::engine::WindowEngine {
            ingest: state.ingest.clone(),
            targets: state.targets.clone(),
        }),
        ingest: state.ingest,
        failures: Arc::default(),
        pending: Arc::default(),
    };
    (Arc::new(ctx), ApiServerVerifier(handle))
}

/// Builders for test observations.
pub trait TestObservation: Sized {
    /// An observation of `app=web` pods in `default`, window 10s, as the API server returns it.
    fn test() -> Self;
    /// With another window string.
    fn with_window(self, window: &str) -> Self;
    /// With these matchLabels (empty slice: an empty selector).
    fn with_selector(self, labels: &[(&str, &str)]) -> Self;
    /// With our finalizer already present.
    fn finalized(self) -> Self;
    /// Marked for deletion.
    fn needs_delete(self) -> Self;
    /// With a status.
    fn with_status(self, status: NetworkObservationStatus) -> Self;
    /// Keeping at most `n` reports.
    fn with_retention(self, n: u32) -> Self;
}

impl TestObservation for NetworkObservation {
    fn test() -> Self {
        let mut o = NetworkObservation::new(
            "web",
            NetworkObservationSpec {
                pod_selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                    match_expressions: None,
                },
                namespace_selector: None,
                window: "10s".into(),
                slo: None,
                report_policy: ReportPolicy::default(),
                payload_capture: Default::default(),
            },
        );
        o.meta_mut().namespace = Some("default".into());
        o.meta_mut().uid = Some("11111111-2222-3333-4444-555555555555".into());
        o.meta_mut().generation = Some(1);
        o
    }

    /// With another window string.
    fn with_window(mut self, window: &str) -> Self {
        self.spec.window = window.into();
        self
    }

    /// With these matchLabels (empty slice: an empty selector).
    fn with_selector(mut self, labels: &[(&str, &str)]) -> Self {
        self.spec.pod_selector = LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        };
        self
    }

    /// With our finalizer already present.
    fn finalized(mut self) -> Self {
        self.finalizers_mut().push(OBSERVATION_FINALIZER.into());
        self
    }

    /// Marked for deletion.
    fn needs_delete(mut self) -> Self {
        self.meta_mut().deletion_timestamp = Some(Time(frozen_now()));
        self
    }

    /// With a status.
    fn with_status(mut self, status: NetworkObservationStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Keeping at most `n` reports.
    fn with_retention(mut self, n: u32) -> Self {
        self.spec.report_policy.retention = n;
        self
    }
}

/// Start of [`incident_window`], Unix ms.
pub const INCIDENT_START_MS: u64 = 1_800_000_000_000;

/// A diagnosed window in which web-2 refuses web-1's connections.
pub fn incident_window() -> crate::ingest::DiagnosedWindow {
    use netdx_diagnosis::classes::{InstanceKind, RootCause};
    use netdx_diagnosis::localize::{Evidence, Finding, Instance, Severity, Suspect};
    let pod = |n: &str| netdx_api::targets::PodRef {
        namespace: "default".into(),
        name: n.into(),
    };
    // A pod suspected of `root_cause` with a share of 0.2 over one edge between `pods`.
    let suspect =
        |root_cause, name: &str, edge: &str, pods: &[&str]| crate::ingest::WindowSuspect {
            suspect: Suspect {
                root_cause,
                instance: Instance {
                    kind: InstanceKind::Pod,
                    name: name.into(),
                },
                share: 0.2,
                edges: vec![edge.into()],
            },
            pods: pods.iter().map(|p| pod(p)).collect(),
        };
    crate::ingest::DiagnosedWindow {
        start_ms: INCIDENT_START_MS,
        end_ms: INCIDENT_START_MS + 10_000,
        nodes: vec!["node-1".into(), "node-2".into()],
        findings: vec![crate::ingest::WindowFinding {
            finding: Finding {
                root_cause: RootCause::ConnectionRefused,
                instance: Instance {
                    kind: InstanceKind::Pod,
                    name: "default/web-2".into(),
                },
                confidence: 0.6,
                severity: Severity::Critical,
                evidence: vec![Evidence {
                    feature: "connect_refused_ratio".into(),
                    value: 1.0,
                    baseline: None,
                }],
                decision_path: vec!["connect_refused_ratio >= 0.9".into()],
                edges: vec!["default/web-1 -> default/web-2:8080/tcp".into()],
            },
            pods: [pod("web-1"), pod("web-2")].into(),
        }],
        suspects: vec![
            suspect(
                RootCause::ServerAppSlow,
                "default/web-1",
                "default/client -> default/web-1:8080/tcp",
                &["client", "web-1"],
            ),
            // Outside the observation's pods: no report of it lists this one.
            suspect(
                RootCause::PathLoss,
                "other/db",
                "other/app -> other/db:5432/tcp",
                &["unrelated"],
            ),
        ],
        edges: vec![],
        model_version: "rules-1".into(),
    }
}

/// The dedupe key of [`incident_window`]'s finding.
pub const INCIDENT_KEY: &str = "ConnectionRefused/Pod/default/web-2";

/// Name of the report opened in [`incident_window`] for `key`.
fn incident_name(key: &str) -> String {
    let hash = crate::incidents::label_value(key);
    format!("web-{}-{}", &hash[..8], INCIDENT_START_MS / 1000)
}

/// An operator-written incident report as the API server returns it.
fn incident_report(
    name: &str,
    key: &str,
    phase: DiagnosisPhase,
    start_secs: i64,
    windows: u32,
) -> DiagnosisReport {
    let mut r = DiagnosisReport::new(
        name,
        DiagnosisReportSpec {
            target: DiagnosisTarget::observation("web"),
            duration: None,
        },
    );
    r.meta_mut().namespace = Some("default".into());
    r.meta_mut().labels = Some(BTreeMap::from([
        ("netdx.io/origin".to_string(), "operator".to_string()),
        ("netdx.io/observation".to_string(), "web".to_string()),
        (
            "netdx.io/incident".to_string(),
            crate::incidents::label_value(key),
        ),
    ]));
    let t = |s: i64| Time(Timestamp::from_second(s).expect("valid timestamp"));
    r.status = Some(DiagnosisReportStatus {
        phase: Some(phase),
        window_start: Some(t(start_secs)),
        last_seen: Some(t(start_secs + 10 * i64::from(windows))),
        windows: Some(windows),
        ..Default::default()
    });
    r
}

/// Builders for test reports.
pub trait TestReport: Sized {
    /// An on-demand report for observation `web`, 30s.
    fn test() -> Self;
    /// Running since the given Unix second.
    fn running_since(self, secs: i64) -> Self;
}

impl TestReport for DiagnosisReport {
    fn test() -> Self {
        let mut r = DiagnosisReport::new(
            "ondemand",
            DiagnosisReportSpec {
                target: DiagnosisTarget::observation("web"),
                duration: Some("30s".into()),
            },
        );
        r.meta_mut().namespace = Some("default".into());
        r.meta_mut().generation = Some(1);
        r
    }

    /// Running since the given Unix second.
    fn running_since(mut self, secs: i64) -> Self {
        self.status = Some(DiagnosisReportStatus {
            phase: Some(DiagnosisPhase::Running),
            message: Some("collecting windows for 30s".into()),
            observed_generation: Some(1),
            window_start: Some(Time(Timestamp::from_second(secs).expect("valid timestamp"))),
            ..Default::default()
        });
        self
    }
}

/// Two pods of `app=web` on two nodes, as a PodList.
pub fn web_pods() -> Value {
    let pod = |name: &str, node: &str, ip: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx"}]},
            "status": {"phase": "Running", "podIP": ip, "qosClass": "Burstable"}
        })
    };
    json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
        "items": [pod("web-1", "node-1", "10.0.1.5"), pod("web-2", "node-2", "10.0.2.7")]
    })
}

/// Registers [`NetworkObservation::test`] as watching [`web_pods`] (web-1 on node-1, web-2 on
/// node-2).
pub async fn watch_web_pods(targets: &crate::targets::SharedRegistry) {
    let pods =
        serde_json::from_value::<Vec<k8s_openapi::api::core::v1::Pod>>(web_pods()["items"].clone())
            .expect("pods");
    targets.write().await.set(
        netdx_api::targets::PodRef {
            namespace: "default".into(),
            name: "web".into(),
        },
        crate::targets::resolve(
            &pods,
            &crate::targets::CgroupLayout::default(),
            Default::default(),
        )
        .per_node,
    );
}

/// Every scenario the tests drive, one per test.
pub enum Scenario {
    /// New object: the finalizer is added, nothing else.
    FinalizerCreation(NetworkObservation),
    /// Pods listed, status applied with Ready/ProbesScheduled True.
    ObservingPods(NetworkObservation),
    /// Pods listed, status already right: no patch.
    ObservingPodsUnchanged,
    /// Pods listed; node-2's probe is silent: status applied with Degraded=True.
    ProbeSilent(NetworkObservation),
    /// Bad spec: Warning event, then status with Ready=False.
    InvalidSpec(NetworkObservation),
    /// Deletion: event, then the finalizer is removed.
    Cleanup(NetworkObservation),
    /// Listing pods is forbidden.
    PodListForbidden,
    /// namespaceSelector team=shop: namespaces listed, pods listed only in the matching one.
    NamespaceSelector,
    /// On-demand report: observation exists, status goes Running.
    ReportStarts(DiagnosisReport),
    /// On-demand report for a missing observation: event, status Failed.
    ReportObservationMissing(DiagnosisReport),
    /// Collection over, windows diagnosed: status Completed with their findings.
    ReportCompletes(DiagnosisReport),
    /// Collection over, no window yet: message updated.
    ReportWaitsForEngine(DiagnosisReport),
    /// A problem seen for the first time (reportPolicy.confirmWindows 2): observation read,
    /// no reports, nothing created, no active finding.
    IncidentPending,
    /// A new incident seen in the window before too: observation read, no reports yet, one
    /// created whose status covers both windows.
    IncidentOpened,
    /// The incident's report is open: only its status is updated.
    IncidentContinues,
    /// Retention 2 with one resolved and one open report of another problem: the new one is
    /// created, the other resolved, the oldest resolved deleted.
    IncidentRetention(NetworkObservation),
    /// Mode Always and a window without findings: a Healthy report is created.
    QuietWindowReported(NetworkObservation),
    /// A model file was rejected this many times: a Warning event, then repeats of it.
    ModelRejected(usize),
    /// The reconcile must not call the API at all.
    NoCalls,
    /// No Lease yet: it is created with us as holder.
    LeaseMissing,
    /// Two TokenReviews: "someone-else" maps to another account, "probe-token" to the node-probe.
    TokenReviews,
    /// A Lease by `holder` renewed at Unix second `renewed`; we expect to write it as holder.
    LeaseHeld {
        /// Current holder.
        holder: String,
        /// Last renewal, Unix seconds.
        renewed: i64,
        /// leaseTransitions we expect to write.
        expect_transitions: i32,
    },
    /// A fresh Lease by someone else: read, never written.
    LeaseFresh {
        /// Current holder.
        holder: String,
        /// Last renewal, Unix seconds.
        renewed: i64,
    },
    /// An expired Lease we try to take, but another replica wins (409).
    LeaseConflict {
        /// Current holder.
        holder: String,
        /// Last renewal, Unix seconds.
        renewed: i64,
    },
}

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Plays the API server's side of a [`Scenario`], asserting every request.
pub struct ApiServerVerifier(ApiServerHandle);

/// Fails the test when the scenario does not finish within a second.
pub async fn timeout_after_1s(handle: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(std::time::Duration::from_secs(1), handle)
        .await
        .expect("timeout on mock apiserver")
        .expect("scenario succeeded");
}

/// Checks that every field of `expected` is in `actual` with the same value (arrays must match
/// element by element), so tests state what matters and ignore the rest.
pub fn assert_json_subset(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("missing {path}.{k} in {actual}"));
                assert_json_subset(av, ev, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "length of {path}: {actual}");
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                assert_json_subset(av, ev, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "at {path}"),
    }
}

fn ok_json(v: &Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(v).expect("json")))
        .expect("response")
}

fn status_error(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()
    });
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("response")
}

const OBS_PATH: &str = "/apis/netdx.io/v1alpha1/namespaces/default/networkobservations/web";
const REPORTS_PATH: &str = "/apis/netdx.io/v1alpha1/namespaces/default/diagnosisreports";
const REPORT_PATH: &str = "/apis/netdx.io/v1alpha1/namespaces/default/diagnosisreports/ondemand";

const LEASES_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/netdx-system/leases";

fn lease_json(holder: &str, renewed: i64) -> Value {
    let t = |s: i64| {
        serde_json::to_value(MicroTime(Timestamp::from_second(s).expect("valid"))).expect("json")
    };
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "netdx-operator", "namespace": "netdx-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": t(renewed - 100),
                 "renewTime": t(renewed), "leaseTransitions": 3}
    })
}

impl ApiServerVerifier {
    /// A bare client talking to a verifier (for code that needs no full [`Context`]).
    pub fn client() -> (Client, ApiServerVerifier) {
        let (mock_service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (
            Client::new(mock_service, "default"),
            ApiServerVerifier(handle),
        )
    }

    async fn handle_token_review(mut self, token: &str, user: &str) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/authentication.k8s.io/v1/tokenreviews"
        );
        let mut body = body_json(request).await;
        assert_json_subset(&body, &json!({"spec": {"token": token}}), "tokenreview");
        body["status"] = json!({"authenticated": true, "user": {"username": user}});
        send.send_response(ok_json(&body));
        self
    }

    async fn handle_lease_get(mut self, existing: Option<(&str, i64)>) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            format!("{LEASES_PATH}/netdx-operator")
        );
        match existing {
            Some((holder, renewed)) => send.send_response(ok_json(&lease_json(holder, renewed))),
            None => send.send_response(status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "leases \"netdx-operator\" not found",
            )),
        }
        self
    }

    async fn handle_lease_create(mut self) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), LEASES_PATH);
        let body = body_json(request).await;
        let now = serde_json::to_value(MicroTime(frozen_now())).expect("json");
        assert_json_subset(
            &body,
            &json!({"metadata": {"name": "netdx-operator"},
                    "spec": {"holderIdentity": "operator-a", "renewTime": now, "acquireTime": now,
                             "leaseDurationSeconds": 15, "leaseTransitions": 0}}),
            "lease",
        );
        send.send_response(ok_json(&body));
        self
    }

    async fn handle_lease_replace(mut self, transitions: i32, accept: bool) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::PUT);
        assert_eq!(
            request.uri().path(),
            format!("{LEASES_PATH}/netdx-operator")
        );
        let body = body_json(request).await;
        let now = serde_json::to_value(MicroTime(frozen_now())).expect("json");
        assert_json_subset(
            &body,
            &json!({"metadata": {"resourceVersion": "7"},
                    "spec": {"holderIdentity": "operator-a", "renewTime": now, "leaseTransitions": transitions}}),
            "lease",
        );
        if accept {
            send.send_response(ok_json(&body));
        } else {
            send.send_response(status_error(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified",
            ));
        }
        self
    }
    /// The status a reconcile of [`NetworkObservation::test`] over [`web_pods`] produces.
    pub fn observing_status() -> NetworkObservationStatus {
        let now = frozen_now();
        NetworkObservationStatus {
            observed_generation: Some(1),
            conditions: vec![
                conditions::new(
                    READY,
                    true,
                    reason::OBSERVING,
                    "watching 2 pods on 2 nodes",
                    Some(1),
                    now,
                ),
                conditions::new(
                    PROBES_SCHEDULED,
                    true,
                    reason::TARGETS_ASSIGNED,
                    "target sets assigned to 2 nodes",
                    Some(1),
                    now,
                ),
                conditions::new(DEGRADED, false, reason::AS_EXPECTED, "", Some(1), now),
            ],
            watched_pods: 2,
            watched_nodes: 2,
            last_window: None,
            active_findings: 0,
        }
    }

    /// The status of an observation whose selectors match no pod.
    pub fn no_pods_status() -> NetworkObservationStatus {
        let now = frozen_now();
        NetworkObservationStatus {
            observed_generation: Some(1),
            conditions: vec![
                conditions::new(
                    READY,
                    false,
                    reason::NO_MATCHING_PODS,
                    "no running pod matches the selectors",
                    Some(1),
                    now,
                ),
                conditions::new(
                    PROBES_SCHEDULED,
                    false,
                    reason::NO_MATCHING_PODS,
                    "no node runs a matching pod",
                    Some(1),
                    now,
                ),
                conditions::new(DEGRADED, false, reason::AS_EXPECTED, "", Some(1), now),
            ],
            ..Default::default()
        }
    }

    /// The status a reconcile of [`NetworkObservation::test`] with window "1h" writes.
    pub fn invalid_window_status() -> NetworkObservationStatus {
        let now = frozen_now();
        NetworkObservationStatus {
            observed_generation: Some(1),
            conditions: vec![
                conditions::new(
                    READY,
                    false,
                    reason::INVALID_WINDOW,
                    "window \"1h\" must be between 1s and 10m",
                    Some(1),
                    now,
                ),
                conditions::new(
                    PROBES_SCHEDULED,
                    false,
                    reason::INVALID_SPEC,
                    "nothing scheduled until the spec is fixed",
                    Some(1),
                    now,
                ),
                conditions::new(DEGRADED, false, reason::INVALID_SPEC, "", Some(1), now),
            ],
            ..Default::default()
        }
    }

    /// Runs the scenario on a task; await it with [`timeout_after_1s`].
    pub fn run(self, scenario: Scenario) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            match scenario {
                Scenario::FinalizerCreation(obs) => {
                    self.handle_finalizer_creation(obs).await;
                }
                Scenario::ObservingPods(obs) => {
                    self.handle_pod_list()
                        .await
                        .handle_observing_status_patch(
                            obs,
                            json!({"type": "Degraded", "status": "False", "reason": "AsExpected"}),
                        )
                        .await;
                }
                Scenario::ObservingPodsUnchanged => {
                    self.handle_pod_list().await;
                }
                Scenario::ProbeSilent(obs) => {
                    // Degraded flips to True, so its transition time moves to now.
                    let last = Timestamp::from_second(now_secs() - 50).expect("valid");
                    let message = format!(
                        "probe on node-2 sent no window for more than 3 windows (30s; last at {last})"
                    );
                    self.handle_pod_list()
                        .await
                        .handle_observing_status_patch(
                            obs,
                            json!({"type": "Degraded", "status": "True", "reason": "ProbesNotReporting",
                                   "message": message, "lastTransitionTime": frozen_time_json(),
                                   "observedGeneration": 1}),
                        )
                        .await;
                }
                Scenario::InvalidSpec(obs) => {
                    self.handle_event_create("InvalidWindow", "Warning")
                        .await
                        .handle_invalid_status_patch(obs)
                        .await;
                }
                Scenario::Cleanup(obs) => {
                    self.handle_event_create("ObservationStopped", "Normal")
                        .await
                        .handle_finalizer_removal(obs)
                        .await;
                }
                Scenario::NamespaceSelector => {
                    self.handle_namespace_list()
                        .await
                        .handle_pod_list_in("shop")
                        .await;
                }
                Scenario::PodListForbidden => {
                    self.handle_pod_list_forbidden().await;
                }
                Scenario::ReportStarts(report) => {
                    self.handle_observation_get(true)
                        .await
                        .handle_report_running(report)
                        .await;
                }
                Scenario::ReportObservationMissing(report) => {
                    self.handle_observation_get(false)
                        .await
                        .handle_event_create("ObservationNotFound", "Warning")
                        .await
                        .handle_report_failed(report)
                        .await;
                }
                Scenario::ReportWaitsForEngine(report) => {
                    self.handle_report_engine_pending(report).await;
                }
                Scenario::ModelRejected(n) => {
                    let mut this = self.handle_event_create("ModelRejected", "Warning").await;
                    // The recorder folds repeats of an event into a series: a PATCH, not a POST.
                    for _ in 1..n {
                        this = this.handle_event_repeat().await;
                    }
                }
                Scenario::IncidentPending => {
                    self.handle_observation_get_of(NetworkObservation::test())
                        .await
                        .handle_incident_list(vec![])
                        .await
                        .handle_window_status(0)
                        .await;
                }
                Scenario::IncidentOpened => {
                    self.handle_observation_get_of(NetworkObservation::test())
                        .await
                        .handle_incident_list(vec![])
                        .await
                        .handle_incident_create(2, INCIDENT_START_MS - 10_000)
                        .await
                        .handle_window_status(1)
                        .await;
                }
                Scenario::QuietWindowReported(obs) => {
                    self.handle_observation_get_of(obs)
                        .await
                        .handle_incident_list(vec![])
                        .await
                        .handle_report_create_for(crate::incidents::HEALTHY_KEY)
                        .await
                        .handle_incident_status(
                            &incident_name(crate::incidents::HEALTHY_KEY),
                            json!({"phase": "Running", "windows": 1, "findings": []}),
                        )
                        .await
                        .handle_window_status(0)
                        .await;
                }
                Scenario::IncidentContinues => {
                    let open = incident_report(
                        "web-open",
                        INCIDENT_KEY,
                        DiagnosisPhase::Running,
                        now_secs() - 20,
                        2,
                    );
                    let start = serde_json::to_value(Time(
                        Timestamp::from_second(now_secs() - 20).expect("valid"),
                    ))
                    .expect("json");
                    self.handle_observation_get_of(NetworkObservation::test())
                        .await
                        .handle_incident_list(vec![open])
                        .await
                        .handle_incident_status(
                            "web-open",
                            json!({"phase": "Running", "windows": 3, "windowStart": start,
                                   "findings": [{"rootCause": "ConnectionRefused"}]}),
                        )
                        .await
                        .handle_window_status(1)
                        .await;
                }
                Scenario::IncidentRetention(obs) => {
                    let old = incident_report(
                        "web-old",
                        "PathLoss/NodePair/node-1--node-2",
                        DiagnosisPhase::Completed,
                        now_secs() - 3600,
                        1,
                    );
                    let other = incident_report(
                        "web-other",
                        "ServerAppSlow/Pod/default/web-1",
                        DiagnosisPhase::Running,
                        now_secs() - 60,
                        4,
                    );
                    let last_seen = serde_json::to_value(Time(
                        Timestamp::from_second(now_secs() - 20).expect("valid"),
                    ))
                    .expect("json");
                    self.handle_observation_get_of(obs)
                        .await
                        .handle_incident_list(vec![old, other])
                        .await
                        .handle_incident_create(1, INCIDENT_START_MS)
                        .await
                        .handle_incident_status(
                            "web-other",
                            json!({"phase": "Completed", "message": "resolved after 4 windows",
                                   "windowEnd": last_seen}),
                        )
                        .await
                        .handle_report_delete("web-old")
                        .await
                        .handle_window_status(1)
                        .await;
                }
                Scenario::ReportCompletes(report) => {
                    self.handle_report_completed(report).await;
                }
                Scenario::NoCalls => {}
                Scenario::TokenReviews => {
                    self.handle_token_review(
                        "someone-else",
                        "system:serviceaccount:default:default",
                    )
                    .await
                    .handle_token_review("probe-token", crate::auth::NODE_PROBE_USER)
                    .await;
                }
                Scenario::LeaseMissing => {
                    self.handle_lease_get(None)
                        .await
                        .handle_lease_create()
                        .await;
                }
                Scenario::LeaseHeld {
                    holder,
                    renewed,
                    expect_transitions,
                } => {
                    self.handle_lease_get(Some((&holder, renewed)))
                        .await
                        .handle_lease_replace(expect_transitions, true)
                        .await;
                }
                Scenario::LeaseFresh { holder, renewed } => {
                    self.handle_lease_get(Some((&holder, renewed))).await;
                }
                Scenario::LeaseConflict { holder, renewed } => {
                    self.handle_lease_get(Some((&holder, renewed)))
                        .await
                        .handle_lease_replace(4, false)
                        .await;
                }
            }
        })
    }

    async fn next(
        &mut self,
    ) -> (
        Request<Body>,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        self.0.next_request().await.expect("service not called")
    }

    async fn handle_finalizer_creation(mut self, obs: NetworkObservation) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), OBS_PATH);
        let patch = body_json(request).await;
        assert_json_subset(
            &patch,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [OBSERVATION_FINALIZER]}
            ]),
            "patch",
        );
        send.send_response(ok_json(
            &serde_json::to_value(obs.finalized()).expect("json"),
        ));
        self
    }

    async fn handle_pod_list(mut self) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/api/v1/namespaces/default/pods");
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("labelSelector=app%3Dweb"), "query {query}");
        send.send_response(ok_json(&web_pods()));
        self
    }

    async fn handle_namespace_list(mut self) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/api/v1/namespaces");
        let ns = |name: &str, team: &str| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": {"team": team}}})
        };
        send.send_response(ok_json(&json!({
            "apiVersion": "v1", "kind": "NamespaceList", "metadata": {},
            "items": [ns("shop", "shop"), ns("billing", "finance")]
        })));
        self
    }

    async fn handle_pod_list_in(mut self, namespace: &str) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            format!("/api/v1/namespaces/{namespace}/pods")
        );
        send.send_response(ok_json(
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ));
        self
    }

    async fn handle_pod_list_forbidden(mut self) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.uri().path(), "/api/v1/namespaces/default/pods");
        send.send_response(status_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "pods is forbidden",
        ));
        self
    }

    /// Asserts an apply patch of the status subresource and answers with the object carrying it.
    async fn expect_status_apply(
        &mut self,
        path: &str,
        kind: &str,
    ) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), format!("{path}/status"));
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(
            query.contains("fieldManager=netdx-operator") && query.contains("force=true"),
            "query {query}"
        );
        assert_eq!(
            request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/apply-patch+yaml"),
            "server-side apply"
        );
        let patch = body_json(request).await;
        assert_json_subset(
            &patch,
            &json!({"apiVersion": "netdx.io/v1alpha1", "kind": kind}),
            "patch",
        );
        (patch, send)
    }

    /// Status applied with Ready and ProbesScheduled True and the given Degraded condition.
    async fn handle_observing_status_patch(
        mut self,
        obs: NetworkObservation,
        degraded: Value,
    ) -> Self {
        let (patch, send) = self
            .expect_status_apply(OBS_PATH, "NetworkObservation")
            .await;
        let now = frozen_time_json();
        assert_json_subset(
            &patch,
            &json!({"status": {
                "observedGeneration": 1,
                "watchedPods": 2,
                "watchedNodes": 2,
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Observing", "lastTransitionTime": now, "observedGeneration": 1},
                    {"type": "ProbesScheduled", "status": "True", "reason": "TargetsAssigned"},
                    degraded
                ]
            }}),
            "patch",
        );
        send.send_response(ok_json(
            &serde_json::to_value(obs.with_status(Self::observing_status())).expect("json"),
        ));
        self
    }

    async fn handle_invalid_status_patch(mut self, obs: NetworkObservation) -> Self {
        let (patch, send) = self
            .expect_status_apply(OBS_PATH, "NetworkObservation")
            .await;
        assert_json_subset(
            &patch,
            &json!({"status": {
                "observedGeneration": 1,
                "watchedPods": 0,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "InvalidWindow",
                     "message": "window \"1h\" must be between 1s and 10m"},
                    {"type": "ProbesScheduled", "status": "False", "reason": "InvalidSpec"},
                    {"type": "Degraded", "status": "False", "reason": "InvalidSpec"}
                ]
            }}),
            "patch",
        );
        send.send_response(ok_json(&serde_json::to_value(obs).expect("json")));
        self
    }

    async fn handle_event_create(mut self, reason: &str, type_: &str) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/events.k8s.io/v1/namespaces/default/events"
        );
        let event = body_json(request).await;
        assert_json_subset(
            &event,
            &json!({"reason": reason, "type": type_, "reportingController": "netdx-operator-test"}),
            "event",
        );
        send.send_response(ok_json(&event));
        self
    }

    async fn handle_event_repeat(mut self) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::PATCH);
        assert!(
            request
                .uri()
                .path()
                .starts_with("/apis/events.k8s.io/v1/namespaces/default/events/"),
            "{}",
            request.uri()
        );
        let patch = body_json(request).await;
        send.send_response(ok_json(&patch));
        self
    }

    async fn handle_finalizer_removal(mut self, obs: NetworkObservation) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), OBS_PATH);
        let patch = body_json(request).await;
        assert_json_subset(
            &patch,
            &json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": OBSERVATION_FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ]),
            "patch",
        );
        let mut gone = obs;
        gone.finalizers_mut().clear();
        send.send_response(ok_json(&serde_json::to_value(gone).expect("json")));
        self
    }

    async fn handle_observation_get(mut self, exists: bool) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), OBS_PATH);
        if exists {
            send.send_response(ok_json(
                &serde_json::to_value(NetworkObservation::test()).expect("json"),
            ));
        } else {
            send.send_response(status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "networkobservations \"web\" not found",
            ));
        }
        self
    }

    async fn handle_observation_get_of(mut self, obs: NetworkObservation) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), OBS_PATH);
        send.send_response(ok_json(&serde_json::to_value(obs).expect("json")));
        self
    }

    async fn handle_incident_list(mut self, items: Vec<DiagnosisReport>) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), REPORTS_PATH);
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(
            query.contains(
                "labelSelector=netdx.io%2Forigin%3Doperator%2Cnetdx.io%2Fobservation%3Dweb"
            ),
            "query {query}"
        );
        send.send_response(ok_json(&json!({
            "apiVersion": "netdx.io/v1alpha1", "kind": "DiagnosisReportList",
            "metadata": {"resourceVersion": "1"}, "items": items
        })));
        self
    }

    /// An incident report for `key` is created, owned by the observation.
    async fn handle_report_create_for(mut self, key: &str) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), REPORTS_PATH);
        let body = body_json(request).await;
        let hash = crate::incidents::label_value(key);
        assert_json_subset(
            &body,
            &json!({"metadata": {
                "name": incident_name(key),
                "labels": {"netdx.io/origin": "operator", "netdx.io/observation": "web", "netdx.io/incident": hash},
                "annotations": {"netdx.io/incident-key": key},
                "ownerReferences": [{"kind": "NetworkObservation", "name": "web",
                                     "uid": "11111111-2222-3333-4444-555555555555", "controller": true}]
            }, "spec": {"target": {"observation": "web"}}}),
            "report",
        );
        send.send_response(ok_json(&body));
        self
    }

    /// A report is created for [`incident_window`]'s finding, then its status applied: seen
    /// in `windows` windows since `since_ms`.
    async fn handle_incident_create(self, windows: u32, since_ms: u64) -> Self {
        let name = incident_name(INCIDENT_KEY);
        let this = self.handle_report_create_for(INCIDENT_KEY).await;
        let start = serde_json::to_value(Time(
            Timestamp::from_millisecond(since_ms as i64).expect("valid"),
        ))
        .expect("json");
        let end = serde_json::to_value(Time(
            Timestamp::from_millisecond(INCIDENT_START_MS as i64 + 10_000).expect("valid"),
        ))
        .expect("json");
        this.handle_incident_status(
            &name,
            json!({"phase": "Running", "windows": windows, "windowStart": start, "lastSeen": end,
                   "modelVersion": "rules-1",
                   "findings": [{"rootCause": "ConnectionRefused", "severity": "Critical",
                                 "instance": {"kind": "Pod", "name": "default/web-2"}}],
                   "suspects": [{"rootCause": "ServerAppSlow", "share": 0.2, "edges": 1,
                                 "instance": {"kind": "Pod", "name": "default/web-1"}}]}),
        )
        .await
    }

    async fn handle_incident_status(mut self, name: &str, expected: Value) -> Self {
        let path = format!("{REPORTS_PATH}/{name}");
        let (patch, send) = self.expect_status_apply(&path, "DiagnosisReport").await;
        assert_json_subset(&patch, &json!({ "status": expected }), "patch");
        let mut object = patch;
        object["metadata"] = json!({"name": name, "namespace": "default"});
        object["spec"] = json!({"target": {"observation": "web"}});
        send.send_response(ok_json(&object));
        self
    }

    /// The observation's lastWindow (of [`incident_window`]) and activeFindings, applied by
    /// the window field manager.
    async fn handle_window_status(mut self, active: u32) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), format!("{OBS_PATH}/status"));
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(
            query.contains("fieldManager=netdx-operator-windows") && query.contains("force=true"),
            "query {query}"
        );
        let patch = body_json(request).await;
        let t = |ms: i64| {
            serde_json::to_value(Time(Timestamp::from_millisecond(ms).expect("valid")))
                .expect("json")
        };
        let start = INCIDENT_START_MS as i64;
        assert_eq!(
            patch["status"],
            json!({"lastWindow": {"start": t(start), "end": t(start + 10_000)},
                   "activeFindings": active}),
            "only the window fields"
        );
        send.send_response(ok_json(
            &serde_json::to_value(NetworkObservation::test()).expect("json"),
        ));
        self
    }

    async fn handle_report_delete(mut self, name: &str) -> Self {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::DELETE);
        assert_eq!(request.uri().path(), format!("{REPORTS_PATH}/{name}"));
        send.send_response(ok_json(&json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"
        })));
        self
    }

    async fn handle_report_running(mut self, report: DiagnosisReport) -> Self {
        let (patch, send) = self
            .expect_status_apply(REPORT_PATH, "DiagnosisReport")
            .await;
        assert_json_subset(
            &patch,
            &json!({"status": {"phase": "Running", "windowStart": frozen_time_json(), "observedGeneration": 1}}),
            "patch",
        );
        send.send_response(ok_json(&serde_json::to_value(report).expect("json")));
        self
    }

    async fn handle_report_failed(mut self, report: DiagnosisReport) -> Self {
        let (patch, send) = self
            .expect_status_apply(REPORT_PATH, "DiagnosisReport")
            .await;
        assert_json_subset(
            &patch,
            &json!({"status": {"phase": "Failed", "message": "NetworkObservation \"web\" not found"}}),
            "patch",
        );
        send.send_response(ok_json(&serde_json::to_value(report).expect("json")));
        self
    }

    async fn handle_report_completed(mut self, report: DiagnosisReport) -> Self {
        let (patch, send) = self
            .expect_status_apply(REPORT_PATH, "DiagnosisReport")
            .await;
        assert_json_subset(
            &patch,
            &json!({"status": {"phase": "Completed", "message": "1 findings",
                               "modelVersion": "rules-1",
                               "findings": [{"rootCause": "ConnectionRefused",
                                             "instance": {"kind": "Pod", "name": "default/web-2"}}]}}),
            "patch",
        );
        send.send_response(ok_json(&serde_json::to_value(report).expect("json")));
        self
    }

    async fn handle_report_engine_pending(mut self, report: DiagnosisReport) -> Self {
        let (patch, send) = self
            .expect_status_apply(REPORT_PATH, "DiagnosisReport")
            .await;
        assert_json_subset(
            &patch,
            &json!({"status": {"phase": "Running", "message": AWAITING_WINDOWS}}),
            "patch",
        );
        send.send_response(ok_json(&serde_json::to_value(report).expect("json")));
        self
    }
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    serde_json::from_slice(&bytes).expect("request body is JSON")
}
