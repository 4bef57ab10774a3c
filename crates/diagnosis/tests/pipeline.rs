//! End to end through the public API: node reports -> join -> features with baselines ->
//! dataset -> trained tree -> evaluation on a held-out intensity -> localization.
//!
//! The windows are simulated (no kernel here), shaped like the fault catalog's signals; the
//! point is that the pieces fit together and that baseline ratios carry a tree trained on
//! mild faults over to strong ones, not the absolute numbers.

use std::collections::BTreeMap;

use netdx_api::targets::PodRef;
use netdx_api::windows::{
    EdgeKey, EdgeWindow, Endpoint, L4Stats, Latency, PodWindow, SideStats, WindowReport,
};
use netdx_diagnosis::classes::{Classifier, InstanceKind, RootCause};
use netdx_diagnosis::dataset::{self, LabeledRow};
use netdx_diagnosis::features::{Baselines, window_features};
use netdx_diagnosis::join::join;
use netdx_diagnosis::localize::diagnose;
use netdx_diagnosis::model::{TrainParams, TreeModel, train};
use netdx_diagnosis::rules::RuleTree;
use sketches_ddsketch::{Config, DDSketch};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A workload: base server latency and request rate.
struct Workload {
    name: &'static str,
    server_ms: f64,
    per_window: u64,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "redis",
        server_ms: 0.4,
        per_window: 2000,
    },
    Workload {
        name: "http",
        server_ms: 6.0,
        per_window: 400,
    },
];

const CLIENTS: [&str; 3] = ["c1", "c2", "c3"];

fn pod(name: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn ip(name: &str) -> String {
    match name {
        "s" => "10.0.2.10".into(),
        c => format!("10.0.1.{}", c.as_bytes()[1]),
    }
}

fn latency(rng: &mut Lcg, n: u64, base_ms: f64, tail_ms: f64) -> Latency {
    let mut s = DDSketch::new(Config::defaults());
    for i in 0..n {
        // 2% of exchanges take the tail; the rest jitter 20% around the base.
        let x = if i % 50 == 0 {
            tail_ms
        } else {
            base_ms * (0.9 + 0.2 * rng.next())
        };
        s.add(x);
    }
    Latency::from_sketch(s)
}

/// The three client pods on n1 calling server s on n2, with a fault of some intensity.
fn window(rng: &mut Lcg, w: &Workload, fault: RootCause, k: f64, seq: u64) -> Vec<WindowReport> {
    let net_ms = 0.2;
    let n = w.per_window;
    let mut client_edges = Vec::new();
    let mut server_edges = Vec::new();
    for c in CLIENTS {
        let key = EdgeKey {
            client: Endpoint {
                pod: Some(pod(c)),
                ip: ip(c).into(),
            },
            server: Endpoint {
                pod: Some(pod("s")),
                ip: ip("s").into(),
            },
            port: 8080,
            proto: "tcp".into(),
        };
        let (mut srv_ms, mut extra_net, mut srtt_us) =
            (w.server_ms, 0.0, 100.0 + 20.0 * rng.next());
        let mut l4c = L4Stats {
            connects_ok: 5,
            connect_ms_mean: 0.3,
            connect_ms_max: 0.5,
            ..Default::default()
        };
        let mut exchanges = n;
        match fault {
            RootCause::ServerAppSlow => srv_ms *= k,
            RootCause::PathDelay => {
                extra_net = 2.0 * k;
                srtt_us += 2000.0 * k;
            }
            RootCause::PathLoss => {
                l4c.retrans_client_to_server = (n as f64 * k / 100.0 * 3.0) as u64
            }
            RootCause::ConnectionRefused => {
                l4c = L4Stats {
                    connect_refused: 5 + k as u64,
                    connect_ms_max: 0.2,
                    ..Default::default()
                };
                exchanges = 0;
            }
            _ => {}
        }
        let tail_extra = if fault == RootCause::PathLoss {
            200.0
        } else {
            0.0
        };
        let side = |rng: &mut Lcg, ms: f64, tail: f64, srtt: f64| SideStats {
            exchanges,
            req_bytes: exchanges * 100,
            resp_bytes: exchanges * 1000,
            latency: latency(rng, exchanges, ms, tail),
            ttfb: latency(rng, exchanges, ms, tail),
            srtt_us_mean: srtt,
            srtt_us_max: (srtt * 1.5) as u32,
            ..Default::default()
        };
        let client_ms = srv_ms + net_ms + extra_net;
        let client_view = side(rng, client_ms, client_ms * 3.0 + tail_extra, srtt_us);
        let server_view = side(rng, srv_ms, srv_ms * 3.0, srtt_us);
        let has = |s: SideStats| (exchanges > 0).then(|| Box::new(s));
        client_edges.push(EdgeWindow {
            key: key.clone(),
            client: has(client_view),
            server: None,
            l4: l4c,
        });
        server_edges.push(EdgeWindow {
            key,
            client: None,
            server: has(server_view),
            l4: L4Stats::default(),
        });
    }
    let report = |node: &str, edges, pods: Vec<&str>| WindowReport {
        node: node.into(),
        seq,
        start_unix_ms: seq * 10_000,
        end_unix_ms: (seq + 1) * 10_000,
        edges,
        pods: pods
            .into_iter()
            .map(|p| PodWindow {
                pod: pod(p),
                ..Default::default()
            })
            .collect(),
        node_drops: BTreeMap::new(),
        health: Default::default(),
    };
    vec![
        report("n1", client_edges, CLIENTS.to_vec()),
        report("n2", server_edges, vec!["s"]),
    ]
}

const FAULTS: [RootCause; 4] = [
    RootCause::ServerAppSlow,
    RootCause::PathDelay,
    RootCause::PathLoss,
    RootCause::ConnectionRefused,
];

const LEVELS: [&str; 3] = ["low", "mid", "high"];

/// Intensity of a fault at a level (a slowdown factor, added one-way ms, loss %, refusals).
fn intensity(fault: RootCause, level: usize) -> f64 {
    let scale = [1.0, 2.5, 6.0][level];
    match fault {
        RootCause::ServerAppSlow => 3.0 * scale,
        RootCause::PathDelay => 3.0 * scale,
        RootCause::PathLoss => 2.0 * scale,
        _ => scale,
    }
}

/// Labelled rows of every workload x fault x intensity: baseline windows first, then the fault.
fn capture(rng: &mut Lcg) -> Vec<LabeledRow> {
    let mut rows = Vec::new();
    for w in &WORKLOADS {
        for fault in FAULTS {
            for (li, level) in LEVELS.iter().enumerate() {
                let scenario = format!("{}-{fault}-{level}", w.name);
                let mut baselines = Baselines::default();
                for seq in 0..12u64 {
                    let (label, k) = if seq < 6 {
                        (RootCause::Healthy, 1.0)
                    } else {
                        (fault, intensity(fault, li))
                    };
                    let joined = join(&window(rng, w, label, k, seq));
                    for (id, v) in window_features(&joined, &baselines) {
                        rows.push(LabeledRow {
                            scenario_id: scenario.clone(),
                            workload: w.name.into(),
                            intensity: if label == RootCause::Healthy {
                                "none".into()
                            } else {
                                (*level).into()
                            },
                            fault: label,
                            target: if label == RootCause::Healthy {
                                String::new()
                            } else {
                                "default/s".into()
                            },
                            window: seq as u32,
                            // The first fault window is onset.
                            transitional: seq == 6,
                            features: v.as_slice().to_vec(),
                            edge: String::new(),
                            client_node: String::new(),
                            server_node: String::new(),
                        });
                        if label == RootCause::Healthy {
                            baselines.refresh(id.borrowed(), &v);
                        }
                    }
                }
            }
        }
    }
    rows
}

#[test]
fn trained_tree_generalises_to_a_held_out_intensity_and_localizes() {
    let mut rng = Lcg(42);
    let rows = capture(&mut rng);

    // Through the file format, as a training run would.
    let mut buf = Vec::new();
    dataset::write_jsonl(&mut buf, &rows).unwrap();
    let rows = dataset::read_jsonl(buf.as_slice()).unwrap();

    // Trees cannot extrapolate, so the held-out intensity lies inside the trained range.
    let split = dataset::hold_out_intensities(&rows, &["mid"]);
    assert!(split.test.iter().all(|r| r.fault != RootCause::Healthy));
    let train_rows = dataset::training_rows(&split.train).unwrap();
    let model = train(&train_rows, &TrainParams::default(), "pipeline-test").unwrap();
    let model = TreeModel::from_json(&model.to_json().unwrap())
        .unwrap()
        .forest()
        .unwrap();

    let eval = dataset::evaluate_rows(&split.test, &model).unwrap();
    assert!(eval.excluded_transitional > 0);
    assert!(
        eval.macro_f1 >= 0.9,
        "held-out intensity:\n{}",
        eval.to_markdown()
    );
    let rules = dataset::evaluate_rows(&split.test, &RuleTree::new()).unwrap();
    // These signals are the catalog's own, so the hand rules must get them too.
    assert!(
        rules.macro_f1 >= 0.9,
        "rules on the same rows:\n{}",
        rules.to_markdown()
    );
    // Live: the model diagnoses a fresh strong slow-server window after a healthy warm-up.
    let mut baselines = Baselines::default();
    let w = &WORKLOADS[1];
    for seq in 0..5 {
        let healthy = diagnose(
            &join(&window(&mut rng, w, RootCause::Healthy, 1.0, seq)),
            &mut baselines,
            &model,
        )
        .findings;
        assert!(healthy.is_empty(), "healthy window raised {healthy:?}");
    }
    let findings = diagnose(
        &join(&window(&mut rng, w, RootCause::ServerAppSlow, 20.0, 5)),
        &mut baselines,
        &model,
    )
    .findings;
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(f.root_cause, RootCause::ServerAppSlow);
    assert_eq!(
        (f.instance.kind, f.instance.name.as_str()),
        (InstanceKind::Pod, "default/s"),
        "all clients of s degraded"
    );
    assert_eq!(f.edges.len(), 3);
    assert!(!f.decision_path.is_empty() && !f.evidence.is_empty());
    assert_eq!(model.version(), "pipeline-test");
}

#[test]
fn training_cli_writes_a_loadable_model_and_a_report() {
    let rows = capture(&mut Lcg(7));
    let dir = std::env::temp_dir().join(format!("netdx-train-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("rows.jsonl");
    let out = dir.join("model.json");
    dataset::save(&data, &rows).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_netdx-train"))
        .args([
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--model-version",
            "cli-1",
        ])
        .args(["--hold-out-intensity", "mid"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        report.contains("held-out rows") && report.contains("## rules (rules-1)"),
        "{report}"
    );
    assert!(report.contains("macro-F1"), "{report}");
    assert_eq!(TreeModel::load(&out).unwrap().model_version, "cli-1");

    // A missing data file fails with a message naming it, not a panic.
    let missing = dir.join("missing.jsonl");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_netdx-train"))
        .args([
            "--data",
            missing.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--model-version",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("missing.jsonl"));
    std::fs::remove_dir_all(&dir).unwrap();
}
