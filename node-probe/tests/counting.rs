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
    eprintln!(
        "expected {expected}, client side {client}, server side {server_n}, health {:?}",
        ws[0].health
    );
    assert!(
        within(client, expected, 0.01),
        "client side {client} vs {expected}"
    );
    assert!(
        within(server_n, expected, 0.01),
        "server side {server_n} vs {expected}"
    );
}

#[test]
fn wrk_nginx_exchanges_counted_on_both_sides() {
    let h = Harness::new(
        2,
        &[PodSpec::new("web-client", 0), PodSpec::new("nginx", 1)],
    );
    let server = servers::nginx(&h.tb, "nginx", 1024).unwrap();
    h.close_windows();
    let run = workloads::wrk(&h.tb, "web-client", &format!("http://{server}/"), 8, 2).unwrap();
    let ws = h.close_windows();
    let e = edge(&ws, "web-client", "nginx", 80);
    let client = side_sum(&e, true, |s| s.exchanges);
    let server_n = side_sum(&e, false, |s| s.exchanges);
    eprintln!(
        "wrk {} requests, client side {client}, server side {server_n}",
        run.requests
    );
    // wrk counts completed responses only; requests cut by its deadline are still in flight.
    assert!(
        within(client, run.requests, 0.01),
        "client side {client} vs {}",
        run.requests
    );
    assert!(
        within(server_n, run.requests, 0.01),
        "server side {server_n} vs {}",
        run.requests
    );
}

#[test]
fn unknown_protocol_exchanges_counted_on_both_sides() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 4,
        requests: 3000,
        ..Default::default()
    };
    let run = workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    assert_eq!(run.ok, 3000, "client run {run:?}");
    let ws = h.close_windows();
    let e = edge(&ws, "app", "backend", 7000);
    let client = side_sum(&e, true, |s| s.exchanges);
    let server_n = side_sum(&e, false, |s| s.exchanges);
    assert!(within(client, 3000, 0.01), "client side {client}");
    assert!(within(server_n, 3000, 0.01), "server side {server_n}");
    // Bytes per exchange: 9-byte header + 64 payload; 5-byte header + 256 response.
    let req_bytes = side_sum(&e, true, |s| s.req_bytes);
    let resp_bytes = side_sum(&e, true, |s| s.resp_bytes);
    assert_eq!(req_bytes, 3000 * 73);
    assert_eq!(resp_bytes, 3000 * 261);
}

#[test]
fn pods_given_only_by_uid_are_discovered_from_kubelet_cgroups() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    // As in a cluster: the operator knows pod UIDs, not node-local paths.
    let mut set = h.tb.targets();
    for p in &mut set.pods {
        p.cgroup_path.clear();
        p.netns_path.clear();
    }
    std::fs::write(h.tb.targets_path(), serde_json::to_vec(&set).unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 2,
        requests: 500,
        ..Default::default()
    };
    workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let ws = h.close_windows();
    let e = edge(&ws, "app", "backend", 7000);
    assert_eq!(side_sum(&e, true, |s| s.exchanges), 500);
    assert_eq!(side_sum(&e, false, |s| s.exchanges), 500);
}

#[test]
fn pgbench_postgres_exchanges_counted_and_named() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("db", 1)]);
    let server = servers::postgres(&h.tb, "db").unwrap();
    workloads::pgbench_init(&h.tb, "app", server).unwrap();
    h.close_windows();
    // Select-only: one statement, so one exchange, per transaction.
    let run = workloads::pgbench(&h.tb, "app", server, 2, 1000, true).unwrap();
    assert_eq!(run.transactions, 2000);
    let ws = h.close_windows();
    let e = edge(&ws, "app", "db", 5432);
    let client = side_sum(&e, true, |s| s.exchanges);
    let server_n = side_sum(&e, false, |s| s.exchanges);
    eprintln!("pgbench 2000 transactions, client side {client}, server side {server_n}");
    // pgbench's own setup queries and the startup/auth exchanges add a handful.
    assert!(within(client, 2000, 0.01), "client side {client}");
    assert!(within(server_n, 2000, 0.01), "server side {server_n}");
    let named = side_sum(&e, true, |s| {
        s.protocols.get("postgres").copied().unwrap_or(0)
    });
    assert!(
        named as f64 >= 0.99 * client as f64,
        "postgres named on {named} of {client}"
    );
    // An SQL error comes back as an ErrorResponse: counted as an L7 error on both sides.
    workloads::psql(&h.tb, "app", server, "SELECT * FROM no_such_table").unwrap();
    let ws = h.close_windows();
    let e = edge(&ws, "app", "db", 5432);
    assert!(side_sum(&e, true, |s| s.l7_errors) >= 1);
    assert!(side_sum(&e, false, |s| s.l7_errors) >= 1);
}
