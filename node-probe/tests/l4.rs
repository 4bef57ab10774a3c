//! L4 signals from real faults: loss -> retransmits by direction, no listener -> refused,
//! SYN drop -> connect timeouts, SO_LINGER 0 abort -> resets on both sides.
mod common;

use common::{Harness, edge};
use netdx_api::windows::L4Stats;
use netdx_testbed::{faults, servers, topology::PodSpec, workloads};

fn l4(h: &Harness, client: &str, server: &str, port: u16) -> L4Stats {
    let ws = h.close_windows();
    let mut sum = L4Stats::default();
    for e in edge(&ws, client, server, port) {
        let l = &e.l4;
        sum.connects_ok += l.connects_ok;
        sum.connect_refused += l.connect_refused;
        sum.connect_timeout += l.connect_timeout;
        sum.connect_failed_other += l.connect_failed_other;
        sum.retrans_client_to_server += l.retrans_client_to_server;
        sum.retrans_server_to_client += l.retrans_server_to_client;
        sum.syn_retrans += l.syn_retrans;
        sum.resets_by_client += l.resets_by_client;
        sum.resets_by_server += l.resets_by_server;
        sum.resets_to_client += l.resets_to_client;
        sum.resets_to_server += l.resets_to_server;
    }
    sum
}

#[test]
fn loss_shows_as_retransmits_in_the_lossy_direction() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    let (fabric, _) = h.tb.uplink(1);
    // Uploads of 32 KiB with tiny answers: most segments flow client -> server.
    let c = workloads::EchoClient {
        connections: 4,
        requests: 400,
        req_size: 32 << 10,
        resp_size: 16,
        ..Default::default()
    };
    h.close_windows();
    {
        // n1 egress in the fabric = packets towards the server's node.
        let _loss = faults::loss(&fabric, "n1", 5).unwrap();
        workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    }
    let up = l4(&h, "app", "backend", 7000);
    eprintln!("loss towards server: {up:?}");
    assert!(up.retrans_client_to_server >= 20, "{up:?}");
    assert!(
        up.retrans_client_to_server > 4 * up.retrans_server_to_client,
        "{up:?}"
    );

    // Now downloads through loss towards the client.
    let c = workloads::EchoClient {
        connections: 4,
        requests: 400,
        req_size: 16,
        resp_size: 32 << 10,
        ..Default::default()
    };
    {
        let _loss = faults::loss(&fabric, "n0", 5).unwrap();
        workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    }
    let down = l4(&h, "app", "backend", 7000);
    eprintln!("loss towards client: {down:?}");
    assert!(down.retrans_server_to_client >= 20, "{down:?}");
    assert!(
        down.retrans_server_to_client > 4 * down.retrans_client_to_server,
        "{down:?}"
    );
}

#[test]
fn stopped_listener_gives_refused_connects() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let (server, pid) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    servers::kill(pid);
    std::thread::sleep(std::time::Duration::from_millis(200));
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 1,
        requests: 25,
        new_conn: true,
        ..Default::default()
    };
    let run = workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    assert_eq!(run.connect_refused, 25, "{run:?}");
    let s = l4(&h, "app", "backend", 7000);
    eprintln!("{s:?}");
    assert_eq!(s.connect_refused, 25, "{s:?}");
    assert_eq!(s.connect_timeout, 0, "{s:?}");
    assert_eq!(s.connects_ok, 0, "{s:?}");
}

/// 3 connects from `app` to a backend whose SYNs are all dropped, with the client's own
/// connect timeout; returns the client's report and the probe's L4 view of the edge.
fn connects_into_dropped_syns(
    connect_timeout_ms: u64,
) -> (netdx_testbed::echo::ClientReport, L4Stats) {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    let backend_ns = h.tb.pod("backend").unwrap().netns.clone();
    h.close_windows();
    let _fw = faults::drop_syn(&backend_ns, 7000, 100).unwrap();
    let c = workloads::EchoClient {
        connections: 3,
        requests: 3,
        connect_timeout_ms,
        ..Default::default()
    };
    let run = workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let s = l4(&h, "app", "backend", 7000);
    eprintln!("{s:?}");
    (run, s)
}

#[test]
fn dropped_syns_give_connect_timeouts() {
    let (run, s) = connects_into_dropped_syns(1500);
    assert_eq!(run.connect_timeout, 3, "{run:?}");
    assert_eq!(s.connect_timeout, 3, "{s:?}");
    assert!(
        s.syn_retrans >= 3,
        "each connect retransmitted its SYN at 1 s: {s:?}"
    );
    assert_eq!(s.connect_refused, 0, "{s:?}");
}

#[test]
fn connects_abandoned_before_any_syn_retransmit_count_as_timeouts() {
    // The application's own connect timeout (300 ms) fires before the first SYN retransmit.
    let (_, s) = connects_into_dropped_syns(300);
    assert_eq!(s.connect_timeout, 3, "{s:?}");
    assert_eq!(s.syn_retrans, 0, "{s:?}");
    assert_eq!(s.connect_refused + s.connect_failed_other, 0, "{s:?}");
}

#[test]
fn server_abort_gives_resets_on_both_sides() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let (server, _) = servers::echo(
        &h.tb,
        "backend",
        7000,
        &servers::EchoServer {
            abort_after: 1,
            ..Default::default()
        },
    )
    .unwrap();
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 1,
        requests: 20,
        ..Default::default()
    };
    let run = workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    assert_eq!(run.io_errors, 20, "{run:?}");
    let s = l4(&h, "app", "backend", 7000);
    eprintln!("{s:?}");
    assert_eq!(s.resets_by_server, 20, "{s:?}");
    assert_eq!(s.resets_to_client, 20, "{s:?}");
}
