//! Reads of kernel struct fields at offsets the loader resolved from the running kernel's BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use netdx_common::{Counter, KernelOffsets, OFFSET_MISSING};

use crate::maps::count;

/// Field offsets, patched into .rodata by the loader (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::MISSING;

/// The resolved offsets; a volatile read keeps the compiler from folding the defaults.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: reading a static.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// Reads a `T` at `base + off`; `None` (and a counted failure) when unknown or unreadable.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    if off == OFFSET_MISSING || base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel validates the address; a fault returns an error.
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(Counter::ProbeReadFailed);
            None
        }
    }
}
