//! Removal of leftovers of crashed testbeds, found by the project prefix.

use std::path::Path;

use crate::{PREFIX, cgroups, netns};

/// What a cleanup removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// cgroup directories removed.
    pub cgroups: Vec<String>,
}

/// Whether an object name belongs to a testbed whose process is gone (ids are
/// `ndx<pid in hex>x<n>`; names that do not parse are treated as leftovers).
fn orphaned(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    match rest
        .split_once('x')
        .and_then(|(pid, _)| u32::from_str_radix(pid, 16).ok())
    {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}

/// Removes every namespace and cgroup of testbeds whose process has exited (a crash or a
/// kill). Processes inside those cgroups are killed first. Running testbeds are left alone.
pub fn cleanup_all() -> Removed {
    let mut removed = Removed::default();
    for root in [cgroups::UNIFIED_ROOT, cgroups::CPU_ROOT] {
        let slice = Path::new(root).join(cgroups::SLICE);
        let Ok(entries) = std::fs::read_dir(&slice) else {
            continue;
        };
        for e in entries.flatten() {
            if orphaned(&e.file_name().to_string_lossy()) && e.path().is_dir() {
                cgroups::kill_and_remove(&e.path());
                removed.cgroups.push(e.path().display().to_string());
            }
        }
    }
    for ns in netns::list() {
        if orphaned(&ns) {
            netns::delete(&ns);
            removed.namespaces.push(ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if orphaned(&name) && name.ends_with(".d") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    removed
}

/// Leftovers that would be removed by [`cleanup_all`] (namespaces, cgroups) for this id.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut out: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(id))
        .collect();
    for root in [cgroups::UNIFIED_ROOT, cgroups::CPU_ROOT] {
        let slice = Path::new(root).join(cgroups::SLICE);
        if let Ok(entries) = std::fs::read_dir(&slice) {
            out.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(id))
                    .map(|e| e.path().display().to_string()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::orphaned;

    #[test]
    fn only_dead_owners_are_orphans() {
        let me = format!("ndx{:x}x3-n0", std::process::id());
        assert!(!orphaned(&me));
        // pid 0x7fffffff does not exist.
        assert!(orphaned("ndx7fffffffx0-p1"));
        assert!(orphaned("ndxgarbage"));
        assert!(!orphaned("other-ns"));
    }
}
