//! `netdx diagnose`: runs the diagnosis over saved window summaries (a demo's windows.json)
//! or over the windows running node-probes serve (`/v1/windows`).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use netdx_api::windows::WindowReport;
use netdx_diagnosis::{
    features::Baselines,
    join::join,
    localize::{Suspect, WindowDiagnosis, diagnose},
};

use crate::demo::classifier;

/// Reads window reports from a JSON file (an array of WindowReport).
pub fn from_file(path: &Path) -> anyhow::Result<Vec<WindowReport>> {
    let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&body)
        .with_context(|| format!("{} is not a JSON array of window reports", path.display()))
}

/// Fetches `/v1/windows` from a node-probe's API (plain HTTP on a local address).
pub fn from_probe(addr: SocketAddr) -> anyhow::Result<Vec<WindowReport>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /v1/windows HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{addr}: {}",
        head.lines().next().unwrap_or("")
    );
    serde_json::from_str(body).with_context(|| format!("{addr}: response is not window reports"))
}

/// Groups reports of several nodes by window end (probes close windows on the same
/// wall-clock boundaries), oldest first.
pub fn by_window(reports: Vec<WindowReport>) -> Vec<Vec<WindowReport>> {
    let mut m: BTreeMap<u64, Vec<WindowReport>> = BTreeMap::new();
    for r in reports {
        // Round to the second: node clocks and loop timing differ by milliseconds.
        m.entry((r.end_unix_ms + 500) / 1000).or_default().push(r);
    }
    m.into_values().collect()
}

/// Diagnoses every window in order (baselines carry over) and prints the findings.
pub fn run(reports: Vec<WindowReport>, model: &Path) -> anyhow::Result<()> {
    let (clf, name) = classifier(model);
    println!("diagnosing {} reports with the {name}", reports.len());
    let mut baselines = Baselines::default();
    for (i, group) in by_window(reports).into_iter().enumerate() {
        let joined = join(&group);
        let WindowDiagnosis { findings, suspects } =
            diagnose(&joined, &mut baselines, clf.as_ref());
        let nodes: Vec<&str> = group.iter().map(|r| r.node.as_str()).collect();
        if findings.is_empty() {
            println!(
                "window {i} ({} edges, nodes {}): healthy",
                joined.edges.len(),
                nodes.join(",")
            );
        }
        for f in findings {
            println!(
                "window {i}: {} @ {} ({:?}), confidence {:.2}, severity {:?}\n    evidence: {}\n    path: {}",
                f.root_cause,
                f.instance.name,
                f.instance.kind,
                f.confidence,
                f.severity,
                f.evidence
                    .iter()
                    .map(|e| format!(
                        "{}={:.3}{}",
                        e.feature,
                        e.value,
                        e.baseline
                            .map_or(String::new(), |b| format!(" (baseline {b:.3})"))
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                f.decision_path.join(" -> ")
            );
        }
        if !suspects.is_empty() {
            println!("    suspects: {}", suspect_list(&suspects));
        }
    }
    Ok(())
}

/// Suspects on one line: instance (fault, share of the vote, edges leaning).
pub(crate) fn suspect_list(suspects: &[Suspect]) -> String {
    suspects
        .iter()
        .map(|s| {
            let n = s.edges.len();
            let plural = if n == 1 { "" } else { "s" };
            format!(
                "{} ({}, share {:.2}, {n} edge{plural})",
                s.instance.name, s.root_cause, s.share
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
