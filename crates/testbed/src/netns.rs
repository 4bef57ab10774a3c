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

/// Runs `sysctl -w` inside a namespace.
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    crate::exec::run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ],
    )
    .map(|_| ())
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
