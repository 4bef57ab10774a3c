//! Protocol names and error signals from the first payload bytes of real servers' traffic.
mod common;

use common::{Harness, edge};
use netdx_api::windows::SideStats;
use netdx_testbed::{servers, topology::PodSpec, workloads};

fn sides<'a>(
    ws: &'a [netdx_api::windows::WindowReport],
    c: &str,
    s: &str,
    port: u16,
) -> (&'a SideStats, &'a SideStats) {
    let e = edge(ws, c, s, port);
    let client = e
        .iter()
        .find_map(|e| e.client.as_ref())
        .expect("client view");
    let server = e
        .iter()
        .find_map(|e| e.server.as_ref())
        .expect("server view");
    (client, server)
}

#[test]
fn http_5xx_counted_as_l7_errors_on_both_sides() {
    let h = Harness::new(2, &[PodSpec::new("web", 0), PodSpec::new("nginx", 1)]);
    let server = servers::nginx(&h.tb, "nginx", 512).unwrap();
    h.close_windows();
    workloads::wrk(&h.tb, "web", &format!("http://{server}/status/500"), 2, 1).unwrap();
    let ws = h.close_windows();
    let (c, s) = sides(&ws, "web", "nginx", 80);
    for side in [c, s] {
        assert!(side.exchanges > 100, "{side:?}");
        assert_eq!(
            side.protocols.get("http"),
            Some(&(side.exchanges + side.no_response)),
            "{:?}",
            side.protocols
        );
        assert_eq!(side.l7_errors, side.exchanges, "every answer is a 500");
    }
    workloads::wrk(&h.tb, "web", &format!("http://{server}/"), 2, 1).unwrap();
    let ws = h.close_windows();
    let (c, s) = sides(&ws, "web", "nginx", 80);
    assert_eq!((c.l7_errors, s.l7_errors), (0, 0));
}

#[test]
fn redis_err_replies_counted_as_l7_errors() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("redis", 1)]);
    let server = servers::redis(&h.tb, "redis").unwrap();
    h.close_windows();
    workloads::redis_cli_repeat(&h.tb, "app", server, 500, &["NOSUCHCOMMAND", "x"]).unwrap();
    let ws = h.close_windows();
    let (c, s) = sides(&ws, "app", "redis", 6379);
    // redis-cli may add a handshake command (HELLO / COMMAND DOCS) of its own.
    assert!((500..=503).contains(&c.l7_errors), "client {c:?}");
    assert!((500..=503).contains(&s.l7_errors), "server {s:?}");
    assert!(c.protocols.get("redis").is_some_and(|n| *n >= 500));
    workloads::redis_benchmark(&h.tb, "app", server, "get", 500, 2, 1).unwrap();
    let ws = h.close_windows();
    let (c, _) = sides(&ws, "app", "redis", 6379);
    assert_eq!(c.l7_errors, 0, "{c:?}");
}

#[test]
fn memcached_and_unknown_protocols_are_named() {
    let h = Harness::new(
        1,
        &[
            PodSpec::new("app", 0),
            PodSpec::new("cache", 0),
            PodSpec::new("backend", 0),
        ],
    );
    let mc = servers::memcached(&h.tb, "cache").unwrap();
    let (echo, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    h.close_windows();
    workloads::memcaslap(&h.tb, "app", mc, 2000, 2).unwrap();
    workloads::echo_client(
        &h.tb,
        "app",
        echo,
        &workloads::EchoClient {
            requests: 300,
            ..Default::default()
        },
    )
    .unwrap();
    let ws = h.close_windows();
    let (c, _) = sides(&ws, "app", "cache", 11211);
    let mcn = c.protocols.get("memcached").copied().unwrap_or(0);
    assert!(mcn as f64 >= 0.99 * c.exchanges as f64, "{:?}", c.protocols);
    let (c, _) = sides(&ws, "app", "backend", 7000);
    assert_eq!(c.protocols.get("unknown"), Some(&300), "{:?}", c.protocols);
    assert_eq!(c.exchanges, 300);
}
