//! Protocol names and error signals from the first payload bytes of real servers' traffic.
mod common;

use common::{Harness, edge};
use netdx_api::{targets::PayloadCapture, windows::SideStats};
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

/// Each payload capture mode on one keep-alive connection whose answers alternate 500 and 200:
/// a head copied once and never refreshed would make every answer or none an error.
#[test]
fn payload_capture_modes_copy_fresh_heads_of_the_directions_they_watch() {
    let h = Harness::new(2, &[PodSpec::new("web", 0), PodSpec::new("nginx", 1)]);
    let server = servers::nginx(&h.tb, "nginx", 512).unwrap();
    for mode in [
        PayloadCapture::Egress,
        PayloadCapture::Ingress,
        PayloadCapture::Off,
        PayloadCapture::Both,
    ] {
        h.tb.write_targets_with(mode).unwrap();
        // The probes apply the target set at their next sync (every 1 s); this window is dropped.
        std::thread::sleep(std::time::Duration::from_millis(2500));
        h.close_windows();
        let run = workloads::wrk_alternating_errors(&h.tb, "web", server, 1).unwrap();
        // Alternating on one connection (the testbed nginx keeps it for 1000000 requests).
        // wrk calls request() once to check it before sending, so its first request is a
        // 500: of k answers in order, (k + 1) / 2 are errors.
        assert!(
            run.requests > 100 && run.non_2xx == run.requests.div_ceil(2),
            "{mode:?}: {run:?}"
        );
        let ws = h.close_windows();
        // Each pod's window says what was attached to it, for the operator to pick its model.
        let pods: Vec<_> = ws.iter().flat_map(|w| &w.pods).collect();
        assert!(
            !pods.is_empty() && pods.iter().all(|p| p.payload == mode),
            "{mode:?}: {pods:?}"
        );
        let (c, s) = sides(&ws, "web", "nginx", 80);
        // wrk does not count a request still in flight when it stops; the probes do.
        assert!(
            (run.requests..=run.requests + 1).contains(&c.exchanges),
            "{mode:?}: every exchange recorded: {c:?}"
        );
        let seen = |side: &SideStats| side.exchanges + side.no_response;
        let named = |side: &SideStats| side.protocols.get("http").copied().unwrap_or(0);
        // Exactly the 500s among the answers the side saw, which may include the one in
        // flight when wrk stopped (answered, never read). A head taken from the neighbouring
        // answer is off by one; a stale or missing head by thousands.
        let all_500s = |side: &SideStats| side.l7_errors == side.exchanges.div_ceil(2);
        // Which heads each side copies: (requests, responses).
        let (client, server) = match mode {
            PayloadCapture::Egress => ((true, false), (false, true)),
            PayloadCapture::Ingress => ((false, true), (true, false)),
            PayloadCapture::Off => ((false, false), (false, false)),
            PayloadCapture::Both => ((true, true), (true, true)),
        };
        for (side, (requests, responses), what) in [(c, client, "client"), (s, server, "server")] {
            // A request head names every exchange; a status line alone only answered ones.
            let want_named = match (requests, responses) {
                (true, _) => seen(side),
                (false, true) => side.exchanges,
                (false, false) => 0,
            };
            assert_eq!(named(side), want_named, "{mode:?} {what} {side:?}");
            assert!(
                if responses {
                    all_500s(side)
                } else {
                    side.l7_errors == 0
                },
                "{mode:?} {what}: {} errors, {run:?}, {side:?}",
                side.l7_errors
            );
        }
    }
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
    workloads::memcaslap(&h.tb, "app", mc, 2000, 2, 120).unwrap();
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

#[test]
fn dns_failures_counted_as_l7_errors_over_udp() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("dns", 1)]);
    let opts = netdx_testbed::dns::ServerOpts {
        servfail: 0.3,
        ..Default::default()
    };
    let (server, _) = servers::dns(&h.tb, "dns", &opts).unwrap();
    h.close_windows();
    let r = workloads::dns_client(&h.tb, "app", server, 300, 0.0, 500).unwrap();
    assert_eq!(r.sent, 300, "{r:?}");
    let ws = h.close_windows();
    let e = edge(&ws, "app", "dns", 53);
    let c = e
        .iter()
        .find_map(|e| e.client.as_ref())
        .expect("client view");
    // The server's socket is unconnected: its view has no peer address, one edge per server,
    // named by the server pod's IP (not the wildcard it is bound to).
    let (key, s) = ws
        .iter()
        .flat_map(|w| &w.edges)
        .filter(|e| e.key.port == 53 && e.key.server.pod.as_ref().is_some_and(|p| p.name == "dns"))
        .find_map(|e| Some((&e.key, e.server.as_ref()?)))
        .expect("server view");
    assert_eq!(key.server.ip, h.tb.pod("dns").unwrap().ip, "{key:?}");
    for side in [c, s] {
        assert_eq!(side.exchanges, 300, "{side:?}");
        assert_eq!(
            side.protocols.get("dns"),
            Some(&300),
            "{:?}",
            side.protocols
        );
        assert_eq!(side.l7_errors, r.errors, "{side:?} vs {r:?}");
    }
}

#[test]
fn unanswered_dns_queries_are_exchanges_without_response() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("dns", 1)]);
    let opts = netdx_testbed::dns::ServerOpts {
        drop: 0.2,
        ..Default::default()
    };
    let (server, _) = servers::dns(&h.tb, "dns", &opts).unwrap();
    h.close_windows();
    let r = workloads::dns_client(&h.tb, "app", server, 50, 0.0, 150).unwrap();
    assert!(r.timeouts >= 5, "{r:?}");
    let ws = h.close_windows();
    let c = edge(&ws, "app", "dns", 53)
        .into_iter()
        .find_map(|e| e.client.as_ref())
        .expect("client view");
    assert_eq!(c.exchanges, r.ok + r.errors, "{c:?} vs {r:?}");
    // The last query, if unanswered, is still open when the window closes.
    assert!(
        c.no_response + 1 >= r.timeouts && c.no_response <= r.timeouts,
        "{c:?} vs {r:?}"
    );
}
