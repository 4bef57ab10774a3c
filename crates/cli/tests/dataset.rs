//! The dataset recorder on the real testbed: one short scenario through the real probes, its
//! rows labelled by what was injected and where, with baselines in place before the fault.
use std::time::Duration;

use netdx::{
    dataset::{Timeline, run_scenario},
    scenarios::all_scenarios,
};
use netdx_diagnosis::{classes::RootCause, features::Feature};

#[test]
fn a_refusing_server_labels_its_edges_after_onset_only() {
    let s = all_scenarios()
        .into_iter()
        .find(|s| s.id == "ndxe-connection_refused-100pct")
        .expect("the scenario is in the catalog");
    let t = Timeline {
        window: Duration::from_secs(1),
        faulty: 3,
        ..Default::default()
    };
    let rows = run_scenario(&s, &t).unwrap();
    let onset = rows
        .iter()
        .find(|r| r.transitional)
        .map(|r| r.window)
        .expect("an onset window");
    assert!(
        (t.healthy..=t.healthy + t.max_late).contains(&onset),
        "onset at window {onset}"
    );
    let to_s1 = |r: &&netdx_diagnosis::dataset::LabeledRow| r.edge.contains("/s1:");
    for r in &rows {
        let expected = if r.window >= onset && to_s1(&r) {
            RootCause::ConnectionRefused
        } else {
            RootCause::Healthy
        };
        assert_eq!(r.fault, expected, "{} in window {}", r.edge, r.window);
        assert_eq!(r.transitional, r.window == onset);
    }
    // Every edge seen before the fault has its baseline by onset, so its ratios can move.
    let before: Vec<&str> = rows
        .iter()
        .filter(|r| r.window + 1 == onset)
        .map(|r| r.edge.as_str())
        .collect();
    assert!(!before.is_empty());
    for r in rows.iter().filter(|r| r.window == onset) {
        if before.contains(&r.edge.as_str()) {
            let v = r.vector().unwrap();
            assert_eq!(v[Feature::HasBaseline], 1.0, "{} at onset", r.edge);
        }
    }
    assert!(
        rows.iter()
            .filter(|r| r.window > onset && to_s1(r))
            .all(|r| r.vector().unwrap()[Feature::ConnectRefusedRatio] > 0.5),
        "the s1 edges' connects are refused once the fault is in place"
    );
}
