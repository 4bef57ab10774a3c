//! End to end on the real testbed with the shipped model: a network fault, an L4 connection
//! failure and a server-side fault are injected in turn, and each must be diagnosed with the
//! right class and the right instance while it is in place.
use std::{path::Path, time::Duration};

use netdx::{
    demo::Session,
    scenarios::{Scenario, Workload, World, scope_of},
};
use netdx_api::targets::PayloadCapture;
use netdx_diagnosis::{classes::RootCause, eval::target_instance};

/// The model `make eval` writes and the repository ships.
fn model() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../operator/model/model.json"
    ))
}

#[test]
fn injected_faults_are_diagnosed_with_class_and_instance() {
    assert!(
        model().exists(),
        "shipped model missing at {}",
        model().display()
    );
    let (mut s, name) = Session::start(
        Workload::Ndxe,
        model(),
        Duration::from_secs(2),
        PayloadCapture::Both,
    )
    .unwrap();
    assert!(
        name.starts_with("model"),
        "the trained model must load: {name}"
    );
    for _ in 0..4 {
        s.diagnose_window().unwrap();
    }
    let faults = [
        (RootCause::PathDelay, "20ms", 20_000),
        (RootCause::ConnectionRefused, "100pct", 100),
        (RootCause::ServerCpuThrottled, "1pct", 1_000),
    ];
    let mut missed = Vec::new();
    for (class, intensity, param) in faults {
        let sc = Scenario {
            id: format!("e2e-{class}"),
            workload: Workload::Ndxe,
            fault: class,
            intensity,
            param,
            load: 1.0,
        };
        let want = target_instance(World::target(scope_of(class))).unwrap();
        let guard = s.world.inject(&sc).unwrap();
        let mut seen = Vec::new();
        let mut found = false;
        for _ in 0..4 {
            let findings = s.diagnose_window().unwrap().1.findings;
            found |= findings
                .iter()
                .any(|f| f.root_cause == class && f.instance == want);
            seen.extend(
                findings
                    .iter()
                    .map(|f| format!("{} @ {}", f.root_cause, f.instance.name)),
            );
        }
        drop(guard);
        // Let the edges recover before the next fault.
        for _ in 0..2 {
            s.diagnose_window().unwrap();
        }
        if !found {
            missed.push(format!("{class} @ {}: saw {seen:?}", want.name));
        }
    }
    assert!(missed.is_empty(), "not diagnosed: {missed:#?}");
}
