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

/// Removes every namespace and cgroup whose name starts with the testbed prefix.
/// Processes inside those cgroups are killed first.
pub fn cleanup_all() -> Removed {
    let mut removed = Removed::default();
    for root in [cgroups::UNIFIED_ROOT, cgroups::CPU_ROOT] {
        let slice = Path::new(root).join(cgroups::SLICE);
        let Ok(entries) = std::fs::read_dir(&slice) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) && e.path().is_dir() {
                cgroups::kill_and_remove(&e.path());
                removed.cgroups.push(e.path().display().to_string());
            }
        }
    }
    for ns in netns::list() {
        if ns.starts_with(PREFIX) {
            netns::delete(&ns);
            removed.namespaces.push(ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(PREFIX) && name.ends_with(".d") {
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
