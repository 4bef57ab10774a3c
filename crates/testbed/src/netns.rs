//! Network namespaces, bridges, veth pairs and routes (via iproute2).

use crate::{Result, exec::ip};

/// Path of a named network namespace.
pub fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Creates a named netns with loopback up.
pub fn create(name: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])
}

/// Deletes a named netns (ignoring a missing one).
pub fn delete(name: &str) {
    let _ = ip(&["netns", "del", name]);
}

/// Runs `sysctl -w` inside a namespace (sysctl exits 0 on some failures: stderr tells).
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let setting = format!("{key}={value}");
    let out = crate::exec::run_in(ns, "sysctl", &["-q", "-w", &setting])?;
    if out.stderr.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::Command {
            cmd: format!("sysctl -w {setting} in {ns}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Lists named namespaces.
pub fn list() -> Vec<String> {
    crate::exec::run("ip", &["netns", "list"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
