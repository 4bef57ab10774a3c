//! Every manifest parses into its k8s-openapi type without losing a field (so typos fail),
//! the security-relevant settings are what the design promises, and the example custom
//! resources fit the CRD schema and the Rust types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use netdx_api::crd::{DiagnosisReport, NetworkObservation};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Every document of every YAML file under manifests/, with the file it came from.
fn documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&root().join("manifests"), &mut files);
    assert!(!files.is_empty(), "no manifests found");
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable manifest");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", f.display()));
            if !v.is_null() {
                docs.push((f.clone(), v));
            }
        }
    }
    docs
}

/// Drops nulls and empty objects the typed round trip cannot tell from absent fields.
fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, normalize(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        other => other,
    }
}

/// Parses into `T` and back; any field `T` does not know (a typo) makes the two differ.
fn typed<T: DeserializeOwned + serde::Serialize>(file: &Path, v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: not a valid {}: {e}",
            file.display(),
            std::any::type_name::<T>()
        )
    });
    let back = normalize(serde_json::to_value(&t).expect("serializes"));
    assert_eq!(
        back,
        normalize(v.clone()),
        "{}: fields lost in the round trip (typo?)",
        file.display()
    );
    t
}

fn kind(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn one<T: DeserializeOwned + serde::Serialize>(kind_name: &str, name: &str) -> T {
    let (f, v) = documents()
        .into_iter()
        .find(|(_, v)| {
            kind(v) == kind_name
                && v.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind_name} {name} in manifests/"));
    typed(&f, &v)
}

#[test]
fn every_manifest_is_a_known_well_formed_kind() {
    let mut seen = BTreeMap::<String, usize>::new();
    for (f, v) in documents() {
        match kind(&v) {
            "Kustomization" => {
                let dir = f.parent().expect("parent");
                for r in v
                    .get("resources")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let r = r.as_str().expect("resource path");
                    assert!(
                        dir.join(r).exists(),
                        "{}: resource {r} does not exist",
                        f.display()
                    );
                }
            }
            "Namespace" => drop(typed::<Namespace>(&f, &v)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(&f, &v)),
            "ClusterRole" => drop(typed::<ClusterRole>(&f, &v)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&f, &v)),
            "Role" => drop(typed::<Role>(&f, &v)),
            "RoleBinding" => drop(typed::<RoleBinding>(&f, &v)),
            "Deployment" => drop(typed::<Deployment>(&f, &v)),
            "DaemonSet" => drop(typed::<DaemonSet>(&f, &v)),
            "Service" => drop(typed::<Service>(&f, &v)),
            "NetworkObservation" => drop(typed::<NetworkObservation>(&f, &v)),
            "DiagnosisReport" => drop(typed::<DiagnosisReport>(&f, &v)),
            other => panic!(
                "{}: unexpected kind {other:?}; add it to this test",
                f.display()
            ),
        }
        *seen.entry(kind(&v).to_string()).or_default() += 1;
    }
    for k in [
        "Kustomization",
        "Namespace",
        "ClusterRole",
        "Deployment",
        "DaemonSet",
        "Service",
        "NetworkObservation",
    ] {
        assert!(seen.contains_key(k), "no {k} in manifests/: {seen:?}");
    }
}

fn assert_hardened(c: &Container) {
    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{}: securityContext", c.name));
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{}: allowPrivilegeEscalation",
        c.name
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{}: readOnlyRootFilesystem",
        c.name
    );
    assert!(!sc.privileged.unwrap_or(false), "{}: privileged", c.name);
    let drop = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    assert_eq!(drop, ["ALL"], "{}: drop ALL capabilities", c.name);
    let res = c
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("{}: resources", c.name));
    assert!(
        res.requests.is_some() && res.limits.is_some(),
        "{}: requests and limits",
        c.name
    );
}

#[test]
fn operator_deployment_is_locked_down() {
    let d: Deployment = one("Deployment", "netdx-operator");
    let pod = d.spec.template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("netdx-operator"));
    let psc = pod.security_context.expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    let c = &pod.containers[0];
    assert_hardened(c);
    assert!(
        c.security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.as_ref())
            .is_none()
    );
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(
        path(&c.readiness_probe).as_deref(),
        Some("/readyz"),
        "ready only while leading"
    );
    let env: BTreeSet<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(
        env.contains("POD_NAME") && env.contains("POD_NAMESPACE"),
        "lease identity and namespace"
    );
    assert!(pod.host_pid.is_none() && pod.host_network.is_none());
}

#[test]
fn node_probe_has_only_the_capabilities_it_needs() {
    let ds: DaemonSet = one("DaemonSet", "netdx-node-probe");
    let pod = ds.spec.template.spec.expect("pod spec");
    assert_eq!(pod.host_pid, Some(true), "hostPID to see pod processes");
    assert_ne!(pod.host_network, Some(true), "no host network");
    let probe = pod
        .containers
        .iter()
        .find(|c| c.name == "node-probe")
        .expect("node-probe container");
    assert_hardened(probe);
    let add: BTreeSet<String> = probe
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let want: BTreeSet<String> = [
        "BPF",
        "PERFMON",
        "NET_ADMIN",
        "SYS_RESOURCE",
        "SYS_PTRACE",
        "SYS_NICE",
    ]
    .map(String::from)
    .into();
    assert_eq!(add, want);
    assert!(
        !add.contains("SYS_ADMIN"),
        "no SYS_ADMIN: the probe never calls setns"
    );
    let mounts: BTreeMap<String, bool> = probe
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), m.read_only.unwrap_or(false)))
        .collect();
    assert_eq!(
        mounts.get("/host/sys/fs/cgroup"),
        Some(&true),
        "cgroup tree read-only"
    );
    assert_eq!(mounts.get("/sys/kernel/btf"), Some(&true), "BTF read-only");
    let host_paths: BTreeSet<String> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    assert_eq!(
        host_paths,
        ["/sys/fs/cgroup", "/sys/kernel/btf"]
            .map(String::from)
            .into()
    );
    for c in &pod.containers {
        assert_hardened(c);
    }
}

#[test]
fn node_probe_fetches_its_targets_from_the_operator_service() {
    let ds: DaemonSet = one("DaemonSet", "netdx-node-probe");
    let pod = ds.spec.template.spec.expect("pod spec");
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["node-probe"], "no targets-sync sidecar");
    let probe = &pod.containers[0];
    let args: BTreeMap<&str, &str> = probe
        .args
        .iter()
        .flatten()
        .filter_map(|a| a.strip_prefix("--")?.split_once('='))
        .collect();
    let svc: Service = one("Service", "netdx-operator");
    let spec = svc.spec.expect("service spec");
    let port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .expect("operator http port")
        .port;
    let operator = format!("http://netdx-operator.netdx-system.svc:{port}");
    assert_eq!(args.get("targets-url"), Some(&operator.as_str()));
    assert_eq!(
        args.get("push-to"),
        Some(&operator.as_str()),
        "windows go to the same operator"
    );
    // The cache file lives on the one writable mount (the root filesystem is read-only).
    let cache = args.get("targets").expect("--targets names the cache");
    let writable: Vec<&str> = probe
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| !m.read_only.unwrap_or(false))
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(writable.len(), 1, "one writable mount: {writable:?}");
    assert!(
        cache.starts_with(&format!("{}/", writable[0])),
        "{cache} on {writable:?}"
    );
    let cache_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            probe
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == v.name && m.mount_path == writable[0])
        })
        .expect("cache volume");
    assert!(cache_volume.empty_dir.is_some(), "cache on an emptyDir");
    let env: BTreeSet<&str> = probe
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains("NODE_NAME"),
        "the node whose targets are fetched"
    );
}

#[test]
fn operator_rbac_is_least_privilege() {
    let role: ClusterRole = one("ClusterRole", "netdx-operator");
    let mut grants = BTreeSet::new();
    for rule in role.rules.into_iter().flatten() {
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    assert!(g != "*" && r != "*" && v != "*", "no wildcards");
                    grants.insert(format!("{g}/{r}:{v}"));
                }
            }
        }
    }
    let want: BTreeSet<String> = [
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/nodes:get",
        "/nodes:list",
        "/nodes:watch",
        "/namespaces:get",
        "/namespaces:list",
        "/namespaces:watch",
        "/services:list",
        "/services:watch",
        "discovery.k8s.io/endpointslices:list",
        "discovery.k8s.io/endpointslices:watch",
        "netdx.io/networkobservations:get",
        "netdx.io/networkobservations:list",
        "netdx.io/networkobservations:watch",
        "netdx.io/networkobservations:patch",
        "netdx.io/networkobservations/status:get",
        "netdx.io/networkobservations/status:patch",
        "netdx.io/diagnosisreports:get",
        "netdx.io/diagnosisreports:list",
        "netdx.io/diagnosisreports:watch",
        "netdx.io/diagnosisreports:create",
        "netdx.io/diagnosisreports:patch",
        "netdx.io/diagnosisreports:delete",
        "netdx.io/diagnosisreports/status:get",
        "netdx.io/diagnosisreports/status:patch",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
        "authentication.k8s.io/tokenreviews:create",
    ]
    .map(String::from)
    .into();
    assert_eq!(grants, want);

    let lease: Role = one("Role", "netdx-operator-leader-election");
    let rules = lease.rules.unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["leases".to_string()][..])
    );
    // The node-probe talks to no API: nothing may be bound to its ServiceAccount.
    for (f, v) in documents() {
        if kind(&v).ends_with("Binding") {
            let text = v.to_string();
            assert!(
                !text.contains("netdx-node-probe"),
                "{}: node-probe must have no RBAC",
                f.display()
            );
        }
    }
}

/// A small structural validator: types, required fields, unknown fields, enums and ranges.
/// CEL rules and patterns are the API server's job; the Rust parse below covers the window.
fn validate(schema: &JSONSchemaProps, v: &Value, path: &str, errors: &mut Vec<String>) {
    let ty = schema.type_.as_deref();
    let ok = match (ty, v) {
        (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (None, _) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        (_, Value::Null) => schema.nullable == Some(true),
        _ => false,
    };
    if !ok {
        errors.push(format!("{path}: expected {ty:?}, got {v}"));
        return;
    }
    if let (Some(e), false) = (&schema.enum_, v.is_null())
        && !e.iter().any(|x| x.0 == *v)
    {
        errors.push(format!("{path}: {v} not one of the allowed values"));
    }
    if let Some(x) = v.as_f64()
        && (schema.minimum.is_some_and(|m| x < m) || schema.maximum.is_some_and(|m| x > m))
    {
        errors.push(format!("{path}: {x} out of range"));
    }
    match v {
        Value::Object(m) => {
            for r in schema.required.iter().flatten() {
                if !m.contains_key(r) {
                    errors.push(format!("{path}.{r}: required"));
                }
            }
            if let Some(props) = &schema.properties {
                for (k, val) in m {
                    match props.get(k) {
                        Some(s) => validate(s, val, &format!("{path}.{k}"), errors),
                        None if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {}
                        None => errors.push(format!("{path}.{k}: unknown field")),
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
                for (i, val) in a.iter().enumerate() {
                    validate(items, val, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn crd_schema(name: &str) -> JSONSchemaProps {
    let text = std::fs::read_to_string(root().join("crds/crds.yaml")).expect("crds/crds.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| CustomResourceDefinition::deserialize(d).expect("CRD"))
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .and_then(|c| c.spec.versions.into_iter().next())
        .and_then(|v| v.schema)
        .and_then(|s| s.open_api_v3_schema)
        .unwrap_or_else(|| panic!("{name} schema"))
}

fn validate_examples(kind_name: &str, crd: &str) -> Vec<Value> {
    let schema = crd_schema(crd);
    let examples: Vec<Value> = documents()
        .into_iter()
        .filter(|(_, v)| kind(v) == kind_name)
        .map(|(_, v)| v)
        .collect();
    assert!(!examples.is_empty(), "no example {kind_name}");
    for ex in &examples {
        let mut errors = Vec::new();
        // apiVersion, kind and metadata are checked by the API server itself, not by the CRD schema.
        let mut body = ex.clone();
        if let Some(m) = body.as_object_mut() {
            for k in ["apiVersion", "kind", "metadata"] {
                m.remove(k);
            }
        }
        validate(&schema, &body, kind_name, &mut errors);
        assert!(
            errors.is_empty(),
            "example {kind_name} does not fit the CRD: {errors:#?}"
        );
    }
    examples
}

#[test]
fn example_network_observation_fits_the_crd_and_the_types() {
    for ex in validate_examples("NetworkObservation", "networkobservations.netdx.io") {
        let obs: NetworkObservation =
            serde_json::from_value(ex).expect("deserializes into NetworkObservation");
        assert!(obs.metadata.namespace.is_some(), "namespaced");
        let sel = &obs.spec.pod_selector;
        assert!(
            sel.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                || sel
                    .match_expressions
                    .as_ref()
                    .is_some_and(|e| !e.is_empty()),
            "podSelector must not be empty"
        );
        obs.spec.window_duration().expect("window within 1s..10m");
    }
}

#[test]
fn example_diagnosis_report_fits_the_crd() {
    for ex in validate_examples("DiagnosisReport", "diagnosisreports.netdx.io") {
        let r: DiagnosisReport =
            serde_json::from_value(ex).expect("deserializes into DiagnosisReport");
        assert!(r.spec.target.observation.is_some() != r.spec.target.pod_selector.is_some());
    }
}

#[test]
fn the_validator_catches_bad_examples() {
    let schema = crd_schema("networkobservations.netdx.io");
    let bad = serde_json::json!({
        "spec": {"podSelectr": {}, "reportPolicy": {"mode": "Sometimes", "retention": 0}}
    });
    let mut errors = Vec::new();
    validate(&schema, &bad, "x", &mut errors);
    let text = errors.join("\n");
    for expect in [
        "podSelector: required",
        "podSelectr: unknown field",
        "not one of the allowed values",
        "out of range",
    ] {
        assert!(text.contains(expect), "missing {expect:?} in {text}");
    }
}

/// Renders the kustomizations with kubectl when it is installed (it is not needed otherwise).
#[test]
fn kustomize_renders_when_kubectl_is_available() {
    let Ok(out) = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
    else {
        eprintln!("skipping: kubectl not installed");
        return;
    };
    if !out.status.success() {
        eprintln!("skipping: kubectl not usable");
        return;
    }
    for dir in ["manifests/base", "manifests/overlays/example"] {
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(root().join(dir))
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("kind: CustomResourceDefinition") && text.contains("kind: DaemonSet"),
            "{dir} renders everything"
        );
    }
}
