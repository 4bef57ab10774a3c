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
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "nft",
                "delete",
                "table",
                "inet",
                &self.table,
            ],
        );
    }
}

/// Loads an nftables ruleset (one `inet` table named `table`, body given) into a namespace.
pub fn nft_table(netns: &str, table: &str, body: &str) -> Result<NftGuard> {
    let script = format!("table inet {table} {{\n{body}\n}}\n");
    let path = std::env::temp_dir().join(format!("{netns}-{table}.nft"));
    std::fs::write(&path, script).map_err(crate::io_err("writing nft script"))?;
    let r = run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "nft",
            "-f",
            &path.display().to_string(),
        ],
    );
    let _ = std::fs::remove_file(&path);
    r?;
    Ok(NftGuard {
        netns: netns.into(),
        table: table.into(),
    })
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

/// A running delay stage; dropping it removes the queue rule and stops the process.
pub struct DelayGuard {
    netns: String,
    rule: Vec<String>,
    child: std::process::Child,
}

impl Drop for DelayGuard {
    fn drop(&mut self) {
        let mut args: Vec<&str> = vec![
            "netns",
            "exec",
            &self.netns,
            "iptables",
            "-t",
            "mangle",
            "-D",
        ];
        args.extend(self.rule.iter().map(String::as_str));
        let _ = run("ip", &args);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Delays packets forwarded in `netns` from `in_iface` to `out_iface` by `delay_us`
/// (+ uniform `jitter_us`), through NFQUEUE `queue` and the netdx-delay stage.
pub fn delay(
    netns: &str,
    in_iface: &str,
    out_iface: &str,
    queue: u16,
    delay_us: u64,
    jitter_us: u64,
) -> Result<DelayGuard> {
    let bin = crate::servers::workspace_binary("netdx-delay")?;
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(&bin)
        .args([
            "--queue",
            &queue.to_string(),
            "--delay-us",
            &delay_us.to_string(),
            "--jitter-us",
            &jitter_us.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(crate::io_err("spawning netdx-delay"))?;
    // Let the stage bind before packets are queued (queue-bypass covers the gap anyway).
    std::thread::sleep(std::time::Duration::from_millis(200));
    let rule: Vec<String> = [
        "FORWARD",
        "-i",
        in_iface,
        "-o",
        out_iface,
        "-j",
        "NFQUEUE",
        "--queue-num",
        &queue.to_string(),
        "--queue-bypass",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut args: Vec<String> = ["netns", "exec", netns, "iptables", "-t", "mangle", "-A"]
        .map(String::from)
        .to_vec();
    args.extend(rule.iter().cloned());
    let mut guard = DelayGuard {
        netns: netns.into(),
        rule,
        child,
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Err(e) = run("ip", &args) {
        let _ = guard.child.kill();
        guard.rule.clear();
        return Err(e);
    }
    Ok(guard)
}
