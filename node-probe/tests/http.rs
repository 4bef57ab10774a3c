//! The probe's HTTP API over a real socket: /healthz, /metrics (Prometheus text), /v1/windows.
mod common;

use std::io::{Read, Write};

use common::Harness;
use netdx_api::windows::WindowReport;
use netdx_testbed::{servers, topology::PodSpec, workloads};
use node_probe::http::router;

/// Plain HTTP/1.0 request on loopback; returns (status, body).
fn request(addr: std::net::SocketAddr, line: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{line} HTTP/1.0\r\nHost: probe\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn api_serves_health_metrics_and_windows() {
    let h = Harness::new(1, &[PodSpec::new("app", 0), PodSpec::new("backend", 0)]);
    let (server, _) = servers::echo(&h.tb, "backend", 7000, &Default::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(h.agents[0].shared.clone());
    rt.spawn(async move { axum::serve(listener, app).await });

    assert_eq!(request(addr, "GET /healthz"), (200, "ok".to_string()));
    h.close_windows();
    workloads::echo_client(
        &h.tb,
        "app",
        server,
        &workloads::EchoClient {
            requests: 200,
            ..Default::default()
        },
    )
    .unwrap();
    let w = h.close_windows().remove(0);

    let (status, body) = request(addr, &format!("GET /v1/windows?since={}", w.seq));
    assert_eq!(status, 200);
    let windows: Vec<WindowReport> = serde_json::from_str(&body).expect("JSON windows");
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].seq, w.seq);
    let e = windows[0]
        .edges
        .iter()
        .find(|e| e.key.port == 7000)
        .expect("edge");
    assert_eq!(e.client.as_ref().map(|c| c.exchanges), Some(200));
    assert!(
        e.client.as_ref().unwrap().latency.sketch.is_some(),
        "sketch travels for merging"
    );

    let (status, metrics) = request(addr, "GET /metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("netdx_edge_exchanges_total{client=\"default/app\",server=\"default/backend\",port=\"7000\",side=\"client\"}"), "{metrics}");
    assert!(
        metrics.contains("netdx_probe_pipeline_events_total{name=\"kernel_ringbuf_full\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("netdx_probe_drain_realtime 1"),
        "the ring reader got SCHED_FIFO: {metrics}"
    );
    assert!(
        metrics.contains("netdx_probe_payload_capture_pods{name=\"Both\"} 2")
            && metrics.contains("netdx_probe_payload_capture_pods{name=\"Off\"} 0")
            && metrics.contains("netdx_probe_payload_attach_failures_total 0"),
        "both watched pods have both payload programs: {metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"));

    // Bad input gets a clear 4xx, not a crash.
    assert_eq!(request(addr, "GET /v1/windows?since=notanumber").0, 400);
    assert_eq!(request(addr, "GET /nope").0, 404);
}
