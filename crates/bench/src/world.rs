//! The benchmark cluster: a testbed whose workload (load generators and servers, each in its own
//! pod, every pod watched) runs on one simulated node, and whose scale pods span two.
//!
//! One node for the workload because the simulated nodes share one kernel: a real node runs one
//! node-probe, but with a probe per simulated node every socket hook would run each probe's
//! program, and the workload would pay the hook cost twice.

use std::net::{IpAddr, SocketAddr};

use netdx_testbed::{Testbed, TestbedSpec, servers, topology::PodSpec, workloads::pgbench_init};
use tracing::info;

use crate::{Error, Result, pingpong::PingPongReport};

/// Pod running the load generators.
pub const CLIENT: &str = "client";
/// redis-server.
pub const REDIS: &str = "redis";
/// nginx serving 1 KiB.
pub const WEB_1K: &str = "web1k";
/// nginx serving 64 KiB.
pub const WEB_64K: &str = "web64k";
/// PostgreSQL.
pub const PG: &str = "pg";
/// Ping-pong server and client, over the pod's loopback.
pub const PINGPONG: &str = "pp";
/// Holds many connections open (client side, node 0).
pub const HOLD_CLIENT: &str = "holdc";
/// Accepts and keeps them (server side, node 1).
pub const HOLD_SERVER: &str = "holds";

/// The simulated node of the workload's pods.
const WORKLOAD_NODE: usize = 1;
/// The pods of the impact, hook and kernel-path workloads (all on one node: one probe).
pub const WORKLOAD_PODS: [&str; 6] = [CLIENT, REDIS, WEB_1K, WEB_64K, PG, PINGPONG];

/// Port of the ping-pong server inside its pod.
pub const PINGPONG_PORT: u16 = 7000;
/// Ports of the hold server: four, so 50k connections need no more than 12.5k ephemeral ports
/// towards any one of them.
pub const HOLD_PORTS: [u16; 4] = [7100, 7101, 7102, 7103];

/// The testbed and its servers.
pub struct World {
    /// The testbed (dropping it removes everything it created and spawned).
    pub tb: Testbed,
    /// redis-server.
    pub redis: SocketAddr,
    /// nginx, 1 KiB body.
    pub web_1k: SocketAddr,
    /// nginx, 64 KiB body.
    pub web_64k: SocketAddr,
    /// PostgreSQL (pgbench tables initialised).
    pub pg: SocketAddr,
    /// Ping-pong server, reached from inside the same pod.
    pub pingpong: SocketAddr,
    /// IP of the hold server pod.
    pub hold_ip: IpAddr,
}

/// This executable's path, to run its hidden subcommands inside pods.
pub fn self_exe() -> Result<String> {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .map_err(crate::io_err("locating the netdx-bench executable"))
}

impl World {
    /// Builds the testbed and starts every server.
    pub fn up() -> Result<Self> {
        let pods = [
            (CLIENT, WORKLOAD_NODE),
            (HOLD_CLIENT, 0),
            (REDIS, WORKLOAD_NODE),
            (WEB_1K, WORKLOAD_NODE),
            (WEB_64K, WORKLOAD_NODE),
            (PG, WORKLOAD_NODE),
            (PINGPONG, WORKLOAD_NODE),
            (HOLD_SERVER, 1),
        ];
        let tb = Testbed::up(&TestbedSpec {
            nodes: 2,
            pods: pods
                .iter()
                .map(|(n, node)| PodSpec::new(n, *node))
                .collect(),
        })?;
        let redis = servers::redis(&tb, REDIS)?;
        let web_1k = servers::nginx(&tb, WEB_1K, 1024)?;
        let web_64k = servers::nginx(&tb, WEB_64K, 64 * 1024)?;
        let pg = servers::postgres(&tb, PG)?;
        pgbench_init(&tb, CLIENT, pg)?;
        let exe = self_exe()?;
        let pingpong = SocketAddr::from(([127, 0, 0, 1], PINGPONG_PORT));
        let listen = pingpong.to_string();
        tb.spawn(
            PINGPONG,
            &exe,
            &["pingpong-server", "--listen", &listen, "--msg", "16"],
        )?;
        servers::wait_tcp(&tb, PINGPONG, pingpong, std::time::Duration::from_secs(10))?;
        let hold_pod = tb.pod(HOLD_SERVER)?;
        let hold_ip: IpAddr = hold_pod
            .ip
            .parse()
            .map_err(|e| Error::Process(format!("pod IP {}: {e}", hold_pod.ip)))?;
        info!(id = %tb.id, "benchmark cluster up");
        Ok(World {
            tb,
            redis,
            web_1k,
            web_64k,
            pg,
            pingpong,
            hold_ip,
        })
    }

    /// Runs this executable's hidden subcommand `args` in `pod`; returns its JSON report and
    /// the command line.
    pub fn run_tool<T: serde::de::DeserializeOwned>(
        &self,
        pod: &str,
        args: &[String],
    ) -> Result<(T, String)> {
        let exe = self_exe()?;
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.tb.run(pod, &exe, &a)?;
        let command = format!("netdx-bench {}", args.join(" "));
        let report = serde_json::from_slice(&out.stdout).map_err(|e| Error::Parse {
            what: command.clone(),
            detail: e.to_string(),
        })?;
        Ok((report, command))
    }

    /// A ping-pong run between two sockets of the ping-pong pod.
    pub fn pingpong(
        &self,
        conns: usize,
        msg: usize,
        secs: f64,
    ) -> Result<(PingPongReport, String)> {
        let args = [
            "pingpong".to_string(),
            "--target".into(),
            self.pingpong.to_string(),
            "--conns".into(),
            conns.to_string(),
            "--msg".into(),
            msg.to_string(),
            "--secs".into(),
            secs.to_string(),
        ];
        self.run_tool(PINGPONG, &args)
    }

    /// CPU time the workload's pods used so far, µs: what the applications spent, including
    /// the probe's programs, which run in their context.
    pub fn workload_cpu_us(&self) -> Result<u64> {
        WORKLOAD_PODS
            .iter()
            .map(|name| {
                let pod = self.tb.pod(name)?;
                pod.cgroups.cpu_usage_us().ok_or_else(|| {
                    Error::Process(format!(
                        "no cpu.stat usage_usec in {}",
                        pod.cgroups.unified.display()
                    ))
                })
            })
            .sum()
    }

    /// cgroup v2 ids of every watched pod (what bpftrace filters on).
    pub fn watched_cgroup_ids(&self) -> Result<Vec<u64>> {
        use std::os::unix::fs::MetadataExt;
        self.tb
            .pods
            .iter()
            .filter(|p| p.watched)
            .map(|p| {
                std::fs::metadata(&p.cgroups.unified)
                    .map(|m| m.ino())
                    .map_err(crate::io_err(p.cgroups.unified.display().to_string()))
            })
            .collect()
    }
}
