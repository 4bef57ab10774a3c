//! Userspace delay stage: holds packets queued with NFQUEUE for a fixed delay (plus optional
//! uniform jitter, which also reorders) before accepting them. This kernel has no netem.
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    time::{Duration, Instant},
};

use clap::Parser;

#[derive(Parser)]
#[command(about = "NFQUEUE delay/jitter stage (bounded lifetime)")]
struct Args {
    /// Queue number to bind.
    #[arg(long, default_value_t = 0)]
    queue: u16,
    /// Fixed delay, microseconds.
    #[arg(long, default_value_t = 0)]
    delay_us: u64,
    /// Extra uniform random delay in [0, jitter), microseconds.
    #[arg(long, default_value_t = 0)]
    jitter_us: u64,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
}

/// xorshift64: deterministic, dependency-free jitter.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut q = nfq::Queue::open()?;
    q.bind(args.queue)?;
    q.set_copy_range(args.queue, 64)?;
    q.set_fail_open(args.queue, true)?;
    q.set_queue_max_len(args.queue, 65536)?;
    q.set_nonblocking(true);
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let mut held: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut msgs = std::collections::HashMap::new();
    let mut seq = 0u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    while Instant::now() < deadline {
        let mut got = false;
        loop {
            match q.recv() {
                Ok(msg) => {
                    got = true;
                    let jitter = if args.jitter_us > 0 {
                        next_rand(&mut rng) % args.jitter_us
                    } else {
                        0
                    };
                    let due = Instant::now() + Duration::from_micros(args.delay_us + jitter);
                    held.push(Reverse((due, seq)));
                    msgs.insert(seq, msg);
                    seq += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let now = Instant::now();
        while let Some(Reverse((due, id))) = held.peek().copied() {
            if due > now {
                break;
            }
            held.pop();
            if let Some(mut msg) = msgs.remove(&id) {
                msg.set_verdict(nfq::Verdict::Accept);
                q.verdict(msg)?;
            }
        }
        if !got {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    // Release everything still held so nothing is lost on exit.
    for (_, mut msg) in msgs {
        msg.set_verdict(nfq::Verdict::Accept);
        q.verdict(msg)?;
    }
    Ok(())
}
