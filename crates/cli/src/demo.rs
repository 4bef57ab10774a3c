//! `netdx demo`: the local testbed end to end. A small cluster with real servers and clients,
//! one node-probe per simulated node, a sequence of injected faults, and each window's
//! diagnosis shown next to what was injected; DiagnosisReports (the CRD's schema) are written
//! as YAML per incident (opened as the operator opens them: once a finding repeats in
//! [`DEFAULT_CONFIRM_WINDOWS`] windows), and a summary compares injected and diagnosed.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::Context as _;
use netdx_api::{crd, targets::PayloadCapture};
use netdx_diagnosis::{
    classes::{Classifier, RootCause},
    confirm::{Confirmation, DEFAULT_CONFIRM_WINDOWS},
    eval::target_instance,
    features::Baselines,
    join::join,
    localize::{Finding, WindowDiagnosis, diagnose},
    model::TreeModel,
    report::crd_finding,
    rules::RuleTree,
};

use crate::{
    dataset::{next_window, start_agents},
    diagnose::suspect_list,
    live::{self, Frame},
    scenarios::{Scenario, Workload, World, scope_of},
    table,
};

/// Demo settings.
pub struct DemoOpts {
    /// Window length.
    pub window: Duration,
    /// Where reports and windows are written.
    pub out_dir: PathBuf,
    /// Force plain text output even on a terminal.
    pub plain: bool,
    /// Model file (the rule baseline is used when it is missing).
    pub model: PathBuf,
    /// Workload the servers and clients run.
    pub workload: Workload,
    /// Windows per fault and between faults.
    pub fault_windows: u32,
    /// Which message heads the probes copy.
    pub payload: PayloadCapture,
}

/// The faults the demo injects, in order: a network one, an L4 connection failure, a
/// server-side resource one, another network one, a node-wide one.
const SEQUENCE: [(RootCause, &str, u32); 5] = [
    (RootCause::PathDelay, "20ms", 20_000),
    (RootCause::ConnectionRefused, "100pct", 100),
    (RootCause::ServerCpuThrottled, "1pct", 1_000),
    (RootCause::PathLoss, "10pct", 10),
    (RootCause::ConntrackFull, "max0", 0),
];

/// The classifier to use: the trained model if its file loads, else the rules (and why).
pub fn classifier(path: &Path) -> (Box<dyn Classifier + Send>, String) {
    match TreeModel::load(path).and_then(|m| m.forest()) {
        Ok(m) => {
            let v = m.version();
            (Box::new(m), format!("model {v} ({})", path.display()))
        }
        Err(e) => (
            Box::new(RuleTree::new()),
            format!("rule baseline ({}: {e})", path.display()),
        ),
    }
}

/// A running diagnosis of the testbed: the cluster, its node-probes and the diagnosis state.
pub struct Session {
    /// The cluster (inject faults through it).
    pub world: World,
    agents: Vec<node_probe::ingest::Agent>,
    baselines: Baselines,
    clf: Box<dyn Classifier + Send>,
    window: Duration,
}

impl Session {
    /// Builds the cluster, attaches one node-probe per node and starts the clients.
    /// Returns the session and a description of the classifier in use.
    pub fn start(
        workload: Workload,
        model: &Path,
        window: Duration,
        payload: PayloadCapture,
    ) -> anyhow::Result<(Self, String)> {
        let (clf, name) = classifier(model);
        let mut world =
            World::up(workload).context("building the testbed (needs root; run `make demo`)")?;
        // Before the probes start: they read the target set as they attach.
        world
            .tb
            .write_targets_with(payload)
            .context("writing the target set")?;
        let agents = start_agents(&world)?;
        world.start_clients(1.0);
        Ok((
            Session {
                world,
                agents,
                baselines: Baselines::default(),
                clf,
                window,
            },
            name,
        ))
    }

    /// Waits one window, diagnoses it; findings come most confident first.
    pub fn diagnose_window(
        &mut self,
    ) -> anyhow::Result<(Vec<netdx_api::windows::WindowReport>, WindowDiagnosis)> {
        let reports = next_window(&self.agents, self.window)?;
        let mut d = diagnose(&join(&reports), &mut self.baselines, self.clf.as_ref());
        d.findings
            .sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        Ok((reports, d))
    }

    /// Version of the classifier in use.
    pub fn model_version(&self) -> String {
        self.clf.version()
    }
}

/// One incident: a (root cause, instance) reported in consecutive windows.
struct Incident {
    finding: Finding,
    first_window: u32,
    last_window: u32,
    windows: u32,
}

/// What happened in one fault phase, for the summary.
struct Phase {
    injected: String,
    diagnosed: BTreeMap<String, u32>,
    detected_after: Option<u32>,
}

fn short(f: &Finding) -> String {
    format!("{} @ {}", f.root_cause, f.instance.name)
}

/// Runs the demo; everything is torn down on return, error or Ctrl-C.
pub fn run(opts: DemoOpts, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    eprintln!(
        "netdx demo: building the testbed (3 nodes, 5 pods, {} servers, payload capture {}) ...",
        opts.workload.name(),
        opts.payload.name()
    );
    let (mut session, clf_name) =
        Session::start(opts.workload, &opts.model, opts.window, opts.payload)?;
    eprintln!("netdx demo: node-probes attached; diagnosing with the {clf_name}");
    let (tx, rx) = mpsc::channel::<Frame>();
    let plain = opts.plain || !std::io::stdout().is_terminal();
    let ui_stop = stop.clone();
    let ui = std::thread::spawn(move || live::show(rx, &ui_stop, plain));

    let mut incidents: Vec<Incident> = Vec::new();
    let mut confirm = Confirmation::new(DEFAULT_CONFIRM_WINDOWS);
    let mut phases: Vec<Phase> = Vec::new();
    let mut all_windows = Vec::new();
    let mut w = 0u32;
    // Warm-up: baselines need healthy windows before faults.
    let mut plan: Vec<(Option<usize>, u32)> = vec![(None, 4)];
    for i in 0..SEQUENCE.len() {
        plan.push((Some(i), opts.fault_windows));
        plan.push((None, 2));
    }
    'outer: for (fault, windows) in plan {
        let scenario = fault.map(|i| {
            let (class, intensity, param) = SEQUENCE[i];
            Scenario {
                id: format!("demo-{class}"),
                workload: opts.workload,
                fault: class,
                intensity,
                param,
                load: 1.0,
            }
        });
        let injected = match &scenario {
            Some(s) => Some(
                session
                    .world
                    .inject(s)
                    .with_context(|| format!("injecting {}", s.fault))?,
            ),
            None => None,
        };
        let label = scenario
            .as_ref()
            .map(|s| {
                format!(
                    "{} {} @ {}",
                    s.fault,
                    s.intensity,
                    World::target(scope_of(s.fault))
                )
            })
            .unwrap_or_else(|| "nothing".into());
        if scenario.is_some() {
            phases.push(Phase {
                injected: label.clone(),
                diagnosed: BTreeMap::new(),
                detected_after: None,
            });
        }
        for k in 0..windows {
            if stop.load(Ordering::Acquire) {
                break 'outer;
            }
            let (reports, WindowDiagnosis { findings, suspects }) = session.diagnose_window()?;
            let verdicts = confirm.observe(
                findings.iter().map(|f| (f.root_cause, f.instance.clone())),
                u64::from(w),
            );
            // Reported findings: repeated long enough, as the operator opens incidents.
            let reported: Vec<(&Finding, u32)> = findings
                .iter()
                .zip(&verdicts)
                .filter(|(_, (_, _, ok))| *ok)
                .map(|(f, (_, streak, _))| (f, streak.windows))
                .collect();
            if let (Some(s), Some(p)) = (&scenario, phases.last_mut()) {
                let want = target_instance(World::target(scope_of(s.fault)));
                for (f, _) in &reported {
                    *p.diagnosed.entry(short(f)).or_default() += 1;
                }
                if p.detected_after.is_none()
                    && reported
                        .iter()
                        .any(|(f, _)| f.root_cause == s.fault && Some(&f.instance) == want.as_ref())
                {
                    p.detected_after = Some(k + 1);
                }
            }
            for &(f, streak) in &reported {
                match incidents.iter_mut().find(|i| {
                    i.finding.root_cause == f.root_cause
                        && i.finding.instance == f.instance
                        && i.last_window + 1 >= w
                }) {
                    Some(i) => {
                        i.last_window = w;
                        i.windows += 1;
                        if f.confidence > i.finding.confidence {
                            i.finding = f.clone();
                        }
                    }
                    // Opened covering the windows of its streak.
                    None => incidents.push(Incident {
                        finding: f.clone(),
                        first_window: w + 1 - streak,
                        last_window: w,
                        windows: streak,
                    }),
                }
            }
            let refs: Vec<&netdx_api::windows::WindowReport> = reports.iter().collect();
            let mut lines = vec![format!("injected : {label}")];
            if findings.is_empty() {
                lines.push("diagnosed: healthy (no finding)".into());
            }
            for (f, (_, streak, ok)) in findings.iter().zip(&verdicts).take(3) {
                let state = if *ok {
                    "reported".to_string()
                } else {
                    format!("pending, {} of {} windows", streak.windows, confirm.need())
                };
                lines.push(format!(
                    "diagnosed: {} (confidence {:.2}, {:?}, {state}) because {}",
                    short(f),
                    f.confidence,
                    f.severity,
                    f.decision_path.last().cloned().unwrap_or_default()
                ));
            }
            if !suspects.is_empty() {
                lines.push(format!("suspects : {}", suspect_list(&suspects)));
            }
            let _ = tx.send(Frame {
                title: format!("window {w}"),
                rows: table::rows(&refs),
                lines,
            });
            all_windows.extend(reports);
            w += 1;
        }
        drop(injected);
    }
    drop(tx);
    let ui_result = ui.join();
    let model_version = session.model_version();
    drop(session);
    // Reports of an earlier run would read as incidents of this one.
    let reports_dir = opts.out_dir.join("reports");
    if reports_dir.exists() {
        std::fs::remove_dir_all(&reports_dir)
            .with_context(|| format!("clearing {}", reports_dir.display()))?;
    }
    std::fs::create_dir_all(&reports_dir)?;
    std::fs::write(
        opts.out_dir.join("windows.json"),
        serde_json::to_vec_pretty(&all_windows)?,
    )?;
    for (n, inc) in incidents.iter().enumerate() {
        let path = opts
            .out_dir
            .join("reports")
            .join(format!("{:02}-{}.yaml", n, inc.finding.root_cause));
        std::fs::write(
            &path,
            serde_yaml::to_string(&report(inc, &model_version, opts.window))?,
        )?;
    }
    println!(
        "\n{:<52} {:<52} {:>6} {:>9}",
        "injected", "diagnosed (most windows)", "match", "detected"
    );
    for p in &phases {
        let top = p
            .diagnosed
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(d, _)| d.clone())
            .unwrap_or_else(|| "nothing".into());
        let ok = p.detected_after.is_some();
        let after = p.detected_after.map_or("-".into(), |k| format!("{k} win"));
        println!(
            "{:<52} {:<52} {:>6} {:>9}",
            p.injected,
            top,
            if ok { "yes" } else { "no" },
            after
        );
    }
    println!(
        "\n{} incidents written as DiagnosisReport YAML to {}",
        incidents.len(),
        opts.out_dir.join("reports").display()
    );
    if let Ok(r) = ui_result {
        r?;
    }
    Ok(())
}

/// An incident as the DiagnosisReport the operator would write.
fn report(inc: &Incident, model_version: &str, window: Duration) -> crd::DiagnosisReport {
    let name = format!(
        "demo-{}-{}",
        inc.finding.root_cause.as_str().replace('_', "-"),
        inc.finding
            .instance
            .name
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    let mut r = crd::DiagnosisReport::new(
        &name,
        crd::DiagnosisReportSpec {
            target: crd::DiagnosisTarget {
                observation: Some("demo".into()),
                pod_selector: None,
            },
            duration: None,
        },
    );
    r.metadata.namespace = Some("default".into());
    r.status = Some(crd::DiagnosisReportStatus {
        phase: Some(crd::DiagnosisPhase::Completed),
        message: Some(format!(
            "seen in {} windows of {} s (windows {}..={})",
            inc.windows,
            window.as_secs(),
            inc.first_window,
            inc.last_window
        )),
        findings: crd_finding(&inc.finding).into_iter().collect(),
        model_version: Some(model_version.to_string()),
        ..Default::default()
    });
    r
}
