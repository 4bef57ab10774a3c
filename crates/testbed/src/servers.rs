//! Real servers started inside pods: redis, nginx, memcached, postgres, and the ndxe server.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{Error, Result, Testbed, exec::in_netns, io_err};

/// Path of a binary built from this workspace (next to the running executable, or
/// `$NETDX_BIN_DIR`).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("NETDX_BIN_DIR") {
        candidates.push(PathBuf::from(dir).join(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(3) {
            candidates.push(dir.join(name));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::Invalid(format!(
            "binary {name} not found: run `cargo build --workspace --bins` first"
        ))
    })
}

/// Waits until `addr` accepts TCP connections from inside `pod`'s namespace.
pub fn wait_tcp(tb: &Testbed, pod: &str, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let ns = crate::netns::netns_path(&tb.pod(pod)?.netns);
    let ok = in_netns(&ns, move || {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })?;
    if ok {
        Ok(())
    } else {
        Err(Error::NotReady(format!("{addr} from {pod}"), timeout))
    }
}

fn addr(tb: &Testbed, pod: &str, port: u16) -> Result<SocketAddr> {
    format!("{}:{port}", tb.pod(pod)?.ip)
        .parse()
        .map_err(|e| Error::Invalid(format!("address of {pod}: {e}")))
}

const READY: Duration = Duration::from_secs(20);

/// Starts redis-server in `pod` on 6379.
pub fn redis(tb: &Testbed, pod: &str) -> Result<SocketAddr> {
    let dir = tb.path(&format!("redis-{pod}"));
    std::fs::create_dir_all(&dir).map_err(io_err("redis dir"))?;
    let dir_s = dir.display().to_string();
    tb.spawn(
        pod,
        "redis-server",
        &[
            "--port",
            "6379",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir_s,
            // DEBUG SLEEP reproduces a slow server (only reachable inside the testbed).
            "--enable-debug-command",
            "yes",
            "--daemonize",
            "no",
        ],
    )?;
    let a = addr(tb, pod, 6379)?;
    wait_tcp(tb, pod, a, READY)?;
    Ok(a)
}

/// Starts memcached in `pod` on 11211.
pub fn memcached(tb: &Testbed, pod: &str) -> Result<SocketAddr> {
    tb.spawn(
        pod,
        "memcached",
        &[
            "-u", "root", "-p", "11211", "-l", "0.0.0.0", "-U", "0", "-t", "2",
        ],
    )?;
    let a = addr(tb, pod, 11211)?;
    wait_tcp(tb, pod, a, READY)?;
    Ok(a)
}

/// Starts nginx in `pod` on port 80 serving a body of `body_bytes` at every path but
/// `/status/500` (a 500); keep-alive on.
pub fn nginx(tb: &Testbed, pod: &str, body_bytes: usize) -> Result<SocketAddr> {
    let conf = nginx_conf(tb, pod, body_bytes, Duration::ZERO)?;
    let dir = conf.parent().unwrap_or(&conf).display().to_string();
    let c = conf.display().to_string();
    tb.spawn(pod, "nginx", &["-c", &c, "-e", &format!("{dir}/error.log")])?;
    let a = addr(tb, pod, 80)?;
    wait_tcp(tb, pod, a, READY)?;
    Ok(a)
}

/// Makes the nginx [`nginx`] started in `pod` answer every page only after `delay` (whole
/// milliseconds, the echo module's resolution), or at once again with a zero `delay`: a slow
/// application, not a slow machine (the echo module's sleep is a timer, so the worker keeps
/// serving other requests meanwhile). The running master reloads its configuration, so
/// connections and the listening socket stay.
pub fn nginx_set_delay(tb: &Testbed, pod: &str, body_bytes: usize, delay: Duration) -> Result<()> {
    if !delay.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(Error::Invalid(format!(
            "nginx delay {delay:?}: the echo module sleeps whole milliseconds"
        )));
    }
    let conf = nginx_conf(tb, pod, body_bytes, delay)?;
    // A configuration the master cannot load would leave it running the old one, silently.
    let c = conf.display().to_string();
    crate::exec::run("nginx", &["-t", "-q", "-c", &c])?;
    let pid_file = conf.with_file_name("nginx.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .map_err(io_err("reading nginx.pid"))?
        .trim()
        .parse()
        .map_err(|e| Error::Invalid(format!("{}: {e}", pid_file.display())))?;
    // SAFETY: plain kill syscall; SIGHUP makes the nginx master reload its configuration.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(Error::Invalid(format!(
            "signalling nginx master {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // New workers start within milliseconds; old ones finish their requests and close idle
    // keep-alive connections, whose clients reconnect to the new ones.
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Writes `pod`'s nginx configuration (a `delay` above zero answers every page after it)
/// and returns its path.
fn nginx_conf(tb: &Testbed, pod: &str, body_bytes: usize, delay: Duration) -> Result<PathBuf> {
    let dir = tb.path(&format!("nginx-{pod}"));
    let root = dir.join("www");
    std::fs::create_dir_all(&root).map_err(io_err("nginx dir"))?;
    std::fs::write(root.join("index.html"), vec![b'n'; body_bytes])
        .map_err(io_err("nginx body"))?;
    let d = dir.display();
    let (module, page) = if delay.is_zero() {
        (String::new(), "try_files $uri /index.html;".to_string())
    } else {
        (
            format!("load_module {NGINX_ECHO_MODULE};\n"),
            format!(
                "echo_sleep {:.3}; echo_location /index.html;",
                delay.as_secs_f64()
            ),
        )
    };
    let conf = format!(
        "{module}worker_processes 1;\ndaemon off;\nmaster_process on;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 80 backlog=1024;\n    root {root};\n    location /status/500 {{ return 500 \"error\\n\"; }}\n    location = /index.html {{ }}\n    location / {{ {page} }}\n  }}\n}}\n",
        root = root.display()
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(io_err("nginx conf"))?;
    Ok(conf_path)
}

/// Debian's nginx echo module (package libnginx-mod-http-echo, a dependency of nginx-light).
const NGINX_ECHO_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";

/// The Debian PostgreSQL server binaries (the newest installed major version).
fn postgres_bin(tool: &str) -> Result<String> {
    let root = std::path::Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(root)
        .map_err(io_err(
            "listing /usr/lib/postgresql (apt install postgresql)",
        ))?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    versions.sort_unstable();
    let v = versions
        .last()
        .ok_or_else(|| Error::Invalid("no PostgreSQL server installed".into()))?;
    Ok(format!("/usr/lib/postgresql/{v}/bin/{tool}"))
}

/// Starts PostgreSQL in `pod` on 5432: a fresh cluster in the testbed's scratch directory,
/// trusting connections from the testbed's addresses (nothing else can reach them).
pub fn postgres(tb: &Testbed, pod: &str) -> Result<SocketAddr> {
    let dir = tb.path(&format!("pg-{pod}"));
    std::fs::create_dir_all(&dir).map_err(io_err("postgres dir"))?;
    let d = dir.display().to_string();
    // initdb and the server refuse to run as root.
    crate::exec::run("chown", &["-R", "postgres:postgres", &d])?;
    let data = format!("{d}/data");
    crate::exec::run(
        "runuser",
        &[
            "-u",
            "postgres",
            "--",
            &postgres_bin("initdb")?,
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    )?;
    let hba = format!("{data}/pg_hba.conf");
    let mut conf = std::fs::read_to_string(&hba).map_err(io_err("reading pg_hba.conf"))?;
    conf.push_str("host all all 10.200.0.0/16 trust\n");
    std::fs::write(&hba, conf).map_err(io_err("writing pg_hba.conf"))?;
    let server = postgres_bin("postgres")?;
    tb.spawn(
        pod,
        "runuser",
        &[
            "-u",
            "postgres",
            "--",
            &server,
            "-D",
            &data,
            "-p",
            "5432",
            "-c",
            "listen_addresses=*",
            "-c",
            &format!("unix_socket_directories={d}"),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
    )?;
    let a = addr(tb, pod, 5432)?;
    wait_tcp(tb, pod, a, READY)?;
    Ok(a)
}

/// ndxe server options as command-line flags.
#[derive(Clone, Debug, Default)]
pub struct EchoServer {
    /// Per-request delay, µs.
    pub delay_us: u64,
    /// Error fraction.
    pub error_ratio: f64,
    /// Reset after N requests.
    pub abort_after: u64,
    /// Never read.
    pub stop_reading: bool,
    /// Delay before accept, ms.
    pub accept_delay_ms: u64,
    /// Backlog.
    pub backlog: i32,
}

/// Starts the ndxe server in `pod` on `port`; returns (address, pid).
pub fn echo(tb: &Testbed, pod: &str, port: u16, o: &EchoServer) -> Result<(SocketAddr, u32)> {
    let bin = workspace_binary("netdx-echo")?;
    let a = addr(tb, pod, port)?;
    let listen = format!("0.0.0.0:{port}");
    let args = [
        "server".to_string(),
        "--listen".into(),
        listen,
        "--delay-us".into(),
        o.delay_us.to_string(),
        "--error-ratio".into(),
        o.error_ratio.to_string(),
        "--abort-after".into(),
        o.abort_after.to_string(),
        "--accept-delay-ms".into(),
        o.accept_delay_ms.to_string(),
        "--backlog".into(),
        (if o.backlog > 0 { o.backlog } else { 1024 }).to_string(),
    ];
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if o.stop_reading {
        args.push("--stop-reading");
    }
    let pid = tb.spawn(pod, &bin.display().to_string(), &args)?;
    wait_tcp(tb, pod, a, READY)?;
    Ok((a, pid))
}

/// Starts the testbed DNS server (`netdx-dns`) in `pod` on UDP 53 with its failure knobs;
/// returns its address and pid. Ready once a query is answered (or, when it drops everything,
/// after a short wait).
pub fn dns(tb: &Testbed, pod: &str, o: &crate::dns::ServerOpts) -> Result<(SocketAddr, u32)> {
    let bin = workspace_binary("netdx-dns")?;
    let a = addr(tb, pod, 53)?;
    let args = [
        "server".to_string(),
        "--listen".into(),
        "0.0.0.0:53".into(),
        "--servfail".into(),
        o.servfail.to_string(),
        "--nxdomain".into(),
        o.nxdomain.to_string(),
        "--drop".into(),
        o.drop.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = tb.spawn(pod, &bin.display().to_string(), &args)?;
    // UDP has no connect to wait for: give the server a moment to bind.
    std::thread::sleep(Duration::from_millis(200));
    Ok((a, pid))
}

/// Stops a process started with [`Testbed::spawn`] (SIGKILL).
pub fn kill(pid: u32) {
    // SAFETY: plain kill syscall.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}
