//! Running commands: host tools (ip, nft, tc) and processes inside pods.

use std::{
    ffi::CString,
    os::unix::process::CommandExt,
    process::{Child, Command, Output, Stdio},
};

use crate::{Error, Result, io_err};

/// Runs a host command to completion; non-zero exit is an error with stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(cmd.clone()))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// Runs `program args...` inside the named network namespace (`ip netns exec`).
pub fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<Output> {
    let mut a = vec!["netns", "exec", netns, program];
    a.extend_from_slice(args);
    run("ip", &a)
}

/// Runs `ip` with the given arguments.
pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args).map(|_| ())
}

/// Where a pod process goes: its network namespace and cgroups.
#[derive(Clone, Debug)]
pub struct Placement {
    /// /run/netns/<name>.
    pub netns_path: String,
    /// cgroup.procs files to join (v2 identity, v1 cpu).
    pub cgroup_procs: Vec<String>,
}

impl Placement {
    /// Makes `cmd` start inside the pod: joins the cgroups, then the network namespace.
    pub fn apply(&self, cmd: &mut Command) -> Result<()> {
        let c = |s: &str| CString::new(s).map_err(|_| Error::Invalid(format!("NUL in path {s}")));
        let ns = c(&self.netns_path)?;
        let procs = self
            .cgroup_procs
            .iter()
            .map(|p| c(p))
            .collect::<Result<Vec<_>>>()?;
        // SAFETY: the closure only makes async-signal-safe syscalls on pre-built C strings.
        unsafe {
            cmd.pre_exec(move || {
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // "0" moves the writing process.
                    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    libc::close(fd);
                    if !ok {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let fd = libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::setns(fd, libc::CLONE_NEWNET);
                libc::close(fd);
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        Ok(())
    }

    /// Spawns a program in the pod with stdio discarded unless told otherwise.
    pub fn spawn(&self, program: &str, args: &[&str], capture: bool) -> Result<Child> {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null());
        if capture {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        self.apply(&mut cmd)?;
        cmd.spawn()
            .map_err(io_err(format!("spawning {program} in {}", self.netns_path)))
    }

    /// Runs a program in the pod to completion and returns its output (error on failure).
    pub fn output(&self, program: &str, args: &[&str]) -> Result<Output> {
        let child = self.spawn(program, args, true)?;
        let out = child
            .wait_with_output()
            .map_err(io_err(format!("waiting for {program}")))?;
        if !out.status.success() {
            return Err(Error::Command {
                cmd: format!("{program} {}", args.join(" ")),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(out)
    }
}

/// Runs `f` on a new thread that has joined the network namespace at `netns_path`
/// (setns affects only the calling thread). The thread is not in the pod's cgroup.
pub fn in_netns<T: Send + 'static>(
    netns_path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = netns_path.to_string();
    std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&path).map_err(io_err(format!("opening {path}")))?;
        use std::os::fd::AsRawFd;
        // SAFETY: valid fd; affects only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io_err(format!("setns {path}"))(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| Error::Invalid("netns thread panicked".into()))?
}
