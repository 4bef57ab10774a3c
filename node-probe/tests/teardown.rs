//! Teardown leaves nothing behind. Alone in its binary: it counts this process's eBPF links.
mod common;

use common::Harness;
use netdx_testbed::{cleanup, servers, topology::PodSpec, workloads};

/// Open eBPF link file descriptors of this process.
fn bpf_links() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().contains("bpf_link"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn teardown_leaves_no_namespaces_cgroups_or_links() {
    let links_before = bpf_links();
    let id;
    {
        let h = Harness::new(2, &[PodSpec::new("a", 0), PodSpec::new("b", 1)]);
        id = h.tb.id.clone();
        assert!(
            bpf_links() >= links_before + 16,
            "two probes attach 8 links each"
        );
        assert!(!cleanup::leftovers(&id).is_empty());
        let (server, _) = servers::echo(&h.tb, "b", 7000, &Default::default()).unwrap();
        let _fw = netdx_testbed::faults::drop_syn(&h.tb.pod("b").unwrap().netns, 9, 100).unwrap();
        workloads::echo_client(
            &h.tb,
            "a",
            server,
            &workloads::EchoClient {
                requests: 10,
                ..Default::default()
            },
        )
        .unwrap();
    }
    assert_eq!(cleanup::leftovers(&id), Vec::<String>::new());
    assert_eq!(bpf_links(), links_before, "eBPF links left attached");
}
