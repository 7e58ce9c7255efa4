#!/usr/bin/env bash
# Run the e2e suite on a kind cluster: create it (unless it exists), build the image with the
# normal base, load it into the cluster, run `python -m pytest e2e`. Used by `make e2e-kind`
# and the e2e-kind CI workflow. Needs docker, kind and kubectl on PATH.
#   KIND_CLUSTER (default mas-e2e)  KEEP_CLUSTER=1 keeps the cluster afterwards
#   KIND_NODE_IMAGE (optional, e.g. kindest/node:v1.29.2)  IMAGE (default mas:0.1.0)
set -euo pipefail
cd "$(dirname "$0")/.."
KIND_CLUSTER=${KIND_CLUSTER:-mas-e2e}
IMAGE=${IMAGE:-mas:0.1.0}
KUBECONFIG_FILE=${KUBECONFIG_FILE:-$(mktemp -t mas-e2e-kubeconfig.XXXXXX)}

created=0
if ! kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  kind create cluster --name "$KIND_CLUSTER" --wait 120s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
  created=1
fi
cleanup() {
  if [ "$created" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$KIND_CLUSTER"; fi
}
trap cleanup EXIT
kind get kubeconfig --name "$KIND_CLUSTER" > "$KUBECONFIG_FILE"

docker build -t "$IMAGE" .
MAS_E2E_KUBECONFIG="$KUBECONFIG_FILE" MAS_E2E_KIND_CLUSTER="$KIND_CLUSTER" MAS_E2E_IMAGE="$IMAGE" \
  python -m pytest e2e "$@"
