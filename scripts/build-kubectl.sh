#!/usr/bin/env bash
# Build kubectl (with its built-in kustomize) at the control plane's Kubernetes version, from the
# Go module proxy, for the tests that follow the README's install steps literally. Cached outside
# the repository, keyed by version, next to the control plane; the build is skipped when it
# exists.
#
#   scripts/build-kubectl.sh          # prints the path of kubectl on its last line
#
# Settings (environment): KUBE_VERSION, JPC_CACHE_DIR.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
CACHE_ROOT="${JPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jibri-pod-controller}"
OUT="$CACHE_ROOT/kubectl/kubectl-${KUBE_VERSION}"

log() { echo "build-kubectl: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -x "$OUT/kubectl" ]]; then
  log "cached kubectl found in $OUT"
  echo "$OUT/kubectl"
  exit 0
fi

# shellcheck source=scripts/lib/kube-build.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/kube-build.sh"
require_go "kubectl ${KUBE_VERSION}"

export GOFLAGS=-mod=mod CGO_ENABLED=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jpc-kubectl-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT.partial"

start=$(date +%s)
kube_wrapper_module "$WORK/kube" jpc.local/kubectl kubectl
ldflags="-s -w -X k8s.io/client-go/pkg/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION}"
log "building kubectl (a few minutes on 2 cores)"
go build -trimpath -ldflags "$ldflags" -o "$OUT.partial/kubectl" k8s.io/kubernetes/cmd/kubectl

rm -rf "$OUT" && mv "$OUT.partial" "$OUT"
log "built in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT/kubectl"
