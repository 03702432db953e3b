#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with the package and its
# test tools, and install the Debian packages the tests run (only those missing). Idempotent and
# quick when nothing changed. The Go-built tools (control plane, helm, kubectl, kubeconform and
# its schemas) are built and cached by scripts/test.sh through scripts/build-*.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "bootstrap: Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f "$stamp" ]]; then
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
# The controller's own environment: the package (editable) with its runtime dependencies only,
# as in the image. The tests, the demo and the bench start the controller from it, so a
# test-only package can never creep into the controller, and its memory is measured as deployed.
runtime_stamp=.venv/runtime/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f "$runtime_stamp" ]]; then
  [[ -x .venv/runtime/bin/python ]] || "$PYTHON" -m venv --without-pip .venv/runtime
  .venv/bin/python -m pip --python .venv/runtime/bin/python install --quiet \
    --disable-pip-version-check -e .
  rm -f .venv/runtime/.installed-* && touch "$runtime_stamp"
fi

# Debian packages, installed only when their command is missing: promtool and prometheus (the
# alert rules and the monitoring end-to-end test), buildah, mmdebstrap, podman and runc (the
# image: built without a daemon, run as a controller replica), and for the real Jibri
# (scripts/build-jibri.sh, testbed/realjibri.py) Java 17 and Maven to build it, Chromium and
# chromedriver for its recordings, iproute2 and nftables for its pods' network namespaces.
missing=()
for pair in promtool:prometheus prometheus:prometheus buildah:buildah mmdebstrap:mmdebstrap \
  podman:podman runc:runc java:openjdk-17-jdk-headless mvn:maven chromium:chromium \
  chromedriver:chromium-driver ip:iproute2 nft:nftables; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  command -v apt-get >/dev/null 2>&1 \
    || { echo "bootstrap: missing ${missing[*]} (Debian packages); install them" >&2; exit 1; }
  sudo=""; [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  echo "bootstrap: installing ${missing[*]} (apt)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
