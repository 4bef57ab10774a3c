//! netdx kernel programs.
//!
//! Socket-level send/receive hooks turn the direction of data on each socket into
//! protocol-independent request/response exchanges; TCP hooks add connection outcomes,
//! retransmits and resets; `kfree_skb` adds drops with their reason. Only pods whose cgroup
//! id is in `TARGETS` are recorded. Records go to one ring buffer without wakeups; the
//! node-probe drains it on a timer.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod kernel;
mod maps;
mod probes;
mod records;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Licence section the kernel checks for GPL-only helpers (probe_read_kernel, ktime...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Host builds (`cargo build --workspace`) compile this crate too; it only runs as eBPF.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("probe-ebpf is an eBPF object; it is embedded in node-probe");
}
