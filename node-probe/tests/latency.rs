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

#[test]
fn wait_excludes_the_time_a_slow_request_takes_to_arrive() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let processing_ms = 20.0;
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
    // 64 KiB requests over 8 Mbit/s from the client's node: ~65 ms to arrive.
    let _bw = faults::bandwidth(
        &h.tb.nodes[0].netns,
        "up0",
        &netdx_testbed::topology::node_subnet(1),
        8_000,
    )
    .unwrap();
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 1,
        requests: 15,
        req_size: 64 << 10,
        ..Default::default()
    };
    workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let ws = h.close_windows();
    let e = edge(&ws, "app", "backend", 7000);
    let s = e
        .iter()
        .find_map(|e| e.server.as_ref())
        .expect("server side");
    eprintln!(
        "server ttfb p50 {:.2} ms, wait p50 {:.2} ms",
        s.ttfb.p50_ms, s.wait.p50_ms
    );
    assert!(
        s.ttfb.p50_ms > processing_ms + 30.0,
        "ttfb includes the upload: {}",
        s.ttfb.p50_ms
    );
    assert!(
        (s.wait.p50_ms - processing_ms).abs() <= processing_ms * 0.15 + 0.5,
        "wait is the processing time: {}",
        s.wait.p50_ms
    );
}
