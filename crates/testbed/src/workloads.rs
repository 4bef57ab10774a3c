//! Real clients run inside pods, each bounded in count and time, with their own tallies
//! parsed as ground truth.

use std::net::SocketAddr;

use crate::{Error, Result, Testbed, echo::ClientReport, io_err, servers::workspace_binary};

/// Result of a redis-benchmark run.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisBench {
    /// Requests per test (as passed with -n).
    pub requests_per_test: u64,
    /// Tests run (e.g. get,set = 2).
    pub tests: u64,
    /// Requests per second of each test.
    pub rps: Vec<f64>,
}

/// Runs redis-benchmark from `pod`: `-n requests` per test, `-c clients`, `-P pipeline`.
pub fn redis_benchmark(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    tests: &str,
    requests: u64,
    clients: u32,
    pipeline: u32,
) -> Result<RedisBench> {
    let (host, port, n, c, p) = (
        server.ip().to_string(),
        server.port().to_string(),
        requests.to_string(),
        clients.to_string(),
        pipeline.to_string(),
    );
    // Bounded well below the scenario timeline: redis-benchmark spins on refused
    // connections and waits out unanswered ones instead of failing fast.
    let args = [
        "20",
        "redis-benchmark",
        "-h",
        &host,
        "-p",
        &port,
        "-n",
        &n,
        "-c",
        &c,
        "-t",
        tests,
        "--csv",
        "-P",
        &p,
    ];
    let out = tb.run(pod, "timeout", &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    // --csv: a header line, then "TEST","rps",... per test.
    let rps: Vec<f64> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|v| v.trim_matches('"').parse().ok())
        })
        .collect();
    if rps.is_empty() {
        return Err(Error::Parse {
            tool: "redis-benchmark".into(),
            detail: text.into_owned(),
        });
    }
    Ok(RedisBench {
        requests_per_test: requests,
        tests: rps.len() as u64,
        rps,
    })
}

/// Runs `conns` concurrent redis-cli connections from `pod`, each alternating `pairs` SET and
/// GET of a `value_size`-byte value, killed after `max_secs`. Unlike redis-benchmark, which
/// spins on a refused connection until killed (a core burnt, one attempt per run), redis-cli
/// gives up at once, so a client looping over short runs retries its connects as a pooled
/// client would.
pub fn redis_set_get(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    pairs: u64,
    conns: u32,
    value_size: u32,
    max_secs: u32,
) -> Result<()> {
    let (host, port) = (server.ip(), server.port());
    let script = format!(
        "v=$(printf '%{value_size}s' | tr ' ' x); \
         for c in $(seq {conns}); do \
           (for i in $(seq {pairs}); do echo \"SET netdx:$c $v\"; echo \"GET netdx:$c\"; done \
             | redis-cli -h {host} -p {port} >/dev/null) & \
         done; wait"
    );
    tb.run(
        pod,
        "timeout",
        &[&max_secs.to_string(), "bash", "-c", &script],
    )
    .map(|_| ())
}

/// Runs `command` `repeat` times over one connection with redis-cli from `pod`
/// (redis-benchmark stops at the first error reply; redis-cli carries on).
pub fn redis_cli_repeat(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    repeat: u64,
    command: &[&str],
) -> Result<()> {
    let (host, port, r) = (
        server.ip().to_string(),
        server.port().to_string(),
        repeat.to_string(),
    );
    let mut args = vec!["20", "redis-cli", "-h", &host, "-p", &port, "-r", &r];
    args.extend_from_slice(command);
    tb.run(pod, "timeout", &args).map(|_| ())
}

/// Runs memcaslap (libmemcached-tools) from `pod`: `ops` get/set operations, `conns`
/// connections, killed after `max_secs`.
pub fn memcaslap(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    ops: u64,
    conns: u32,
    max_secs: u32,
) -> Result<()> {
    let (s, x, c) = (server.to_string(), ops.to_string(), conns.to_string());
    let t = max_secs.to_string();
    tb.run(
        pod,
        "timeout",
        &[&t, "memcaslap", "-s", &s, "-x", &x, "-c", &c, "-T", "1"],
    )
    .map(|_| ())
}

/// Result of a pgbench run.
#[derive(Clone, Debug, PartialEq)]
pub struct PgBench {
    /// Transactions processed.
    pub transactions: u64,
    /// Transactions per second (without connection time).
    pub tps: f64,
}

/// Initialises pgbench's tables (scale 1) from `pod`.
pub fn pgbench_init(tb: &Testbed, pod: &str, server: SocketAddr) -> Result<()> {
    let (host, port) = (server.ip().to_string(), server.port().to_string());
    tb.run(
        pod,
        "timeout",
        &[
            "120", "pgbench", "-i", "-q", "-h", &host, "-p", &port, "-U", "postgres", "postgres",
        ],
    )
    .map(|_| ())
}

/// Runs pgbench from `pod`: `clients` connections, `transactions` each; `select_only` uses the
/// built-in select-only script (one statement per transaction).
pub fn pgbench(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    clients: u32,
    transactions: u64,
    select_only: bool,
) -> Result<PgBench> {
    let (host, port, c, t) = (
        server.ip().to_string(),
        server.port().to_string(),
        clients.to_string(),
        transactions.to_string(),
    );
    let mut args = vec![
        "120", "pgbench", "-h", &host, "-p", &port, "-U", "postgres", "-c", &c, "-t", &t, "-n",
    ];
    if select_only {
        args.push("-S");
    }
    args.push("postgres");
    let out = tb.run(pod, "timeout", &args)?;
    parse_pgbench(&String::from_utf8_lossy(&out.stdout))
}

/// Parses pgbench's summary ("number of transactions actually processed: N/M", "tps = X").
pub fn parse_pgbench(text: &str) -> Result<PgBench> {
    let err = || Error::Parse {
        tool: "pgbench".into(),
        detail: text.to_string(),
    };
    let transactions = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(err)?;
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(err)?;
    Ok(PgBench { transactions, tps })
}

/// Runs one SQL statement with psql from `pod` (errors from the server are not a failure here:
/// callers use this to make the server answer with an ErrorResponse).
pub fn psql(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    sql: &str,
) -> Result<std::process::Output> {
    let (host, port) = (server.ip().to_string(), server.port().to_string());
    let child = tb.pod(pod)?.placement().spawn(
        "psql",
        &[
            "-h", &host, "-p", &port, "-U", "postgres", "-d", "postgres", "-c", sql,
        ],
        true,
    )?;
    child
        .wait_with_output()
        .map_err(crate::io_err("waiting for psql"))
}

/// Result of a wrk run.
#[derive(Clone, Debug, PartialEq)]
pub struct WrkRun {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Non-2xx/3xx responses.
    pub non_2xx: u64,
}

/// Runs wrk from `pod` for `secs` seconds with `conns` connections on one thread.
pub fn wrk(tb: &Testbed, pod: &str, url: &str, conns: u32, secs: u32) -> Result<WrkRun> {
    run_wrk(tb, pod, url, conns, secs, &[])
}

/// Runs wrk from `pod` on one connection for `secs` seconds, every other request to
/// `/status/500` of the testbed's nginx: a connection whose answers alternate 500 and 200.
pub fn wrk_alternating_errors(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    secs: u32,
) -> Result<WrkRun> {
    let script = tb.path("alternate-500.lua");
    std::fs::write(
        &script,
        "local n = 0\nrequest = function()\n  n = n + 1\n  \
         return wrk.format(nil, n % 2 == 0 and \"/status/500\" or \"/\")\nend\n",
    )
    .map_err(io_err(format!("writing {}", script.display())))?;
    let script = script.display().to_string();
    run_wrk(
        tb,
        pod,
        &format!("http://{server}/"),
        1,
        secs,
        &["-s", &script],
    )
}

fn run_wrk(
    tb: &Testbed,
    pod: &str,
    url: &str,
    conns: u32,
    secs: u32,
    extra: &[&str],
) -> Result<WrkRun> {
    let (limit, conns, secs) = (
        (secs + 30).to_string(),
        conns.to_string(),
        format!("{secs}s"),
    );
    let mut args = vec![limit.as_str(), "wrk", "-t", "1", "-c", &conns, "-d", &secs];
    args.extend_from_slice(extra);
    args.push(url);
    let out = tb.run(pod, "timeout", &args)?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// Parses wrk's summary ("N requests in ...", "Requests/sec: X", "Non-2xx or 3xx responses: K").
pub fn parse_wrk(text: &str) -> Result<WrkRun> {
    let err = || Error::Parse {
        tool: "wrk".into(),
        detail: text.to_string(),
    };
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(err)?;
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(err)?;
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(WrkRun {
        requests,
        rps,
        non_2xx,
    })
}

/// ndxe client settings.
#[derive(Clone, Debug)]
pub struct EchoClient {
    /// Parallel connections.
    pub connections: usize,
    /// Total requests.
    pub requests: u64,
    /// Request bytes.
    pub req_size: usize,
    /// Response bytes.
    pub resp_size: usize,
    /// Hard limit, s.
    pub max_secs: u64,
    /// New connection per request.
    pub new_conn: bool,
    /// Total rate per second (0 = unpaced).
    pub rate: f64,
    /// Connect timeout, ms.
    pub connect_timeout_ms: u64,
}

impl Default for EchoClient {
    fn default() -> Self {
        EchoClient {
            connections: 4,
            requests: 1000,
            req_size: 64,
            resp_size: 256,
            max_secs: 60,
            new_conn: false,
            rate: 0.0,
            connect_timeout_ms: 3000,
        }
    }
}

/// Runs the ndxe client from `pod` against `server`.
pub fn echo_client(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    c: &EchoClient,
) -> Result<ClientReport> {
    let bin = workspace_binary("netdx-echo")?.display().to_string();
    let args = [
        "client".to_string(),
        "--target".into(),
        server.to_string(),
        "--connections".into(),
        c.connections.to_string(),
        "--requests".into(),
        c.requests.to_string(),
        "--req-size".into(),
        c.req_size.to_string(),
        "--resp-size".into(),
        c.resp_size.to_string(),
        "--max-secs".into(),
        c.max_secs.to_string(),
        "--rate".into(),
        c.rate.to_string(),
        "--connect-timeout-ms".into(),
        c.connect_timeout_ms.to_string(),
    ];
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if c.new_conn {
        args.push("--new-conn");
    }
    run_json(tb, pod, &bin, &args, "netdx-echo client")
}

/// Runs one of the testbed's own clients in `pod` and reads the JSON report it prints.
fn run_json<T: serde::de::DeserializeOwned>(
    tb: &Testbed,
    pod: &str,
    bin: &str,
    args: &[&str],
    tool: &str,
) -> Result<T> {
    let out = tb.run(pod, bin, args)?;
    serde_json::from_slice(&out.stdout).map_err(|e| Error::Parse {
        tool: tool.into(),
        detail: e.to_string(),
    })
}

/// Runs the testbed DNS client in `pod`: `queries` A queries to `server`, one at a time.
pub fn dns_client(
    tb: &Testbed,
    pod: &str,
    server: SocketAddr,
    queries: u64,
    rate: f64,
    timeout_ms: u64,
) -> Result<crate::dns::ClientReport> {
    let bin = workspace_binary("netdx-dns")?.display().to_string();
    let args = [
        "client".to_string(),
        "--server".into(),
        server.to_string(),
        "--queries".into(),
        queries.to_string(),
        "--rate".into(),
        rate.to_string(),
        "--timeout-ms".into(),
        timeout_ms.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_json(tb, pod, &bin, &args, "netdx-dns client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_summary() {
        let t = "transaction type: <builtin: select only>\nnumber of clients: 2\nnumber of transactions actually processed: 2000/2000\nlatency average = 0.3 ms\ntps = 6512.123 (without initial connection time)\n";
        assert_eq!(
            parse_pgbench(t).unwrap(),
            PgBench {
                transactions: 2000,
                tps: 6512.123
            }
        );
        assert!(parse_pgbench("nothing").is_err());
    }

    #[test]
    fn parses_wrk_summary() {
        let t = "Running 2s test @ http://10.200.0.11/\n  1 threads and 4 connections\n  18077 requests in 2.00s, 5.0MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:   9035.61\nTransfer/sec:      2.5MB\n";
        assert_eq!(
            parse_wrk(t).unwrap(),
            WrkRun {
                requests: 18077,
                rps: 9035.61,
                non_2xx: 3
            }
        );
        assert!(parse_wrk("garbage").is_err());
    }
}
