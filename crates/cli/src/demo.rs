//! `netdx demo`: a small testbed with real servers and clients, one node-probe per simulated
//! node, and a live per-edge table.

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use netdx_api::windows::WindowReport;
use netdx_testbed::{
    Testbed, TestbedSpec, servers,
    servers::EchoServer,
    topology::PodSpec,
    workloads::{self, EchoClient},
};
use node_probe::ingest::{Agent, AgentConfig};

use crate::live;

/// Demo settings.
pub struct DemoOpts {
    /// Total run time.
    pub duration: Duration,
    /// Window length.
    pub window: Duration,
    /// Where windows are written.
    pub out_dir: PathBuf,
    /// Force plain text output even on a terminal.
    pub plain: bool,
}

/// Runs the demo end to end; everything is torn down on return, error or Ctrl-C.
pub fn run(opts: DemoOpts, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    eprintln!("netdx demo: building testbed (2 nodes, 5 pods) ...");
    let tb = Arc::new(
        Testbed::up(&TestbedSpec {
            nodes: 2,
            pods: vec![
                PodSpec::new("frontend", 0),
                PodSpec::new("worker", 0),
                PodSpec::new("redis", 1),
                PodSpec::new("nginx", 1),
                PodSpec::new("backend", 1),
            ],
        })
        .context("building the testbed (needs root)")?,
    );
    let redis = servers::redis(&tb, "redis")?;
    let nginx = servers::nginx(&tb, "nginx", 2048)?;
    let (backend, _) = servers::echo(
        &tb,
        "backend",
        7000,
        &EchoServer {
            delay_us: 2_000,
            ..Default::default()
        },
    )?;
    eprintln!(
        "netdx demo: servers up (redis {redis}, nginx {nginx}, ndxe {backend}); loading node-probes ..."
    );
    let agents = tb
        .nodes
        .iter()
        .map(|n| {
            let mut cfg = AgentConfig::new(&n.name, tb.targets_path());
            cfg.window = opts.window;
            cfg.node_netns = Some(netdx_testbed::netns::netns_path(&n.netns).into());
            Agent::start(cfg).with_context(|| format!("starting node-probe for {}", n.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let deadline = Instant::now() + opts.duration;
    let loads = start_workloads(&tb, deadline, &stop, redis, nginx, backend);
    let result = live::show(
        &agents,
        deadline,
        &stop,
        opts.plain || !std::io::stdout().is_terminal(),
    );
    stop.store(true, Ordering::Release);
    for l in loads {
        let _ = l.join();
    }
    let windows: Vec<WindowReport> = agents
        .iter()
        .flat_map(|a| {
            a.shared
                .windows
                .lock()
                .map(|w| w.iter().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    std::fs::create_dir_all(&opts.out_dir)?;
    let path = opts.out_dir.join("windows.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&windows)?)?;
    drop(agents);
    drop(tb);
    result?;
    eprintln!(
        "netdx demo: {} windows written to {}; testbed removed",
        windows.len(),
        path.display()
    );
    Ok(())
}

/// Background clients, each in a loop of short bounded runs until the deadline.
fn start_workloads(
    tb: &Arc<Testbed>,
    deadline: Instant,
    stop: &Arc<AtomicBool>,
    redis: std::net::SocketAddr,
    nginx: std::net::SocketAddr,
    backend: std::net::SocketAddr,
) -> Vec<thread::JoinHandle<()>> {
    let running = {
        let stop = stop.clone();
        move || !stop.load(Ordering::Acquire) && Instant::now() < deadline
    };
    let mut handles = Vec::new();
    let (t, r) = (tb.clone(), running.clone());
    handles.push(thread::spawn(move || {
        while r() {
            let _ = workloads::redis_benchmark(&t, "frontend", redis, "get,set", 3000, 4, 1);
            thread::sleep(Duration::from_millis(700));
        }
    }));
    let (t, r) = (tb.clone(), running.clone());
    handles.push(thread::spawn(move || {
        while r() {
            let _ = workloads::wrk(&t, "worker", &format!("http://{nginx}/"), 2, 1);
            thread::sleep(Duration::from_millis(700));
        }
    }));
    for (pod, rate) in [("frontend", 300.0), ("worker", 150.0)] {
        let (t, r) = (tb.clone(), running.clone());
        handles.push(thread::spawn(move || {
            while r() {
                let c = EchoClient {
                    connections: 2,
                    requests: u64::MAX / 4,
                    rate,
                    max_secs: 5,
                    ..Default::default()
                };
                let _ = workloads::echo_client(&t, pod, backend, &c);
            }
        }));
    }
    handles
}
