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

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 to build kubectl ${KUBE_VERSION})"
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old; kubectl ${KUBE_VERSION} needs Go >= 1.26"

export GOFLAGS=-mod=mod CGO_ENABLED=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jpc-kubectl-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT.partial"

if ! go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" >"$WORK/kube.json" 2>"$WORK/kube.err"; then
  cat "$WORK/kube.err" >&2
  die "cannot fetch k8s.io/kubernetes@${KUBE_VERSION} from the Go module proxy"
fi
kube_gomod=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$WORK/kube.json")
staging_version="v0.${KUBE_VERSION#v1.}"

start=$(date +%s)
# The same wrapper module as scripts/build-control-plane.sh: k8s.io/kubernetes requires its
# staging modules at v0.0.0 from ./staging, so each is replaced by its published version.
mkdir -p "$WORK/kube" && cd "$WORK/kube"
go mod init jpc.local/kubectl >/dev/null 2>&1
{
  echo "require k8s.io/kubernetes ${KUBE_VERSION}"
  grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$kube_gomod" \
    | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kubectl"
GO
log "resolving Kubernetes ${KUBE_VERSION} modules"
go mod tidy >/dev/null 2>&1 || go mod tidy
ldflags="-s -w -X k8s.io/client-go/pkg/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION}"
log "building kubectl (a few minutes on 2 cores)"
go build -trimpath -ldflags "$ldflags" -o "$OUT.partial/kubectl" k8s.io/kubernetes/cmd/kubectl

rm -rf "$OUT" && mv "$OUT.partial" "$OUT"
log "built in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT/kubectl"
