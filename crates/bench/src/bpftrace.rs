//! The peer tool: bpftrace counting, per pod and socket, bytes and exchanges on the same
//! tracepoints the probe's hot path uses.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use tracing::{debug, info};

use crate::{
    Error, Result, io_err,
    procfs::{self, Guarded},
};

/// How long bpftrace may take to compile and attach.
const ATTACH: Duration = Duration::from_secs(60);

/// A bpftrace script equivalent to the probe's socket hooks: per pod (cgroup) and socket,
/// bytes each way and exchanges, where a new exchange starts when a send follows a receive
/// (or is the socket's first), the same direction rule the probe uses.
pub fn script(cgroup_ids: &[u64]) -> String {
    let filter = cgroup_ids
        .iter()
        .map(|id| format!("cgroup == {id}"))
        .collect::<Vec<_>>()
        .join(" || ");
    script_with_filter(&filter)
}

/// The script with `filter` as the predicate of both probes.
pub fn script_with_filter(filter: &str) -> String {
    format!(
        "tracepoint:sock:sock_send_length /{filter}/ {{\n\
         \x20 if (args->ret > 0) {{\n\
         \x20   @tx_bytes[cgroup, args->sk] = sum(args->ret);\n\
         \x20   if (@dir[args->sk] != 1) {{ @dir[args->sk] = 1; @exchanges[cgroup, args->sk] = count(); }}\n\
         \x20 }}\n\
         }}\n\
         tracepoint:sock:sock_recv_length /{filter}/ {{\n\
         \x20 if (args->ret > 0) {{\n\
         \x20   @rx_bytes[cgroup, args->sk] = sum(args->ret);\n\
         \x20   @dir[args->sk] = 2;\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Mounts tracefs where bpftrace looks for tracepoints, when it is not there.
fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    netdx_testbed::exec::run(
        "mount",
        &["-t", "tracefs", "tracefs", "/sys/kernel/tracing"],
    )?;
    Ok(())
}

/// A running bpftrace; dropping it stops it.
pub struct Bpftrace {
    child: Guarded,
    /// The command line, for the results.
    pub command: String,
}

/// Whether bpftrace is installed.
pub fn available() -> bool {
    Command::new("bpftrace")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Bpftrace {
    /// Starts the counting script for `cgroup_ids` and waits until its probes are attached.
    pub fn start(cgroup_ids: &[u64]) -> Result<Self> {
        ensure_tracefs()?;
        let text = script(cgroup_ids);
        let mut child = Command::new("bpftrace")
            .args(["-e", &text])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("starting bpftrace"))?;
        let (tx, rx) = mpsc::channel::<String>();
        // Both pipes are drained to the end: at exit bpftrace prints its maps, and a full
        // pipe would keep it from exiting.
        let pipes: Vec<Box<dyn Read + Send>> = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for pipe in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let mut b = Bpftrace {
            child: Guarded::new(child, "bpftrace"),
            // The cgroup ids change every run; the page's Method section gives the script.
            command: "bpftrace -e <per-pod counting script>".into(),
        };
        let t0 = Instant::now();
        let mut seen = Vec::new();
        while t0.elapsed() < ATTACH {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.starts_with("Attaching") => {
                    info!(pid = b.child.pid(), %line, script = %text, "bpftrace attached");
                    // Keep draining in the background.
                    std::thread::spawn(move || for _ in rx {});
                    return Ok(b);
                }
                Ok(line) => {
                    debug!(%line, "bpftrace");
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Some(status) = b.child.exited() {
                return Err(Error::Process(format!(
                    "bpftrace exited ({status}): {}",
                    seen.join(" | ")
                )));
            }
        }
        Err(Error::Process(format!(
            "bpftrace did not attach within {ATTACH:?}: {}",
            seen.join(" | ")
        )))
    }

    /// CPU time of the bpftrace process so far, ns.
    pub fn cpu_ns(&self) -> Result<u64> {
        procfs::cpu_ns(self.child.pid())
    }

    /// Run statistics (run time ns, runs) of its programs so far, by name (counted while bpf
    /// stats are on).
    pub fn program_stats(&self) -> Result<procfs::ProgramStats> {
        procfs::program_stats(self.child.pid())
    }

    /// Stops it the way a user would (SIGINT), killing it if it lingers.
    pub fn stop(mut self) {
        self.child.stop_with(libc::SIGINT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_filters_on_every_cgroup() {
        let s = script(&[11, 22]);
        assert_eq!(s.matches("/cgroup == 11 || cgroup == 22/").count(), 2);
        assert!(s.contains("tracepoint:sock:sock_send_length"));
        assert!(s.contains("tracepoint:sock:sock_recv_length"));
    }
}
