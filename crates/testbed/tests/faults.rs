//! Every fault injector applies in real namespaces and leaves nothing behind when removed;
//! the ones whose effect is cheap to observe are checked end to end.
use std::time::Duration;

use netdx_testbed::{
    Testbed, TestbedSpec, exec::run, faults, servers, topology::PodSpec, workloads,
};

fn nft_tables(ns: &str) -> String {
    String::from_utf8_lossy(
        &run("ip", &["netns", "exec", ns, "nft", "list", "tables"])
            .unwrap()
            .stdout,
    )
    .into_owned()
}

fn qdisc(ns: &str, dev: &str) -> String {
    String::from_utf8_lossy(
        &run(
            "ip",
            &["netns", "exec", ns, "tc", "qdisc", "show", "dev", dev],
        )
        .unwrap()
        .stdout,
    )
    .into_owned()
}

/// Two nodes with a client pod `c` on one and a server pod `s` on the other.
fn client_and_server() -> Testbed {
    Testbed::up(&TestbedSpec {
        nodes: 2,
        pods: vec![PodSpec::new("c", 0), PodSpec::new("s", 1)],
    })
    .unwrap()
}

#[test]
fn injectors_apply_and_clean_up() {
    let tb = client_and_server();
    let (fab, node1, pod_ns) = (
        tb.fabric.clone(),
        tb.nodes[1].netns.clone(),
        tb.pod("s").unwrap().netns.clone(),
    );
    {
        let _a = faults::loss_path(&fab, "n0", "n1", 10).unwrap();
        let _b = faults::mtu_blackhole(&fab, "n1", "n0", 1000).unwrap();
        assert!(nft_tables(&fab).contains("netdx_loss") && nft_tables(&fab).contains("netdx_mtu"));
        let _c = faults::reject_syn(&pod_ns, 7000, 100).unwrap();
        let _d = faults::conn_limit(&pod_ns, 7001, 2).unwrap();
        let _e = faults::bandwidth(&node1, "up0", "10.200.0.0/24", 1000).unwrap();
        assert!(qdisc(&node1, "up0").contains("htb"));
        let _f = faults::conntrack_full(&node1, 16).unwrap();
        assert!(nft_tables(&node1).contains("netdx_ct"));
    }
    assert!(!nft_tables(&fab).contains("netdx_"), "{}", nft_tables(&fab));
    assert!(!nft_tables(&pod_ns).contains("netdx_"));
    assert!(!nft_tables(&node1).contains("netdx_"));
    assert!(!qdisc(&node1, "up0").contains("htb"));
}

#[test]
fn reject_and_conntrack_full_break_new_connections() {
    let tb = client_and_server();
    let (server, _) = servers::echo(&tb, "s", 7000, &Default::default()).unwrap();
    let c = workloads::EchoClient {
        connections: 1,
        requests: 10,
        new_conn: true,
        connect_timeout_ms: 500,
        max_secs: 10,
        ..Default::default()
    };
    {
        let r = faults::reject_syn(&tb.pod("s").unwrap().netns, 7000, 100).unwrap();
        assert!(r.acted_on().unwrap().is_empty(), "nothing refused yet");
        assert_eq!(
            workloads::echo_client(&tb, "c", server, &c)
                .unwrap()
                .connect_refused,
            10
        );
        // The injector's own record of whom it refused: the client pod, once per connect.
        let ip = |p: &str| -> std::net::IpAddr { tb.pod(p).unwrap().ip.parse().unwrap() };
        assert_eq!(
            r.acted_on().unwrap(),
            [((ip("c"), ip("s")), 10)].into_iter().collect()
        );
    }
    {
        // Table "full" at zero entries: every new connection through node-1 is dropped.
        let _ct = faults::conntrack_full(&tb.nodes[1].netns, 0).unwrap();
        let r = workloads::echo_client(&tb, "c", server, &c).unwrap();
        assert_eq!(r.connect_timeout, 10, "{r:?}");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(workloads::echo_client(&tb, "c", server, &c).unwrap().ok, 10);
}

#[test]
fn nginx_answers_late_while_its_delay_is_set() {
    let tb = client_and_server();
    let server = servers::nginx(&tb, "s", 4096).unwrap();
    let url = format!("http://{server}/");
    let rate = |what: &str| {
        let r = workloads::wrk(&tb, "c", &url, 1, 1).unwrap();
        assert!(r.requests > 0 && r.non_2xx == 0, "{what}: {r:?}");
        r.rps
    };
    assert!(rate("healthy") > 200.0);
    // One connection waiting 50 ms per page cannot pass 20 pages a second.
    servers::nginx_set_delay(&tb, "s", 4096, Duration::from_millis(50)).unwrap();
    let slow = rate("delayed");
    assert!(slow <= 21.0, "{slow} pages/s with a 50 ms delay");
    assert!(
        servers::nginx_set_delay(&tb, "s", 4096, Duration::from_micros(1500)).is_err(),
        "a delay the echo module cannot sleep is refused"
    );
    servers::nginx_set_delay(&tb, "s", 4096, Duration::ZERO).unwrap();
    assert!(rate("delay removed") > 200.0);
}
