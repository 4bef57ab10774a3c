//! In-process end to end: the testbed's real node-probes (eBPF loaded, one per simulated node)
//! feed the operator's ingest; the diagnosed windows, turned into DiagnosisReport findings as
//! the operator would apply them, name the injected fault and the pod at fault.
use std::{collections::BTreeSet, sync::Arc, time::Duration};

use netdx::{
    dataset::{next_window, start_agents},
    scenarios::{Scenario, Workload, World},
};
use netdx_diagnosis::classes::RootCause;
use netdx_operator::{classifier::ClassifierSlot, engine::merge, ingest::Ingest, metrics::Metrics};

#[test]
fn real_probe_windows_become_a_report_naming_the_fault() {
    let mut world = World::up(Workload::Ndxe).unwrap();
    let agents = start_agents(&world).unwrap();
    world.start_clients(1.0);
    // The shipped model (the operator's built-in classifier outside unit tests).
    let (ingest, _incidents) =
        Ingest::new(Arc::new(ClassifierSlot::default()), Duration::from_secs(5));
    let metrics = Metrics::default();
    let expected: BTreeSet<String> = world.tb.nodes.iter().map(|n| n.name.clone()).collect();
    let window = Duration::from_secs(2);
    let feed = |reports| {
        let errors = ingest.receive(reports, &expected, &metrics);
        assert!(
            errors.is_empty(),
            "ingest rejected real windows: {errors:?}"
        );
    };
    for _ in 0..4 {
        feed(next_window(&agents, window).unwrap());
    }
    let from = netdx_operator::ingest::unix_ms();
    let sc = Scenario {
        id: "e2e".into(),
        workload: Workload::Ndxe,
        fault: RootCause::ConnectionRefused,
        intensity: "100pct",
        param: 100,
        load: 1.0,
    };
    let fault = world.inject(&sc).unwrap();
    for _ in 0..4 {
        feed(next_window(&agents, window).unwrap());
    }
    drop(fault);
    let windows = ingest.diagnosed_between(from, netdx_operator::ingest::unix_ms() + 1);
    assert!(
        windows.len() >= 3,
        "windows of all three nodes joined and diagnosed: {}",
        windows.len()
    );
    assert!(
        windows.iter().all(|w| w.nodes.len() == 3),
        "each window joins three nodes"
    );
    let findings = merge(windows.iter().flat_map(|w| w.findings.iter()));
    assert!(
        findings
            .iter()
            .any(|f| f.root_cause == "ConnectionRefused" && f.instance.name == "default/s1"),
        "report findings: {:?}",
        findings
            .iter()
            .map(|f| format!("{} @ {}", f.root_cause, f.instance.name))
            .collect::<Vec<_>>()
    );
}
