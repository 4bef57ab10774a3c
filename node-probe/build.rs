//! Builds the eBPF object (probe-ebpf) with the pinned toolchain and embeds it in node-probe.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Must match rust-toolchain.toml: its LLVM is the one bpf-linker was built against.
const EBPF_TOOLCHAIN: &str = "1.98.0";

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .join("probe-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    // The eBPF build needs -Z build-std=core; a stable toolchain allows it with RUSTC_BOOTSTRAP.
    // SAFETY: build scripts are single-threaded here.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    println!("cargo::rerun-if-changed={root}/src");
    println!("cargo::rerun-if-changed=../crates/common/src");
    aya_build::build_ebpf(
        [Package {
            name: "probe-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
