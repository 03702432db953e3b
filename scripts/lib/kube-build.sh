# Shared steps of the scripts that build Kubernetes commands from the Go module proxy
# (build-control-plane.sh, build-kubectl.sh). Sourced, not run; the caller sets `log` and `die`.

# Go >= 1.26 is needed for Kubernetes $1; exits with a clear line otherwise.
require_go() {
  command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 to build $1)"
  local minor
  minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
  [[ "$minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old; $1 needs Go >= 1.26"
}

# In directory $1, a wrapper module named $2 that builds the k8s.io/kubernetes commands $3...
# at KUBE_VERSION. k8s.io/kubernetes requires its staging modules at v0.0.0 from ./staging, so
# each is replaced by its published version. Needs $WORK (a scratch directory).
kube_wrapper_module() {
  local dir=$1 name=$2
  shift 2
  if ! go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" >"$WORK/kube.json" 2>"$WORK/kube.err"; then
    cat "$WORK/kube.err" >&2
    die "cannot fetch k8s.io/kubernetes@${KUBE_VERSION} from the Go module proxy"
  fi
  local gomod staging_version
  gomod=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$WORK/kube.json")
  staging_version="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$dir" && cd "$dir"
  go mod init "$name" >/dev/null 2>&1
  {
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" \
      | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >>go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    local cmd
    for cmd in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
    printf ')\n'
  } >tools.go
  log "resolving Kubernetes ${KUBE_VERSION} modules"
  go mod tidy >/dev/null 2>&1 || go mod tidy
}
