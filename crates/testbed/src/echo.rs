//! "ndxe": a small binary request/response protocol that no classifier knows, with a server
//! whose misbehaviour can be dialled in (delay, errors, aborts, stalls) and a bounded client.
//!
//! Request: `[u32 payload_len][u32 resp_len][u8 op]` + payload. Response: `[u32 resp_len][u8 status]`
//! + resp_len bytes. All integers big-endian.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Server behaviour.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Sleep before answering each request.
    pub delay: Duration,
    /// Answer with status 1 (error) for this fraction of requests (0..=1).
    pub error_ratio: f64,
    /// Abort the connection with a reset (SO_LINGER 0) after this many requests (0 = never).
    pub abort_after: u64,
    /// Never read from accepted connections (the receiver stops reading: zero window).
    pub stop_reading: bool,
    /// Sleep before each accept (with a tiny backlog: listen queue overflow).
    pub accept_delay: Duration,
    /// listen() backlog.
    pub backlog: i32,
}

/// Runs the server forever on `addr`.
pub fn serve(addr: SocketAddr, opts: ServerOpts) -> std::io::Result<()> {
    let listener = listen(addr, if opts.backlog > 0 { opts.backlog } else { 1024 })?;
    let opts = Arc::new(opts);
    let counter = Arc::new(AtomicU64::new(0));
    loop {
        if !opts.accept_delay.is_zero() {
            std::thread::sleep(opts.accept_delay);
        }
        let (stream, _) = listener.accept()?;
        let (opts, counter) = (opts.clone(), counter.clone());
        std::thread::spawn(move || {
            let _ = handle(stream, &opts, &counter);
        });
    }
}

fn listen(addr: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    // std's TcpListener::bind uses a fixed backlog; build the socket by hand to set it.
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("ndxe server listens on IPv4 only"));
    };
    // SAFETY: plain socket syscalls on a fresh fd we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const i32).cast(),
            4,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let listener = TcpListener::from_raw_fd(fd);
        if libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) != 0
            || libc::listen(fd, backlog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(listener)
    }
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and option struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as u32,
        );
    }
}

fn handle(mut s: TcpStream, opts: &ServerOpts, counter: &AtomicU64) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    if opts.stop_reading {
        // Hold the connection without reading until the peer gives up.
        let mut b = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        std::thread::sleep(Duration::from_secs(120));
        let _ = s.peek(&mut b);
        return Ok(());
    }
    let mut served = 0u64;
    let mut hdr = [0u8; 9];
    let mut buf = Vec::new();
    loop {
        if s.read_exact(&mut hdr).is_err() {
            return Ok(());
        }
        let plen = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let rlen = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
        if plen > 16 << 20 || rlen > 16 << 20 {
            return Err(std::io::Error::other("frame too large"));
        }
        buf.resize(plen, 0);
        s.read_exact(&mut buf)?;
        if !opts.delay.is_zero() {
            std::thread::sleep(opts.delay);
        }
        let n = counter.fetch_add(1, Ordering::Relaxed);
        // Spread errors evenly: request n fails when the running error count steps up.
        let status = u8::from(
            ((n + 1) as f64 * opts.error_ratio).floor() > (n as f64 * opts.error_ratio).floor(),
        );
        let mut resp = Vec::with_capacity(5 + rlen);
        resp.extend_from_slice(&(rlen as u32).to_be_bytes());
        resp.push(status);
        resp.resize(5 + rlen, b'x');
        served += 1;
        if opts.abort_after > 0 && served >= opts.abort_after {
            set_linger_zero(&s);
            return Ok(()); // dropping the stream closes it with a reset
        }
        s.write_all(&resp)?;
    }
}

/// Client settings; every run is bounded by `requests` and `max_duration`.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// Server address.
    pub target: SocketAddr,
    /// Parallel connections.
    pub connections: usize,
    /// Total requests across connections.
    pub requests: u64,
    /// Request payload bytes.
    pub req_size: usize,
    /// Response bytes asked for.
    pub resp_size: usize,
    /// Hard time limit.
    pub max_duration: Duration,
    /// Open a new connection for every request.
    pub new_conn_per_request: bool,
    /// Target total request rate (0 = as fast as possible).
    pub rate: f64,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// What a client run did (ground truth for tests).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientReport {
    /// Requests answered with status 0.
    pub ok: u64,
    /// Requests answered with status != 0.
    pub app_errors: u64,
    /// Requests that failed at the socket level (reset, EOF).
    pub io_errors: u64,
    /// connect() refused.
    pub connect_refused: u64,
    /// connect() timed out.
    pub connect_timeout: u64,
    /// connect() failed otherwise.
    pub connect_other: u64,
    /// Mean latency of answered requests, ms.
    pub mean_ms: f64,
    /// Wall time, s.
    pub elapsed_s: f64,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    app_errors: AtomicU64,
    io_errors: AtomicU64,
    refused: AtomicU64,
    timeout: AtomicU64,
    other: AtomicU64,
    lat_ns: AtomicU64,
    issued: AtomicU64,
}

fn one_request(s: &mut TcpStream, req: &[u8], resp: &mut Vec<u8>) -> std::io::Result<u8> {
    s.write_all(req)?;
    let mut hdr = [0u8; 5];
    s.read_exact(&mut hdr)?;
    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    resp.resize(len, 0);
    s.read_exact(resp)?;
    Ok(hdr[4])
}

/// Runs the client to completion.
pub fn run_client(opts: &ClientOpts) -> ClientReport {
    let tally = Arc::new(Tally::default());
    let mut req = Vec::with_capacity(9 + opts.req_size);
    req.extend_from_slice(&(opts.req_size as u32).to_be_bytes());
    req.extend_from_slice(&(opts.resp_size as u32).to_be_bytes());
    req.push(1);
    req.resize(9 + opts.req_size, b'r');
    let req = Arc::new(req);
    let start = Instant::now();
    let deadline = start + opts.max_duration;
    let per_conn_interval = if opts.rate > 0.0 {
        Some(Duration::from_secs_f64(
            opts.connections.max(1) as f64 / opts.rate,
        ))
    } else {
        None
    };
    let handles: Vec<_> = (0..opts.connections.max(1))
        .map(|_| {
            let (tally, req, opts) = (tally.clone(), req.clone(), opts.clone());
            std::thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                let mut resp = Vec::new();
                let mut next = Instant::now();
                while Instant::now() < deadline {
                    if tally.issued.fetch_add(1, Ordering::Relaxed) >= opts.requests {
                        break;
                    }
                    if let Some(iv) = per_conn_interval {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += iv;
                    }
                    if conn.is_none() {
                        match TcpStream::connect_timeout(&opts.target, opts.connect_timeout) {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                // Bounded even against a server that stops reading or answering.
                                let io_timeout =
                                    Some(opts.max_duration.min(Duration::from_secs(10)));
                                let _ = s.set_read_timeout(io_timeout);
                                let _ = s.set_write_timeout(io_timeout);
                                conn = Some(s);
                            }
                            Err(e) => {
                                let c = match e.kind() {
                                    std::io::ErrorKind::ConnectionRefused => &tally.refused,
                                    std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::WouldBlock => &tally.timeout,
                                    _ => &tally.other,
                                };
                                c.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                    let Some(s) = conn.as_mut() else { continue };
                    let t0 = Instant::now();
                    match one_request(s, &req, &mut resp) {
                        Ok(status) => {
                            tally
                                .lat_ns
                                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            if status == 0 {
                                &tally.ok
                            } else {
                                &tally.app_errors
                            }
                            .fetch_add(1, Ordering::Relaxed);
                            if opts.new_conn_per_request {
                                conn = None;
                            }
                        }
                        Err(_) => {
                            tally.io_errors.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let answered = tally.ok.load(Ordering::Relaxed) + tally.app_errors.load(Ordering::Relaxed);
    ClientReport {
        ok: tally.ok.load(Ordering::Relaxed),
        app_errors: tally.app_errors.load(Ordering::Relaxed),
        io_errors: tally.io_errors.load(Ordering::Relaxed),
        connect_refused: tally.refused.load(Ordering::Relaxed),
        connect_timeout: tally.timeout.load(Ordering::Relaxed),
        connect_other: tally.other.load(Ordering::Relaxed),
        mean_ms: if answered > 0 {
            tally.lat_ns.load(Ordering::Relaxed) as f64 / answered as f64 / 1e6
        } else {
            0.0
        },
        elapsed_s: start.elapsed().as_secs_f64(),
    }
}
