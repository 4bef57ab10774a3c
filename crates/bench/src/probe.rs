//! The real node-probe binary run as a separate process, one per testbed node, and what can be
//! read from outside it: health, CPU time, memory, its eBPF programs, maps and counters.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, MapInfo, PerCpuArray};
use netdx_api::windows::WindowReport;
use netdx_common::Counter;
use netdx_testbed::{Testbed, netns::netns_path, topology::NodeInfo};
use tracing::{debug, info};

use crate::{
    Error, Result, io_err,
    procfs::{self, BpfFd, Guarded},
};

/// How long a probe may take to load its programs and answer /healthz.
const READY: Duration = Duration::from_secs(30);

/// Which programs the probe loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Programs {
    /// The real programs.
    Real,
    /// The same hook points with programs that return at once (`--programs noop`).
    Noop,
}

/// The node-probe binary next to this executable (or in `$NETDX_BIN_DIR`).
pub fn binary() -> Result<PathBuf> {
    Ok(netdx_testbed::servers::workspace_binary("node-probe")?)
}

/// Whether this node-probe build has the no-op programs (`--programs noop`).
pub fn has_noop(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--programs"))
        .unwrap_or(false)
}

/// Turns on eBPF run statistics (run_time_ns, run_cnt) until the returned fd is dropped; the
/// kernel turns them off when it closes, even if this process dies, so
/// `kernel.bpf_stats_enabled` always returns to what it was.
pub fn run_stats() -> Result<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| Error::Bpf(format!("BPF_ENABLE_STATS: {e}")))
}

/// Names of loaded eBPF programs on the socket send/receive paths (netdx probes, bpftrace
/// scripts on the sock tracepoints): run before our own start, they are someone else's and add
/// to the cost of every condition.
pub fn socket_hook_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| {
            n.starts_with("on_")
                || n.starts_with("noop_")
                || n.contains("sock_send")
                || n.contains("sock_recv")
        })
        .collect()
}

/// A free loopback TCP port (released at once; the probe binds it right after).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(l.local_addr().map_err(io_err("local address"))?.port())
}

/// GET `path` from `addr`; returns the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    let what = format!("GET http://{addr}{path}");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io_err(&what))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io_err(&what))?;
    // HTTP/1.0: the server closes after the response, so the body ends at EOF.
    write!(s, "GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n").map_err(io_err(&what))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(io_err(&what))?;
    let parse = |detail: &str| Error::Parse {
        what: what.clone(),
        detail: detail.into(),
    };
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| parse("no header end"))?;
    let status = std::str::from_utf8(&buf[..split])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| parse("no status"))?;
    Ok((status, buf[split + 4..].to_vec()))
}

/// A running node-probe process; dropping it sends SIGTERM (SIGKILL if it lingers).
pub struct ProbeProcess {
    /// Node it stands for.
    pub node: String,
    /// Its HTTP API.
    pub listen: SocketAddr,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// The command line without its per-run paths and port, for the results.
    pub command: String,
    child: Guarded,
    counters_map: Option<u32>,
}

impl ProbeProcess {
    /// Starts node-probe for `node` of `tb` and waits until /healthz answers 200.
    pub fn start(
        bin: &Path,
        tb: &Testbed,
        node: &NodeInfo,
        window_secs: u64,
        programs: Programs,
    ) -> Result<Self> {
        let port = free_port()?;
        let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut args = vec![
            "--node".to_string(),
            node.name.clone(),
            "--targets".into(),
            tb.targets_path().display().to_string(),
            "--listen".into(),
            listen.to_string(),
            "--node-netns".into(),
            netns_path(&node.netns),
            "--window-secs".into(),
            window_secs.to_string(),
        ];
        if programs == Programs::Noop {
            args.extend(["--programs".to_string(), "noop".into()]);
        }
        let log = tb.path(&format!("node-probe-{}-{port}.log", node.name));
        let out = std::fs::File::create(&log).map_err(io_err(log.display().to_string()))?;
        let err = out.try_clone().map_err(io_err("probe log"))?;
        let child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!("starting {}", bin.display())))?;
        let mut p = ProbeProcess {
            node: node.name.clone(),
            listen,
            // The scratch paths and the port change every run; the page's Method section
            // gives the full command line.
            command: format!(
                "node-probe --node {} --window-secs {window_secs}{}",
                node.name,
                if programs == Programs::Noop {
                    " --programs noop"
                } else {
                    ""
                }
            ),
            log,
            child: Guarded::new(child, format!("node-probe {}", node.name)),
            counters_map: None,
        };
        p.wait_healthy()?;
        info!(node = %p.node, pid = p.pid(), args = %args.join(" "), "node-probe ready");
        Ok(p)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn wait_healthy(&mut self) -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < READY {
            if let Some(status) = self.child.exited() {
                return Err(Error::Process(format!(
                    "node-probe for {} exited ({status}): {}",
                    self.node,
                    self.log_tail()
                )));
            }
            if let Ok((200, _)) = http_get(self.listen, "/healthz") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Process(format!(
            "node-probe for {} not healthy after {READY:?}: {}",
            self.node,
            self.log_tail()
        )))
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// User plus system CPU time of the probe process so far, ns.
    pub fn cpu_ns(&self) -> Result<u64> {
        procfs::cpu_ns(self.pid())
    }

    /// (on-CPU, waiting for a CPU) time of the probe's threads so far, ns.
    pub fn sched_ns(&self) -> Result<(u64, u64)> {
        procfs::sched_ns(self.pid())
    }

    /// Resident and peak resident memory, KiB.
    pub fn rss_kib(&self) -> Result<(u64, u64)> {
        Ok((
            procfs::status_kib(self.pid(), "VmRSS")?,
            procfs::status_kib(self.pid(), "VmHWM")?,
        ))
    }

    /// Memory charged for the probe's eBPF maps, bytes.
    pub fn map_memlock(&self) -> Result<u64> {
        Ok(procfs::bpf_fds(self.pid())?
            .iter()
            .map(|f| match f {
                BpfFd::Map { memlock, .. } => *memlock,
                BpfFd::Prog { .. } => 0,
            })
            .sum())
    }

    /// Run statistics of each program the probe holds, by program name.
    pub fn program_stats(&self) -> Result<procfs::ProgramStats> {
        procfs::program_stats(self.pid())
    }

    /// The kernel-side counters (summed over CPUs), read from the probe's COUNTERS map.
    pub fn counters(&mut self) -> Result<BTreeMap<String, u64>> {
        let bpf = |e: &dyn std::fmt::Display| Error::Bpf(e.to_string());
        let id = match self.counters_map {
            Some(id) => id,
            None => {
                let id = procfs::bpf_fds(self.pid())?
                    .into_iter()
                    .filter_map(|f| match f {
                        BpfFd::Map { id, .. } => Some(id),
                        BpfFd::Prog { .. } => None,
                    })
                    .find(|id| {
                        MapInfo::from_id(*id).is_ok_and(|m| m.name_as_str() == Some("COUNTERS"))
                    })
                    .ok_or_else(|| {
                        Error::Bpf(format!("node-probe {} has no COUNTERS map", self.pid()))
                    })?;
                self.counters_map = Some(id);
                id
            }
        };
        let data = MapData::from_id(id).map_err(|e| bpf(&e))?;
        let map = Map::from_map_data(data).map_err(|e| bpf(&e))?;
        let array: PerCpuArray<MapData, u64> = PerCpuArray::try_from(map).map_err(|e| bpf(&e))?;
        Counter::ALL
            .iter()
            .map(|&c| {
                let per_cpu = array.get(&(c as u32), 0).map_err(|e| bpf(&e))?;
                Ok((c.name().to_string(), per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The windows the probe has closed so far.
    pub fn windows(&self) -> Result<Vec<WindowReport>> {
        let (status, body) = http_get(self.listen, "/v1/windows")?;
        if status != 200 {
            return Err(Error::Process(format!(
                "node-probe {}: /v1/windows answered {status}",
                self.node
            )));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Sequence number of the next window the probe will close.
    pub fn next_seq(&self) -> Result<u64> {
        Ok(self.windows()?.last().map(|w| w.seq + 1).unwrap_or(0))
    }

    /// Waits until the probe has closed window `seq`, and returns it.
    pub fn wait_window(&self, seq: u64, timeout: Duration) -> Result<WindowReport> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(w) = self.windows()?.into_iter().find(|w| w.seq >= seq) {
                return Ok(w);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Process(format!(
            "node-probe {} closed no window {seq} in {timeout:?}",
            self.node
        )))
    }

    /// Waits until the probe closes a window after now, and returns it.
    pub fn next_window(&self, timeout: Duration) -> Result<WindowReport> {
        self.wait_window(self.next_seq()?, timeout)
    }
}

/// Starts one probe per node that hosts any of `pods` (each watches all its node's pods).
pub fn start_for(
    tb: &Testbed,
    pods: &[&str],
    window_secs: u64,
    programs: Programs,
) -> Result<Vec<ProbeProcess>> {
    let bin = binary()?;
    let nodes: Vec<&NodeInfo> = tb
        .nodes
        .iter()
        .filter(|n| {
            tb.pods
                .iter()
                .any(|p| p.watched && p.node == n.index && pods.contains(&p.pod.name.as_str()))
        })
        .collect();
    debug!(nodes = nodes.len(), ?programs, "starting node-probes");
    nodes
        .into_iter()
        .map(|n| ProbeProcess::start(&bin, tb, n, window_secs, programs))
        .collect()
}

/// Sum of one counter over several probes.
pub fn sum_counter(snapshots: &[BTreeMap<String, u64>], name: &str) -> u64 {
    snapshots.iter().filter_map(|s| s.get(name)).sum()
}
