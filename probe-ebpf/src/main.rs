//! netdx kernel programs.
//!
//! Socket-level send/receive hooks turn the direction of data on each socket into
//! protocol-independent request/response exchanges; TCP hooks add connection outcomes,
//! retransmits and resets; `kfree_skb` adds drops with their reason. Only pods whose cgroup
//! id is in `TARGETS` are recorded. Records go to one ring buffer without wakeups; the
//! node-probe drains it on a timer.
#![no_std]
#![no_main]

mod kernel;
mod maps;
mod probes;
mod records;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Licence section the kernel checks for GPL-only helpers (probe_read_kernel, ktime...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
