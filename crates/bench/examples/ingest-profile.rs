//! The operator-ingest measurement alone, for a CPU profiler:
//! `ingest-profile [pods] [secs]` (default 1000 pods, 4 s) prints what it measured.

use anyhow::Context as _;

/// The operator binary's allocator, as in the benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let pods: usize = match args.next() {
        Some(a) => a.parse().context("pods: a whole number")?,
        None => 1000,
    };
    let secs: f64 = match args.next() {
        Some(a) => a.parse().context("secs: a number of seconds")?,
        None => 4.0,
    };
    let r = netdx_bench::ingest::measure(pods, secs)?;
    println!("{r:?}");
    Ok(())
}
