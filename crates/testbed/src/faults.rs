//! Fault injectors (the full catalogue is the diagnosis issue's; these serve the capture tests).
//! Each returns a guard that removes the fault when dropped.

use crate::{Result, exec::run};

/// Removes an nftables table from a namespace when dropped.
pub struct NftGuard {
    netns: String,
    table: String,
}

impl Drop for NftGuard {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "exec", &self.netns, "nft", "delete", "table", "inet", &self.table]);
    }
}

/// Loads an nftables ruleset (one `inet` table named `table`, body given) into a namespace.
pub fn nft_table(netns: &str, table: &str, body: &str) -> Result<NftGuard> {
    let script = format!("table inet {table} {{\n{body}\n}}\n");
    let path = std::env::temp_dir().join(format!("{netns}-{table}.nft"));
    std::fs::write(&path, script).map_err(crate::io_err("writing nft script"))?;
    let r = run("ip", &["netns", "exec", netns, "nft", "-f", &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    r?;
    Ok(NftGuard { netns: netns.into(), table: table.into() })
}

/// Drops `percent`% of packets leaving `netns` through `iface` (random, nftables numgen).
pub fn loss(netns: &str, iface: &str, percent: u32) -> Result<NftGuard> {
    nft_table(
        netns,
        "netdx_loss",
        &format!(
            "  chain post {{ type filter hook postrouting priority 0; policy accept;\n    oifname \"{iface}\" numgen random mod 100 < {percent} drop\n  }}"
        ),
    )
}

/// Drops TCP SYNs to `port` arriving in `netns` (firewall silently dropping connects).
pub fn drop_syn(netns: &str, port: u16) -> Result<NftGuard> {
    nft_table(
        netns,
        "netdx_syndrop",
        &format!(
            "  chain input {{ type filter hook input priority 0; policy accept;\n    tcp dport {port} tcp flags & (syn | ack) == syn drop\n  }}"
        ),
    )
}
