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

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 to build Kubernetes ${KUBE_VERSION})"
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old; Kubernetes ${KUBE_VERSION} needs Go >= 1.26"

export GOFLAGS=-mod=mod CGO_ENABLED=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jpc-cp-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT.partial"

log "checking the Go module proxy ($(go env GOPROXY))"
if ! go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" >"$WORK/kube.json" 2>"$WORK/kube.err"; then
  cat "$WORK/kube.err" >&2
  die "cannot fetch k8s.io/kubernetes@${KUBE_VERSION} from the Go module proxy"
fi
kube_gomod=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$WORK/kube.json")
staging_version="v0.${KUBE_VERSION#v1.}"

start=$(date +%s)
# --- Kubernetes: a wrapper module that replaces each staging module by its published version.
mkdir -p "$WORK/kube" && cd "$WORK/kube"
go mod init jpc.local/kube >/dev/null 2>&1
{
  echo "require k8s.io/kubernetes ${KUBE_VERSION}"
  grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$kube_gomod" \
    | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
log "resolving Kubernetes ${KUBE_VERSION} modules"
go mod tidy >/dev/null 2>&1 || go mod tidy
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
