//! Latency accuracy against a server with a known processing time, and the client/server
//! gap growing with delay injected on the node-to-node link.
mod common;

use common::{Harness, edge};
use netdx_testbed::{faults, servers, topology::PodSpec, workloads};

fn p50s(h: &Harness) -> (f64, f64) {
    let ws = h.close_windows();
    let e = edge(&ws, "app", "backend", 7000);
    let c = e
        .iter()
        .find_map(|e| e.client.as_ref())
        .expect("client side")
        .latency
        .p50_ms;
    let s = e
        .iter()
        .find_map(|e| e.server.as_ref())
        .expect("server side")
        .latency
        .p50_ms;
    (c, s)
}

#[test]
fn latency_matches_server_processing_time_and_gap_tracks_path_delay() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let truth_ms = 20.0;
    let (server, _) = servers::echo(
        &h.tb,
        "backend",
        7000,
        &servers::EchoServer {
            delay_us: 20_000,
            ..Default::default()
        },
    )
    .unwrap();
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 2,
        requests: 100,
        ..Default::default()
    };
    workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let (client_p50, server_p50) = p50s(&h);
    eprintln!("no delay: client p50 {client_p50:.3} ms, server p50 {server_p50:.3} ms");
    let tol = truth_ms * 0.10 + 0.2;
    assert!(
        (server_p50 - truth_ms).abs() <= tol,
        "server p50 {server_p50} vs {truth_ms}"
    );
    assert!(
        (client_p50 - truth_ms).abs() <= tol,
        "client p50 {client_p50} vs {truth_ms}"
    );
    let gap0 = client_p50 - server_p50;

    // 10 ms one way, client node -> server node, on the fabric.
    let (fabric, _) = h.tb.uplink(0);
    let injected_ms = 10.0;
    let _delay = faults::delay(&fabric, "n0", "n1", 0, 10_000, 0).unwrap();
    workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let (client_p50, server_p50) = p50s(&h);
    let gap1 = client_p50 - server_p50;
    eprintln!(
        "10 ms path delay: client p50 {client_p50:.3} ms, server p50 {server_p50:.3} ms, gap {gap0:.3} -> {gap1:.3}"
    );
    assert!(
        (server_p50 - truth_ms).abs() <= tol,
        "server side must not see path delay: {server_p50}"
    );
    let growth = gap1 - gap0;
    assert!(
        (growth - injected_ms).abs() <= injected_ms * 0.10 + 0.2,
        "gap grew by {growth} ms, injected {injected_ms}"
    );
}
