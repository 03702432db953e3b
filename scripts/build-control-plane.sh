#!/usr/bin/env bash
# Build the pinned control plane (etcd, kube-apiserver, kube-controller-manager) and, for the
# chart tests, helm, from the Go module proxy. Binaries are cached outside the repository,
# keyed by version, and the build is skipped when they exist.
#
#   scripts/build-control-plane.sh          # prints the cache directory on its last line
#
# Settings (environment): KUBE_VERSION, ETCD_VERSION, HELM_VERSION, JPC_CACHE_DIR.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${JPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jibri-pod-controller}"
OUT="$CACHE_ROOT/control-plane/kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"

log() { echo "build-control-plane: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/kube-controller-manager" && -x "$OUT/etcd" && -x "$OUT/helm" ]]; then
  log "cached binaries found in $OUT"
  echo "$OUT"
  exit 0
fi

# shellcheck source=scripts/lib/kube-build.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/kube-build.sh"
require_go "Kubernetes ${KUBE_VERSION}"

export GOFLAGS=-mod=mod CGO_ENABLED=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jpc-cp-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT.partial"

log "checking the Go module proxy ($(go env GOPROXY))"
start=$(date +%s)
# --- Kubernetes
kube_wrapper_module "$WORK/kube" jpc.local/kube kube-apiserver kube-controller-manager
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
for cmd in kube-apiserver kube-controller-manager; do
  log "building $cmd (several minutes on 2 cores)"
  go build -trimpath -ldflags "$ldflags" -o "$OUT.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done

# --- etcd: package main is the root of go.etcd.io/etcd/server/v3.
mkdir -p "$WORK/etcd" && cd "$WORK/etcd"
go mod init jpc.local/etcd >/dev/null 2>&1
echo "require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}" >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
log "building etcd ${ETCD_VERSION}"
go mod tidy >/dev/null 2>&1 || go mod tidy
go build -trimpath -ldflags "-s -w" -o "$OUT.partial/etcd" go.etcd.io/etcd/server/v3

# --- helm, for the chart tests.
mkdir -p "$WORK/helm" && cd "$WORK/helm"
go mod init jpc.local/helm >/dev/null 2>&1
echo "require helm.sh/helm/v3 ${HELM_VERSION}" >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
log "building helm ${HELM_VERSION}"
go mod tidy >/dev/null 2>&1 || go mod tidy
go build -trimpath -ldflags "-s -w" -o "$OUT.partial/helm" helm.sh/helm/v3/cmd/helm

rm -rf "$OUT" && mv "$OUT.partial" "$OUT"
log "built in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT"
