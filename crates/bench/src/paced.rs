//! Open-loop paced client: requests are due on a fixed schedule whatever the server does, and
//! latency runs from the scheduled send time, so a stalled server shows up in the latency of
//! every request that should have left meanwhile (coordinated-omission safe, as in wrk2).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, io_err};

/// Request/response protocol the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// RESP `GET` of a key set beforehand.
    Redis,
    /// HTTP/1.1 `GET /` with keep-alive.
    Http,
}

/// When each request is due: a global sequence of slots `rate` per second, dealt round-robin
/// to the connections (slot `s` belongs to connection `s % conns`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Total requests per second over all connections.
    pub rate: f64,
    /// Connections.
    pub conns: usize,
}

impl Schedule {
    /// Offset from the start at which request `k` of connection `conn` is due.
    pub fn due(&self, conn: usize, k: u64) -> Duration {
        let slot = k * self.conns as u64 + conn as u64;
        Duration::from_secs_f64(slot as f64 / self.rate)
    }

    /// Slots due before `secs` over all connections.
    pub fn total(&self, secs: f64) -> u64 {
        (secs * self.rate).ceil().max(0.0) as u64
    }

    /// Requests connection `conn` sends in the first `secs` seconds.
    pub fn count(&self, conn: usize, secs: f64) -> u64 {
        let (total, conns, conn) = (self.total(secs), self.conns as u64, conn as u64);
        if total > conn {
            (total - conn).div_ceil(conns)
        } else {
            0
        }
    }
}

/// What a paced run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PacedReport {
    /// Protocol.
    pub proto: Proto,
    /// Target rate, requests/s.
    pub rate: f64,
    /// Scheduled duration, s.
    pub secs: f64,
    /// Connections.
    pub conns: usize,
    /// Requests scheduled.
    pub scheduled: u64,
    /// Responses received.
    pub completed: u64,
    /// Connections that failed (their remaining requests were not sent).
    pub errors: u64,
    /// Responses per second over the scheduled duration.
    pub achieved_rate: f64,
    /// Latency from the scheduled send time, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest, µs.
    pub max_us: f64,
}

/// Settings of a paced run.
#[derive(Clone, Debug)]
pub struct PacedConfig {
    /// Protocol.
    pub proto: Proto,
    /// Server.
    pub target: SocketAddr,
    /// Requests per second, all connections together.
    pub rate: f64,
    /// Duration, s.
    pub secs: f64,
    /// Connections (each has at most one request outstanding).
    pub conns: usize,
}

/// The redis key the client reads (set before the run so every reply has the same size).
const REDIS_KEY: &str = "ndxbench";

fn request(proto: Proto) -> Vec<u8> {
    match proto {
        Proto::Redis => format!("*2\r\n$3\r\nGET\r\n${}\r\n{REDIS_KEY}\r\n", REDIS_KEY.len()),
        Proto::Http => "GET / HTTP/1.1\r\nHost: bench\r\n\r\n".to_string(),
    }
    .into_bytes()
}

fn bad(proto: Proto, detail: impl Into<String>) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{proto:?} reply: {}", detail.into()),
    )
}

fn next_line(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<()> {
    line.clear();
    if r.read_line(line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads one whole reply: a RESP simple line or bulk string, or an HTTP response with a
/// Content-Length body.
fn read_reply(
    proto: Proto,
    r: &mut BufReader<TcpStream>,
    line: &mut String,
) -> std::io::Result<()> {
    let mut body = 0usize;
    match proto {
        Proto::Redis => {
            next_line(r, line)?;
            if let Some(n) = line.strip_prefix('$') {
                let n: i64 = n.trim().parse().map_err(|_| bad(proto, line.clone()))?;
                // -1 is a nil reply with no body; otherwise the bytes and their CRLF follow.
                body = usize::try_from(n).map(|n| n + 2).unwrap_or(0);
            }
        }
        Proto::Http => loop {
            next_line(r, line)?;
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                body = v.trim().parse().map_err(|_| bad(proto, line.clone()))?;
            }
        },
    }
    std::io::copy(&mut r.by_ref().take(body as u64), &mut std::io::sink()).and_then(|got| {
        if got == body as u64 {
            Ok(())
        } else {
            Err(std::io::ErrorKind::UnexpectedEof.into())
        }
    })
}

fn connect(cfg: &PacedConfig) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&cfg.target, Duration::from_secs(3))
        .map_err(io_err(format!("connecting to {}", cfg.target)))?;
    s.set_nodelay(true).map_err(io_err("TCP_NODELAY"))?;
    // A dead server must end the run, not hang it.
    let limit = Some(Duration::from_secs_f64(cfg.secs + 10.0));
    s.set_read_timeout(limit).map_err(io_err("read timeout"))?;
    Ok(s)
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 100 s at 3 significant digits; larger values saturate at the top.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant bounds are valid")
}

/// One connection's share of the schedule.
fn run_conn(
    cfg: &PacedConfig,
    sched: Schedule,
    conn: usize,
    stream: TcpStream,
    start: Instant,
) -> (Histogram<u64>, u64, bool) {
    let mut hist = histogram();
    let req = request(cfg.proto);
    let (mut writer, mut reader) = match stream.try_clone() {
        Ok(w) => (w, BufReader::new(stream)),
        Err(_) => return (hist, 0, true),
    };
    let mut line = String::new();
    let mut done = 0;
    for k in 0..sched.count(conn, cfg.secs) {
        let due = start + sched.due(conn, k);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let ok = writer
            .write_all(&req)
            .and_then(|_| read_reply(cfg.proto, &mut reader, &mut line));
        if ok.is_err() {
            return (hist, done, true);
        }
        hist.saturating_record(due.elapsed().as_nanos() as u64);
        done += 1;
    }
    (hist, done, false)
}

/// Runs the schedule and measures each request from its due time to its last reply byte.
pub fn run(cfg: &PacedConfig) -> Result<PacedReport> {
    // NaN rates are refused too.
    if cfg.rate.is_nan() || cfg.rate <= 0.0 || cfg.conns == 0 {
        return Err(Error::Process(format!(
            "paced client needs a positive rate and connections (rate {}, conns {})",
            cfg.rate, cfg.conns
        )));
    }
    let mut streams = (0..cfg.conns)
        .map(|_| connect(cfg))
        .collect::<Result<Vec<_>>>()?;
    if cfg.proto == Proto::Redis
        && let Some(first) = streams.first_mut()
    {
        let set = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{REDIS_KEY}\r\n$16\r\n0123456789abcdef\r\n",
            REDIS_KEY.len()
        );
        first
            .write_all(set.as_bytes())
            .map_err(io_err("redis SET"))?;
        let mut r = BufReader::new(first.try_clone().map_err(io_err("cloning socket"))?);
        let mut line = String::new();
        read_reply(cfg.proto, &mut r, &mut line).map_err(io_err("redis SET reply"))?;
    }
    let sched = Schedule {
        rate: cfg.rate,
        conns: cfg.conns,
    };
    // Connections are open before the clock starts: connect time is not request latency.
    let start = Instant::now() + Duration::from_millis(20);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = streams
            .drain(..)
            .enumerate()
            .map(|(i, stream)| s.spawn(move || run_conn(cfg, sched, i, stream, start)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
    });
    let mut hist = histogram();
    let (mut completed, mut errors) = (0, 0);
    for (h, done, failed) in results {
        let _ = hist.add(&h);
        completed += done;
        errors += u64::from(failed);
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    Ok(PacedReport {
        proto: cfg.proto,
        rate: cfg.rate,
        secs: cfg.secs,
        conns: cfg.conns,
        scheduled: sched.total(cfg.secs),
        completed,
        errors,
        achieved_rate: completed as f64 / cfg.secs,
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: hist.max() as f64 / 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_dealt_round_robin_at_the_rate() {
        let s = Schedule {
            rate: 1000.0,
            conns: 4,
        };
        // Connection 1's requests are slots 1, 5, 9, ...: 1 ms apart globally, 4 ms per conn.
        assert_eq!(s.due(1, 0), Duration::from_millis(1));
        assert_eq!(s.due(1, 2), Duration::from_millis(9));
        assert_eq!(s.due(0, 1) - s.due(0, 0), Duration::from_millis(4));
    }

    #[test]
    fn every_slot_before_the_end_is_sent_once() {
        for (rate, conns, secs) in [(1000.0, 4, 1.0), (333.0, 7, 0.5), (10.0, 16, 0.3)] {
            let s = Schedule { rate, conns };
            let total: u64 = (0..conns).map(|c| s.count(c, secs)).sum();
            assert_eq!(total, s.total(secs), "rate {rate} conns {conns}");
            let mut dues: Vec<Duration> = (0..conns)
                .flat_map(|c| (0..s.count(c, secs)).map(move |k| s.due(c, k)))
                .collect();
            dues.sort();
            assert!(dues.iter().all(|d| d.as_secs_f64() < secs));
            assert!(
                dues.windows(2).all(|w| w[0] < w[1]),
                "no two requests share a slot"
            );
        }
        let s = Schedule {
            rate: 10.0,
            conns: 16,
        };
        assert_eq!(s.count(15, 0.3), 0, "fewer slots than connections");
        assert_eq!(s.count(2, 0.3), 1);
    }

    #[test]
    fn replies_are_read_whole() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.write_all(
                b"$3\r\nbar\r\n$-1\r\n+OK\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody",
            )
            .unwrap();
        });
        let mut r = BufReader::new(TcpStream::connect(addr).unwrap());
        let mut line = String::new();
        for _ in 0..3 {
            read_reply(Proto::Redis, &mut r, &mut line).unwrap();
        }
        read_reply(Proto::Http, &mut r, &mut line).unwrap();
        server.join().unwrap();
        assert!(read_reply(Proto::Redis, &mut r, &mut line).is_err(), "EOF");
    }
}
