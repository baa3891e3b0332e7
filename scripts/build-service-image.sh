#!/usr/bin/env bash
# Build pman's service image on a machine that cannot pull: a Debian 12 +
# Python base made with debootstrap (trusting this machine's CA bundle, so
# pip inside the build reaches PyPI through whatever TLS this machine uses),
# then the Dockerfile on top of it.
#   scripts/build-service-image.sh [TAG]   (default localhost/pman:latest)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
TAG=${1:-localhost/pman:latest}
BASE=${PMAN_BASE_IMAGE:-localhost/pman-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf '[build-service-image] %s\n' "$*" >&2; }

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  log "debootstrap bookworm into $root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" >/dev/null
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  log "importing $BASE"
  tar -C "$root" -c . | docker import \
    -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    - "$BASE" >/dev/null
fi
log "building $TAG on $BASE"
docker build -q --build-arg BASE_IMAGE="$BASE" -t "$TAG" "$here" >/dev/null
log "built $TAG"
