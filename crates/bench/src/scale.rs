//! Probe memory against connections: a client pod on one node holds 1k, 10k, 50k connections
//! to a server pod on another (one exchange each), and each node's probe reports its RSS and
//! the memory of its eBPF maps.

use std::{
    io::{BufRead, BufReader},
    sync::mpsc,
    time::Duration,
};

use netdx_testbed::netns;

use crate::{
    Error, Result,
    probe::{self, ProbeProcess, Programs},
    procfs::Guarded,
    progress::Progress,
    report::Results,
    world::{HOLD_CLIENT, HOLD_PORTS, HOLD_SERVER, World, self_exe},
};

/// Window length of the probes here: short, so a window closes soon after the connections
/// are open and the aggregator has seen them all.
const WINDOW_SECS: u64 = 2;
/// How long opening the connections may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(180);

/// Number of progress steps [`run`] takes.
pub fn steps(conns: &[usize]) -> u64 {
    1 + conns.len() as u64
}

/// Starts one hold server per port (a fresh set per step, so no socket of an earlier step
/// lingers): one process per port keeps each under the open-file limit.
fn start_servers(world: &World, exe: &str) -> Result<Vec<Guarded>> {
    let ip = world.hold_ip.to_string();
    let placement = world.tb.pod(HOLD_SERVER)?.placement();
    let mut servers = Vec::new();
    for p in HOLD_PORTS {
        let port = p.to_string();
        let child = placement.spawn(exe, &["hold-server", "--ip", &ip, "--ports", &port], false)?;
        servers.push(Guarded::new(child, format!("hold-server :{p}")));
        netdx_testbed::servers::wait_tcp(
            &world.tb,
            HOLD_CLIENT,
            std::net::SocketAddr::new(world.hold_ip, p),
            Duration::from_secs(10),
        )?;
    }
    Ok(servers)
}

/// Starts one hold client per server port, `conns` connections in all, and waits until each
/// says it holds its share.
fn hold(world: &World, exe: &str, conns: usize) -> Result<(Vec<Guarded>, String)> {
    let ip = world.hold_ip.to_string();
    let placement = world.tb.pod(HOLD_CLIENT)?.placement();
    let share = conns.div_ceil(HOLD_PORTS.len());
    let mut left = conns;
    let mut clients = Vec::new();
    let mut started = Vec::new();
    for p in HOLD_PORTS {
        let n = share.min(left);
        left -= n;
        if n == 0 {
            continue;
        }
        let (port, count) = (p.to_string(), n.to_string());
        let args = [
            "hold-client",
            "--ip",
            &ip,
            "--ports",
            &port,
            "--conns",
            &count,
        ];
        let mut child = placement.spawn(exe, &args, true)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Process("hold-client has no stdout".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        clients.push((Guarded::new(child, format!("hold-client :{p}")), rx, n));
        started.push(format!("netdx-bench {}", args.join(" ")));
    }
    let mut held = Vec::new();
    for (mut g, rx, n) in clients {
        let line = rx.recv_timeout(OPEN_TIMEOUT).unwrap_or_default();
        if !line.starts_with("held ") {
            // Stopped first, so its stderr is closed and reading it cannot block.
            g.stop_with(libc::SIGKILL);
            let mut stderr = String::new();
            if let Some(e) = g.child_mut().stderr.take() {
                let _ = BufReader::new(e).read_line(&mut stderr);
            }
            return Err(Error::Process(format!(
                "hold-client did not hold {n} connections: {}",
                stderr.trim()
            )));
        }
        held.push(g);
    }
    Ok((held, started.join(" & ")))
}

/// Waits until every probe has closed `k` more windows.
fn wait_windows(probes: &[ProbeProcess], k: u64) -> Result<()> {
    let seqs = probes
        .iter()
        .map(|p| p.next_seq())
        .collect::<Result<Vec<_>>>()?;
    for (p, seq) in probes.iter().zip(seqs) {
        p.wait_window(seq + k - 1, Duration::from_secs(5 * WINDOW_SECS * k))?;
    }
    Ok(())
}

fn record(
    results: &mut Results,
    probes: &[ProbeProcess],
    workload: &str,
    command: &str,
) -> Result<f64> {
    let mut worst = 0.0f64;
    for p in probes {
        let (rss, hwm) = p.rss_kib()?;
        let maps = p.map_memlock()?;
        let cond = format!("netdx {}", p.node);
        let rss_mib = rss as f64 / 1024.0;
        results.add_all(
            workload,
            &cond,
            1,
            command,
            &[
                ("rss_mib", rss_mib),
                ("hwm_mib", hwm as f64 / 1024.0),
                ("bpf_map_memlock_mib", maps as f64 / (1 << 20) as f64),
            ],
        );
        worst = worst.max(rss_mib);
    }
    Ok(worst)
}

/// Measures idle probes, then each connection count in turn.
pub fn run(
    world: &World,
    conns: &[usize],
    results: &mut Results,
    progress: &mut Progress,
) -> Result<()> {
    let exe = self_exe()?;
    // 50k connections to four ports need more ephemeral ports than the default range gives
    // towards one address when earlier steps' ports are still in TIME_WAIT.
    let client_ns = world.tb.pod(HOLD_CLIENT)?.netns.clone();
    netns::sysctl(&client_ns, "net.ipv4.ip_local_port_range", "1024 65000")?;
    progress.step("scale: idle probes");
    let probes = probe::start_for(
        &world.tb,
        &[HOLD_CLIENT, HOLD_SERVER],
        WINDOW_SECS,
        Programs::Real,
    )?;
    let probe_cmd = probes
        .iter()
        .map(|p| p.command.clone())
        .collect::<Vec<_>>()
        .join("; ");
    wait_windows(&probes, 1)?;
    record(results, &probes, "held_conns_0", &probe_cmd)?;
    progress.done();
    for &n in conns {
        crate::check_stop()?;
        progress.step(&format!("scale: {n} held connections"));
        let servers = start_servers(world, &exe)?;
        let (clients, cmd) = hold(world, &exe, n)?;
        // Two windows: the second one starts after every connection event was aggregated.
        wait_windows(&probes, 2)?;
        let command = format!("{cmd} (with {probe_cmd})");
        let worst = record(results, &probes, &format!("held_conns_{n}"), &command)?;
        if n == 10_000 {
            results.key("probe_rss_mib_10k_conns", worst, &command);
        }
        results.key(&format!("probe_rss_mib_by_conns.{n}"), worst, &command);
        // Clients first: the servers then see their peers close.
        drop(clients);
        drop(servers);
        progress.done();
    }
    Ok(())
}
