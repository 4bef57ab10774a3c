#!/usr/bin/env bash
# End-to-end on a real kind cluster: build and load the images, apply the CRDs and manifests,
# run redis and a client under a NetworkObservation, inject a fault (refused connections to
# redis), and wait for a DiagnosisReport naming connection_refused on the redis pod.
#
# Needs docker (with a running engine), kind and kubectl. Where they are missing, the suite
# says so and exits 0 as skipped: this machine kind has no Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "kind-tests: SKIPPED: $*"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
command -v docker >/dev/null || skip "docker not installed"
docker info >/dev/null 2>&1 || skip "no Docker engine running (docker info failed)"
command -v kind >/dev/null || skip "kind not installed (https://kind.sigs.k8s.io)"
command -v kubectl >/dev/null || skip "kubectl not installed"

CLUSTER=${NETDX_KIND_CLUSTER:-netdx-e2e}
cleanup() { kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --wait 120s
docker build -t netdx-operator:e2e -f operator/Dockerfile .
docker build -t netdx-node-probe:e2e -f node-probe/Dockerfile .
kind load docker-image --name "$CLUSTER" netdx-operator:e2e netdx-node-probe:e2e

kubectl apply -f crds/crds.yaml
kubectl kustomize manifests/base \
  | sed -e 's|image: netdx-operator$|image: netdx-operator:e2e|' -e 's|image: netdx-node-probe$|image: netdx-node-probe:e2e|' \
  | kubectl apply -f -
kubectl -n netdx-system rollout status deploy/netdx-operator --timeout=180s
kubectl -n netdx-system rollout status ds/netdx-node-probe --timeout=180s

kubectl create namespace e2e
kubectl -n e2e run redis --image=redis:7 --labels=app=redis --port=6379
kubectl -n e2e expose pod redis --port=6379
kubectl -n e2e run client --image=redis:7 --labels=app=client --command -- \
  sh -c 'while true; do redis-benchmark -h redis -n 2000 -c 2 -t get,set -q >/dev/null 2>&1; sleep 1; done'
kubectl -n e2e wait --for=condition=Ready pod/redis pod/client --timeout=180s
kubectl apply -f - <<YAML
apiVersion: netdx.io/v1alpha1
kind: NetworkObservation
metadata: {name: e2e, namespace: e2e}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [redis, client]}]}
  window: 10s
  reportPolicy: {mode: OnAnomaly, retention: 10}
YAML
kubectl -n e2e wait --for=condition=Ready netobs/e2e --timeout=120s
sleep 60 # healthy baseline windows

# The fault: redis refuses new connections (the client reconnects every second).
kubectl -n e2e exec redis -- sh -c 'redis-cli CONFIG SET maxclients 1 >/dev/null'
deadline=$((SECONDS + 300))
until kubectl -n e2e get dxr -o jsonpath='{range .items[*]}{.status.findings[*].rootCause}{" "}{.status.findings[*].instance.name}{"\n"}{end}' \
    | grep -Eq '(ConnectionRefused|ConnLimitExhausted|ServerReset) e2e/redis'; do
  [ $SECONDS -lt $deadline ] || { kubectl -n e2e get dxr -o yaml; echo "0 passed, 1 failed"; exit 1; }
  sleep 10
done
kubectl -n e2e get dxr
echo "1 passed, 0 failed"
