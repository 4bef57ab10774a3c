//! Fault injectors, one per reproducible class of the fault catalog (no netem on this kernel:
//! nftables, tc htb, NFQUEUE delay stage, cgroup CPU quota, server knobs). Each returns a
//! guard that removes the fault when dropped; everything lives in testbed namespaces, so
//! deleting the testbed removes any leftover too.

use std::{collections::HashMap, net::IpAddr};

use crate::{Error, Result, exec::run_in};

/// Removes an nftables table from a namespace when dropped.
pub struct NftGuard {
    netns: String,
    table: String,
}

/// Name of the per-flow counter set every nftables fault keeps.
const ACTED_SET: &str = "acted";

/// Packets a fault acted on, per (source, destination) address pair.
pub type ActedOn = HashMap<(IpAddr, IpAddr), u64>;

impl NftGuard {
    /// Packets the fault acted on so far (dropped, rejected) per address pair. This is the
    /// injector's own record of whom it hit, so datasets can label the edges a fault really
    /// reached.
    pub fn acted_on(&self) -> Result<ActedOn> {
        let out = run_in(
            &self.netns,
            "nft",
            &["-j", "list", "set", "inet", &self.table, ACTED_SET],
        )?;
        parse_acted(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Reads `nft -j list set` output into packets per address pair.
fn parse_acted(json: &str) -> Result<ActedOn> {
    let bad = |detail: String| Error::Parse {
        tool: "nft -j list set".into(),
        detail,
    };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::new();
    let sets = v["nftables"].as_array().into_iter().flatten();
    for elem in sets.filter_map(|o| o["set"]["elem"].as_array()).flatten() {
        let e = &elem["elem"];
        let pair = e["val"]["concat"].as_array();
        let (Some([src, dst]), Some(packets)) =
            (pair.map(Vec::as_slice), e["counter"]["packets"].as_u64())
        else {
            return Err(bad(format!("unexpected set element {elem}")));
        };
        let ip = |v: &serde_json::Value| -> Result<IpAddr> {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("bad address {v}")))
        };
        out.insert((ip(src)?, ip(dst)?), packets);
    }
    Ok(out)
}

impl Drop for NftGuard {
    fn drop(&mut self) {
        let _ = run_in(
            &self.netns,
            "nft",
            &["delete", "table", "inet", &self.table],
        );
    }
}

/// The netfilter hook a fault's chain sits on.
#[derive(Clone, Copy)]
enum Hook {
    /// Packets delivered to this namespace.
    Input,
    /// Packets the namespace routes through (a node or the fabric).
    Forward,
    /// Packets leaving the namespace.
    Postrouting,
}

/// Loads a fault into a namespace: one `inet` table named `table` whose chain on `hook` applies
/// `verdict` to packets matching `rule`, first counting each one per (source, destination) pair
/// in [`ACTED_SET`] (read back by [`NftGuard::acted_on`]).
fn nft_fault(netns: &str, table: &str, hook: Hook, rule: &str, verdict: &str) -> Result<NftGuard> {
    let (chain, hook) = match hook {
        Hook::Input => ("input", "input"),
        Hook::Forward => ("forward_f", "forward"),
        Hook::Postrouting => ("post", "postrouting"),
    };
    let script = format!(
        "table inet {table} {{\n  set {ACTED_SET} {{ type ipv4_addr . ipv4_addr; size 4096; flags dynamic; }}\n  chain {chain} {{ type filter hook {hook} priority 0; policy accept;\n    {rule} update @{ACTED_SET} {{ ip saddr . ip daddr counter }} {verdict}\n  }}\n}}\n"
    );
    let path = std::env::temp_dir().join(format!("{netns}-{table}.nft"));
    std::fs::write(&path, script).map_err(crate::io_err("writing nft script"))?;
    let r = run_in(netns, "nft", &["-f", &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    r?;
    Ok(NftGuard {
        netns: netns.into(),
        table: table.into(),
    })
}

/// Drops `percent`% of packets leaving `netns` through `iface` (random, nftables numgen).
pub fn loss(netns: &str, iface: &str, percent: u32) -> Result<NftGuard> {
    nft_fault(
        netns,
        "netdx_loss",
        Hook::Postrouting,
        &format!("oifname \"{iface}\" {}", sample(percent)),
        "drop",
    )
}

/// Drops `percent`% of TCP SYNs to `port` arriving in `netns` (a firewall silently dropping
/// connects).
pub fn drop_syn(netns: &str, port: u16, percent: u32) -> Result<NftGuard> {
    nft_fault(
        netns,
        "netdx_syndrop",
        Hook::Input,
        &format!(
            "tcp dport {port} tcp flags & (syn | ack) == syn {}",
            sample(percent)
        ),
        "drop",
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
        let mut args = vec!["-t", "mangle", "-D"];
        args.extend(self.rule.iter().map(String::as_str));
        let _ = run_in(&self.netns, "iptables", &args);
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
    let mut args = vec!["-t", "mangle", "-A"];
    args.extend(rule.iter().map(String::as_str));
    let added = run_in(netns, "iptables", &args);
    let mut guard = DelayGuard {
        netns: netns.into(),
        rule,
        child,
    };
    if let Err(e) = added {
        let _ = guard.child.kill();
        guard.rule.clear();
        return Err(e);
    }
    Ok(guard)
}

/// nft statement prefix that selects `percent`% of packets at random (all when >= 100).
fn sample(percent: u32) -> String {
    if percent >= 100 {
        String::new()
    } else {
        format!("numgen random mod 100 < {percent} ")
    }
}

/// nft match for traffic forwarded from `iif` (any when None) out of `oif`.
fn path_match(iif: Option<&str>, oif: &str) -> String {
    match iif {
        Some(i) => format!("iifname \"{i}\" oifname \"{oif}\""),
        None => format!("oifname \"{oif}\""),
    }
}

/// Drops `percent`% of packets forwarded from `iif` to `oif` in `netns` (one direction of a
/// node-to-node path through the fabric).
pub fn loss_path(netns: &str, iif: &str, oif: &str, percent: u32) -> Result<NftGuard> {
    nft_fault(
        netns,
        "netdx_loss",
        Hook::Forward,
        &format!("{} {}", path_match(Some(iif), oif), sample(percent)),
        "drop",
    )
}

/// Silently drops packets longer than `max_len` bytes forwarded from `iif` to `oif` (a path
/// MTU black hole: no ICMP, so large segments stall while small ones pass).
pub fn mtu_blackhole(netns: &str, iif: &str, oif: &str, max_len: u32) -> Result<NftGuard> {
    nft_fault(
        netns,
        "netdx_mtu",
        Hook::Forward,
        &format!("{} meta length > {max_len}", path_match(Some(iif), oif)),
        "drop",
    )
}

/// Answers `percent`% of SYNs to `port` in `netns` with a reset (no listener / REJECT policy).
pub fn reject_syn(netns: &str, port: u16, percent: u32) -> Result<NftGuard> {
    nft_fault(
        netns,
        "netdx_reject",
        Hook::Input,
        &format!(
            "tcp dport {port} tcp flags & (syn | ack) == syn {}",
            sample(percent)
        ),
        "reject with tcp reset",
    )
}

/// Resets new connections to `port` beyond `max` concurrent ones (connlimit policy).
pub fn conn_limit(netns: &str, port: u16, max: u32) -> Result<NftGuard> {
    nft_fault(
        netns,
        "netdx_connlimit",
        Hook::Input,
        &format!("tcp dport {port} ct state new ct count over {max}"),
        "reject with tcp reset",
    )
}

/// A tc qdisc installed on a device; removed (root qdisc deleted) when dropped.
pub struct TcGuard {
    netns: String,
    dev: String,
}

impl Drop for TcGuard {
    fn drop(&mut self) {
        let _ = run_in(
            &self.netns,
            "tc",
            &["qdisc", "del", "dev", &self.dev, "root"],
        );
    }
}

/// Limits traffic leaving `dev` in `netns` towards `dst` (a subnet) to `rate_kbit` with htb;
/// other destinations stay unlimited.
pub fn bandwidth(netns: &str, dev: &str, dst: &str, rate_kbit: u32) -> Result<TcGuard> {
    let tc = |args: &[&str]| run_in(netns, "tc", args).map(|_| ());
    tc(&[
        "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "20",
    ])?;
    let guard = TcGuard {
        netns: netns.into(),
        dev: dev.into(),
    };
    let rate = format!("{rate_kbit}kbit");
    tc(&[
        "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", &rate,
        "ceil", &rate,
    ])?;
    tc(&[
        "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb", "rate", "10gbit",
    ])?;
    tc(&[
        "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "u32", "match", "ip", "dst",
        dst, "flowid", "1:10",
    ])?;
    Ok(guard)
}

/// A full conntrack table in a node namespace: new connections forwarded through it are
/// dropped by netfilter while established ones continue.
///
/// nf_conntrack_max cannot be lowered inside a network namespace on this kernel (EINVAL), so
/// the table limit is emulated with an nftables connection-count limit over everything the node
/// forwards, which drops the same packets (new connections) with the same kernel drop reason
/// (netfilter_drop) as a full table.
pub fn conntrack_full(netns: &str, max: u32) -> Result<NftGuard> {
    nft_fault(
        netns,
        "netdx_ct",
        Hook::Forward,
        &format!("ct state new ct count over {max}"),
        "drop",
    )
}
