//! Joining through Service VIPs. A client that connects to a Service's ClusterIP keeps seeing
//! the VIP on its socket (kube-proxy rewrites the destination after the socket), while the
//! backend's socket sees the client's IP and its own. So the client's view is filed under
//! `client -> VIP:port` and the server's under `client -> pod:targetPort`, and they would never
//! join. This module maps a VIP:port to the Service's ready backends (EndpointSlices,
//! discovery.k8s.io/v1) and rewrites the reports of a window before they are joined:
//!
//! - one backend: the client's edge is renamed to that pod and port, and joins its server
//!   view like a direct call;
//! - several (or no) backends: the client cannot tell which backend served which request,
//!   so its measurements stand for the Service as a unit. The server views of every backend
//!   for that client are folded into the same `client -> VIP:port` edge (together they saw
//!   the same requests the client saw), and findings that blame the VIP name the Service.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use netdx_api::CompactString;
use netdx_api::targets::PodRef;
use netdx_api::windows::{Endpoint, WindowReport};
use netdx_diagnosis::classes::InstanceKind;
use netdx_diagnosis::join::{EdgeId, JoinedWindow};
use netdx_diagnosis::localize::Instance;
use tracing::warn;

/// Label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One ready backend of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    /// Pod IP.
    pub ip: String,
    /// The port the pod listens on (the Service's target port, resolved).
    pub port: u16,
    /// The pod, when the EndpointSlice names it.
    pub pod: Option<PodRef>,
}

/// What a VIP:port stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceBackends {
    /// The Service.
    pub service: ServiceRef,
    /// Its ready backends for that port, sorted.
    pub backends: Vec<Backend>,
}

/// (VIP, port, lowercase protocol) as edges carry them.
type VipKey = (String, u16, String);

/// VIP:port -> backends, built from Services and their EndpointSlices.
#[derive(Clone, Debug, Default)]
pub struct ServiceIndex {
    by_vip: HashMap<VipKey, ServiceBackends>,
}

fn proto(p: Option<&str>) -> String {
    // The API defaults an unset protocol to TCP.
    p.unwrap_or("TCP").to_ascii_lowercase()
}

impl ServiceIndex {
    /// Indexes every ClusterIP port of `services` with the ready endpoints of `slices`.
    ///
    /// Headless Services (no VIP) and FQDN slices are skipped; an endpoint counts as ready
    /// unless its `ready` condition is false (the API's own reading of an unset condition).
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        // (service, port name, protocol) -> backends.
        let mut backends: HashMap<(ServiceRef, String, String), BTreeSet<Backend>> = HashMap::new();
        for slice in slices {
            if slice.address_type == "FQDN" {
                continue;
            }
            let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
                continue;
            };
            let service = ServiceRef {
                namespace: slice.namespace().unwrap_or_default(),
                name: service.clone(),
            };
            for port in slice.ports.iter().flatten() {
                let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                let key = (
                    service.clone(),
                    port.name.clone().unwrap_or_default(),
                    proto(port.protocol.as_deref()),
                );
                let ready = slice
                    .endpoints
                    .iter()
                    .flatten()
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
                for e in ready {
                    // Addresses of one endpoint are fungible; consumers may use the first.
                    let Some(ip) = e.addresses.first() else {
                        continue;
                    };
                    let pod = e
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| {
                            Some(PodRef {
                                namespace: r
                                    .namespace
                                    .as_deref()
                                    .unwrap_or(&service.namespace)
                                    .into(),
                                name: r.name.as_deref()?.into(),
                            })
                        });
                    backends.entry(key.clone()).or_default().insert(Backend {
                        ip: ip.clone(),
                        port: number,
                        pod,
                    });
                }
            }
        }
        let mut by_vip = HashMap::new();
        for svc in services {
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let service = ServiceRef {
                namespace: svc.namespace().unwrap_or_default(),
                name: svc.name_any(),
            };
            let vips: BTreeSet<&String> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter(|ip| !ip.is_empty() && ip.as_str() != "None")
                .collect();
            for port in spec.ports.iter().flatten() {
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                let protocol = proto(port.protocol.as_deref());
                let key = (
                    service.clone(),
                    port.name.clone().unwrap_or_default(),
                    protocol.clone(),
                );
                let entry = ServiceBackends {
                    service: service.clone(),
                    backends: backends
                        .get(&key)
                        .map(|b| b.iter().cloned().collect())
                        .unwrap_or_default(),
                };
                for vip in &vips {
                    by_vip.insert(((*vip).clone(), number, protocol.clone()), entry.clone());
                }
            }
        }
        ServiceIndex { by_vip }
    }

    /// The Service behind `ip:port` over `proto` ("tcp"/"udp"), if `ip` is a ClusterIP.
    pub fn resolve(&self, ip: &str, port: u16, proto: &str) -> Option<&ServiceBackends> {
        self.by_vip.get(&(ip.to_string(), port, proto.to_string()))
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_vip.is_empty()
    }
}

/// A `client -> VIP:port` edge that stands for a Service with other than one backend.
#[derive(Clone, Debug)]
struct Unit {
    service: ServiceRef,
    backends: Vec<Backend>,
    /// Nodes whose server views were folded in.
    server_nodes: BTreeSet<String>,
}

/// What [`route_through_services`] did to a window's reports, to finish the job after the
/// join and the diagnosis.
#[derive(Debug, Default)]
pub struct ServiceRouting {
    units: BTreeMap<EdgeId, Unit>,
}

impl ServiceRouting {
    /// Whether no client edge stands for a Service.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// A Service unit's server side runs on every node of its backends, so it is only placed
    /// on a node when all the folded server views came from that one node.
    pub fn place(&self, joined: &mut JoinedWindow) {
        for e in &mut joined.edges {
            if let Some(u) = self.units.get(&e.id()) {
                e.server_node = match u.server_nodes.len() {
                    1 => u.server_nodes.first().map(|n| n.as_str().into()),
                    _ => None,
                };
            }
        }
    }

    /// Backend pods behind the edge `id`, when it stands for a Service.
    pub fn backend_pods(&self, id: &EdgeId) -> impl Iterator<Item = &PodRef> {
        self.units
            .get(id)
            .into_iter()
            .flat_map(|u| u.backends.iter().filter_map(|b| b.pod.as_ref()))
    }

    /// An instance blamed or suspected that is a unit's VIP (as a server "pod", or as
    /// `VIP:port`) is named as the Service instead.
    pub fn name_services(&self, instance: &mut Instance) {
        let blamed = &instance.name;
        let service = self.units.iter().find_map(|(id, u)| {
            let hit = match instance.kind {
                InstanceKind::Pod => *blamed == id.server_ip,
                InstanceKind::Service => *blamed == format!("{}:{}", id.server_ip, id.port),
                _ => false,
            };
            hit.then_some(&u.service)
        });
        if let Some(s) = service {
            instance.kind = InstanceKind::Service;
            instance.name = s.to_string();
        }
    }
}

/// Rewrites client edges to Service VIPs (see the module docs) so that they join their
/// backends' server views; returns what the join and the findings still need to know.
pub fn route_through_services(
    reports: &mut [WindowReport],
    index: &ServiceIndex,
) -> ServiceRouting {
    let mut routing = ServiceRouting::default();
    if index.is_empty() {
        return routing;
    }
    for r in reports.iter_mut() {
        for e in r.edges.iter_mut().filter(|e| e.client.is_some()) {
            // A known pod's IP is never a VIP.
            if e.key.server.pod.is_some() {
                continue;
            }
            let Some(svc) = index.resolve(&e.key.server.ip, e.key.port, &e.key.proto) else {
                continue;
            };
            if let [only] = svc.backends.as_slice() {
                e.key.server = Endpoint {
                    pod: only.pod.clone(),
                    ip: only.ip.as_str().into(),
                };
                e.key.port = only.port;
            } else {
                routing
                    .units
                    .entry(EdgeId::of(&e.key))
                    .or_insert_with(|| Unit {
                        service: svc.service.clone(),
                        backends: svc.backends.clone(),
                        server_nodes: BTreeSet::new(),
                    });
            }
        }
    }
    if routing.units.is_empty() {
        return routing;
    }
    // (client IP, backend IP, backend port, proto) -> the unit edge it belongs to.
    let mut via: HashMap<(CompactString, CompactString, u16, CompactString), EdgeId> =
        HashMap::new();
    for (id, u) in &routing.units {
        for b in &u.backends {
            let key = (
                id.client_ip.clone(),
                b.ip.as_str().into(),
                b.port,
                id.proto.clone(),
            );
            match via.entry(key) {
                Entry::Vacant(v) => {
                    v.insert(id.clone());
                }
                // One client reaching one pod:port through two Services: the server cannot
                // tell them apart, so the first keeps the server view.
                Entry::Occupied(o) => {
                    warn!(first = ?o.get(), second = ?id, "backend shared by two Services called by one client");
                }
            }
        }
    }
    for r in reports.iter_mut() {
        // Only pure server views move: an edge that also has a client view is a direct call
        // from a client on the same node, and its L4 counters cannot be split.
        for e in r
            .edges
            .iter_mut()
            .filter(|e| e.server.is_some() && e.client.is_none())
        {
            let key = (
                e.key.client.ip.clone(),
                e.key.server.ip.clone(),
                e.key.port,
                e.key.proto.clone(),
            );
            let Some(id) = via.get(&key) else { continue };
            e.key.server = Endpoint {
                pod: None,
                ip: id.server_ip.clone(),
            };
            e.key.port = id.port;
            if let Some(u) = routing.units.get_mut(id) {
                u.server_nodes.insert(r.node.clone());
            }
        }
    }
    routing
}

/// Logs a failed watch call (the watcher retries with a backoff by itself).
async fn log_watch_error<T>(kind: &'static str, r: Result<T, watcher::Error>) {
    if let Err(e) = r {
        warn!(kind, error = %e, "watching for Service VIP resolution");
    }
}

/// Live Services and EndpointSlices, kept by reflectors (list/watch only).
#[derive(Clone)]
pub struct ServiceWatch {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

impl ServiceWatch {
    /// Readers over the two caches, and the future that fills them (run it on the leader).
    pub fn new(client: Client) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let (services, svc_writer) = reflector::store::<Service>();
        let (slices, slice_writer) = reflector::store::<EndpointSlice>();
        let svc_stream = watcher(Api::<Service>::all(client.clone()), Default::default())
            .default_backoff()
            // Only the spec and the labels are read; managed fields are most of an object.
            .modify(|s| s.managed_fields_mut().clear())
            .reflect(svc_writer);
        let slice_stream = watcher(Api::<EndpointSlice>::all(client), Default::default())
            .default_backoff()
            .modify(|s| s.managed_fields_mut().clear())
            .reflect(slice_writer);
        let run = async move {
            tokio::join!(
                svc_stream.for_each(|r| log_watch_error("services", r)),
                slice_stream.for_each(|r| log_watch_error("endpointslices", r)),
            );
        };
        (ServiceWatch { services, slices }, run)
    }

    /// Readers over caches filled by hand (tests).
    pub fn from_stores(services: Store<Service>, slices: Store<EndpointSlice>) -> Self {
        ServiceWatch { services, slices }
    }

    /// The current VIP index.
    pub fn index(&self) -> ServiceIndex {
        let services = self.services.state();
        let slices = self.slices.state();
        ServiceIndex::build(
            services.iter().map(AsRef::as_ref),
            slices.iter().map(AsRef::as_ref),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netdx_api::windows::{EdgeKey, EdgeWindow, L4Stats};
    use serde_json::json;

    /// Service `default/web` on 10.96.0.10:80 (port "http") and `default/db` (headless).
    pub(crate) fn services() -> Vec<Service> {
        serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                      "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                {"name": "dns", "port": 53, "protocol": "UDP"}]}},
            {"metadata": {"name": "db", "namespace": "default"},
             "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}
        ]))
        .expect("services")
    }

    /// One EndpointSlice of `default/web` whose port "http" is 8080 on the given
    /// (pod, ip, ready) endpoints.
    pub(crate) fn slice(endpoints: &[(&str, &str, bool)]) -> EndpointSlice {
        let eps: Vec<_> = endpoints
            .iter()
            .map(|(pod, ip, ready)| {
                json!({"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node-2",
                       "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "web-abcde", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps
        }))
        .expect("slice")
    }

    /// The index of [`services`] with [`slice`] of these endpoints.
    pub(crate) fn index(endpoints: &[(&str, &str, bool)]) -> ServiceIndex {
        ServiceIndex::build(&services(), &[slice(endpoints)])
    }

    fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn vips_resolve_to_ready_backends_of_the_same_port() {
        let idx = index(&[
            ("web-2", "10.0.2.7", true),
            ("web-3", "10.0.3.9", true),
            ("web-4", "10.0.4.4", false),
        ]);
        let web = idx.resolve("10.96.0.10", 80, "tcp").expect("a VIP");
        assert_eq!(web.service.to_string(), "default/web");
        assert_eq!(
            web.backends,
            vec![
                Backend {
                    ip: "10.0.2.7".into(),
                    port: 8080,
                    pod: Some(pod("web-2"))
                },
                Backend {
                    ip: "10.0.3.9".into(),
                    port: 8080,
                    pod: Some(pod("web-3"))
                },
            ],
            "not-ready endpoints are left out"
        );
        assert!(
            idx.resolve("fd00::10", 80, "tcp").is_some(),
            "every cluster IP"
        );
        assert!(idx.resolve("10.96.0.10", 80, "udp").is_none(), "protocol");
        assert!(idx.resolve("10.96.0.10", 81, "tcp").is_none(), "port");
        assert!(idx.resolve("10.0.2.7", 8080, "tcp").is_none(), "a pod IP");
        let dns = idx.resolve("10.96.0.10", 53, "udp").expect("second port");
        assert!(dns.backends.is_empty(), "the slice has no dns port");
        assert!(
            ServiceIndex::build(&services(), &[])
                .resolve("10.96.0.10", 80, "tcp")
                .is_some_and(|s| s.backends.is_empty()),
            "a Service without slices has no backends"
        );
        assert!(
            idx.by_vip.keys().all(|(ip, _, _)| ip != "None"),
            "headless Services have no VIP"
        );
    }

    #[test]
    fn unnamed_ports_and_slices_of_other_services_do_not_mix() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "cache", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 6379, "targetPort": 6379}]}
        }))
        .expect("service");
        let mine: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "cache-1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "cache"}},
            "addressType": "IPv4",
            "ports": [{"port": 6379}],
            "endpoints": [{"addresses": ["10.0.5.5"],
                           "targetRef": {"kind": "Pod", "name": "cache-0"}}]
        }))
        .expect("slice");
        // Same service name in another namespace.
        let mut theirs = mine.clone();
        theirs.metadata.namespace = Some("other".into());
        if let Some(e) = theirs.endpoints.as_mut().and_then(|e| e.first_mut()) {
            e.addresses = vec!["10.0.6.6".into()];
        }
        let idx = ServiceIndex::build(&[svc], &[mine, theirs]);
        let cache = idx.resolve("10.96.0.20", 6379, "tcp").expect("a VIP");
        assert_eq!(cache.backends.len(), 1);
        assert_eq!(cache.backends[0].ip, "10.0.5.5");
        assert_eq!(
            cache.backends[0].pod,
            Some(PodRef {
                namespace: "shop".into(),
                name: "cache-0".into()
            }),
            "a targetRef without namespace is in the slice's"
        );
    }

    fn edge(client: Option<&str>, server: (&str, u16), client_side: bool) -> EdgeWindow {
        EdgeWindow {
            key: EdgeKey {
                client: Endpoint {
                    pod: client.map(pod),
                    ip: "10.0.1.5".into(),
                },
                server: Endpoint {
                    pod: None,
                    ip: server.0.into(),
                },
                port: server.1,
                proto: "tcp".into(),
            },
            client: client_side.then(Box::default),
            server: (!client_side).then(Box::default),
            l4: L4Stats::default(),
        }
    }

    fn report(node: &str, edges: Vec<EdgeWindow>) -> WindowReport {
        WindowReport {
            node: node.into(),
            seq: 1,
            start_unix_ms: 0,
            end_unix_ms: 10_000,
            edges,
            pods: vec![],
            node_drops: BTreeMap::new(),
            health: Default::default(),
        }
    }

    #[test]
    fn one_backend_renames_the_client_edge_to_the_pod() {
        let mut reports = vec![report(
            "node-1",
            vec![edge(Some("web-1"), ("10.96.0.10", 80), true)],
        )];
        let routing = route_through_services(&mut reports, &index(&[("web-2", "10.0.2.7", true)]));
        assert!(routing.is_empty(), "no unit needed");
        let key = &reports[0].edges[0].key;
        assert_eq!(key.server.pod, Some(pod("web-2")));
        assert_eq!((key.server.ip.as_str(), key.port), ("10.0.2.7", 8080));
    }

    #[test]
    fn several_backends_fold_their_server_views_into_the_service_edge() {
        let mut reports = vec![
            report(
                "node-1",
                vec![edge(Some("web-1"), ("10.96.0.10", 80), true)],
            ),
            report(
                "node-2",
                vec![
                    edge(None, ("10.0.2.7", 8080), false),
                    // Another port of the same pod is not the Service's.
                    edge(None, ("10.0.2.7", 9090), false),
                ],
            ),
            report("node-3", vec![edge(None, ("10.0.3.9", 8080), false)]),
        ];
        let idx = index(&[("web-2", "10.0.2.7", true), ("web-3", "10.0.3.9", true)]);
        let routing = route_through_services(&mut reports, &idx);
        assert!(!routing.is_empty());
        let to = |r: &WindowReport, i: usize| {
            let k = &r.edges[i].key;
            (k.server.ip.to_string(), k.port)
        };
        assert_eq!(to(&reports[0], 0), ("10.96.0.10".to_string(), 80));
        assert_eq!(to(&reports[1], 0), ("10.96.0.10".to_string(), 80));
        assert_eq!(to(&reports[1], 1), ("10.0.2.7".to_string(), 9090));
        assert_eq!(to(&reports[2], 0), ("10.96.0.10".to_string(), 80));
        let mut joined = netdx_diagnosis::join::join(&reports);
        routing.place(&mut joined);
        let unit = joined
            .edges
            .iter()
            .find(|e| e.key.server.ip == "10.96.0.10")
            .expect("unit edge");
        assert!(unit.client.is_some() && unit.server.is_some(), "both views");
        assert_eq!(unit.client_node.as_deref(), Some("node-1"));
        assert_eq!(unit.server_node, None, "backends on two nodes");
        let pods: BTreeSet<&PodRef> = routing.backend_pods(&unit.id()).collect();
        assert_eq!(pods, [pod("web-2"), pod("web-3")].iter().collect());

        let mut vip = Instance {
            kind: InstanceKind::Pod,
            name: "10.96.0.10".into(),
        };
        routing.name_services(&mut vip);
        assert_eq!(
            (vip.kind, vip.name.as_str()),
            (InstanceKind::Service, "default/web")
        );
        let mut other = Instance {
            kind: InstanceKind::Pod,
            name: "default/web-1".into(),
        };
        routing.name_services(&mut other);
        assert_eq!(other.kind, InstanceKind::Pod, "untouched");
    }

    #[test]
    fn unknown_addresses_and_known_pods_are_left_alone() {
        let mut reports = vec![report(
            "node-1",
            vec![
                edge(Some("web-1"), ("93.184.216.34", 443), true),
                edge(Some("web-1"), ("10.96.0.10", 80), true),
            ],
        )];
        reports[0].edges[1].key.server.pod = Some(pod("web-2"));
        let before: Vec<EdgeKey> = reports[0].edges.iter().map(|e| e.key.clone()).collect();
        let routing = route_through_services(&mut reports, &index(&[("web-2", "10.0.2.7", true)]));
        assert!(routing.is_empty());
        let after: Vec<EdgeKey> = reports[0].edges.iter().map(|e| e.key.clone()).collect();
        assert_eq!(before, after);
    }
}
