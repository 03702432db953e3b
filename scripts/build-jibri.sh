#!/usr/bin/env bash
# Build the real Jibri (jitsi/jibri at a pinned commit) from its source, for the tests and the
# demo that run it as a peer of the controller. The jar is cached outside the repository, keyed by
# the commit and a hash of the pom overrides (scripts/lib/jibri-pom.py), and the build is skipped
# when it exists. Jibri's source and jar are never part of this repository.
#
#   scripts/build-jibri.sh          # prints the cache directory (holding jibri.jar) on its last line
#
# Source: the tarball $JIBRI_TARBALL (default: jibri-<short commit>.tar.gz in a shared/jibri/
# folder beside the checkout or beside its parent) when present, checked against its sha256;
# else a git checkout of the commit from $JIBRI_GIT_URL.
# Needs Java >= 17 and Maven (scripts/bootstrap.sh installs Debian's). Maven's downloads are kept
# in the cache too ($CACHE_ROOT/jibri/maven-repository), so a rebuild only compiles.
#
# Settings (environment): JPC_CACHE_DIR, JIBRI_TARBALL, JIBRI_GIT_URL.
set -euo pipefail

JIBRI_COMMIT=62369d55eaf5e428caac9fa1fa7f1d3603c59a9c
JIBRI_TARBALL_SHA256=f0d8904c2d29fe2a933fe5e3fa9ad219fb4aafbe9cac81941617bab0de01d4e0
JIBRI_GIT_URL="${JIBRI_GIT_URL:-https://github.com/jitsi/jibri}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
if [[ -z "${JIBRI_TARBALL:-}" ]]; then
  JIBRI_TARBALL="$REPO/../shared/jibri/jibri-${JIBRI_COMMIT:0:7}.tar.gz"
  [[ -f "$JIBRI_TARBALL" ]] || JIBRI_TARBALL="$REPO/../../shared/jibri/jibri-${JIBRI_COMMIT:0:7}.tar.gz"
fi
OVERRIDES="$HERE/lib/jibri-pom.py"
CACHE_ROOT="${JPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jibri-pod-controller}"
overrides_hash=$(sha256sum "$OVERRIDES" | cut -c1-12)
OUT="$CACHE_ROOT/jibri/${JIBRI_COMMIT:0:12}_pom-${overrides_hash}"
MAVEN_REPO="$CACHE_ROOT/jibri/maven-repository"

log() { echo "build-jibri: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -s "$OUT/jibri.jar" ]]; then
  log "cached jar found in $OUT"
  echo "$OUT"
  exit 0
fi

command -v java >/dev/null 2>&1 || die "Java is not installed (need Java >= 17; scripts/bootstrap.sh installs Debian's openjdk-17-jdk-headless)"
command -v mvn >/dev/null 2>&1 || die "Maven is not installed (scripts/bootstrap.sh installs Debian's maven)"
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -nE 's/^ *java\.specification\.version = ([0-9]+).*/\1/p')
[[ -n "$java_major" && "$java_major" -ge 17 ]] || die "Java ${java_major:-?} is too old; Jibri needs Java >= 17"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to apply the pom overrides"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jpc-jibri-build.XXXXXX")
kotlin_daemons_before=""
stop_new_kotlin_daemons() {
  # The Kotlin Maven plugin may leave a compile daemon (about 1.3 GiB) behind: stop the ones this
  # build started, never one that was running before it.
  local pid
  for pid in $(pgrep -f 'org.jetbrains.kotlin.daemon.KotlinCompileDaemon' || true); do
    if ! grep -qw "$pid" <<<"$kotlin_daemons_before"; then
      log "stopping the Kotlin compile daemon this build started (pid $pid)"
      kill "$pid" 2>/dev/null || true
    fi
  done
}
cleanup() {
  stop_new_kotlin_daemons
  rm -rf "$WORK" "$OUT.partial"
}
trap cleanup EXIT
kotlin_daemons_before=$(pgrep -f 'org.jetbrains.kotlin.daemon.KotlinCompileDaemon' || true)

SRC="$WORK/jibri"
if [[ -f "$JIBRI_TARBALL" ]]; then
  actual=$(sha256sum "$JIBRI_TARBALL" | cut -d' ' -f1)
  [[ "$actual" == "$JIBRI_TARBALL_SHA256" ]] \
    || die "$JIBRI_TARBALL: sha256 $actual, expected $JIBRI_TARBALL_SHA256"
  log "source: $JIBRI_TARBALL (sha256 checked)"
  mkdir -p "$SRC"
  tar -xzf "$JIBRI_TARBALL" -C "$SRC" --strip-components=1
else
  command -v git >/dev/null 2>&1 || die "no $JIBRI_TARBALL and no git to fetch Jibri ${JIBRI_COMMIT}"
  log "source: $JIBRI_GIT_URL at ${JIBRI_COMMIT} (no tarball at $JIBRI_TARBALL)"
  git init -q "$SRC"
  git -C "$SRC" fetch -q --depth 1 "$JIBRI_GIT_URL" "$JIBRI_COMMIT" \
    || die "cannot fetch ${JIBRI_COMMIT} from $JIBRI_GIT_URL"
  git -C "$SRC" checkout -q FETCH_HEAD
fi
[[ -f "$SRC/pom.xml" ]] || die "no pom.xml in Jibri's source"

log "applying the pom overrides (scripts/lib/jibri-pom.py)"
python3 "$OVERRIDES" "$SRC/pom.xml" || die "the pom overrides do not apply to this source"

mkdir -p "$MAVEN_REPO" "$OUT.partial"
log "building with Maven into $OUT (about 90 s the first time, 40 s with Maven's downloads cached)"
start=$(date +%s)
# The compile daemon is switched off where the plugin honours it; any left is stopped on exit.
if ! (cd "$SRC" && mvn -B -q -Dmaven.repo.local="$MAVEN_REPO" -DskipTests \
  -Dktlint.skip=true -Dcheckstyle.skip=true -Dkotlin.compiler.daemon=false package \
  >"$WORK/maven.log" 2>&1); then
  tail -n 60 "$WORK/maven.log" >&2
  die "the Maven build failed (the lines above are the end of its log)"
fi
jar=$(find "$SRC/target" -maxdepth 1 -name 'jibri-*-jar-with-dependencies.jar' | head -n 1)
[[ -n "$jar" ]] || die "Maven succeeded but left no jar-with-dependencies in target/"
cp "$jar" "$OUT.partial/jibri.jar"
{
  echo "commit=$JIBRI_COMMIT"
  echo "pom_overrides_sha256=$(sha256sum "$OVERRIDES" | cut -d' ' -f1)"
  echo "java=$(java -version 2>&1 | head -n 1)"
  echo "maven=$(mvn -B -v 2>/dev/null | head -n 1)"
  echo "built_seconds=$(($(date +%s) - start))"
} >"$OUT.partial/build-info.txt"
rm -rf "$OUT" && mv "$OUT.partial" "$OUT"
log "built in $(($(date +%s) - start)) s into $OUT"
echo "$OUT"
