//! Only target pods are recorded; teardown leaves nothing behind; ring-buffer loss is counted.
mod common;

use common::{Harness, edge, side_sum};
use netdx_testbed::{servers, topology::PodSpec, workloads};
use node_probe::loader::ProbeConfig;

fn kernel(ws: &[netdx_api::windows::WindowReport], name: &str) -> u64 {
    ws.iter()
        .map(|w| w.health.kernel.get(name).copied().unwrap_or(0))
        .sum()
}

#[test]
fn non_target_pods_produce_no_records() {
    let h = Harness::new(
        1,
        &[
            PodSpec::new("watched", 0),
            PodSpec::new("quiet", 0).unwatched(),
            PodSpec::new("backend", 0).unwatched(),
        ],
    );
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    let before = h.close_windows();
    let base_events = kernel(&before, "sock_events");
    let c = workloads::EchoClient {
        connections: 2,
        requests: 500,
        ..Default::default()
    };
    workloads::echo_client(&h.tb, "quiet", server, &c).unwrap();
    let ws = h.close_windows();
    assert!(
        ws.iter().all(|w| w.edges.is_empty()),
        "edges from unwatched pods: {:?}",
        ws[0].edges
    );
    assert_eq!(
        kernel(&ws, "sock_events"),
        base_events,
        "kernel recorded events of unwatched pods"
    );

    workloads::echo_client(&h.tb, "watched", server, &c).unwrap();
    let ws = h.close_windows();
    let e = edge(&ws, "watched", "backend", 7000);
    assert_eq!(side_sum(&e, true, |s| s.exchanges), 500);
    assert!(
        e.iter().all(|e| e.server.is_none()),
        "unwatched server side recorded"
    );
    assert!(ws.iter().flat_map(|w| &w.edges).all(|e| {
        e.key
            .client
            .pod
            .as_ref()
            .is_some_and(|p| p.name == "watched")
    }));
}

#[test]
fn tiny_ring_buffer_reports_lost_records() {
    let h = Harness::with_probe(
        1,
        &[PodSpec::new("app", 0), PodSpec::new("backend", 0)],
        ProbeConfig {
            ring_bytes: 4096,
            // The reader drains on its timer only, so the ring must overflow and the loss
            // must show in the counters (with wakeups a 4 KiB ring often keeps up).
            wake_reader: false,
            ..Default::default()
        },
    );
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    h.close_windows();
    let n = 20_000;
    let c = workloads::EchoClient {
        connections: 8,
        requests: n,
        req_size: 8,
        resp_size: 8,
        ..Default::default()
    };
    workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let ws = h.close_windows();
    let lost = kernel(&ws, "ringbuf_full");
    let e = edge(&ws, "app", "backend", 7000);
    let seen = side_sum(&e, true, |s| s.exchanges) + side_sum(&e, false, |s| s.exchanges);
    eprintln!(
        "seen {seen} exchanges, lost {lost} records, unattributed {}",
        ws[0].health.exchanges_unattributed
    );
    assert!(lost > 0, "a 4 KiB ring under {n} exchanges must overflow");
    // Every exchange is either delivered or counted as lost (plus conn records).
    assert!(
        seen + lost + ws[0].health.exchanges_unattributed >= 2 * n,
        "seen {seen} + lost {lost} < {}",
        2 * n
    );
}

#[test]
fn drops_are_reported_with_reason_for_pods_and_nodes_only() {
    let h = Harness::new(2, &[PodSpec::new("app", 0), PodSpec::new("backend", 1)]);
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    let c = workloads::EchoClient {
        connections: 1,
        requests: 4,
        new_conn: true,
        connect_timeout_ms: 300,
        max_secs: 10,
        ..Default::default()
    };
    h.close_windows();
    {
        // In the pod's namespace: its firewall drops the SYNs.
        let _fw = netdx_testbed::faults::drop_syn(&h.tb.pod("backend").unwrap().netns, 7000, 100)
            .unwrap();
        workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    }
    let ws = h.close_windows();
    let pod_drops: u64 = ws
        .iter()
        .flat_map(|w| &w.pods)
        .filter(|p| p.pod.name == "backend")
        .map(|p| p.drops.get("netfilter_drop").copied().unwrap_or(0))
        .sum();
    assert!(
        pod_drops >= 4,
        "SYNs dropped in the backend pod: {:?}",
        ws.iter().flat_map(|w| &w.pods).collect::<Vec<_>>()
    );
    {
        // In node-1's namespace: the node drops new connections it forwards.
        let _ct = netdx_testbed::faults::conntrack_full(&h.tb.nodes[1].netns, 0).unwrap();
        workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    }
    let ws = h.close_windows();
    let node1 = ws.iter().find(|w| w.node == "node-1").unwrap();
    assert!(
        node1.node_drops.get("netfilter_drop").copied().unwrap_or(0) >= 4,
        "{:?}",
        node1.node_drops
    );
    // Drops in the fabric (not a node or pod of any probe) are filtered out in the kernel.
    let (fabric, _) = h.tb.uplink(0);
    {
        let _loss = netdx_testbed::faults::loss(&fabric, "n1", 100).unwrap();
        workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    }
    let ws = h.close_windows();
    assert!(
        ws.iter()
            .all(|w| !w.node_drops.contains_key("netfilter_drop")),
        "fabric drops leaked: {:?}",
        ws.iter().map(|w| &w.node_drops).collect::<Vec<_>>()
    );
}

#[test]
fn a_node_without_watched_pods_detaches_its_tracepoints_until_one_is_watched() {
    let h = Harness::new(
        2,
        &[
            PodSpec::new("app", 0),
            PodSpec::new("backend", 1).unwatched(),
        ],
    );
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    let ws = h.close_windows();
    assert!(ws[0].health.tracepoints_attached, "node 0 watches app");
    assert!(
        !ws[1].health.tracepoints_attached,
        "node 1 watches nothing: its sockets must pay nothing"
    );

    // Watch the backend: node 1's probe attaches at its next target sync (1 s).
    let mut set = h.tb.targets();
    for p in &mut set.pods {
        p.watched = true;
    }
    std::fs::write(h.tb.targets_path(), serde_json::to_vec(&set).unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    h.close_windows();
    let c = workloads::EchoClient {
        connections: 2,
        requests: 200,
        ..Default::default()
    };
    workloads::echo_client(&h.tb, "app", server, &c).unwrap();
    let ws = h.close_windows();
    assert!(ws[1].health.tracepoints_attached);
    let e = edge(&ws, "app", "backend", 7000);
    assert_eq!(
        side_sum(&e, false, |s| s.exchanges),
        200,
        "server side now recorded"
    );
}
