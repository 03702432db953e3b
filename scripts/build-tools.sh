#!/usr/bin/env bash
# Build the manifest checker and its schemas, cached outside the repository, keyed by version:
#
# - kubeconform, from the Go module proxy;
# - kubeconform's strict JSON schemas, GENERATED (never downloaded) from the OpenAPI document of
#   the cluster's Kubernetes version (k8s.io/kubernetes@KUBE_VERSION/api/openapi-spec, in the Go
#   module cache) and from prometheus-operator's CRDs (its module's example/prometheus-operator-crd/),
#   by scripts/openapi2jsonschema.py;
# - those prometheus-operator CRDs, for the tests that install the chart with its ServiceMonitor
#   and PrometheusRule.
#
#   scripts/build-tools.sh      # prints kubeconform=..., schemas=..., prometheus_operator_crds=...
#
# Settings (environment): KUBE_VERSION, KUBECONFORM_VERSION, PROMETHEUS_OPERATOR_VERSION,
# JPC_CACHE_DIR, PYTHON (with PyYAML; default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.7.0}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE_ROOT="${JPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jibri-pod-controller}"
PYTHON="${PYTHON:-.venv/bin/python}"

log() { echo "build-tools: $*" >&2; }
die() { log "error: $*"; exit 1; }
need_go() {
  command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26)"
}
module_dir() {  # the module's directory in the Go module cache, downloading it if needed
  local json
  json=$(cd "$WORK" && go mod download -json "$1" 2>&1) || { echo "$json" >&2; die "cannot fetch $1 from the Go module proxy"; }
  "$PYTHON" -c 'import json,sys; print(json.loads(sys.stdin.read())["Dir"])' <<<"$json"
}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jpc-tools.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- kubeconform -------------------------------------------------------------------------------
KUBECONFORM_DIR="$CACHE_ROOT/tools/kubeconform-$KUBECONFORM_VERSION"
if [[ ! -x "$KUBECONFORM_DIR/kubeconform" ]]; then
  need_go
  log "building kubeconform $KUBECONFORM_VERSION"
  mkdir -p "$KUBECONFORM_DIR.partial"
  (cd "$WORK" && GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$KUBECONFORM_DIR.partial" \
    go install -trimpath -ldflags "-s -w" "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION")
  rm -rf "$KUBECONFORM_DIR" && mv "$KUBECONFORM_DIR.partial" "$KUBECONFORM_DIR"
fi

# --- schemas and CRDs --------------------------------------------------------------------------
generator_hash=$(sha256sum scripts/openapi2jsonschema.py | cut -c1-12)
SCHEMAS="$CACHE_ROOT/schemas/kube-${KUBE_VERSION}_prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}_${generator_hash}"
CRDS="$CACHE_ROOT/tools/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
if [[ ! -d "$SCHEMAS" || ! -d "$CRDS" ]]; then
  need_go
  kube=$(module_dir "k8s.io/kubernetes@$KUBE_VERSION")
  operator=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  swagger="$kube/api/openapi-spec/swagger.json"
  [[ -f "$swagger" ]] || die "no OpenAPI document at $swagger"
  [[ -d "$operator/example/prometheus-operator-crd" ]] || die "no CRDs in $operator/example/prometheus-operator-crd"
  log "generating schemas from Kubernetes $KUBE_VERSION and prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
  rm -rf "$CACHE_ROOT"/schemas/kube-* "$CRDS.partial"  # earlier generations too
  "$PYTHON" scripts/openapi2jsonschema.py "$SCHEMAS.partial" --swagger "$swagger" \
    --crds "$operator"/example/prometheus-operator-crd/*.yaml
  mkdir -p "$CRDS.partial"
  cp "$operator"/example/prometheus-operator-crd/*.yaml "$CRDS.partial/"
  chmod -R u+w "$CRDS.partial"
  rm -rf "$SCHEMAS" "$CRDS"
  mv "$SCHEMAS.partial" "$SCHEMAS" && mv "$CRDS.partial" "$CRDS"
fi

echo "kubeconform=$KUBECONFORM_DIR/kubeconform"
echo "schemas=$SCHEMAS"
echo "prometheus_operator_crds=$CRDS"
