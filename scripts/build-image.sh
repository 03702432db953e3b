#!/usr/bin/env bash
# Build the container image from the Dockerfile, unchanged, with buildah: no daemon (vfs storage,
# chroot isolation), so it works inside a container or a CI job without privileges to spare.
#
#   scripts/build-image.sh        # prints the image name on its last line
#
# The base image (the Dockerfile's FROM, python:3.11-slim) is made from Debian's packages with
# mmdebstrap (Debian 12, whose Python is 3.11) and tagged with the FROM's name, because this
# environment can reach Debian's archive but no image registry. Set JPC_IMAGE_BASE=pull to pull
# the real one instead. The storage (base, layers, pip downloads) is kept outside the
# repository, so a re-run only rebuilds what changed.
#
# A proxy that re-signs HTTPS needs its CA inside the build: the host's CA bundle
# (JPC_BUILD_CA_BUNDLE, default /etc/ssl/certs/ca-certificates.crt, which holds the certificates
# of /usr/local/share/ca-certificates once update-ca-certificates has run) is handed to the
# Dockerfile as the build secret `ca-certificates`: mounted for the pip steps only, never stored
# in a layer, and TLS verification stays on.
#
# Settings (environment): JPC_IMAGE, JPC_IMAGE_BASE (debian|pull), JPC_BUILD_CA_BUNDLE,
# JPC_CACHE_DIR. The same storage options are printed by `scripts/build-image.sh --storage`, for
# podman or buildah commands of your own.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_ROOT="${JPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jibri-pod-controller}"
STORE="$CACHE_ROOT/image"
STORAGE=(--storage-driver vfs --root "$STORE/storage" --runroot "$STORE/run")
if [[ "${1:-}" == "--storage" ]]; then
  echo "${STORAGE[*]}"
  exit 0
fi

version=$(sed -nE 's/^version = "([^"]+)"/\1/p' pyproject.toml | head -1)
IMAGE="${JPC_IMAGE:-localhost/jibri-pod-controller:$version}"
BASE_MODE="${JPC_IMAGE_BASE:-debian}"
CA_BUNDLE="${JPC_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# The Dockerfile's base, e.g. python:3.11-slim; short names are Docker Hub's library images.
from=$(sed -nE 's/^FROM[[:space:]]+([^[:space:]]+).*/\1/p' Dockerfile | head -1)
case "$from" in
  */*) base="$from" ;;
  *) base="docker.io/library/$from" ;;
esac

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in buildah; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (scripts/bootstrap.sh installs it)"
done
mkdir -p "$STORE"
start=$(date +%s)

# --- The base: python:3.11-slim's content from Debian 12 packages. ---------------------------
# What python:3.11-slim has and a workload can rely on: Python 3.11 with pip and venv as
# `python`/`python3`, CA certificates, tzdata, netbase; no documentation, no apt lists. (Its
# Python lives in /usr/local; here it is Debian's, in /usr.) The recipe's hash is a label of the
# image, so a changed recipe builds a new base.
packages=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,tzdata,netbase
recipe="bookworm|$packages|v1"
recipe_hash=$(echo "$recipe" | sha256sum | cut -c1-16)
have_base() {
  [[ "$(buildah "${STORAGE[@]}" inspect --type image \
    --format '{{index .ImageAnnotations "org.jibri-pod-controller.base-recipe"}}' "$base" 2>/dev/null)" \
    == "$1" ]]
}
if [[ "$BASE_MODE" == pull ]]; then
  buildah "${STORAGE[@]}" pull "$base" >/dev/null
elif ! have_base "$recipe_hash"; then
  command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is not installed (scripts/bootstrap.sh installs it)"
  log "making $base from Debian packages (mmdebstrap, about a minute)"
  rootfs="$STORE/base-$recipe_hash.tar"
  rm -rf "$rootfs" "$STORE"/base-*.partial.tar
  mmdebstrap --variant=minbase --include="$packages" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
    --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' \
    --customize-hook='find "$1"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +' \
    bookworm "${rootfs%.tar}.partial.tar" http://deb.debian.org/debian >"$STORE/base.log" 2>&1 \
    || { tail -30 "$STORE/base.log" >&2; die "mmdebstrap failed (log: $STORE/base.log)"; }
  mv "${rootfs%.tar}.partial.tar" "$rootfs"
  container=$(buildah "${STORAGE[@]}" from scratch)
  buildah "${STORAGE[@]}" add "$container" "$rootfs" / >/dev/null
  buildah "${STORAGE[@]}" config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --annotation "org.jibri-pod-controller.base-recipe=$recipe_hash" "$container"
  buildah "${STORAGE[@]}" commit --quiet --rm "$container" "$base" >/dev/null
  rm -f "$rootfs"
fi

# --- The image, from the Dockerfile as it is. ------------------------------------------------
secret=()
if [[ -s "$CA_BUNDLE" ]]; then
  secret=(--secret "id=ca-certificates,src=$CA_BUNDLE")
fi
# Nothing to do when the image was built from this very context (the Dockerfile, the files it
# copies, the base's recipe): a fully cached buildah build still costs ~30 s a stage with vfs.
context=$( { echo "$recipe_hash"; find Dockerfile .dockerignore pyproject.toml README.md src -type f \
  -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum; } \
  | sha256sum | cut -c1-16)
built=$(buildah "${STORAGE[@]}" inspect --type image \
  --format '{{index .OCIv1.Config.Labels "org.jibri-pod-controller.context"}}' "$IMAGE" 2>/dev/null || true)
if [[ "$built" == "$context" && "$BASE_MODE" != pull ]]; then
  log "$IMAGE is up to date (context $context)"
  echo "$IMAGE"
  exit 0
fi
log "building $IMAGE from the Dockerfile (buildah, vfs storage, chroot isolation)"
buildah "${STORAGE[@]}" bud --isolation chroot --layers --pull=false "${secret[@]}" \
  --label "org.jibri-pod-controller.context=$context" --build-arg "VERSION=$version" \
  --tag "$IMAGE" --file Dockerfile . >"$STORE/last-build.log" 2>&1 \
  || { tail -40 "$STORE/last-build.log" >&2; die "buildah bud failed (log: $STORE/last-build.log)"; }
# The layers of earlier builds: each is a full copy of its file system with vfs.
buildah "${STORAGE[@]}" rmi --prune >/dev/null 2>&1 || true
size=$(buildah "${STORAGE[@]}" images --format '{{.Size}}' "$IMAGE" | head -1)
log "built $IMAGE ($size) in $(( $(date +%s) - start )) s"
echo "$IMAGE"
