//! Pod-level kernel counters: zero-window advertisements of a receiver that stops reading,
//! listen queue overflows, CPU throttling of a pod with a CFS quota, and how full a server was
//! when a connection limit turned SYNs away.
mod common;

use common::Harness;
use netdx_api::windows::{PodWindow, WindowReport};
use netdx_testbed::{faults, servers, servers::EchoServer, topology::PodSpec, workloads};

fn pod<'a>(ws: &'a [WindowReport], name: &str) -> &'a PodWindow {
    ws.iter()
        .flat_map(|w| &w.pods)
        .find(|p| p.pod.name == name)
        .expect("pod window")
}

fn netstat(p: &PodWindow, key: &str) -> u64 {
    p.netstat.get(key).copied().unwrap_or(0)
}

#[test]
fn receiver_that_stops_reading_advertises_zero_window() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("sink", 1)]);
    let (server, _) = servers::echo(
        &h.tb,
        "sink",
        7000,
        &EchoServer {
            stop_reading: true,
            ..Default::default()
        },
    )
    .unwrap();
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 2,
        requests: 2,
        req_size: 8 << 20,
        max_secs: 3,
        ..Default::default()
    };
    let run = workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    assert_eq!(run.ok, 0, "{run:?}");
    // The counters are read when a window closes; under a loaded suite the sink's advertisement
    // was once missing from the first window after the run (1 failure in 3 full runs), so up
    // to three windows after it count.
    let (mut sink, mut app, mut stalled) = (0, 0, 0);
    for _ in 0..3 {
        let ws = h.close_windows();
        eprintln!("sink netstat {:?}", pod(&ws, "sink").netstat);
        sink += netstat(pod(&ws, "sink"), "TcpExt:TCPToZeroWindowAdv");
        app += netstat(pod(&ws, "app"), "TcpExt:TCPToZeroWindowAdv");
        stalled += zero_window_stalls(&ws);
        if sink > 0 && stalled > 0 {
            break;
        }
    }
    assert!(sink > 0, "the sink never advertised a zero window");
    assert_eq!(app, 0);
    // The uploads' failed sends met the closed window: the client's view counts them.
    assert!(
        stalled > 0,
        "no request was marked as stalled by a zero window"
    );
}

/// Exchanges the clients' views count as ended by a send against a zero window.
fn zero_window_stalls(ws: &[WindowReport]) -> u64 {
    ws.iter()
        .flat_map(|w| &w.edges)
        .filter_map(|e| e.client.as_deref())
        .inspect(|c| {
            eprintln!(
                "client view: no_response {} zero_window {}",
                c.no_response, c.zero_window
            )
        })
        .map(|c| c.zero_window)
        .sum()
}

#[test]
fn slow_accept_with_tiny_backlog_overflows_the_listen_queue() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("server", 1)]);
    let o = EchoServer {
        backlog: 1,
        accept_delay_ms: 500,
        ..Default::default()
    };
    let (server, _) = servers::echo(&h.tb, "server", 7000, &o).unwrap();
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 16,
        requests: 16,
        new_conn: true,
        max_secs: 5,
        connect_timeout_ms: 2000,
        ..Default::default()
    };
    workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let ws = h.close_windows();
    let s = pod(&ws, "server");
    eprintln!("server netstat {:?}", s.netstat);
    assert!(netstat(s, "TcpExt:ListenOverflows") > 0, "{:?}", s.netstat);
}

#[test]
fn cpu_quota_shows_as_throttling() {
    let h = Harness::new(1, &[PodSpec::new("app", 0), PodSpec::new("server", 0)]);
    let (server, _) = servers::echo(&h.tb, "server", 7000, &Default::default()).unwrap();
    h.tb.pod("server")
        .unwrap()
        .cgroups
        .set_cpu_quota(Some(5_000), 100_000)
        .unwrap();
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 4,
        requests: 20_000,
        max_secs: 3,
        ..Default::default()
    };
    workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let ws = h.close_windows();
    let s = pod(&ws, "server");
    eprintln!(
        "server cpu: periods {} throttled {} ({} ms)",
        s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ms
    );
    assert!(s.cpu_throttled_periods > 0, "{s:?}");
    assert_eq!(pod(&ws, "app").cpu_throttled_periods, 0);
}

#[test]
fn connection_limit_turns_syns_away_while_the_server_is_full() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("server", 1)]);
    let (server, _) = servers::echo(&h.tb, "server", 7000, &Default::default()).unwrap();
    let ns = h.tb.pod("server").unwrap().netns.clone();
    let _limit = faults::conn_limit(&ns, 7000, 2).unwrap();
    h.close_windows();
    // Two pooled connections hold the limit for 3 s; fresh connects in the middle are refused.
    let pool = workloads::EchoClient {
        connections: 2,
        requests: 60,
        rate: 20.0,
        max_secs: 3,
        ..Default::default()
    };
    let churn = workloads::EchoClient {
        connections: 1,
        requests: 10,
        new_conn: true,
        max_secs: 2,
        ..Default::default()
    };
    let (refused, ws) = std::thread::scope(|s| {
        let held = s.spawn(|| workloads::echo_client(&h.tb, "app", server, &pool));
        std::thread::sleep(std::time::Duration::from_millis(800));
        // The measured window spans only the time the pool holds both connections: stray
        // packets of their opening or closing would be drops at fewer open connections.
        h.close_windows();
        let run = workloads::echo_client(&h.tb, "app", server, &churn).unwrap();
        let ws = h.close_windows();
        assert!(
            held.join().unwrap().unwrap().ok > 50,
            "pooled exchanges kept working"
        );
        (run.connect_refused, ws)
    });
    assert_eq!(refused, 10);
    let s = pod(&ws, "server");
    eprintln!(
        "server: max {} open, {} stray drops, {} open at them",
        s.server_conns_max, s.stray_drops, s.server_conns_at_stray_drops
    );
    assert_eq!(s.server_conns_max, 2, "{s:?}");
    assert!(s.stray_drops >= 10, "each refused SYN is a drop: {s:?}");
    assert_eq!(
        s.server_conns_at_stray_drops,
        2 * s.stray_drops,
        "every SYN was turned away while both pooled connections were open: {s:?}"
    );
    // The client turned nobody away: whatever it dropped (the RSTs it was refused with), it
    // served no connections meanwhile.
    assert_eq!(pod(&ws, "app").server_conns_at_stray_drops, 0);
}
