//! The harness runs end to end on tiny inputs and writes well-formed results. Timing is never
//! asserted here: these numbers depend on the machine and on whatever else runs.
use std::{path::PathBuf, process::Command};

/// Splits one CSV line into fields (RFC 4180 quoting).
fn fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn tiny_run_writes_csv_json_plots_and_page() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let doc = dir.join("benchmarks.md");
    let out = Command::new(env!("CARGO_BIN_EXE_netdx-bench"))
        .args(["--tiny", "--only", "pipeline,ingest", "--out"])
        .arg(&dir)
        .arg("--doc")
        .arg(&doc)
        .output()
        .expect("netdx-bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let csv = std::fs::read_to_string(dir.join("results.csv")).expect("results.csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("workload,condition,round,metric,value,command")
    );
    let rows: Vec<Vec<String>> = lines.map(fields).collect();
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(r.len(), 6, "{r:?}");
        assert!(r[2].parse::<u32>().is_ok(), "round {r:?}");
        assert!(r[4].parse::<f64>().is_ok_and(f64::is_finite), "value {r:?}");
        assert!(!r[5].is_empty(), "every row names its command: {r:?}");
    }
    for w in [
        "pipeline",
        "operator_ingest_4_pods",
        "operator_ingest_16_pods",
    ] {
        assert!(rows.iter().any(|r| r[0] == w), "rows of {w}");
    }

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
            .expect("valid JSON");
    for k in netdx_bench::report::REQUIRED_KEYS {
        assert!(summary.get(k).is_some(), "summary.json lacks {k}");
    }
    assert!(summary["pipeline_events_per_sec_per_core"].is_number());
    assert!(
        summary["redis_throughput_loss_pct"].is_null(),
        "impact was not run"
    );
    assert!(summary["measured_at"].is_string());
    assert!(summary["machine"]["cpus"].is_number());
    assert_eq!(summary["mode"], "tiny");

    let svg = std::fs::read_to_string(dir.join("ingest-time.svg")).expect("ingest plot");
    assert!(svg.starts_with("<svg"));
    let page = std::fs::read_to_string(&doc).expect("benchmarks.md");
    assert!(page.contains("| pipeline | userspace | records_per_sec_one_core |"));
    assert!(
        page.contains("`netdx-bench --tiny --only pipeline`"),
        "rows carry their command"
    );
    assert!(
        page.contains("](./ingest-time.svg)"),
        "plots linked relative to the page"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
