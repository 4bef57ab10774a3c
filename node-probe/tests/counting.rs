//! Exchange counting against real servers and clients in testbed pods.
mod common;

use common::{Harness, edge, side_sum, within};
use netdx_testbed::{servers, topology::PodSpec, workloads};

#[test]
fn redis_benchmark_exchanges_counted_on_both_sides() {
    let h = Harness::new(2, &[PodSpec::new("client", 0), PodSpec::new("redis", 1)]);
    let server = servers::redis(&h.tb, "redis").unwrap();
    // Readiness probe connections are not part of the workload: start from a clean window.
    h.close_windows();
    let run = workloads::redis_benchmark(&h.tb, "client", server, "get,set", 2000, 10, 1).unwrap();
    let expected = run.requests_per_test * run.tests;
    let ws = h.close_windows();
    let e = edge(&ws, "client", "redis", 6379);
    let client = side_sum(&e, true, |s| s.exchanges);
    let server_n = side_sum(&e, false, |s| s.exchanges);
    eprintln!("expected {expected}, client side {client}, server side {server_n}, health {:?}", ws[0].health);
    assert!(within(client, expected, 0.01), "client side {client} vs {expected}");
    assert!(within(server_n, expected, 0.01), "server side {server_n} vs {expected}");
}
